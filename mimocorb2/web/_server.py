"""The web page's HTTP server: aiohttp on the daemon's own event loop.

``WebServer(backend, config).start()`` binds with ``AppRunner``/``TCPSite`` (no
``web.run_app``: the daemon keeps its signal handlers). Security, in order, for
every request (see docs/web.md):

1. On a loopback bind the ``Host`` header must name a loopback address or the
   host of ``public_url`` (DNS rebinding); any port, so that a tunnel or a
   proxy may use another one. ``X-Forwarded-*`` headers are not read.
2. A role from the cookie ``mimocorb2_<port>`` (set from ``/?token=...`` and the
   token then removed from the address bar by a redirect) or from
   ``Authorization: Bearer <token>`` (scripts); no role, no data.
3. Actions: POST only, operator only, with the header ``X-Mimocorb2-Action: 1``
   and an ``Origin`` equal to our own (``http://`` + ``Host``, or the origin of
   ``public_url`` behind a reverse proxy); the WebSocket checks ``Origin`` too.
   The session cookie carries ``Secure`` when it is given out under an https
   ``public_url``.
4. Every response carries a Content-Security-Policy without inline scripts;
   everything the page loads comes from this server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from mimocorb2 import __version__
from mimocorb2.web import _panels
from mimocorb2.web._backend import Backend
from mimocorb2.web._config import WebConfig, allowed_setups
from mimocorb2.web._feeds import Feeds, dumps
from mimocorb2.web._hub import Hub, Page
from mimocorb2.web._logs import read_before
from mimocorb2.web._tokens import OPERATOR, VIEWER, Tokens, load_or_create

log = structlog.get_logger("mimocorb2.web")

STATIC = Path(str(resources.files("mimocorb2.web") / "static"))
ACTION_HEADER = "X-Mimocorb2-Action"
#: the only things the page can ask the daemon to do
VERBS = ("start", "pause", "resume", "stop", "abort", "ack")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class WebPeer:
    """Who sent a command through the page: logged by the handlers as ``web <role> <address>``."""

    role: str
    remote: str

    def __str__(self) -> str:
        return f"web role={self.role} remote={self.remote}"


class WebServer:
    """The page, its JSON API and its WebSockets, served from the daemon's loop."""

    def __init__(self, backend: Backend, config: WebConfig) -> None:
        self.backend = backend
        self.config = config
        self.tokens: Tokens | None = None
        self.hub = Hub()
        self.feeds = Feeds(backend, self.hub)
        self.port = config.port
        self._runner: web.AppRunner | None = None
        self._login_html = ""
        self.web_busy = 0.0  # seconds in web request handlers (awaits included; a WebSocket's life is not)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load or create the tokens, then listen on the configured address and start the feeds.

        Raises OSError when the address cannot be bound (nothing is left listening then).
        """
        if self.config.auth:
            if self.config.viewer_token and self.config.operator_token:
                self.tokens = Tokens(self.config.viewer_token, self.config.operator_token)
            else:
                directory = self.backend.runtime_directory()
                self.tokens = await asyncio.to_thread(load_or_create, directory)
        self._login_html = await asyncio.to_thread((STATIC / "login.html").read_text, "utf-8")
        app = web.Application(middlewares=[self._security], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/", self._index),
            web.get("/healthz", self._healthz),
            web.get("/ws", self._websocket),
            web.get("/api/session", self._session),
            web.get("/api/status", self._api_status),
            web.get("/api/history", self._api_history),
            web.get("/api/setup", self._api_setup),
            web.get("/api/histograms", self._api_histograms),
            web.get("/api/histograms/{directory}/{filename}", self._api_histogram_file),
            web.get("/api/logs", self._api_logs),
            web.get("/api/logs/{name}/download", self._api_log_download),
            web.post("/api/action/{verb}", self._api_action),
            web.static("/static", STATIC, follow_symlinks=False),
        ])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        if self.config.port == 0:  # tests: the port the system chose
            server = site._server  # noqa: SLF001 - aiohttp keeps the asyncio server here
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.feeds.start()
        log.info("web page listening", url=self.base_url, public_url=self.page_url, auth=self.config.auth)

    async def close(self) -> None:
        """Stop the feeds, close every page's WebSocket (code 1001) and stop listening."""
        await self.feeds.close()
        for page in list(self.hub.pages):
            with contextlib.suppress(Exception):
                await page.ws.close(code=1001, message=b"daemon shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """Where the server listens, as a URL for this machine (a wildcard bind shows as 127.0.0.1)."""
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def page_url(self) -> str:
        """The address users open: ``public_url`` when a reverse proxy stands in front, else ``base_url``."""
        public = self.config.public_url
        return public.url if public is not None else self.base_url

    def info(self) -> dict[str, Any]:
        """Reply of the socket command ``web``: the addresses with their tokens.

        ``url`` is where the server listens (for scripts on this machine); ``viewer_url``
        and ``operator_url`` start with ``page_url``, the address to give to people.
        """
        base = self.page_url
        out: dict[str, Any] = {"enabled": True, "url": self.base_url, "public_url": self.page_url,
                               "listen": f"{self.config.host}:{self.port}",
                               "auth": self.config.auth, "pages": len(self.hub.pages),
                               "busy_seconds": round(self.web_busy + self.feeds.busy, 6)}
        if self.tokens is not None:
            out.update(viewer_url=f"{base}?token={self.tokens.viewer}",
                       operator_url=f"{base}?token={self.tokens.operator}",
                       viewer_token=self.tokens.viewer, operator_token=self.tokens.operator)
        else:
            out.update(viewer_url=base, operator_url=base)
        return out

    # ------------------------------------------------------------------ security
    @property
    def cookie_name(self) -> str:
        """The session cookie's name, one per port: browsers share cookies across ports of a host."""
        return f"mimocorb2_{self.port}"  # cookies ignore ports: one name per daemon port

    def _host_allowed(self, host: str | None) -> bool:
        if not self.config.loopback:
            return True  # tokens guard a public bind; the page is reached under any name
        if not host:
            return False
        # any port: a tunnel (ssh -L 9000:127.0.0.1:8765) changes it; a rebinding attack needs its own name
        name = _host_name(host)
        public = self.config.public_url
        return name in {"localhost", "127.0.0.1", "[::1]", self.config.host} or (
            public is not None and name == public.host)

    def _via_public_url(self, request: web.Request) -> bool:
        """True when the request names the public address's host (it came through the proxy)."""
        public = self.config.public_url
        return public is not None and _host_name(request.headers.get("Host", "")) == public.host

    def role_of(self, request: web.Request) -> str | None:
        """``viewer`` or ``operator`` from the request's cookie or Bearer token, None when neither is valid."""
        if self.tokens is None:
            return OPERATOR  # tokens off: loopback only (checked at start)
        token = request.cookies.get(self.cookie_name)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
        return self.tokens.role_of(token)

    def _same_origin(self, request: web.Request) -> bool:
        """``Origin`` is the page's own: ``public_url``'s origin, or ``http://`` + Host unless Host names
        the public host (through the proxy only its https page may act, not an http twin)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return False
        public = self.config.public_url
        if public is not None and origin == public.origin:
            return True
        return not self._via_public_url(request) and origin == f"http://{request.host}"

    @web.middleware
    async def _security(self, request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            if not self._host_allowed(request.headers.get("Host")):
                log.warning("web request with unexpected Host refused", host=request.headers.get("Host"),
                            remote=request.remote)
                return _headers(web.Response(status=421, text="unexpected Host header\n"))
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = web.Response(status=exc.status, text=exc.text, content_type="text/plain")
            return _headers(response)
        finally:
            if request.path != "/ws":  # a WebSocket handler lasts as long as its page stays open
                self.web_busy += time.perf_counter() - started

    def _require(self, request: web.Request, role: str = VIEWER) -> str:
        got = self.role_of(request)
        if got is None:
            raise web.HTTPUnauthorized(text="no valid token: open the address printed by `mimoctl web` "
                                            "(or by `mimocorb2 run --web`)\n")
        if role == OPERATOR and got != OPERATOR:
            raise web.HTTPForbidden(text="the viewer token may not act; use `mimoctl web --operator`\n")
        return got

    # ------------------------------------------------------------------ pages
    async def _index(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is not None:
            role = self.tokens.role_of(token) if self.tokens else OPERATOR
            if role is None:
                log.warning("web login with a wrong token", remote=request.remote)
                return web.Response(status=401, text="wrong token: open the address printed by `mimoctl web` "
                                                     "(or by `mimocorb2 run --web`)\n")
            # the token leaves the address bar (and the history)
            response = web.Response(status=303, headers={"Location": "/"})
            # Secure under an https public address only: a direct http visit (ssh tunnel) must keep its cookie
            secure = self._via_public_url(request) and self.config.public_url.secure  # type: ignore[union-attr]
            response.set_cookie(self.cookie_name, token, httponly=True, samesite="Strict", path="/", secure=secure)
            log.info("web login", role=role, remote=request.remote)
            return response
        if self.role_of(request) is None:
            return web.Response(status=401, content_type="text/html",
                                text=self._login_html)
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "version": __version__})

    async def _session(self, request: web.Request) -> web.Response:
        role = self._require(request)
        out: dict[str, Any] = {"role": role, "version": __version__, "cookie": self.cookie_name,
                               "can_start": self.config.start_offered}
        if role == OPERATOR and self.config.start_offered:
            setups = await asyncio.to_thread(allowed_setups, self.config)
            out["setups"] = list(setups)
        return web.json_response(out)

    async def _api_status(self, request: web.Request) -> web.Response:
        self._require(request)
        return web.json_response(await self.backend.status(), dumps=dumps)

    async def _api_history(self, request: web.Request) -> web.Response:
        self._require(request)
        window_text = request.query.get("window", "600")
        window = None if window_text == "all" else _positive(window_text)
        history = self.feeds.history
        if history is None:
            return web.json_response({"names": [], "t": [], "rates": {}, "resolution": 1.0})
        return web.json_response(history.query(window, time.time()))

    async def _api_setup(self, request: web.Request) -> web.Response:
        self._require(request)
        return web.json_response(self.backend.setup_graph(), dumps=dumps)

    async def _api_histograms(self, request: web.Request) -> web.Response:
        self._require(request)
        panels = await asyncio.to_thread(_panels.read_histogram_panels, self.feeds.histogram_dirs())
        return web.json_response(panels)

    async def _api_histogram_file(self, request: web.Request) -> web.StreamResponse:
        self._require(request)
        path = _panels.histogram_file(self.feeds.histogram_dirs(), request.match_info["directory"],
                                      request.match_info["filename"])
        if path is None:
            raise web.HTTPNotFound(text="no such histogram file\n")
        return web.FileResponse(path, headers=_attachment(f"{request.match_info['directory']}_{path.name}"))

    async def _api_logs(self, request: web.Request) -> web.Response:
        """Older lines of one log: ``?name=N&before=OFFSET``."""
        self._require(request)
        files = self.backend.log_files()
        name = request.query.get("name", "")
        if name not in files:
            raise web.HTTPNotFound(text=f"no log {name!r}\n")
        before = int(_positive(request.query.get("before", "0")) or 0)
        try:
            chunk = await asyncio.to_thread(read_before, files[name], name, before)
        except OSError as exc:
            raise web.HTTPNotFound(text=f"cannot read log {name}: {exc}\n") from None
        return web.json_response(chunk)

    async def _api_log_download(self, request: web.Request) -> web.StreamResponse:
        self._require(request)
        files = self.backend.log_files()
        name = request.match_info["name"]
        if name not in files or not files[name].is_file():
            raise web.HTTPNotFound(text=f"no log {name!r}\n")
        return web.FileResponse(files[name], headers=_attachment(f"{name}.log"))

    # ------------------------------------------------------------------ actions
    async def _api_action(self, request: web.Request) -> web.Response:
        role = self._require(request, OPERATOR)
        if request.headers.get(ACTION_HEADER) != "1" or not self._same_origin(request):
            log.warning("web action refused: cross-origin or without the action header",
                        origin=request.headers.get("Origin"), remote=request.remote)
            raise web.HTTPForbidden(text="actions need the page's own origin and header\n")
        verb = request.match_info["verb"]
        if verb not in VERBS:
            raise web.HTTPNotFound(text=f"no action {verb!r}; actions: {', '.join(VERBS)}\n")
        if verb == "start" and not self.config.start_offered:
            return web.json_response({"ok": False, "problems": [],
                                      "error": "this page serves one foreground run: Start is not offered"},
                                     status=409)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON\n") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object\n")
        args = await self._action_args(verb, body)
        peer = WebPeer(role, f"{request.remote}")
        log.info("web action", verb=verb, role=role, remote=request.remote)
        self.feeds.requested(verb, str(peer))
        from mimocorb2.control.server import CommandError

        try:
            result = await self.backend.dispatch(verb, args, peer)
        except CommandError as exc:
            self.feeds.refused(verb)
            return web.json_response({"ok": False, "error": exc.message, "problems": exc.problems}, status=409)
        self.feeds.tick_now()
        return web.json_response({"ok": True, "result": result}, dumps=dumps)

    async def _action_args(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        if verb == "start":
            setups = await asyncio.to_thread(allowed_setups, self.config)
            key = body.get("setup")
            if key not in setups:
                raise web.HTTPBadRequest(text="setup: not one of the setups this daemon offers\n")
            args: dict[str, Any] = {"setup": str(setups[key])}
            comment = body.get("comment")
            if comment:
                if not isinstance(comment, str):
                    raise web.HTTPBadRequest(text="comment: expected text\n")
                args["comment"] = comment
            return args
        if verb == "stop":
            return {"wait": False}
        if verb == "abort":
            if body.get("confirm") is not True:
                raise web.HTTPBadRequest(text="abort needs {\"confirm\": true}\n")
            return {}
        if verb == "ack":
            alarm = body.get("alarm")
            if alarm is not None and not isinstance(alarm, str):
                raise web.HTTPBadRequest(text="alarm: expected an alarm id\n")
            return {"alarm": alarm}
        return {}

    # ------------------------------------------------------------------ websocket
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        role = self._require(request)
        if not self._same_origin(request):
            log.warning("web socket refused: foreign origin", origin=request.headers.get("Origin"),
                        remote=request.remote)
            raise web.HTTPForbidden(text="foreign origin\n")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
        await ws.prepare(request)
        page = Page(ws, role, str(request.remote))
        self.feeds.welcome(page)
        await self.hub.serve(page, self._buffer_names, self.feeds.on_view)
        return ws

    def _buffer_names(self) -> list[str]:
        graph = self.backend.setup_graph()
        return list(graph["buffers"]) if graph else []


def _host_name(host: str) -> str:
    """The name of a ``Host`` header without its port, lower case (``[v6]`` keeps its brackets)."""
    host = host.strip().lower()
    return host if host.endswith("]") else host.rsplit(":", 1)[0]


def _headers(response: web.StreamResponse) -> web.StreamResponse:
    if response.prepared:  # a WebSocket that has ended
        return response
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


def _positive(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"expected a number, got {text!r}\n") from None
    if value < 0:
        raise web.HTTPBadRequest(text=f"expected a positive number, got {text!r}\n")
    return value
