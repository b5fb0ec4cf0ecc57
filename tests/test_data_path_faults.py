"""Faults seen from the data path, on a real daemon: liveness, end of stream, poison events.

* heartbeats mean "alive": observers that sleep, plot or wait between events
  survive a short ``stall_timeout``; one that spins is still killed;
* end of stream has one owner: ``misc.copy`` that fails and is restarted keeps copying;
* a poison event (its reader killed twice) is set aside, the others all arrive.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

FUNCS = '''
import os, signal, threading, time
from mimocorb2.worker_templates import Filter, Observer, IsAlive
from mimocorb2.functions import misc
from mimocorb2.testing.workers import counting_source, draining_sink as sink

def source(io):
    counting_source(io, pace=0.001)

def sleepy_observer(io):
    for data, meta in Observer(io)():
        if data is None:
            break
        time.sleep(io["nap"])  # far longer than stall_timeout, holding nothing

def is_alive_loop(io):
    alive = IsAlive(io)
    while alive():
        time.sleep(io["nap"])

def spinning_observer(io):
    for data, meta in Observer(io)():
        while True:  # truly hung: computes forever
            pass

def copy_that_fails_once(io):
    # the first process raises in the middle of copying (as a bug in a sink would);
    # its restarted successor must still be able to write
    marker = io.run_dir / "copy-failed-once"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        def fail(signum, frame):
            raise RuntimeError("copy failed in the middle")
        signal.signal(signal.SIGUSR1, fail)
        def trigger():
            while io.read[0].get_stats()["event_count"] < 300:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGUSR1)
        threading.Thread(target=trigger, daemon=True).start()
    misc.copy(io)

def poisoned_filter(io):
    poison = io["poison"]
    def keep(data):
        if int(data["x"][0]) == poison:
            time.sleep(3600)  # hangs on this event, holding it
        return True
    Filter(io)(keep)
'''


def make_setup(tmp_path: Path, body: str) -> Path:
    (tmp_path / "funcs.py").write_text(FUNCS)
    path = tmp_path / "setup.yaml"
    path.write_text(textwrap.dedent(body) + "stats_interval: 0.2\n")
    return path


@pytest.fixture
def daemon_env() -> dict[str, str]:
    """The conftest ``daemon`` runs headless here."""
    return {**os.environ, "MIMOCORB2_HEADLESS": "1"}


def ended(status: dict) -> bool:
    return status["state"] in ("finished", "failed")


def test_observers_that_sleep_plot_or_wait_stay_alive_a_spinning_one_is_killed(daemon, tmp_path):
    setup = make_setup(tmp_path, """\
        Buffers:
          raw: {slot_count: 16, data_length: 4, data_dtype: {x: float64}}
        Workers:
          src: {file: funcs.py, function: source, sinks: [raw]}
          snk: {file: funcs.py, function: sink, sources: [raw]}
          sleepy: {file: funcs.py, function: sleepy_observer, observes: [raw], stall_timeout: 2, config: {nap: 4}}
          waiter: {file: funcs.py, function: is_alive_loop, observes: [raw], stall_timeout: 2, config: {nap: 4}}
          scope: {function: observers.oscilloscope, observes: [raw], stall_timeout: 2, config: {update_interval: 4}}
          spinner: {file: funcs.py, function: spinning_observer, observes: [raw], stall_timeout: 2, max_restarts: 50}
        on_worker_failure: continue
        drain_timeout: 5
        """)
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(
        lambda s: s["run"]["uptime"] >= 12 and s["workers"]["spinner"]["restarts"] >= 1, 120,
        "12 s of running and the spinning observer killed")
    assert "stalled" in st["workers"]["spinner"]["last_exit"]
    for name in ("sleepy", "waiter", "scope", "src", "snk"):
        assert st["workers"][name]["restarts"] == 0, (name, st["workers"][name])
    summary = daemon.call("stop", {})
    st = daemon.status()
    for name in ("sleepy", "waiter", "scope"):
        assert st["workers"][name]["restarts"] == 0, (name, st["workers"][name])
    assert summary["lost"] == 0
    assert (Path(summary["directory"]) / "plots" / "scope.png").stat().st_size > 0


def test_misc_copy_that_fails_is_restarted_and_keeps_copying(daemon, tmp_path):
    n = 3000
    setup = make_setup(tmp_path, f"""\
        Buffers:
          raw: {{slot_count: 16, data_length: 4, data_dtype: {{x: float64}}}}
          copied: {{slot_count: 16, data_length: 4, data_dtype: {{x: float64}}}}
        Workers:
          src: {{file: funcs.py, function: source, sinks: [raw], config: {{n_events: {n}, pace: 0.0002}}}}
          cp: {{file: funcs.py, function: copy_that_fails_once, sources: [raw], sinks: [copied]}}
          snk: {{file: funcs.py, function: sink, sources: [copied]}}
        """)
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(ended, 120, "run ended")
    assert st["state"] == "finished", st["run"]
    assert st["workers"]["cp"]["restarts"] == 1
    raw, copied = st["buffers"]["raw"], st["buffers"]["copied"]
    assert raw["event_count"] == n
    assert copied["rejected"] == 0  # the restarted process's writes were all accepted
    # every event accounted: copied, except at most the one being copied when the first
    # process raised (an exception inside a reader's block still finishes the slot)
    assert n - 1 <= copied["event_count"] <= n
    assert st["run"]["lost"] == 0


def test_poison_event_is_set_aside_after_two_kills_and_the_others_arrive(daemon, tmp_path):
    n, poison = 200, 50
    setup = make_setup(tmp_path, f"""\
        Buffers:
          raw: {{slot_count: 16, data_length: 4, data_dtype: {{x: float64}}}}
          kept: {{slot_count: 16, data_length: 4, data_dtype: {{x: float64}}}}
        Workers:
          src: {{file: funcs.py, function: source, sinks: [raw], config: {{n_events: {n}, pace: 0.0005}}}}
          flt: {{file: funcs.py, function: poisoned_filter, sources: [raw], sinks: [kept], number_of_processes: 2,
                stall_timeout: 1.5, config: {{poison: {poison}}}}}
          snk: {{file: funcs.py, function: sink, sources: [kept]}}
        """)
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(ended, 120, "run ended")
    assert st["state"] == "finished", st["run"]
    assert st["workers"]["flt"]["restarts"] == 2  # killed twice on the poison event, then it was set aside
    assert st["buffers"]["raw"]["quarantined"] == 1
    assert st["run"]["quarantined"] == 1
    assert st["buffers"]["kept"]["event_count"] == n - 1  # every other event arrived
    assert st["run"]["lost"] == 0
    run_dir = Path(st["run"]["directory"])
    saved = np.load(run_dir / "quarantine" / "raw.npy")
    assert len(saved) == 1
    assert saved[0]["group"] == "flt" and saved[0]["counter"] == poison
    assert (saved[0]["data"]["x"] == poison).all()
    records = [json.loads(line) for line in (run_dir / "daemon.log").read_text().splitlines() if line.strip()]
    logged = [r for r in records if r["event"].startswith("poison event set aside")]
    assert [(r["buffer"], r["counter"]) for r in logged] == [("raw", poison)]


@pytest.mark.parametrize("owner", ["BY_TEMPLATES", "BY_RUNNER"])
def test_a_template_flushes_its_sinks_only_when_standalone(tmp_path, owner):
    from mimocorb2.mimo_buffer import BufferWriter, mimoBuffer
    from mimocorb2.mimo_worker import BufferIO, StreamEnd
    from mimocorb2.worker_templates import Importer

    buf = mimoBuffer("eos", 4, 1, {"x": "f8"})
    try:
        io = BufferIO("imp", [], [BufferWriter(buf)], [], {}, tmp_path, tmp_path, stream_end=StreamEnd[owner])
        Importer(io)(lambda: [np.zeros(1, buf.data_dtype)])
        assert buf.get_stats()["event_count"] == 1
        # standalone the template ends the stream; under the runner that is the runner's job
        assert buf.ended is (owner == "BY_TEMPLATES")
    finally:
        buf.close()
