"""Restart and failure policies, liveness, limits and abort, on a real daemon."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path


from mimocorb2.testing import DaemonProcess, segments_of

FUNCS = '''
import time
from mimocorb2.testing.workers import counting_source, draining_sink as sink

def source(io):
    counting_source(io, pace=0.0005)

def crash(io):
    raise RuntimeError("this worker always fails")

def stuck(io):
    # takes one event, then hangs in "user code" without touching a buffer
    with io.read[0] as (meta, data):
        pass
    time.sleep(3600)

def stubborn(io):
    # ignores SIGTERM and never reads: only the drain timeout gets rid of it
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.05)
'''


def make_setup(tmp_path: Path, workers: str, top: str = "") -> Path:
    (tmp_path / "funcs.py").write_text(FUNCS)
    p = tmp_path / "setup.yaml"
    p.write_text(textwrap.dedent("""\
        Buffers:
          raw: {slot_count: 16, data_length: 4, data_dtype: {x: float64}}
        Workers:
          src: {file: funcs.py, function: source, sinks: [raw]}
          snk: {file: funcs.py, function: sink, sources: [raw]}
        """) + textwrap.indent(textwrap.dedent(workers), "  ") + "stats_interval: 0.2\n" + textwrap.dedent(top))
    return p


def ended(s):
    return s["state"] in ("finished", "failed")


def test_on_worker_failure_continue_keeps_the_run_going(daemon, tmp_path):
    setup = make_setup(tmp_path, """\
        bad: {file: funcs.py, function: crash, sources: [raw], max_restarts: 1}
        """, "on_worker_failure: continue\n")
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(lambda s: s["workers"]["bad"]["state"] == "failed", 90, "bad worker failed")
    assert st["state"] in ("running", "paused")
    before = st["buffers"]["raw"]["event_count"]
    # its reader group no longer holds the buffer back: events keep flowing
    st = daemon.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > before + 500, 90, "flow continues")
    assert st["workers"]["snk"]["state"] == "running"
    summary = daemon.call("stop", {})
    assert summary["state"] == "failed" and "bad" in summary["error"]


def test_restart_never_fails_at_once(daemon, tmp_path):
    setup = make_setup(tmp_path, """\
        bad: {file: funcs.py, function: crash, sources: [raw], restart: never}
        """)
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(ended, 90, "run ended")
    assert st["state"] == "failed"
    assert st["workers"]["bad"]["restarts"] == 0
    assert st["run"]["stop_reason"] == "worker bad failed"
    # the others drained; what the failed worker's group never read is reported, not dropped
    # (how many depends on how far the source got before the failure stopped the run)
    assert st["run"]["lost"] == st["run"]["lost_in_buffers"] == st["buffers"]["raw"]["pending"]


def test_stalled_process_is_killed_and_restarted(daemon, tmp_path):
    setup = make_setup(tmp_path, """\
        hang: {file: funcs.py, function: stuck, sources: [raw], stall_timeout: 1.0}
        """, "on_worker_failure: continue\n")
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(lambda s: s["workers"]["hang"]["restarts"] >= 1, 90, "stalled process restarted")
    assert "SIGKILL" in st["workers"]["hang"]["last_exit"]
    assert "stalled" in st["workers"]["hang"]["last_exit"]
    daemon.call("abort", {})


def test_max_seconds_limit(daemon, tmp_path):
    setup = make_setup(tmp_path, "")
    daemon.call("start", {"setup": str(setup), "max_seconds": 1.0})
    st = daemon.wait_for(ended, 90, "run ended")
    assert st["state"] == "finished" and st["run"]["lost"] == 0
    assert "max_seconds" in st["run"]["stop_reason"]
    assert st["run"]["uptime"] >= 1.0


def test_run_limits_from_the_setup(daemon, tmp_path):
    setup = make_setup(tmp_path, "", "run_limits: {max_events: 800}\n")
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(ended, 90, "run ended")
    assert st["state"] == "finished" and "max_events" in st["run"]["stop_reason"]
    assert st["buffers"]["raw"]["event_count"] >= 800


def test_drain_timeout_kills_stragglers_and_reports_lost(daemon, tmp_path):
    setup = make_setup(tmp_path, """\
        slow: {file: funcs.py, function: stubborn, sources: [raw]}
        """, "drain_timeout: 1.0\n")
    daemon.call("start", {"setup": str(setup)})
    daemon.wait_for(lambda s: s["buffers"]["raw"]["filled_slots"] == 1.0, 90, "buffer full (slow never reads)")
    summary = daemon.call("stop", {})
    assert summary["state"] == "finished"
    assert summary["lost"] == 16  # a full buffer nobody in group 'slow' read: reported, not dropped
    st = daemon.status()
    assert st["run"]["lost_in_buffers"] == 16
    assert all(not p["alive"] for w in st["workers"].values() for p in w["processes"])


def test_abort_and_a_new_run_afterwards(daemon, tmp_path):
    setup = make_setup(tmp_path, "")
    daemon.call("start", {"setup": str(setup)})
    daemon.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > 100, 90, "events")
    summary = daemon.call("abort", {})
    assert summary["state"] in ("finished", "failed")
    st = daemon.status()
    assert all(w["state"] == "stopped" for w in st["workers"].values())
    # the daemon takes the next run
    small = make_setup(tmp_path, "", "run_limits: {max_events: 200}\n")
    daemon.call("start", {"setup": str(small)})
    assert daemon.wait_for(ended, 90, "second run")["state"] == "finished"


def test_second_sigterm_aborts(tmp_path):
    setup = make_setup(tmp_path, """\
        slow: {file: funcs.py, function: stubborn, sources: [raw]}
        """, "drain_timeout: 60\n")
    d = DaemonProcess(tmp_path / "sock" / "control.sock").start()
    try:
        d.call("start", {"setup": str(setup)})
        d.wait_for(lambda s: s["buffers"]["raw"]["filled_slots"] == 1.0, 90, "buffer full")
        d.signal(signal.SIGTERM)
        d.wait_for(lambda s: s["state"] == "stopping", 60, "stopping")
        d.signal(signal.SIGTERM)
        assert d.wait_exit(60) == 0
    finally:
        d.stop()
    assert segments_of(d.pid) == []


LOCKER = '''
import os, signal
from mimocorb2.worker_templates import Exporter

def locker(io):
    marker = io.run_dir / "locker-died-once"
    n = 0
    for data, meta in Exporter(io):
        n += 1
        if n == 200 and not marker.exists():
            marker.write_text(str(os.getpid()))
            # die inside the buffer's critical section: the shared lock stays taken
            io.read[0].buffer._ring._lock()
            os.kill(os.getpid(), signal.SIGKILL)
'''


def test_worker_killed_holding_the_buffer_lock_does_not_freeze_the_daemon(daemon, tmp_path):
    (tmp_path / "locker.py").write_text(LOCKER)
    setup = make_setup(tmp_path, """\
        lk: {file: locker.py, function: locker, sources: [raw]}
        """, "run_limits: {max_events: 3000}\n")
    daemon.call("start", {"setup": str(setup)})
    import time as _t

    worst = 0.0
    deadline = _t.monotonic() + 60
    while _t.monotonic() < deadline:
        t0 = _t.monotonic()
        st = daemon.status()
        worst = max(worst, _t.monotonic() - t0)
        if ended(st):
            break
    assert worst < 1.0, f"a status request took {worst:.2f} s"
    assert st["state"] == "finished", st
    assert st["workers"]["lk"]["restarts"] == 1
    assert st["run"]["lost"] == 0
    assert st["daemon"]["loop_lag_max"] < 0.5
