"""``mimocorb2 run SETUP --web``: the daemon's web page for one foreground run.

:class:`ForegroundHost` stands in for the daemon towards the two parts that
serve the page: the command :class:`~mimocorb2.supervisor.handlers.Handlers`
(``current_run``, ``status()``, ``info()``, ``start_run()``, ``web``) and the
web layer's :class:`~mimocorb2.web.ForegroundBackend` (``dispatch``,
``current_run``, ``runtime_directory``). So status, pause, resume, stop, abort,
logs and ack take the daemon's own code paths; ``start`` is refused (this
process serves the one run it was started with) and the page shows no Start.

Loaded only when ``--web`` is given: without it ``mimocorb2 run`` imports no
aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimocorb2 import __version__
from mimocorb2.control import protocol as P
from mimocorb2.control.server import Peer
from mimocorb2.supervisor.errors import RunError
from mimocorb2.supervisor.handlers import Handlers
from mimocorb2.supervisor.loopmeter import LoopMeter
from mimocorb2.supervisor.run import Run
from mimocorb2.supervisor.status import build_status

__all__ = ["ForegroundHost", "ForegroundPage", "NO_START"]

#: the handlers' answer to ``start`` in the foreground
NO_START = ("this page serves the one run of `mimocorb2 run`: Start is not offered "
            "(start runs from a page of mimocorb2d, or with `mimoctl start`)")


class ForegroundHost:
    """The daemon's face of one foreground run. Invariant: ``current_run`` never changes."""

    def __init__(self, run: Run, runtime_directory: Path, meter: LoopMeter | None = None) -> None:
        self.current_run: Run = run
        self.loop_meter = meter or LoopMeter()  # the foreground loop's (run_in_foreground runs it)
        self.runtime_directory = runtime_directory  # private (0700): the web tokens file
        self.web: Any = None  # the WebServer, for the ``web`` command
        self.started_at = time.time()
        self.handlers = Handlers(self)  # type: ignore[arg-type]  # the daemon's attributes it uses

    async def dispatch(self, cmd: str, args: dict[str, Any], peer: Peer) -> Any:
        """One command through the daemon's handlers."""
        return await self.handlers.dispatch(cmd, args, peer)

    def status(self) -> dict[str, Any]:
        """The same reply as ``mimoctl status --json``; ``daemon`` describes this process."""
        return build_status(self.current_run.state, self.info(), self.current_run)

    def info(self) -> dict[str, Any]:
        """The ``daemon`` object of the status: this process (no socket; its loop at normal priority)."""
        return {"pid": os.getpid(), "version": __version__, "protocol": P.PROTOCOL_VERSION,
                "socket": None, "uptime": round(time.time() - self.started_at, 3),
                **self.loop_meter.report(), "loop_priority": "normal",
                "loop_priority_reason": "a foreground run keeps the terminal's priority",
                "foreground": True}

    async def start_run(self, setup_path: Path, max_events: int | None, max_seconds: float | None) -> Run:
        """Refused: a foreground process serves one run."""
        raise RunError(NO_START)


class ForegroundPage:
    """The page of one foreground run: opened before the run starts, closed after it ended."""

    def __init__(self, host: ForegroundHost, server: Any) -> None:
        self.host = host
        self.server = server

    @classmethod
    async def open(cls, run: Run, listen: str | None, say: Callable[[str], None],
                   meter: LoopMeter | None = None, public_url: str | None = None) -> "ForegroundPage":
        """Serve the page for ``run`` and ``say`` its operator address.

        ``listen``: ``[HOST:]PORT`` as given to ``--web``, or None for the default
        (127.0.0.1:8765, or a free port when that one is taken); ``public_url`` as given to
        ``--web-public-url``. Raises RunError when an address given explicitly cannot be used.
        """
        from mimocorb2.web import ForegroundBackend, WebConfig, WebConfigError, parse_listen, parse_public_url

        config = WebConfig(explicit=listen is not None, start_offered=False)
        try:
            if listen is not None:
                config.host, config.port = parse_listen(listen)
            if public_url is not None:
                config.public_url = parse_public_url(public_url)
            config.validate()
        except WebConfigError as exc:
            raise RunError(str(exc)) from None
        runtime = Path(await asyncio.to_thread(_private_directory))
        host = ForegroundHost(run, runtime, meter)
        try:
            server = await _listen(ForegroundBackend(host), config)
        except BaseException:
            shutil.rmtree(runtime, ignore_errors=True)
            raise
        host.web = server
        say(f"web page: {server.info()['operator_url']}")
        return cls(host, server)

    async def close(self) -> None:
        """Tell the open pages how the run ended, stop serving, forget the tokens."""
        feeds, hub = self.server.feeds, self.server.hub
        await feeds.close()  # no ticker frame after the last one
        last = feeds.status_frame(await self.host.dispatch("status", {}, "web"))
        for page in list(hub.pages):
            with contextlib.suppress(Exception):
                await page.ws.send_str(last)
        await self.server.close()
        await asyncio.to_thread(shutil.rmtree, self.host.runtime_directory, True)


async def _listen(backend: Any, config: Any) -> Any:
    """A started WebServer; the default port falls back to a free one when taken."""
    from mimocorb2.web import WebServer

    server = WebServer(backend, config)
    try:
        await server.start()
        return server
    except OSError as exc:
        if config.explicit:
            raise RunError(f"--web: cannot listen on {config.host}:{config.port}: "
                           f"{exc.strerror or exc}") from None
    config.port = 0  # 8765 is taken (a daemon's page, another run): any free port
    server = WebServer(backend, config)
    await server.start()
    return server


def _private_directory() -> str:
    """A new directory only we can read (0700), under $XDG_RUNTIME_DIR when there is one."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = None
    return tempfile.mkdtemp(prefix="mimocorb2-run-web-", dir=base)
