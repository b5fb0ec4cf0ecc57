"""The daemon's answers to each command of the control protocol.

``Handlers(daemon).dispatch`` is what the :class:`~mimocorb2.control.server.ControlServer`
calls for every valid request. A handler validates its arguments, asks the
daemon or its current run to act, and returns a JSON-able result or raises
:class:`~mimocorb2.control.server.CommandError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from mimocorb2.control import protocol as P
from mimocorb2.control.alarms import AlarmMonitor
from mimocorb2.control.server import CommandError, Peer

log = structlog.get_logger("mimocorb2.control")

#: commands that are not logged (clients poll them)
QUIET = ("status", "ping", "logs", "web")

#: longest run comment accepted (stored as RUN_DIR/comment.txt)
MAX_COMMENT = 4000


class Handlers:
    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.alarms = AlarmMonitor()

    async def dispatch(self, cmd: str, args: dict[str, Any], peer: Peer) -> Any:
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is None:
            raise CommandError(f"command {cmd!r} is not implemented", code=P.E_UNKNOWN_COMMAND)
        if cmd not in QUIET:
            log.info("command", cmd=cmd, peer=str(peer))
        return await handler(args)

    def _active_run(self) -> Any:
        run = self.daemon.run_obj
        if run is None or run.done:
            raise CommandError("no run is active")
        return run

    # ------------------------------------------------------------------ commands
    async def cmd_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        info = self.daemon.info()
        return {"pong": True, "pid": info["pid"], "version": info["version"], "protocol": info["protocol"]}

    async def cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        status: dict[str, Any] = {"state": self.daemon.state, "daemon": self.daemon.info(),
                                  "run": None, "buffers": {}, "workers": {}}
        if self.daemon.run_obj is not None:
            status.update(self.daemon.run_obj.status())
        status["alarms"] = self.alarms.evaluate(status)
        return status

    async def cmd_ack(self, args: dict[str, Any]) -> dict[str, Any]:
        alarm = args.get("alarm")
        if alarm is not None and not isinstance(alarm, str):
            raise CommandError("'alarm' must be an alarm id (or absent for all)", code=P.E_BAD_REQUEST)
        done = self.alarms.acknowledge(alarm)
        if alarm is not None and not done:
            raise CommandError(f"no current alarm {alarm!r}")
        return {"acknowledged": done}

    async def cmd_web(self, args: dict[str, Any]) -> dict[str, Any]:
        # the web page's address and tokens; the socket's permissions decide who may ask
        web = getattr(self.daemon, "web", None)
        if web is None:
            return {"enabled": False}
        return web.info()

    async def cmd_check(self, args: dict[str, Any]) -> dict[str, Any]:
        from mimocorb2.supervisor.run import load_setup_async

        setup = await load_setup_async(_setup_arg(args))
        return {"ok": True, "setup": str(setup.path), "buffers": list(setup.buffers),
                "workers": list(setup.workers)}

    async def cmd_start(self, args: dict[str, Any]) -> dict[str, Any]:
        setup_path = _setup_arg(args)
        limits = {k: args.get(k) for k in ("max_events", "max_seconds")}
        for key, value in limits.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise CommandError(f"{key} must be a positive number, got {value!r}", code=P.E_BAD_REQUEST)
        comment = args.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
            raise CommandError(f"'comment' must be a string of at most {MAX_COMMENT} characters",
                               code=P.E_BAD_REQUEST)
        run = await self.daemon.start_run(setup_path, limits["max_events"], limits["max_seconds"])
        if comment and run.directory is not None:
            import asyncio

            path = Path(run.directory) / "comment.txt"
            await asyncio.to_thread(path.write_text, comment.rstrip("\n") + "\n", "utf-8")
            log.info("run comment stored", path=str(path))
        return {"directory": str(run.directory), "state": run.state}

    async def cmd_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        run = self._active_run()
        await run.stop("stop command")
        if args.get("wait", True):
            await run.wait()
        return run.final_summary()

    async def cmd_abort(self, args: dict[str, Any]) -> dict[str, Any]:
        run = self._active_run()
        await run.abort("abort command")
        await run.wait()
        return run.final_summary()

    async def cmd_pause(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"paused": await self._active_run().pause(_names_arg(args))}

    async def cmd_resume(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"resumed": await self._active_run().resume(_names_arg(args))}

    async def cmd_logs(self, args: dict[str, Any]) -> dict[str, Any]:
        run = self.daemon.run_obj
        if run is None:
            raise CommandError("no run yet: there are no logs")
        worker = args.get("worker")
        offsets = args.get("offsets") or {}
        max_bytes = args.get("max_bytes", 256 * 1024)
        if worker is not None and not isinstance(worker, str):
            raise CommandError("'worker' must be a string", code=P.E_BAD_REQUEST)
        if not isinstance(offsets, dict) or not all(isinstance(v, int) for v in offsets.values()):
            raise CommandError("'offsets' must map worker names to byte offsets", code=P.E_BAD_REQUEST)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise CommandError("'max_bytes' must be an integer", code=P.E_BAD_REQUEST)
        return await run.read_logs(worker, offsets, max_bytes)

    async def cmd_shutdown(self, args: dict[str, Any]) -> dict[str, Any]:
        # reply first; the daemon stops the run (drain) and exits in its shutdown()
        import asyncio

        asyncio.get_running_loop().call_soon(self.daemon.request_exit, "shutdown command")
        return {"shutting_down": True, "state": self.daemon.state}


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
