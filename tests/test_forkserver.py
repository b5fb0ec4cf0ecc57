"""Workers are forked from a warm forkserver, and still never outlive their supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mimocorb2.testing import DaemonProcess, is_alive, parent_of, wait_until

FUNCS = '''
from mimocorb2.testing.workers import counting_source, draining_sink as sink

def source(io):
    counting_source(io, pace=0.001)
'''


def write_setup(tmp_path: Path, n_events: int) -> Path:
    (tmp_path / "funcs.py").write_text(FUNCS)
    setup = tmp_path / "setup.yaml"
    setup.write_text(textwrap.dedent(f"""\
        Buffers:
          raw: {{slot_count: 16, data_length: 4, data_dtype: {{x: float64}}}}
        Workers:
          src: {{file: funcs.py, function: source, sinks: [raw], config: {{n_events: {n_events}}}}}
          snk: {{file: funcs.py, function: sink, sources: [raw], number_of_processes: 2}}
        stats_interval: 0.2
        """))
    return setup


def write_single_source_setup(tmp_path: Path, funcs: str) -> Path:
    """setup.yaml: worker ``source`` of ``funcs`` (written to funcs.py) into one small buffer, drained."""
    (tmp_path / "funcs.py").write_text(funcs)
    setup = tmp_path / "setup.yaml"
    setup.write_text(textwrap.dedent("""\
        Buffers:
          raw: {slot_count: 4, data_length: 1, data_dtype: {x: float64}}
        Workers:
          src: {file: funcs.py, function: source, sinks: [raw]}
          snk: {function: exporters.drain, sources: [raw]}
        """))
    return setup


def test_kill_9_of_the_daemon_takes_the_forkserver_and_its_workers(tmp_path):
    d = DaemonProcess(tmp_path / "sock" / "control.sock").start()
    try:
        d.call("start", {"setup": str(write_setup(tmp_path, 0))})
        st = d.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > 100, 90, "events flowing")
        workers = [p["pid"] for w in st["workers"].values() for p in w["processes"]]
        servers = {parent_of(pid) for pid in workers}
        assert len(servers) == 1 and d.pid not in servers  # forked from one forkserver, not the daemon
        [server] = servers
        assert parent_of(server) == d.pid
        d.signal(signal.SIGKILL)
        d.wait_exit(10)
        wait_until(lambda: not is_alive(server), 5.0, f"forkserver {server} to exit with the daemon")
        wait_until(lambda: not any(is_alive(p) for p in workers), 5.0, f"workers {workers} to exit with the daemon")
    finally:
        d.stop()


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_foreground_run_with_either_start_method(tmp_path, method):
    setup = write_setup(tmp_path, 500)
    env = {**os.environ, "MIMOCORB2_START_METHOD": method}
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", str(setup)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "raw" in done.stdout and " 500 events" in done.stdout


ENV_FUNCS = '''
import os
from mimocorb2.worker_templates import Importer

def source(io):
    (io.run_dir / "seen.txt").write_text(os.environ.get("MIMOCORB2_TEST_MARK", "<unset>"))
    Importer(io)(lambda: iter([None]))
'''


def test_a_worker_sees_the_environment_of_its_starter_not_of_the_forkserver(tmp_path, monkeypatch):
    from mimocorb2.runtime import Runner, start_worker_server
    from mimocorb2.setup import load_setup

    start_worker_server(wait=True)  # the forkserver exists before the variable is set
    monkeypatch.setenv("MIMOCORB2_TEST_MARK", "set after the forkserver started")
    setup = write_single_source_setup(tmp_path, ENV_FUNCS)
    report = Runner(load_setup(setup)).run()
    assert report.ok, report
    assert (report.run_dir / "seen.txt").read_text() == "set after the forkserver started"


FOREIGN = '''
import multiprocessing, os, sys
from pathlib import Path
from mimocorb2.runtime import Runner
from mimocorb2.setup import load_setup

if __name__ == "__main__":
    # something else in this process uses multiprocessing's forkserver for its own purposes
    foreign = multiprocessing.get_context("forkserver").Process(target=print)
    foreign.start()
    foreign.join()
    report = Runner(load_setup(Path(sys.argv[1]))).run()
    assert report.ok, report.failed_workers
    print(os.getpid(), (report.run_dir / "ppid.txt").read_text())
'''

PPID_FUNCS = '''
import os
from mimocorb2.worker_templates import Importer

def source(io):
    (io.run_dir / "ppid.txt").write_text(str(os.getppid()))
    Importer(io)(lambda: iter([None]))
'''


def test_a_forkserver_started_by_something_else_is_not_shared(tmp_path):
    setup = write_single_source_setup(tmp_path, PPID_FUNCS)
    script = tmp_path / "foreign.py"
    script.write_text(FOREIGN)
    done = subprocess.run([sys.executable, str(script), str(setup)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    starter, parent = done.stdout.split()[-2:]
    assert parent == starter  # spawned by the runner itself, not forked from the foreign forkserver
