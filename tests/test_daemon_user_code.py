"""The daemon never runs user code: worker files that exit, sleep or spin at import.

Against a live ``mimocorb2d``: ``check`` and ``start`` answer promptly (validation
only parses the file), the daemon stays up and answers, the run fails cleanly or
can be aborted, a later good run works, and ``shutdown`` ends the process.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mimocorb2.control.client import Client, RequestFailed
from mimocorb2.testing import DaemonProcess, segments_of

GOOD_FUNCS = '''
import numpy as np
from mimocorb2.worker_templates import Importer, Exporter

def source(buffer_io):
    imp = Importer(buffer_io)
    def gen():
        for i in range(200):
            d = np.zeros(imp.data_example.shape, imp.data_example.dtype)
            d["x"] = i
            yield d
        yield None
    imp(gen)

def sink(buffer_io):
    for data, meta in Exporter(buffer_io):
        pass
'''

#: worker files that misbehave when imported; each also defines the function statically
BAD_IMPORTS = {
    "exits": "import os\nos._exit(3)\n",
    "sleeps": "import time\ntime.sleep(3600)\n",
    "spins": "while True:\n    pass\n",
    "raises": "raise RuntimeError('no hardware on this bench')\n",
}
#: a call that must come back well before anything wedged would let it
PROMPT = 15.0


def write_setup(directory: Path, bad: str | None = None) -> Path:
    """A two-worker setup; with ``bad``, the sink's file misbehaves at import that way."""
    (directory / "good.py").write_text(GOOD_FUNCS)
    sink_file = "good.py"
    if bad is not None:
        sink_file = f"bad_{bad}.py"
        (directory / sink_file).write_text(BAD_IMPORTS[bad] + "\ndef sink(buffer_io):\n    pass\n")
    setup = directory / f"setup_{bad or 'good'}.yaml"
    setup.write_text(textwrap.dedent(f"""\
        Buffers:
          raw: {{slot_count: 16, data_length: 4, data_dtype: {{x: float64}}}}
        Workers:
          src: {{file: good.py, function: source, sinks: [raw]}}
          snk: {{file: {sink_file}, function: sink, sources: [raw], max_restarts: 1}}
        drain_timeout: 5
        stats_interval: 0.2
        """))
    return setup


def call(daemon: DaemonProcess, cmd: str, args: dict | None = None) -> dict:
    with Client(daemon.socket_path, timeout=PROMPT) as client:
        return client.call(cmd, args)


def ended(status: dict) -> bool:
    return status["state"] in ("finished", "failed")


@pytest.fixture
def daemon(tmp_path):
    d = DaemonProcess(tmp_path / "sock" / "control.sock").start()
    yield d
    d.stop()  # already gone in most tests; kill only if something went wrong
    assert segments_of(d.pid) == [], "the daemon left shared memory behind"


@pytest.mark.parametrize("bad", sorted(BAD_IMPORTS))
def test_worker_file_misbehaving_at_import_never_touches_the_daemon(daemon, tmp_path, bad):
    setup = write_setup(tmp_path, bad)
    # validation parses the file: it answers at once and does not execute it
    assert call(daemon, "check", {"setup": str(setup)})["workers"] == ["src", "snk"]
    result = call(daemon, "start", {"setup": str(setup)})
    run_dir = Path(result["directory"])
    assert call(daemon, "ping")["pid"] == daemon.pid

    if bad in ("exits", "raises"):
        status = daemon.wait_for(ended, 60, "the bad run ended")
        assert status["state"] == "failed"
        snk = status["workers"]["snk"]
        assert snk["state"] == "failed"
        if bad == "raises":  # a clean start failure: not restarted, the reason in status
            assert snk["restarts"] == 0
            assert "RuntimeError: no hardware on this bench (line 1)" in snk["last_exit"]
            assert "no hardware on this bench" in status["run"]["error"]
            log = (run_dir / "logs" / "snk.log").read_text()
            assert "cannot load the worker's function" in log and "bad_raises.py" in log
        else:
            assert "exited with code 3" in snk["last_exit"]
    else:  # sleeping or spinning in import: the run waits, the daemon answers, abort ends it
        daemon.wait_for(lambda s: s["workers"]["snk"]["alive"] == 1, 30, "sink process up")
        assert call(daemon, "status")["state"] == "running"
        summary = call(daemon, "abort")
        assert summary["state"] == "failed" or summary["state"] == "finished"

    # the daemon is unharmed: a good run afterwards works
    good = write_setup(tmp_path)
    call(daemon, "start", {"setup": str(good)})
    status = daemon.wait_for(ended, 60, "the good run ended")
    assert status["state"] == "finished", status["run"]
    assert status["buffers"]["raw"]["event_count"] == 200

    # shutdown ends the process, promptly, and nothing of ours keeps a CPU busy
    call(daemon, "shutdown")
    assert daemon.wait_exit(30) == 0


def test_template_refusing_its_buffers_fails_the_start_without_restarts(daemon, tmp_path):
    setup = write_setup(tmp_path)
    (tmp_path / "filt.py").write_text(
        "from mimocorb2.worker_templates import Filter\n"
        "def no_sinks(buffer_io):\n    Filter(buffer_io)(lambda data: True)\n")
    setup.write_text(setup.read_text().replace(
        "  snk:", "  filt: {file: filt.py, function: no_sinks, sources: [raw]}\n  snk:"))
    call(daemon, "start", {"setup": str(setup)})
    status = daemon.wait_for(ended, 60, "the run ended")
    assert status["state"] == "failed"
    filt = status["workers"]["filt"]
    assert filt["state"] == "failed" and filt["restarts"] == 0
    assert "Filter must have at least 1 sinks, got 0" in filt["last_exit"]
    assert "Filter must have at least 1 sinks" in status["run"]["error"]


