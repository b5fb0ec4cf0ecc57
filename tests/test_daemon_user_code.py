"""The daemon never runs user code: worker files that exit, sleep or spin at import.

Against a live ``mimocorb2d``: ``check`` and ``start`` answer promptly (validation
only parses the file), the daemon stays up and answers, the run fails cleanly or
can be aborted, a later good run works, and ``shutdown`` ends the process. A
process still importing shows so in status; one that ends or hangs there is a
setup failure, never restarted. A restarted process's old device file is marked
stale until its successor rewrites it.
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
from mimocorb2.runtime import read_setup_failure
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
    "kills": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "sleeps": "import time\ntime.sleep(3600)\n",
    "spins": "while True:\n    pass\n",
    "raises": "raise RuntimeError('no hardware on this bench')\n",
}
#: a call that must come back well before anything wedged would let it
PROMPT = 15.0


def write_setup(directory: Path, bad: str | None = None, sink_keys: str = "") -> Path:
    """A two-worker setup; with ``bad``, the sink's file misbehaves at import that way.

    ``sink_keys``: more keys of the sink worker (``", stall_timeout: 1"``).
    """
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
          snk: {{file: {sink_file}, function: sink, sources: [raw], max_restarts: 1{sink_keys}}}
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

    if bad in ("exits", "kills", "raises"):
        status = daemon.wait_for(ended, 60, "the bad run ended")
        assert status["state"] == "failed"
        snk = status["workers"]["snk"]
        # a start failure, however it ended: not restarted (it would do the same again), the reason in status
        assert snk["state"] == "failed" and snk["restarts"] == 0, snk
        if bad == "raises":
            assert "RuntimeError: no hardware on this bench (line 1)" in snk["last_exit"]
            assert "no hardware on this bench" in status["run"]["error"]
            log = (run_dir / "logs" / "snk.log").read_text()
            assert "cannot load the worker's function" in log and "bad_raises.py" in log
        else:  # it could not say why itself: the supervisor tells from its heartbeat stage
            how = {"exits": "exited with code 3", "kills": "killed by SIGKILL"}[bad]
            reason = f"{how} while importing bad_{bad}.py"
            assert snk["last_exit"] == reason and snk["error"] == reason
            assert reason in status["run"]["error"]
            assert read_setup_failure(run_dir, "snk") == reason
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


def mimoctl_status(daemon: DaemonProcess) -> str:
    done = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(daemon.socket_path),
                           "status"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_shows_a_process_importing_its_file(daemon, tmp_path):
    call(daemon, "start", {"setup": str(write_setup(tmp_path, "sleeps"))})
    # the source imports its own (good) file meanwhile: on a loaded machine that takes a while
    status = daemon.wait_for(lambda s: s["workers"]["snk"]["processes"][0]["stage"] == "loading"
                             and s["workers"]["src"]["state"] == "running", 30,
                             "the sink importing its file while the source runs")
    snk = status["workers"]["snk"]
    assert snk["state"] == "starting" and snk["processes"][0]["loading"].startswith("importing bad_sleeps.py for ")
    assert status["workers"]["src"]["state"] == "running"
    assert status["workers"]["src"]["processes"][0]["loading"] is None
    pid = snk["processes"][0]["pid"]
    assert f"  snk#0 (pid {pid}): importing bad_sleeps.py for " in mimoctl_status(daemon)
    call(daemon, "abort")  # ended for the run's sake: not a setup failure
    status = call(daemon, "status")
    assert status["workers"]["snk"]["state"] == "stopped" and status["workers"]["snk"]["error"] is None
    call(daemon, "shutdown")
    assert daemon.wait_exit(30) == 0


def test_a_process_spinning_at_import_past_its_bound_is_a_setup_failure(daemon, tmp_path):
    # the bound is the stall_timeout, at least 20 s (policy.IMPORT_TIMEOUT_MIN)
    run_dir = Path(call(daemon, "start", {"setup": str(write_setup(tmp_path, "spins", ", stall_timeout: 1"))})[
        "directory"])
    status = daemon.wait_for(ended, 90, "the run ended")
    snk = status["workers"]["snk"]
    assert snk["state"] == "failed" and snk["restarts"] == 0, snk
    assert "stuck importing bad_spins.py for " in snk["error"], snk
    reason = read_setup_failure(run_dir, "snk")
    assert reason is not None and reason.startswith("stuck importing bad_spins.py for "), reason
    assert 20 <= int(reason.split(" for ")[1].split()[0]) < 60
    assert status["state"] == "failed" and "stuck importing bad_spins.py" in status["run"]["error"]
    assert call(daemon, "ping")["pid"] == daemon.pid  # the daemon is unharmed
    call(daemon, "shutdown")
    assert daemon.wait_exit(30) == 0


DEVICE_FUNCS = '''
from mimocorb2.testing.workers import counting_source as endless_source

def flaky_device(buffer_io):
    """Publishes its device state per process, fails, and does it again when the test says so."""
    import json, os, time
    run_dir = buffer_io.run_dir
    path = run_dir / "status" / f"{buffer_io.name}.{buffer_io.process_index}.json"

    def publish(message):
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"state": "connected", "message": message, "pid": os.getpid()}))
        os.replace(tmp, path)

    def wait_for(name):
        while not (run_dir / name).exists():
            time.sleep(0.02)

    if not path.exists():
        publish("first process")
        wait_for("crash")
        raise RuntimeError("lost the board")
    wait_for("publish")  # the old file stays meanwhile
    publish("second process")
    wait_for("quit")
    raise RuntimeError("lost the board again")
'''


def test_a_restarted_or_ended_process_device_file_is_not_shown_as_current(daemon, tmp_path):
    (tmp_path / "dev.py").write_text(DEVICE_FUNCS)
    setup = write_setup(tmp_path)
    text = setup.read_text().replace("file: good.py, function: source,", "file: dev.py, function: endless_source, "
                                     "config: {rate: 200},")  # the run goes on after dev failed
    setup.write_text(text.replace("  snk:", "  dev: {file: dev.py, function: flaky_device, sources: [raw], "
                                  "max_restarts: 1}\n  snk:") + "on_worker_failure: continue\n")
    run_dir = Path(call(daemon, "start", {"setup": str(setup)})["directory"])

    def dev(status):
        return status["workers"]["dev"]

    first = daemon.wait_for(lambda s: (dev(s)["device"] or {}).get("message") == "first process", 30,
                            "the first process's device file")["workers"]["dev"]
    assert first["device_stale"] is None and first["device_summary"] == "first process"
    assert first["processes"][0]["device_stale"] is None
    (run_dir / "crash").touch()
    old = daemon.wait_for(lambda s: dev(s)["restarts"] == 1 and dev(s)["alive"] == 1, 30,
                          "the process restarted")["workers"]["dev"]
    assert old["device"]["message"] == "first process"  # still there, but marked
    assert old["device_stale"] == "from an earlier process"
    assert old["device_summary"] == "[stale: from an earlier process] first process"
    assert old["processes"][0]["device_stale"] == "from an earlier process"
    assert "  dev: [stale: from an earlier process] first process\n" in mimoctl_status(daemon)
    (run_dir / "publish").touch()
    new = daemon.wait_for(lambda s: dev(s)["device"]["message"] == "second process", 30,
                          "the new process's device file")["workers"]["dev"]
    assert new["device_stale"] is None and new["device_summary"] == "second process"
    (run_dir / "quit").touch()
    gone = daemon.wait_for(lambda s: dev(s)["state"] == "failed", 30, "the worker failed")["workers"]["dev"]
    assert gone["device_stale"] == "its process ended"
    assert gone["device_summary"] == "[stale: its process ended] second process"
    assert call(daemon, "stop")["state"] == "failed"
    last = call(daemon, "status")["workers"]["dev"]
    assert last["device"]["message"] == "second process" and last["device_stale"] is None  # the run's last word


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
    assert "Filter must have at least 1 buffer in sinks, got 0" in filt["last_exit"]
    assert "Filter must have at least 1 buffer in sinks" in status["run"]["error"]


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
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", "-q", str(write_setup(tmp_path, "exits"))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "worker 'snk' failed (exit codes [3])" in done.stderr, done.stderr
    assert "it could not start: exited with code 3 while importing bad_exits.py" in done.stderr


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
