"""The daemon with real runs: real processes, real shared memory, no mocks of our parts.

Synchronisation is always by polling status (or the process table) with a
bounded deadline, never by sleeping for a guessed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mimocorb2.control.client import RequestFailed
from mimocorb2.testing import DaemonProcess, is_alive, segments_of, wait_until

FUNCS = '''
from mimocorb2.testing.workers import counting_source as source, recording_sink as sink
'''


def write_setup(tmp_path: Path, *, n_events: int = 0, rate: int = 2000, sink_procs: int = 2,
                extra: str = "") -> Path:
    (tmp_path / "funcs.py").write_text(FUNCS)
    setup = tmp_path / "setup.yaml"
    setup.write_text(textwrap.dedent(f"""\
        Buffers:
          raw: {{slot_count: 32, data_length: 8, data_dtype: {{x: float64}}}}
        Workers:
          src:
            file: funcs.py
            function: source
            sinks: [raw]
            config: {{n_events: {n_events}, rate: {rate}}}
          snk:
            file: funcs.py
            function: sink
            sources: [raw]
            number_of_processes: {sink_procs}
        stats_interval: 0.2
        drain_timeout: 20
        """) + extra)
    return setup


def exported_counters(run_dir: Path) -> list[int]:
    out: list[int] = []
    for f in sorted(run_dir.glob("sink-*.txt")):
        out.extend(int(x) for x in f.read_text().split())
    return out


def importer_total(run_dir: Path) -> int:
    text = (run_dir / "logs" / "src.log").read_text()
    found = re.findall(r"importer finished after (\d+) events", text)
    assert found, text[-2000:]
    return sum(int(x) for x in found)


def test_lifecycle_pause_resume_stop_accounts_for_every_event(daemon, tmp_path):
    setup = write_setup(tmp_path, rate=3000)
    reply = daemon.call("start", {"setup": str(setup)})
    run_dir = Path(reply["directory"])
    with pytest.raises(RequestFailed):  # one run at a time
        daemon.call("start", {"setup": str(setup)})
    daemon.wait_for(lambda s: s["state"] == "running" and s["buffers"]["raw"]["event_count"] > 300,
                    90, "events flowing")
    assert daemon.call("pause", {})["paused"] == ["raw"]
    st = daemon.wait_for(lambda s: s["buffers"]["raw"]["paused_count"] > 200, 90, "discards while paused")
    assert st["state"] == "paused" and st["buffers"]["raw"]["paused"] is True
    before = st["buffers"]["raw"]["event_count"]
    assert daemon.call("resume", {"buffers": ["raw"]})["resumed"] == ["raw"]
    daemon.wait_for(lambda s: s["state"] == "running" and s["buffers"]["raw"]["event_count"] > before + 300,
                    90, "events flowing again")
    with pytest.raises(RequestFailed):
        daemon.call("pause", {"buffers": ["nope"]})

    summary = daemon.call("stop", {})
    assert summary["state"] == "finished", summary
    assert summary["lost"] == 0
    st = daemon.status()
    assert st["state"] == "finished"
    raw = st["buffers"]["raw"]
    assert raw["ended"] is True and raw["pending"] == 0
    assert all(w["state"] == "finished" for w in st["workers"].values()), st["workers"]
    assert all(not p["alive"] for w in st["workers"].values() for p in w["processes"])

    produced = importer_total(run_dir)
    exported = exported_counters(run_dir)
    assert len(exported) == len(set(exported)) == raw["event_count"]
    # events produced = exported + discarded while paused + refused after stop + lost (0)
    assert produced == len(exported) + raw["paused_count"] + raw["rejected"] + st["run"]["lost"]
    assert raw["rejected"] <= 1
    # the run's records
    assert (run_dir / "setup.yaml").exists()
    stats = (run_dir / "stats.csv").read_text().splitlines()
    assert stats[0].startswith("time,buffer,event_count") and len(stats) >= 2  # header, >= 1 row
    records = [json.loads(line) for line in (run_dir / "daemon.log").read_text().splitlines()]
    assert any(r["event"] == "run ended" and r["lost"] == 0 for r in records)
    assert all({"event", "level", "timestamp"} <= set(r) for r in records)
    worker_lines = (run_dir / "logs" / "snk.log").read_text().splitlines()
    assert worker_lines and all("worker=snk" in line and "pid=" in line for line in worker_lines)
    logs = daemon.call("logs", {"worker": "snk"})
    assert "snk" in logs["files"][0]["text"]


def test_kill_9_of_a_worker_is_restarted_and_nothing_is_lost(daemon, tmp_path):
    n = 12000
    setup = write_setup(tmp_path, n_events=n, rate=3000)
    run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])
    st = daemon.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > 1500, 90, "events flowing")
    victim = st["workers"]["snk"]["processes"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    st = daemon.wait_for(
        lambda s: s["workers"]["snk"]["restarts"] >= 1 and s["workers"]["snk"]["alive"] == 2,
        90, "the killed process restarted")
    assert victim not in [p["pid"] for p in st["workers"]["snk"]["processes"]]
    st = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 90, "run finished")
    assert st["state"] == "finished", st
    assert st["run"]["lost"] == 0
    got = exported_counters(run_dir)
    assert set(got) == set(range(n)), "events lost"
    # a slot the victim held may be delivered again, never dropped
    assert len(got) - n <= st["run"]["redelivered"]
    assert "SIGKILL" in (run_dir / "daemon.log").read_text()


def test_worker_that_keeps_crashing_fails_the_run(daemon, tmp_path):
    (tmp_path / "bad.py").write_text("def crash(io):\n    raise SystemExit(3)\n")
    setup = write_setup(tmp_path, rate=500)
    text = setup.read_text().replace(
        "  snk:\n",
        "  bad:\n    file: bad.py\n    function: crash\n    sources: [raw]\n    max_restarts: 2\n  snk:\n")
    assert "bad.py" in text
    setup.write_text(text)
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 90, "run ended")
    assert st["state"] == "failed"
    assert st["workers"]["bad"]["state"] == "failed"
    assert st["workers"]["bad"]["restarts"] == 2
    assert "bad" in st["run"]["error"]


def test_run_limit_max_events_stops_gracefully(daemon, tmp_path):
    setup = write_setup(tmp_path, rate=0)
    run_dir = Path(daemon.call("start", {"setup": str(setup), "max_events": 5000})["directory"])
    st = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 90, "run ended")
    assert st["state"] == "finished" and st["run"]["lost"] == 0
    assert "max_events" in st["run"]["stop_reason"]
    raw = st["buffers"]["raw"]
    assert raw["event_count"] >= 5000
    assert len(exported_counters(run_dir)) == raw["event_count"]


def test_sigterm_drains_and_exits_0(tmp_path):
    d = DaemonProcess(tmp_path / "sock" / "control.sock").start()
    try:
        run_dir = Path(d.call("start", {"setup": str(write_setup(tmp_path, rate=3000))})["directory"])
        d.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > 300, 90, "events flowing")
        d.signal(signal.SIGTERM)
        assert d.wait_exit(90) == 0
    finally:
        d.stop()
    log = (run_dir / "daemon.log").read_text()
    assert '"lost": 0' in log and '"state": "finished"' in log
    assert len(exported_counters(run_dir)) > 300
    assert segments_of(d.pid) == []
    assert not d.socket_path.exists()


def test_kill_9_of_the_daemon_takes_the_workers_and_a_new_daemon_cleans_up(tmp_path):
    sock = tmp_path / "sock" / "control.sock"
    d = DaemonProcess(sock).start()
    try:
        d.call("start", {"setup": str(write_setup(tmp_path, rate=2000))})
        st = d.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > 100, 90, "events flowing")
        pids = [p["pid"] for w in st["workers"].values() for p in w["processes"]]
        assert segments_of(d.pid), "the run's shared memory should exist"
        d.signal(signal.SIGKILL)
        d.wait_exit(10)
        t0 = time.monotonic()
        wait_until(lambda: not any(is_alive(p) for p in pids), 5.0, f"workers {pids} to exit with the daemon")
        assert time.monotonic() - t0 < 5.0
        stale = segments_of(d.pid)
        assert stale, "nothing left to clean (test would prove nothing)"
    finally:
        d.stop()
    d2 = DaemonProcess(sock).start()  # also replaces the stale socket
    try:
        assert segments_of(d.pid) == []
        assert d2.status()["state"] == "idle"
    finally:
        assert d2.stop() == 0


def test_second_daemon_on_the_same_socket_is_refused(daemon):
    other = subprocess.run([sys.executable, "-m", "mimocorb2.supervisor.cli", "--socket", str(daemon.socket_path)],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 1
    assert "already listening" in other.stderr
    assert daemon.socket_path.exists()
    assert daemon.status()["daemon"]["pid"] == daemon.pid


DEVICE_FUNCS = '''
import json, os
from mimocorb2.testing.workers import counting_source as source, draining_sink

def device(io):
    """Publish a device state the way the Red Pitaya importer does, then drain."""
    path = io.run_dir / "status" / f"{io.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"worker": io.name, "state": "failed",
                               "last_error": "BoardError: no answer from\\nboard 10.0.0.9"}))
    os.replace(tmp, path)
    draining_sink(io)
'''


def test_device_state_files_reach_status_and_bad_ones_do_not_hurt(daemon, tmp_path):
    (tmp_path / "funcs.py").write_text(DEVICE_FUNCS)
    setup = tmp_path / "setup.yaml"
    setup.write_text(textwrap.dedent("""\
        Buffers:
          raw: {slot_count: 16, data_length: 4, data_dtype: {x: float64}}
        Workers:
          src: {file: funcs.py, function: source, sinks: [raw], config: {rate: 200}}
          dev: {file: funcs.py, function: device, sources: [raw]}
        stats_interval: 0.1
        """))
    run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])
    st = daemon.wait_for(lambda s: (s["workers"]["dev"].get("device") or {}).get("state") == "failed",
                         60, "the worker's device state in status")
    dev = st["workers"]["dev"]
    assert dev["device"]["last_error"] == "BoardError: no answer from\nboard 10.0.0.9"
    assert dev["device_summary"] == "state=failed  BoardError: no answer from board 10.0.0.9"
    assert dev["processes"][0]["device"] is None  # one file for the worker, none per process
    assert st["workers"]["src"]["device"] is None and st["workers"]["src"]["device_summary"] is None
    text = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(daemon.socket_path),
                           "status"], capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "  dev: state=failed  BoardError: no answer from board 10.0.0.9\n" in text.stdout

    # garbage and a FIFO (a reader opening it blockingly would hang) must not stop the sampler
    status_dir = run_dir / "status"
    (status_dir / "bad.json").write_text("{not json")
    os.mkfifo(status_dir / "x.json")
    (status_dir / "big.json").write_text(json.dumps({"state": "x" * 70_000}))
    daemon.wait_for(lambda s: True, 5, "an answer")
    tmp = status_dir / ".src.json.tmp"
    tmp.write_text(json.dumps({"state": "waiting for NATS", "message": "waiting for NATS at nats://127.0.0.1:4"}))
    os.replace(tmp, status_dir / "src.json")
    st = daemon.wait_for(lambda s: s["workers"]["src"]["device_summary"] == "waiting for NATS at nats://127.0.0.1:4",
                         30, "a status file written after the bad ones")
    assert st["workers"]["dev"]["device"]["state"] == "failed"
    log = daemon.log_text()
    for name in ("bad.json", "x.json", "big.json"):
        assert log.count(f"status/{name}") == 1, log[-3000:]  # logged once, not every sample
    assert daemon.call("stop", {})["state"] == "finished"
    assert daemon.status()["workers"]["dev"]["device"]["state"] == "failed"  # the last word stays
