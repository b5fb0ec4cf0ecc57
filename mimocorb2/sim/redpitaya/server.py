"""The simulator's asyncio TCP server, its fault plan and a thread runner for tests.

The server feeds complete ``\\r\\n``-terminated command lines to its :class:`Board`
and writes back the answers; it can drop every connection or stall (stop answering),
on request (:meth:`RedPitayaSimulator.drop_connections`,
:meth:`~RedPitayaSimulator.stall`) or on the n-th ``ACQ:START`` (:class:`Faults`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .board import Board, ServerAction
from .os_versions import DEFAULT_OS, OsProfile, os_profile
from .signal import PulseConfig

__all__ = ["Faults", "RedPitayaSimulator", "SimulatorThread"]

log = logging.getLogger("mimocorb2.sim.redpitaya")


@dataclass
class Faults:
    """Deterministic fault plan, counted in ``ACQ:START`` commands (1-based).

    ``drop_every``: on every n-th ``ACQ:START`` close all connections instead of
    starting. ``stall_every``: on every n-th ``ACQ:START`` stop answering anything for
    ``stall_seconds`` (new connections are accepted but not answered either).
    ``drop_at`` / ``stall_at`` name single ``ACQ:START`` numbers. ``unknown_headers``:
    command headers (as sent, any case) the board treats as unknown, always (a
    refusal that reconnecting cannot cure).
    """

    drop_every: int = 0
    stall_every: int = 0
    stall_seconds: float = 1.0
    drop_at: frozenset[int] = frozenset()
    stall_at: frozenset[int] = frozenset()
    unknown_headers: frozenset[str] = frozenset()

    def action(self, n: int) -> str | None:
        """``"drop"``, ``"stall"`` or ``None`` for the n-th ``ACQ:START``."""
        if n in self.drop_at or (self.drop_every and n % self.drop_every == 0):
            return "drop"
        if n in self.stall_at or (self.stall_every and n % self.stall_every == 0):
            return "stall"
        return None


class RedPitayaSimulator:
    """The simulated board and its SCPI TCP server (one board, many connections).

    Create it, ``await start()`` inside a running loop (or use
    :class:`SimulatorThread`), read :attr:`port`, ``await stop()``. ``os`` names the
    OS release whose SCPI dialect the board speaks (see
    :data:`~mimocorb2.sim.redpitaya.os_versions.OS_PROFILES`); ``supports_little_endian``
    and ``supports_fill`` override single features of it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        pulses: PulseConfig | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        os: str | OsProfile = DEFAULT_OS,
        ret_on_error: bool = False,
        supports_little_endian: bool | None = None,
        supports_fill: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.pulses = pulses or PulseConfig()
        self.faults = faults or Faults()
        self.clock = clock
        self.os = os if isinstance(os, OsProfile) else os_profile(os)
        #: Counters for tests and benchmarks.
        self.stats = {"connections": 0, "commands": 0, "queries": 0, "acquisitions": 0,
                      "triggers": 0, "drops": 0, "stalls": 0, "errors": 0, "crashes": 0}
        self.board = Board(
            self.os, self.pulses, np.random.default_rng(seed), clock, self.stats,
            ret_on_error=ret_on_error, supports_little_endian=supports_little_endian,
            supports_fill=supports_fill, start_fault=self.faults.action,
            unknown_headers=self.faults.unknown_headers,
        )
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._stall_until = 0.0
        self._stalled_forever = False
        self._resume: asyncio.Event | None = None
        #: Test hook: called with every command line after it ran (on the server's loop).
        self.on_command: Callable[[str], object] | None = None

    @property
    def errors(self) -> deque[tuple[int, str]]:
        """The board's SCPI error queue."""
        return self.board.errors

    @property
    def buffers(self) -> dict[int, np.ndarray]:
        """The board's two circular sample buffers (RAW int16)."""
        return self.board.buffers

    # ----------------------------------------------------------------- server
    async def start(self) -> None:
        """Listen on ``host:port`` (port 0: an ephemeral port, then in :attr:`port`)."""
        self._resume = asyncio.Event()
        self._resume.set()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("Red Pitaya simulator (OS %s) listening on %s:%d", self.os.version, self.host, self.port)

    async def stop(self) -> None:
        """Close the listening socket and every connection."""
        if self._server is not None:
            self._server.close()
        self.drop_connections(count=False)
        self.resume()  # stalled handlers must run to their end
        if self._handlers:
            # Let every connection handler see its aborted transport and finish.
            await asyncio.wait(list(self._handlers), timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self, count: bool = True) -> None:
        """Abort every open connection (as a board reboot or cable pull would)."""
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()
        if count:
            self.stats["drops"] += 1

    def stall(self, seconds: float | None = None) -> None:
        """Stop answering for ``seconds`` (None: until :meth:`resume`)."""
        self.stats["stalls"] += 1
        if seconds is None:
            self._stalled_forever = True
        else:
            self._stall_until = max(self._stall_until, self.clock() + seconds)
        if self._resume is not None:
            self._resume.clear()

    def resume(self) -> None:
        """End a stall."""
        self._stalled_forever = False
        self._stall_until = 0.0
        if self._resume is not None:
            self._resume.set()

    def _stalled(self) -> bool:
        return self._stalled_forever or self._stall_until > self.clock()

    async def _wait_not_stalled(self) -> None:
        assert self._resume is not None
        while True:
            if self._stalled_forever:
                await self._resume.wait()
                continue
            left = self._stall_until - self.clock()
            if left <= 0:
                self._resume.set()
                return
            try:
                async with asyncio.timeout(left):
                    await self._resume.wait()
            except TimeoutError:
                pass
            if not self._stalled_forever and self._stall_until <= self.clock():
                return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        self._connections.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        pending = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                pending += chunk
                # Invariant: only complete "\r\n"-terminated commands run; the rest waits.
                *lines, pending = pending.split(b"\r\n")
                if not await self._run_lines(lines, writer):
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _run_lines(self, lines: list[bytes], writer: asyncio.StreamWriter) -> bool:
        """Run command lines, answer them in one write; False once the connection is gone."""
        out: list[bytes] = []
        for raw in lines:
            if self._stalled():
                if out:
                    writer.write(b"".join(out))
                    out.clear()
                await self._wait_not_stalled()
            if writer.is_closing():
                return False
            line = raw.decode("ascii", errors="replace")
            answer = self.board.execute(line)
            if self.on_command is not None and line.strip():
                self.on_command(line.strip())
            if answer is ServerAction.DROP_ALL:
                self.drop_connections()
                return False
            if answer is ServerAction.STALL:
                self.stall(self.faults.stall_seconds)
            elif isinstance(answer, bytes):
                out.append(answer)
        if out and not writer.is_closing():
            writer.write(b"".join(out))
            await writer.drain()
        return True


