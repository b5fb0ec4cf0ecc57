"""`mimoctl` as operators run it: a subprocess against a real daemon; output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mimocorb2.control import mimoctl
from mimocorb2.testing import DaemonProcess


def run_ctl(*args: str, socket: Path | None = None, env: dict | None = None, timeout: float = 60):
    cmd = [sys.executable, "-m", "mimocorb2.control.mimoctl"]
    if socket is not None:
        cmd += ["--socket", str(socket)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ))


SOURCE = '''
import numpy as np
from mimocorb2.worker_templates import Importer, Exporter

def source(io):
    imp = Importer(io)
    def gen():
        import time
        i = 0
        while True:
            d = np.zeros(imp.data_example.shape, imp.data_example.dtype)
            yield d
            i += 1
            time.sleep(0.001)
    imp(gen)

def sink(io):
    n = 0
    for data, meta in Exporter(io):
        n += 1
    io.logger.info("sink saw %d events", n)
'''


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = DaemonProcess(tmp_path_factory.mktemp("ctl") / "s" / "control.sock").start()
    yield d
    assert d.stop() == 0


@pytest.fixture
def setup_file(tmp_path):
    (tmp_path / "f.py").write_text(SOURCE)
    p = tmp_path / "setup.yaml"
    p.write_text(textwrap.dedent("""\
        Buffers:
          raw: {slot_count: 16, data_length: 4, data_dtype: {x: float64}}
        Workers:
          src: {file: f.py, function: source, sinks: [raw]}
          snk: {file: f.py, function: sink, sources: [raw]}
        stats_interval: 0.2
        """))
    return p


def test_usage_errors_exit_2():
    assert run_ctl().returncode == 2
    assert run_ctl("fly").returncode == 2
    assert run_ctl("start").returncode == 2
    assert run_ctl("start", "x.yaml", "--max-events", "-3").returncode == 2
    assert "--max-events N" in run_ctl("start", "--help").stdout  # not MAX_EVENTS
    with pytest.raises(SystemExit) as err:
        mimoctl.build_parser().parse_args(["status", "--interval", "0"])
    assert err.value.code == 2


def test_unreachable_daemon_exits_3_with_a_hint(tmp_path):
    r = run_ctl("status", socket=tmp_path / "none.sock")
    assert r.returncode == 3
    assert "mimocorb2d" in r.stderr and "hint" in r.stderr
    env = dict(os.environ, MIMOCORB2_SOCKET=str(tmp_path / "env.sock"))
    r = run_ctl("ping", env=env)
    assert r.returncode == 3 and "env.sock" in r.stderr


def test_check_validates_locally(tmp_path, setup_file):
    r = run_ctl("check", str(setup_file))
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("Buffers:\n  raw: {slot_count: -1, data_length: 4, data_dtype: {x: nope}}\n"
                   "Workers:\n  w: {function: x, sinks: [rawx]}\n")
    r = run_ctl("check", str(bad))
    assert r.returncode == 1
    assert r.stderr.count("\n  - ") >= 3, r.stderr  # every problem listed
    assert r.stderr.splitlines()[0] == f"{bad}: {r.stderr.count(chr(10) + '  - ')} problems"
    warned = tmp_path / "warned.yaml"  # a key without a close match: a warning, printed once
    warned.write_text(setup_file.read_text().replace("sinks: [raw]}", "sinks: [raw], colour: red}"))
    r = run_ctl("check", str(warned))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("colour") == 1, r.stdout


def test_session(daemon, setup_file, tmp_path):
    sock = daemon.socket_path
    r = run_ctl("status", socket=sock)
    assert r.returncode == 0 and "state: idle" in r.stdout
    r = run_ctl("web", socket=sock)  # the test daemon runs with --no-web
    assert r.returncode == 1
    assert "serves no web page: it was started with --no-web, or the address" in r.stderr
    assert run_ctl("stop", socket=sock).returncode == 1  # nothing to stop: refused

    bad = tmp_path / "bad.yaml"
    bad.write_text("Buffers: {}\nWorkers:\n  w: {function: x, sources: [nowhere]}\n")
    r = run_ctl("start", str(bad), socket=sock)
    assert r.returncode == 1 and "nowhere" in r.stderr
    assert r.stderr.splitlines()[0] == f"mimoctl: start refused: setup {bad}: 2 problems", r.stderr

    r = run_ctl("start", str(setup_file), socket=sock)
    assert r.returncode == 0, r.stderr
    assert "run started" in r.stdout
    assert run_ctl("start", str(setup_file), socket=sock).returncode == 1  # one run at a time
    daemon.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > 50, 90, "events")

    r = run_ctl("status", "--json", socket=sock)
    assert r.returncode == 0
    status = json.loads(r.stdout)
    assert status["state"] == "running"
    assert set(status) >= {"state", "run", "buffers", "workers"}
    assert Path(status["run"]["directory"]).is_dir()
    manual_keys = {"event_count", "filled_slots", "empty_slots", "flush_event_received", "rate",
                   "average_deadtime", "paused_count", "paused", "ended"}
    assert manual_keys <= set(status["buffers"]["raw"])
    for w in status["workers"].values():
        assert {"state", "restarts", "processes"} <= set(w)
        assert all({"pid", "alive"} <= set(p) for p in w["processes"])

    r = run_ctl("status", socket=sock)
    assert "raw" in r.stdout and "snk" in r.stdout and "BUFFER" in r.stdout
    assert " up 0:" in next(line for line in r.stdout.splitlines() if line.startswith("run: "))

    assert run_ctl("pause", socket=sock).stdout.strip() == "paused: raw"
    assert run_ctl("pause", "nope", socket=sock).returncode == 1
    assert run_ctl("resume", socket=sock).stdout.strip() == "resumed: raw"

    r = run_ctl("stop", socket=sock)
    assert r.returncode == 0, r.stderr
    assert "events lost: 0" in r.stdout
    run_line = next(line for line in run_ctl("status", socket=sock).stdout.splitlines()
                    if line.startswith("run: "))
    assert " ran 0:" in run_line and " up " not in run_line  # how long it ran, not "up"
    ended = json.loads(run_ctl("status", "--json", socket=sock).stdout)
    assert ended["buffers"]["raw"]["event_count"] > 50
    assert ended["buffers"]["raw"]["rate"] == 0  # nothing flows after the end
    r = run_ctl("logs", socket=sock)
    assert r.returncode == 0 and "snk | " in r.stdout and "sink saw" in r.stdout
    r = run_ctl("logs", "snk", socket=sock)
    assert r.returncode == 0 and "sink saw" in r.stdout and "snk | " not in r.stdout
    assert run_ctl("logs", "ghost", socket=sock).returncode == 1


def test_status_watch_refreshes(daemon):
    proc = subprocess.Popen([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket",
                             str(daemon.socket_path), "status", "--watch", "--json", "--interval", "0.1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert all("state" in s for s in lines)
        assert lines[0]["daemon"]["uptime"] < lines[2]["daemon"]["uptime"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_shutdown_exits_the_daemon(tmp_path):
    d = DaemonProcess(tmp_path / "s" / "c.sock").start()
    try:
        r = run_ctl("shutdown", socket=d.socket_path)
        assert r.returncode == 0
        assert d.wait_exit(30) == 0
    finally:
        d.stop()
    assert run_ctl("status", socket=d.socket_path).returncode == 3


def test_logs_follow(daemon, setup_file):
    sock = daemon.socket_path
    assert run_ctl("start", str(setup_file), socket=sock).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(sock),
                             "logs", "-f", "snk"], stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "worker=snk" in first
        assert run_ctl("stop", socket=sock).returncode == 0
        # lines written after the follower started arrive too
        deadline = __import__("time").monotonic() + 60
        seen = first
        while "sink saw" not in seen and __import__("time").monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "sink saw" in seen
    finally:
        proc.terminate()
        proc.wait(10)
