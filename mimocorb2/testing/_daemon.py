"""A real `mimocorb2d` in a subprocess, for tests, benchmarks and the demo.

    with DaemonProcess(socket_path) as d:
        d.call("start", {"setup": "/abs/setup.yaml"})
        d.wait_for(lambda s: s["state"] == "finished", timeout=30)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimocorb2.control.client import Client, DaemonUnreachable


class DaemonProcess:
    """A real ``mimocorb2d`` in a subprocess on ``socket_path`` (see the module docstring).

    Invariants: ``proc`` is None until :meth:`start`; the daemon serves no web page unless
    ``extra_args`` ask for one (tests run side by side: no fixed port); its stdout and stderr
    are appended to ``log_path``. :meth:`stop` (or leaving the ``with`` block) always ends it.
    """

    def __init__(self, socket_path: str | os.PathLike[str], *, env: dict[str, str] | None = None,
                 log_path: str | os.PathLike[str] | None = None, log_level: str = "INFO",
                 extra_args: list[str] | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.env = dict(os.environ if env is None else env)
        self.log_path = Path(log_path) if log_path else self.socket_path.parent / "mimocorb2d.stderr"
        self.log_level = log_level
        self.extra_args = list(extra_args or [])
        if not any(arg.startswith("--web") or arg in ("--no-web", "--config") for arg in self.extra_args):
            self.extra_args.append("--no-web")  # tests run side by side: no fixed port unless asked
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None

    @property
    def pid(self) -> int:
        """The daemon's pid; requires :meth:`start` to have been called."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> "DaemonProcess":
        """Spawn the daemon and wait, at most ``timeout`` s, until this very process answers ``ping``.

        Raises RuntimeError with the log's tail if it exits (e.g. another daemon holds the socket),
        TimeoutError (after killing it) if it does not answer in time. Returns ``self``.
        """
        self.socket_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mimocorb2.supervisor.cli", "--socket", str(self.socket_path),
             "--log-level", self.log_level, *self.extra_args],
            env=self.env, stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mimocorb2d exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if self.call("ping", timeout=2.0)["pid"] == self.proc.pid:
                    return self
                # another daemon answers on this socket; ours will give up (exit 1)
            except DaemonUnreachable:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"mimocorb2d did not answer within {timeout} s:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        """Everything the daemon has written to ``log_path`` so far; empty if unreadable."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = 60.0) -> Any:
        """One request on a fresh connection; raises RequestFailed or DaemonUnreachable as :class:`Client`."""
        with Client(self.socket_path, timeout=timeout) as client:
            return client.call(cmd, args)

    def status(self) -> dict[str, Any]:
        """The ``status`` reply, alarms included."""
        return self.call("status")

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                 what: str = "condition") -> dict[str, Any]:
        """Poll status until ``predicate(status)`` holds; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}; last status: {status}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the daemon to exit and return its exit code; TimeoutExpired after ``timeout`` s."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the daemon: a first SIGTERM/SIGINT drains the run, a second aborts it."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the daemon if it runs and reap it (at most 10 s); a crash, as the next daemon sees it.

        Its socket file and shared memory stay behind for the next daemon's startup to clear;
        :meth:`stop` still closes the log file.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Graceful: SIGTERM and wait; kill if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return self.proc.returncode

    def __enter__(self) -> "DaemonProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def segments_of(pid: int) -> list[str]:
    """Shared-memory segments created by process ``pid``."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"mimocorb2-{pid}-*"))
