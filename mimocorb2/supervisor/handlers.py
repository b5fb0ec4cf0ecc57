"""The daemon's answer to each command of the control protocol.

:meth:`Handlers.dispatch` is the single entry point for a command, whoever
sends it: the control socket's server (:class:`mimocorb2.control.server.ControlServer`)
and the web page's adapter both call ``dispatch(cmd, args, peer)``. There is
one ``cmd_<name>`` method per entry of :data:`mimocorb2.control.protocol.COMMAND_HELP`
(checked at import). A handler validates its arguments, asks the daemon or its
run to act, and returns a JSON-able result.

Errors: a :class:`~mimocorb2.supervisor.errors.RunError` from the run or the
daemon becomes, here and only here, the wire's
:class:`~mimocorb2.control.server.CommandError` (code ``refused``); bad
arguments are ``bad_request``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from mimocorb2.control import protocol as P
from mimocorb2.control.alarms import AlarmMonitor
from mimocorb2.control.server import CommandError, Peer
from mimocorb2.supervisor.errors import RunError
from mimocorb2.supervisor.run import Run, load_setup_async

if TYPE_CHECKING:
    from mimocorb2.supervisor.server import Daemon

log = structlog.get_logger("mimocorb2.control")

__all__ = ["Handlers", "QUIET"]

#: commands that are not logged (clients poll them)
QUIET = ("status", "ping", "logs", "web")

#: longest run comment accepted (stored as RUN_DIR/comment.txt)
MAX_COMMENT = 4000


class Handlers:
    """The command handlers of one daemon.

    ``alarms`` is the daemon's one alarm monitor: the socket and the web page see the same
    alarms and the same acknowledgements (kept until the run directory changes).
    """

    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self.alarms = AlarmMonitor()

    async def dispatch(self, cmd: str, args: dict[str, Any], peer: Peer) -> Any:
        """Carry out one command; the one place where a RunError becomes a wire error."""
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is None or cmd not in P.COMMAND_HELP:
            raise CommandError(f"command {cmd!r} is not implemented", code=P.E_UNKNOWN_COMMAND)
        if cmd not in QUIET:
            log.info("command", cmd=cmd, peer=str(peer))
        try:
            return await handler(args)
        except RunError as exc:
            raise CommandError(exc.message, exc.problems, code=P.E_REFUSED) from None

    def _active_run(self) -> Run:
        run = self.daemon.current_run
        if run is None or run.done:
            raise RunError("no run is active")
        return run

    # ------------------------------------------------------------------ commands
    async def cmd_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        """``pong`` with the daemon's pid, version and protocol; touches no buffer, so it is cheap."""
        info = self.daemon.info()
        return {"pong": True, "pid": info["pid"], "version": info["version"], "protocol": info["protocol"]}

    async def cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        """The status reply with ``alarms`` evaluated from it.

        Each call advances the alarm monitor's timers, so "for a while" conditions are only as
        precise as clients poll.
        """
        status = self.daemon.status()
        status["alarms"] = self.alarms.evaluate(status)
        return status

    async def cmd_ack(self, args: dict[str, Any]) -> dict[str, Any]:
        """Acknowledge alarm ``args["alarm"]`` (every current alarm when absent).

        Only alarms of the last evaluated status can be acknowledged: an unknown id is refused,
        a non-string one is ``bad_request``.
        """
        alarm = args.get("alarm")
        if alarm is not None and not isinstance(alarm, str):
            raise CommandError("'alarm' must be an alarm id (or absent for all)", code=P.E_BAD_REQUEST)
        done = self.alarms.acknowledge(alarm)
        if alarm is not None and not done:
            raise CommandError(f"no current alarm {alarm!r}")
        return {"acknowledged": done}

    async def cmd_web(self, args: dict[str, Any]) -> dict[str, Any]:
        """The web page's addresses and tokens, or ``{"enabled": False}`` without a page.

        No check of its own: the socket's permissions decide who may ask.
        """
        web = getattr(self.daemon, "web", None)
        if web is None:
            return {"enabled": False}
        return web.info()

    async def cmd_check(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate the setup at absolute path ``args["setup"]`` without starting anything.

        Runs in a thread, bounded by SETUP_LOAD_TIMEOUT; a setup with errors is refused with
        every problem listed.
        """
        setup = await load_setup_async(_setup_arg(args))
        return {"ok": True, "setup": str(setup.path), "buffers": list(setup.buffers),
                "workers": list(setup.workers), **_setup_remarks(setup)}

    async def cmd_start(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate the arguments, start a run of ``args["setup"]`` and store its comment.

        Refused while a run is active or the daemon is exiting. Returns when the processes are
        started (not when the run ends): its directory, state and the setup's remarks.
        """
        setup_path = _setup_arg(args)
        limits = {k: args.get(k) for k in ("max_events", "max_seconds")}
        for key, value in limits.items():
            if value is not None and not _positive_number(value):
                raise CommandError(f"{key} must be a positive number below {MAX_LIMIT:.0e}, "
                                   f"got {P.short_repr(value)}", code=P.E_BAD_REQUEST)
        max_events = limits["max_events"]
        if max_events is not None and not float(max_events).is_integer():
            raise CommandError(f"max_events must be a whole number, got {max_events!r}", code=P.E_BAD_REQUEST)
        comment = args.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
            raise CommandError(f"'comment' must be a string of at most {MAX_COMMENT} characters",
                               code=P.E_BAD_REQUEST)
        run = await self.daemon.start_run(setup_path, None if max_events is None else int(max_events),
                                          limits["max_seconds"])
        if comment and run.directory is not None:
            path = Path(run.directory) / "comment.txt"
            await asyncio.to_thread(path.write_text, comment.rstrip("\n") + "\n", "utf-8")
            log.info("run comment stored", path=str(path))
        return {"directory": str(run.directory), "state": run.state, **_setup_remarks(run.setup)}

    async def cmd_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        """Stop the active run gracefully and return its summary; refused when no run is active.

        With ``wait`` (the default) the reply comes only once the run has drained, which may take
        up to :meth:`Run.longest_stop`; without it the summary shows ``stopping``.
        """
        run = self._active_run()
        await run.stop("stop command")
        if args.get("wait", True):
            await run.wait()
        return run.final_summary()

    async def cmd_abort(self, args: dict[str, Any]) -> dict[str, Any]:
        """Kill the active run's processes and reply with its final summary once it has ended.

        Refused when no run is active; events left in buffers are counted lost.
        """
        run = self._active_run()
        await run.abort("abort command")
        await run.wait()
        return run.final_summary()

    async def cmd_pause(self, args: dict[str, Any]) -> dict[str, Any]:
        """Pause ``args["buffers"]`` (the root buffers when absent or empty); reply with the names.

        Refused while the run starts or stops, or for an unknown buffer.
        """
        return {"paused": await self._active_run().pause(_names_arg(args))}

    async def cmd_resume(self, args: dict[str, Any]) -> dict[str, Any]:
        """Resume ``args["buffers"]`` (the root buffers when absent or empty); reply with the names.

        Refused while the run starts or stops, or for an unknown buffer.
        """
        return {"resumed": await self._active_run().resume(_names_arg(args))}

    async def cmd_logs(self, args: dict[str, Any]) -> dict[str, Any]:
        """Chunks of the worker logs of the current or last run, from ``args["offsets"]`` on.

        At most ``max_bytes`` (default 256 KiB) per file; the reply's offsets are where to go on.
        Refused before the first run or for an unknown worker.
        """
        worker = args.get("worker")
        offsets = args.get("offsets") or {}
        max_bytes = args.get("max_bytes", 256 * 1024)
        if worker is not None and not isinstance(worker, str):
            raise CommandError("'worker' must be a string", code=P.E_BAD_REQUEST)
        if not isinstance(offsets, dict) or not all(_offset(v) for v in offsets.values()):
            raise CommandError(f"'offsets' must map worker names to byte offsets "
                               f"(integers from 0 to {MAX_OFFSET})", code=P.E_BAD_REQUEST)
        if type(max_bytes) is not int or max_bytes < 0:
            raise CommandError("'max_bytes' must be a non-negative integer", code=P.E_BAD_REQUEST)
        run = self.daemon.current_run
        if run is None:
            raise RunError("no run yet: there are no logs")
        return await run.read_logs(worker, offsets, max_bytes)

    async def cmd_shutdown(self, args: dict[str, Any]) -> dict[str, Any]:
        """Reply at once, then ask the daemon to exit on the next loop iteration.

        The daemon then stops the run gracefully (drain) and exits, in :meth:`Daemon.shutdown`.
        """
        asyncio.get_running_loop().call_soon(self.daemon.request_exit, "shutdown command")
        return {"shutting_down": True, "state": self.daemon.state}


#: largest run limit accepted (events or seconds); more is a typo or an attack
MAX_LIMIT = 1e15
#: largest log offset accepted (a file offset must fit a signed 64-bit seek)
MAX_OFFSET = 2**62


def _positive_number(value: object) -> bool:
    """A real, finite number in (0, MAX_LIMIT]; booleans are not numbers here."""
    if type(value) not in (int, float):
        return False
    return 0 < value <= MAX_LIMIT  # NaN fails both comparisons, inf the second


def _offset(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_OFFSET


def _setup_remarks(setup: Any) -> dict[str, list[str]]:
    """A setup's warnings (ignored keys that may matter) and notes, for a reply."""
    return {"warnings": list(setup.warnings), "notes": list(setup.notes)}


_missing = [cmd for cmd in P.COMMAND_HELP if not hasattr(Handlers, f"cmd_{cmd}")]
assert not _missing, f"commands without a handler: {_missing}"


def _setup_arg(args: dict[str, Any]) -> Path:
    setup = args.get("setup")
    if not isinstance(setup, str) or not setup:
        raise CommandError("'setup' (path of a setup file) is required", code=P.E_BAD_REQUEST)
    path = Path(setup)
    if not path.is_absolute():
        raise CommandError(f"setup path must be absolute, got {setup!r}", code=P.E_BAD_REQUEST)
    return path


def _names_arg(args: dict[str, Any]) -> list[str] | None:
    names = args.get("buffers")
    if names is None or names == []:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CommandError("'buffers' must be a list of buffer names", code=P.E_BAD_REQUEST)
    return names