def test_check_and_start_refuse_a_fifo_and_dev_zero_promptly(daemon, tmp_path):
    fifo = tmp_path / "setup.yaml"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        for cmd in ("check", "start"):
            started = time.monotonic()
            with pytest.raises(RequestFailed) as info:
                call(daemon, cmd, {"setup": path})
            assert "not a regular file" in str(info.value), str(info.value)
            assert time.monotonic() - started < PROMPT
    assert call(daemon, "ping")["pid"] == daemon.pid
    call(daemon, "shutdown")
    assert daemon.wait_exit(30) == 0


def test_mimocorb2_check_import_runs_the_file_in_a_child_with_a_timeout(tmp_path):
    setup = write_setup(tmp_path, "sleeps")
    command = [sys.executable, "-m", "mimocorb2", "check", str(setup)]
    static = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert static.returncode == 0, static.stdout + static.stderr
    live = subprocess.run([*command, "--import", "--import-timeout", "2"], capture_output=True,
                          text=True, timeout=60)
    assert live.returncode == 1
    assert "importing" in live.stdout and "took longer than 2 s" in live.stdout, live.stdout

    for bad, expected in (("exits", "exited with code 3"),
                          ("raises", "RuntimeError: no hardware on this bench (line 1)")):
        setup = write_setup(tmp_path, bad)
        live = subprocess.run([*command[:-1], str(setup), "--import"], capture_output=True,
                              text=True, timeout=60)
        assert live.returncode == 1
        assert expected in live.stdout, live.stdout
    good = subprocess.run([*command[:-1], str(write_setup(tmp_path)), "--import"],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr


def _run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def test_a_blocking_call_that_hangs_is_abandoned_and_does_not_keep_the_process():
    done = _run_script("""
        import asyncio, threading
        from mimocorb2.supervisor.blocking import BlockingTimeout, in_daemon_thread
        never = threading.Event()
        async def main():
            try:
                await in_daemon_thread(never.wait, timeout=0.2, what="waiting for nothing")
            except BlockingTimeout as exc:
                print("refused:", exc)
            print("result:", await in_daemon_thread(sum, [1, 2], timeout=10, what="adding"))
        asyncio.run(main())
        """)
    assert done.returncode == 0, done.stderr
    assert "refused: waiting for nothing took longer than 0.2 s; gave up waiting" in done.stdout
    assert "result: 3" in done.stdout


def test_exit_guard_ends_a_process_whose_thread_is_wedged():
    done = _run_script("""
        import threading
        from mimocorb2 import logsetup
        from mimocorb2.supervisor.blocking import arm_exit_guard
        logsetup.configure_daemon_logging("INFO")
        threading.Thread(target=threading.Event().wait, name="wedged").start()  # not a daemon
        arm_exit_guard(0, grace=0.5)
        """)
    assert done.returncode == 0
    assert "process did not exit after shutdown: exiting anyway" in done.stderr
    assert "wedged" in done.stderr


def test_foreground_run_reports_a_worker_that_could_not_start(tmp_path):
    setup = write_setup(tmp_path, "raises")
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", "-q", str(setup)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "worker 'snk' failed (exit codes [78])" in done.stderr, done.stderr
    assert "it could not start: worker 'snk': cannot load function 'sink'" in done.stderr
    assert "RuntimeError: no hardware on this bench (line 1)" in done.stderr


def test_mimoctl_start_prints_setup_warnings(daemon, tmp_path):
    setup = write_setup(tmp_path)
    (tmp_path / "star.py").write_text("from good import *\n")
    setup.write_text(setup.read_text().replace("file: good.py, function: sink",
                                               "file: star.py, function: sink"))
    done = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket",
                           str(daemon.socket_path), "start", str(setup)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "warning: " in done.stdout and "'from good import *' (line 1)" in done.stdout
    status = daemon.wait_for(ended, 60, "the run ended")
    assert status["state"] == "finished"  # the name was there after all
    call(daemon, "shutdown")
    assert daemon.wait_exit(30) == 0


def test_logs_of_a_worker_whose_log_became_a_fifo_answer_promptly(daemon, tmp_path):
    setup = write_setup(tmp_path)
    (tmp_path / "fifo_log.py").write_text(
        "import os, time\n"
        "from mimocorb2.worker_templates import Exporter\n"
        "def swap(buffer_io):\n"
        "    log = buffer_io.run_dir / 'logs' / f'{buffer_io.name}.log'\n"
        "    os.unlink(log)\n"
        "    os.mkfifo(log)  # opening it for reading would wait for a writer forever\n"
        "    for data, meta in Exporter(buffer_io):\n"
        "        pass\n")
    setup.write_text(setup.read_text().replace("file: good.py, function: sink",
                                               "file: fifo_log.py, function: swap"))
    run_dir = Path(call(daemon, "start", {"setup": str(setup)})["directory"])
    fifo = run_dir / "logs" / "snk.log"
    deadline = time.monotonic() + 60
    while not (fifo.exists() and stat.S_ISFIFO(fifo.stat().st_mode)):
        assert time.monotonic() < deadline, "the worker did not swap its log"
        time.sleep(0.02)
    while True:  # the source may not have logged its start yet on a loaded machine
        files = {f["name"]: f for f in call(daemon, "logs")["files"]}
        assert files["snk"]["text"] == ""  # skipped, not waited for
        if "worker process started" in files["src"]["text"]:
            break
        assert time.monotonic() < deadline, "the source's log never showed its start"
        time.sleep(0.05)
    daemon.wait_for(ended, 60, "the run ended")
    call(daemon, "shutdown")
    assert daemon.wait_exit(30) == 0