# --------------------------------------------------------------------------- thread runner
class SimulatorThread:
    """Run a :class:`RedPitayaSimulator` on its own event loop in a daemon thread.

    ``with SimulatorThread(pulses=...) as sim: ... sim.port ...``. Fault hooks are
    forwarded thread-safely: :meth:`drop_connections`, :meth:`stall`, :meth:`resume`.
    """

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("port", 0)
        self.simulator = RedPitayaSimulator(**kwargs)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="redpitaya-sim", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def host(self) -> str:
        """Host the simulator listens on."""
        return self.simulator.host

    @property
    def port(self) -> int:
        """Port the simulator listens on."""
        return self.simulator.port

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.simulator.start())
        except BaseException as exc:  # pragma: no cover - reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.simulator.stop())
        self._loop.close()

    def start(self) -> SimulatorThread:
        """Start the thread and wait (at most 10 s) until the server listens."""
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("simulator did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def call(self, fn: Callable[[], object], timeout: float = 5.0) -> object:
        """Run ``fn()`` on the simulator's loop and return its result."""
        fut: asyncio.Future = asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop)
        return fut.result(timeout)

    def drop_connections(self) -> None:
        """Abort every connection now."""
        self.call(self.simulator.drop_connections)

    def stall(self, seconds: float | None = None) -> None:
        """Stop answering (see :meth:`RedPitayaSimulator.stall`)."""
        self.call(lambda: self.simulator.stall(seconds))

    def resume(self) -> None:
        """End a stall."""
        self.call(self.simulator.resume)

    def stop(self) -> None:
        """Stop the server and join the thread (at most 10 s)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _as_coro(fn: Callable[[], object]) -> object:
    return fn()
