"""The daemon object: startup, serve, shutdown in one place.

    Daemon(socket_path).run()       # blocks; returns the process exit code

Lifecycle::

    startup   remove stale shared memory, listen on the control socket,
              install signal handlers, READY=1
    serve     wait until asked to exit (shutdown command, SIGTERM/SIGINT);
              meanwhile: watchdog pings, STATUS= lines, loop latency meter
              (the loop thread runs at realtime priority where allowed: priority.py)
    shutdown  STOPPING=1, stop the run gracefully (drain), close the socket

Signals: the first SIGTERM/SIGINT asks for a graceful exit (the run drains);
a second one aborts the run (its processes are killed, lost events counted).

Entry points for adapters (the control socket, the web page): :meth:`Daemon.dispatch`
carries out one command (:mod:`.handlers`), :meth:`Daemon.status` is the status
reply (:mod:`.status`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from mimocorb2 import __version__
from mimocorb2.control import protocol as P
from mimocorb2.control.server import ControlServer, Peer
from mimocorb2.supervisor.errors import RunError
from mimocorb2.supervisor.handlers import Handlers
from mimocorb2.supervisor.loopmeter import LoopMeter
from mimocorb2.supervisor.priority import LoopPriority, PriorityResult, apply_loop_priority
from mimocorb2.supervisor.run import Phase, Run, load_setup_async
from mimocorb2.supervisor.sdnotify import Notifier
from mimocorb2.supervisor.status import build_status, summary_line

log = structlog.get_logger("mimocorb2.daemon")


class Daemon:
    """The supervisor daemon: one run at a time, commands over the control socket (and the web page).

    Invariants: ``current_run`` is the current or last run; only :meth:`start_run` replaces
    it, under ``_start_lock`` and only once the previous run is done, so at most one run is
    ever not done. ``web`` (when configured) is running before the control socket answers
    and is None after shutdown. ``_signals`` counts SIGTERM/SIGINT: the first requests the
    exit, any later one aborts the run instead of letting it drain.
    """

    def __init__(self, socket_path: Path, notifier: Notifier | None = None, web_config: Any = None,
                 loop_priority: LoopPriority = LoopPriority.REALTIME) -> None:
        self.socket_path = Path(socket_path)
        self.notifier = notifier or Notifier()
        self.handlers = Handlers(self)
        self.control = ControlServer(self.socket_path, self.dispatch)
        self.web_config = web_config  # mimocorb2.web.WebConfig, None: no page
        self.web: Any = None  # the running mimocorb2.web.WebServer
        self.started_at = time.time()
        self.current_run: Run | None = None  # the current or last run
        self.exit_code = 0
        self._exit = asyncio.Event()
        self._signals = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._start_lock = asyncio.Lock()
        self.loop_meter = LoopMeter()
        self.wanted_priority = loop_priority
        #: what the loop thread got (set by :meth:`run` before the loop starts)
        self.priority = PriorityResult(LoopPriority.NORMAL, "not applied")
        #: called with the exit code once shutdown is complete (the CLI arms its exit guard)
        self.after_shutdown: Callable[[int], Any] | None = None

    # ---------------------------------------------------------------- lifecycle
    def run(self) -> int:
        """Run the daemon on a uvloop event loop until it exits; return the exit code.

        The calling thread becomes the loop thread: its priority is set first, before
        it starts any thread or process (they run at normal priority)."""
        import uvloop

        self.priority = apply_loop_priority(self.wanted_priority)
        return uvloop.run(self.main())

    async def main(self) -> int:
        """Start up, serve until asked to exit, shut down; return the exit code.

        1 if startup fails (nothing is left listening), else :attr:`exit_code` (0).
        """
        try:
            await self.startup()
        except Exception as exc:
            log.error("daemon failed to start", error=str(exc))
            await self._close_server()
            return 1
        try:
            await self.serve()
        finally:
            await self.shutdown()
        return self.exit_code

    async def dispatch(self, cmd: str, args: dict[str, Any], peer: Peer) -> Any:
        """Carry out one command of the protocol (for the socket server and the web adapter)."""
        return await self.handlers.dispatch(cmd, args, peer)

    def status(self) -> dict[str, Any]:
        """The status reply (``mimoctl status --json``)."""
        return build_status(self.state, self.info(), self.current_run)

    async def startup(self) -> None:
        """Make the daemon answer: web page, control socket, signals, housekeeping, ``READY=1``.

        Stale shared memory of a crashed daemon is removed first. Raises (SocketInUse, an
        OSError such as a web port in use) if the daemon cannot serve; :meth:`main` then closes
        what was opened.
        """
        from mimocorb2.datapath._shm import remove_stale_segments

        removed = remove_stale_segments()
        if removed:
            log.warning("removed shared memory of a crashed daemon", segments=removed)
        _preload()  # heavy imports now, not in the loop when the first run starts
        self._share_priority_with_forkserver()
        if self.web_config is not None:  # the web page (mimocorb2.web): the one hook
            from mimocorb2.web import start_web

            self.web = await start_web(self, self.web_config)  # before the socket answers `web`
        await self.control.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._tasks.append(asyncio.create_task(self.loop_meter.run(), name="loop-meter"))
        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.create_task(self._watchdog(), name="watchdog"))
        self._tasks.append(asyncio.create_task(self._status_reporter(), name="sd-status"))
        self.notifier.ready(status="idle")
        log.info("mimocorb2d ready", pid=os.getpid(), socket=str(self.socket_path), version=__version__,
                 loop_priority=self.priority.priority.value)
        if self.wanted_priority is LoopPriority.REALTIME and self.priority.priority is not LoopPriority.REALTIME:
            log.info("event loop at normal priority: a saturated machine can make it late",
                     reason=self.priority.reason)

    def _share_priority_with_forkserver(self) -> None:
        """Starting a worker waits on the forkserver: with a realtime loop it must not queue for a CPU."""
        from mimocorb2.runtime import forkserver_pid
        from mimocorb2.supervisor.priority import share_priority

        pid = forkserver_pid()
        if self.priority.priority is LoopPriority.REALTIME and pid is not None and not share_priority(pid):
            log.warning("forkserver left at normal priority: starting a worker may wait for a CPU", pid=pid)

    async def serve(self) -> None:
        """Wait until :meth:`request_exit` is called (shutdown command, first SIGTERM/SIGINT)."""
        await self._exit.wait()

    async def shutdown(self) -> None:
        """Stop the run and wait for it, then close the web page and the socket.

        Sends ``STOPPING=1``; the run drains (is aborted after a second signal), which takes
        as long as its drain: systemd's stop timeout is extended to match. Then the
        housekeeping tasks are cancelled and :attr:`after_shutdown` is called.
        """
        self.notifier.stopping(status="stopping")
        log.info("mimocorb2d shutting down")
        async with self._start_lock:  # a start in progress completes first, and none begins after
            run = self.current_run
        if run is not None and not run.done:
            # tell systemd how long the drain may take (TimeoutStopSec is only a default)
            self.notifier.notify(f"EXTEND_TIMEOUT_USEC={int((run.longest_stop() + 15.0) * 1e6)}")
            if self._signals >= 2:
                await run.abort("daemon aborted")
            else:
                await run.stop("daemon shutting down")
            await run.wait()
        await self._close_server()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("mimocorb2d exited", exit_code=self.exit_code)
        self.notifier.close()
        if self.after_shutdown is not None:
            self.after_shutdown(self.exit_code)

    async def _close_server(self) -> None:
        if self.web is not None:
            await self.web.close()
            self.web = None
        await self.control.close()

    def request_exit(self, reason: str) -> None:
        """Make :meth:`serve` return, so that the daemon shuts down; idempotent, call on the loop."""
        log.info("exit requested", reason=reason)
        self._exit.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        name = signal.Signals(sig).name
        if self._signals == 1:
            log.info("signal received: stopping the run gracefully, then exiting", signal=name)
            self.request_exit(name)
        else:
            log.warning("second signal: aborting the run", signal=name)
            run = self.current_run
            if run is not None and not run.done:
                self._tasks.append(asyncio.create_task(run.abort(f"second {name}"), name="abort"))

    # ---------------------------------------------------------------- housekeeping tasks
    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval or 1.0
        while True:
            # sent from the loop itself: if the loop stalls, systemd stops hearing from us
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _status_reporter(self) -> None:
        last = ""
        while True:
            text = self.status_line()
            if text != last:
                self.notifier.status(text)
                last = text
            await asyncio.sleep(1.0)

    def status_line(self) -> str:
        """One line on the current or last run (``idle`` before the first), for systemd's STATUS=."""
        return summary_line(self.current_run)

    @property
    def state(self) -> str:
        """``idle`` before the first run, then the state of the current or last run.

        A finished or failed run keeps its state until the next one starts.
        """
        return Phase.IDLE.value if self.current_run is None else self.current_run.state

    # ---------------------------------------------------------------- runs (for the handlers)
    @property
    def exiting(self) -> bool:
        """True once an exit was requested; :meth:`start_run` refuses from then on."""
        return self._exit.is_set()

    def info(self) -> dict[str, Any]:
        """The ``daemon`` object of the status reply."""
        return {
            "pid": os.getpid(),
            "version": __version__,
            "protocol": P.PROTOCOL_VERSION,
            "socket": str(self.socket_path),
            "uptime": round(time.time() - self.started_at, 3),
            **self.loop_meter.report(),
            "loop_priority": self.priority.priority.value,
            "loop_priority_reason": self.priority.reason,
        }

    async def start_run(self, setup_path: Path, max_events: int | None, max_seconds: float | None) -> Run:
        """Validate the setup and start its run; one run at a time."""
        async with self._start_lock:
            if self.exiting:  # checked under the lock: shutdown takes it before it looks for a run
                raise RunError("the daemon is shutting down")
            current = self.current_run
            if current is not None and not current.done:
                raise RunError(f"a run is already {current.state} ({current.directory}); stop it first")
            setup = await load_setup_async(setup_path)
            run = Run(setup, max_events=max_events, max_seconds=max_seconds,
                      on_finished=lambda r: self.notifier.status(summary_line(r)))
            self.current_run = run
            await run.start()
        return run


def _preload() -> None:
    """Heavy imports and the resource tracker now, not in the loop when the first run starts."""
    from mimocorb2.supervisor.processes import warm_up

    warm_up()
