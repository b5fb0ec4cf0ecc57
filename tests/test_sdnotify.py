"""sd_notify: datagrams to $NOTIFY_SOCKET (paths and abstract names) from a real daemon."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from mimocorb2.supervisor.sdnotify import Notifier
from mimocorb2.testing import DaemonProcess


def _receiver(address: str | bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(0.2)
    return s


def _collect(sock: socket.socket, until, timeout: float = 15.0) -> list[str]:
    """Datagrams until ``until(messages)`` holds, bounded by ``timeout``."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        if until(messages):
            return messages
    raise TimeoutError(f"notify messages so far: {messages}")


def _has(messages: list[str], line: str) -> bool:
    return any(line in m.split("\n") for m in messages)


def test_notifier_abstract_and_path(tmp_path):
    abstract = f"@mimocorb2-test-{os.getpid()}"
    with _receiver(b"\0" + abstract[1:].encode()) as rx:
        n = Notifier.from_environment({"NOTIFY_SOCKET": abstract}, consume=False)
        assert n.enabled and n.ready("idle") and n.status("x\ny") and n.watchdog() and n.stopping()
        got = _collect(rx, lambda m: len(m) == 4)
        n.close()
    assert "READY=1" in got[0].split("\n") and "STATUS=idle" in got[0].split("\n")
    assert got[1] == "STATUS=x y" and got[2] == "WATCHDOG=1" and got[3] == "STOPPING=1"
    path = tmp_path / "notify.sock"
    with _receiver(str(path)) as rx:
        n = Notifier.from_environment({"NOTIFY_SOCKET": str(path)}, consume=False)
        assert n.ready()
        assert _has(_collect(rx, lambda m: len(m) == 1), "READY=1")
        n.close()


def test_notifier_without_socket_and_env_consumed():
    env = {"NOTIFY_SOCKET": "/nonexistent/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_environment(env)
    assert env == {}, "the variables must not reach worker processes"
    assert n.watchdog_interval == pytest.approx(1.0)
    assert n.notify("READY=1") is False  # unreachable socket: reported, never raised
    assert Notifier.from_environment({}).notify("READY=1") is False
    other = Notifier.from_environment({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}, consume=False)
    assert other.watchdog_interval is None  # the watchdog is meant for another process


@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_daemon_notifies_systemd(tmp_path, kind):
    if kind == "abstract":
        name = f"@mimocorb2-test-d-{os.getpid()}"
        rx = _receiver(b"\0" + name[1:].encode())
    else:
        name = str(tmp_path / "notify.sock")
        rx = _receiver(name)
    env = dict(os.environ, NOTIFY_SOCKET=name, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    daemon = DaemonProcess(tmp_path / "s" / "control.sock", env=env)
    with rx:
        daemon.start()
        try:
            got = _collect(rx, lambda m: _has(m, "READY=1") and sum(_has([x], "WATCHDOG=1") for x in m) >= 3)
            ready = next(m for m in got if _has([m], "READY=1"))
            assert f"MAINPID={daemon.pid}" in ready.split("\n")
            assert any(line.startswith("STATUS=") for m in got for line in m.split("\n"))
            daemon.call("shutdown")
            got = _collect(rx, lambda m: _has(m, "STOPPING=1"))
            assert daemon.wait_exit(30) == 0
        finally:
            daemon.stop()


def test_workers_do_not_inherit_the_notify_socket(tmp_path):
    (tmp_path / "f.py").write_text(
        "import os, json\n"
        "from mimocorb2.worker_templates import Importer\n"
        "def src(io):\n"
        "    keys = [k for k in os.environ if k.startswith(('NOTIFY_', 'WATCHDOG_'))]\n"
        "    (io.run_dir / 'env.json').write_text(json.dumps(keys))\n"
        "    def gen():\n"
        "        yield None\n"
        "    Importer(io)(gen)\n")
    (tmp_path / "setup.yaml").write_text(
        "Buffers:\n  raw: {slot_count: 4, data_length: 1, data_dtype: {x: float64}}\n"
        "Workers:\n  src: {file: f.py, function: src, sinks: [raw]}\n"
        "  snk: {function: exporters.drain, sources: [raw]}\n")
    name = f"@mimocorb2-test-env-{os.getpid()}"
    rx = _receiver(b"\0" + name[1:].encode())
    env = dict(os.environ, NOTIFY_SOCKET=name, WATCHDOG_USEC="10000000")
    daemon = DaemonProcess(tmp_path / "s" / "control.sock", env=env)
    with rx:
        daemon.start()
        try:
            run_dir = Path(daemon.call("start", {"setup": str(tmp_path / "setup.yaml")})["directory"])
            st = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 90, "run ended")
            assert st["state"] == "finished", st
        finally:
            daemon.stop()
    assert json.loads((run_dir / "env.json").read_text()) == []
