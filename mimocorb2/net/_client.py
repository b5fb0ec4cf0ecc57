"""Client glue: an asyncio loop thread inside the worker, connecting with backoff, status.

A worker is a synchronous process and nats-py is asyncio. :class:`LoopThread` runs one
event loop in a background thread of the worker process: it keeps the connection
alive (pings, reconnects, acknowledgements) while the worker's main thread moves
slots in shared memory. The main thread hands coroutines over with
:meth:`LoopThread.call` and waits for them in short slices, beating its heartbeat, so
a worker waiting for the network is never taken for a stalled one. Events never pass
through the loop thread other than as the bytes of a message being sent or received.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..datapath import heartbeat as _heartbeat
from ..errors import SetupError
from ..functions._common import ConfigChecker
from ._config import DEFAULT_ACK_WAIT, Credentials, Retention, _Common, redact_url

__all__ = ["LoopThread", "State", "Status", "StatusFile", "checked_config", "connect", "ensure_consumer",
           "import_nats", "is_api_refusal", "is_stream_full", "login_refusal", "open_status", "retry_api",
           "status_path", "stream_settings"]

T = TypeVar("T")
C = TypeVar("C", bound=_Common)
_WAIT_SLICE = 0.2  # seconds between heartbeats while the main thread waits for the loop thread


def import_nats(worker: str, function: str) -> Any:
    """The ``nats`` package, or a SetupError saying what to install."""
    try:
        import nats  # noqa: F401
        import nats.js  # noqa: F401
    except ImportError:
        raise SetupError(
            f"worker '{worker}' ({function}): the NATS client is not installed",
            problems=[f"Workers.{worker}.function: {function} needs nats-py: "
                      "pip install 'mimocorb2[nats]' (or pip install nats-py)"],
        ) from None
    return nats


def checked_config(io: Any, function: str, read: Callable[[ConfigChecker, Any], C], *,
                   sources: int, sinks: int | None = None) -> C:
    """The checked config of a NATS worker, once nats-py is known to be importable.

    Checks the buffer counts (``sources``, ``sinks`` unless None, never observes) and
    the config keys with ``read``; every problem is one line of a single SetupError
    naming ``function``. Only a setup without problems is asked for nats-py.
    """
    check = ConfigChecker(io, function)
    check.buffer_count("sources", list(io.buffer_names_in), sources)
    if sinks is not None:
        check.buffer_count("sinks", list(io.buffer_names_out), sinks)
    check.buffer_count("observes", list(io.buffer_names_observe), 0)
    cfg = read(check, io)
    check.done()
    import_nats(io.name, function)
    return cfg


class State(Enum):
    """What a NATS worker process is doing (the ``state`` of its status file)."""

    STARTING = "starting"
    WAITING_FOR_SERVER = "waiting for NATS"
    WAITING_FOR_STREAM = "waiting for stream"
    WAITING_FOR_CONSUMER = "waiting for an importing group"
    STREAM_FULL = "stream full, waiting"
    LOGIN_REFUSED = "login refused"  #: the server refused the credentials or the TLS certificates: the worker fails
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Status:
    """Written to ``RUN_DIR/status/<worker>[.<index>].json``; holds no secret."""

    worker: str
    process: int
    url: str
    stream: str
    state: str = State.STARTING.value
    message: str = ""
    blocks: int = 0
    events: int = 0
    retries: int = 0
    reconnects: int = 0
    last_error: str | None = None
    session: str = ""  #: exporter: this run's session id (docs/network.md, End of stream)
    runs_open: int = 0  #: importer: sessions seen (a start marker or a block) whose end markers are not all in
    runs_ended: int = 0  #: importer: sessions seen whose every process sent its end marker
    pid: int = field(default_factory=os.getpid)
    updated: float = 0.0


class StatusFile:
    """Keeps a :class:`Status`, logs state changes once, rewrites the file atomically."""

    def __init__(self, path: Path | None, status: Status, logger: logging.Logger) -> None:
        self.path = path
        self.status = status
        self.log = logger
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._written: tuple[int, int] = (-1, -1)  # (blocks, events) in the file

    def set(self, state: State, message: str = "", error: str | None = None) -> None:
        """Enter ``state``; log it when it changes (never a secret: messages carry redacted URLs)."""
        with self._lock:
            if self.status.state == State.FINISHED.value:
                return  # closing the connection afterwards is no news
            changed = state.value != self.status.state or message != self.status.message
            self.status.state = state.value
            self.status.message = message
            if error is not None:
                self.status.last_error = error
        if changed:
            level = (logging.INFO if state in (State.RUNNING, State.FINISHED, State.STARTING)
                     else logging.ERROR if state is State.LOGIN_REFUSED else logging.WARNING)
            self.log.log(level, "%s%s", message or state.value, f" ({error})" if error else "")
            self.write()

    def count(self, blocks: int = 0, events: int = 0) -> None:
        """Add to the counters; rewrite the file at most once a second."""
        self.status.blocks += blocks
        self.status.events += events
        if time.monotonic() - self._last_write >= 1.0:
            self.write()

    def flush(self) -> None:
        """Rewrite the file if the counters changed since it was written (when idle)."""
        if self._written != (self.status.blocks, self.status.events):
            self.write()

    def write(self) -> None:
        """Rewrite the status file (readers see the old or the new one, never half)."""
        if self.path is None:
            return
        self._last_write = time.monotonic()
        with self._lock:
            self.status.updated = time.time()
            self._written = (self.status.blocks, self.status.events)
            text = json.dumps(asdict(self.status), indent=1) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)
        except OSError:
            pass  # informative only: never let it stop the data


def status_path(io: Any) -> Path:
    """Where a process of ``io``'s worker writes its status."""
    n = int(getattr(io, "number_of_processes", 1) or 1)
    suffix = "" if n == 1 else f".{int(getattr(io, 'process_index', 0))}"
    return Path(io.run_dir) / "status" / f"{io.name}{suffix}.json"


def open_status(io: Any, cfg: _Common) -> StatusFile:
    """The status file of this process of ``io``'s worker, for ``cfg``'s server and stream."""
    status = Status(io.name, int(getattr(io, "process_index", 0)), cfg.shown_url, cfg.stream)
    return StatusFile(status_path(io), status, io.logger)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()


class LoopThread:
    """One asyncio loop in a daemon thread of this worker process."""

    def __init__(self) -> None:
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name="nats-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; returns at once."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @staticmethod
    def wait(future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """The result of ``future``, beating the heartbeat while waiting (TimeoutError after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ = _WAIT_SLICE if deadline is None else max(0.0, min(_WAIT_SLICE, deadline - time.monotonic()))
            try:
                return future.result(slice_)
            except concurrent.futures.TimeoutError:
                _heartbeat.beat()
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("the NATS loop did not answer in time") from None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it (beating the heartbeat)."""
        return self.wait(self.submit(coro), timeout)

    def close(self, nc: Any = None) -> None:
        """Close the connection (flushing what is buffered) and stop the loop."""
        if nc is not None:
            try:
                self.submit(nc.close()).result(10)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def connect(cfg: _Common, name: str, status: StatusFile, should_stop: Callable[[], bool]) -> Any:
    """Connect to the server(s), retrying without limit until it works (None: told to stop).

    nats-py retries the first connection and later reconnects by itself every
    ``reconnect_time_wait``; the callbacks keep the status file true ("waiting for
    NATS at URL") and ``should_stop`` is asked while waiting.

    A refused login (token, user/password, creds) or TLS certificate on the first
    connection will not go away by retrying: the status becomes "login refused" and a
    SetupError names the server and the config keys to check (the worker fails without
    restarts). The same refusal after a reconnect (the server's config changed mid-run)
    keeps the worker retrying, its status saying so.
    """
    import nats

    waiting = f"waiting for NATS at {cfg.shown_url}"
    connected = False
    refused: list[str] = []  # why the server refused this client, before the first connection

    async def on_disconnect() -> None:
        status.set(State.WAITING_FOR_SERVER, waiting, "connection lost")

    async def on_reconnect() -> None:
        status.status.reconnects += 1
        status.set(State.RUNNING, f"reconnected to NATS at {cfg.shown_url}")

    async def on_error(exc: Exception) -> None:
        reason = login_refusal(exc, cfg.credentials)
        error = reason or f"{type(exc).__name__}: {exc}"
        status.status.last_error = error
        if connected:
            if reason:
                status.set(State.WAITING_FOR_SERVER, f"{waiting} (login refused)", error)
        elif reason:
            refused.append(reason)
        else:
            status.set(State.WAITING_FOR_SERVER, waiting, error)

    plain = await _server_without_tls(cfg) if _tls_asked(cfg) else None
    if plain is not None:
        raise _refused_login(cfg, status, _no_tls_reason(plain), by_server=False)
    task = asyncio.ensure_future(nats.connect(
        servers=list(cfg.urls), name=name, allow_reconnect=True, max_reconnect_attempts=-1,
        reconnect_time_wait=min(1.0, cfg.connect_backoff_max), connect_timeout=2, ping_interval=10,
        max_outstanding_pings=3, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
        error_cb=on_error, pending_size=64 * 1024 * 1024, **cfg.credentials.connect_options(),
    ))
    while not task.done():
        await asyncio.wait({task}, timeout=0.2)
        if task.done():
            break
        if refused:
            task.cancel()
            raise _refused_login(cfg, status, refused[0])
        if should_stop():
            task.cancel()
            return None
    nc = task.result()
    connected = True
    if _tls_asked(cfg) and not (getattr(nc, "_server_info", None) or {}).get("tls_required"):
        url = redact_url(nc.connected_url.geturl()) if nc.connected_url else cfg.shown_url
        await nc.close()  # a server without TLS came up after the check above
        raise _refused_login(cfg, status, _no_tls_reason(url), by_server=False)
    return nc


def _tls_asked(cfg: _Common) -> bool:
    """Whether the config asks for TLS (a tls:// URL, a CA or a client certificate)."""
    credentials = cfg.credentials
    return bool(credentials.tls_ca or credentials.tls_cert) or any(u.startswith("tls://") for u in cfg.urls)


def _no_tls_reason(url: str) -> str:
    return (f"TLS: the config asks for TLS ('tls_ca', 'tls_cert' or a tls:// URL) but the server at {url} "
            "does not require it; refusing to log in unencrypted (turn on tls in the server's config)")


async def _server_without_tls(cfg: _Common) -> str | None:
    """The (redacted) URL of a reachable server that does not require TLS, else None.

    nats-py upgrades a connection to TLS only when the server's INFO says
    ``tls_required``: against a server without TLS it would send the login in the
    clear although the config asks for TLS. Each server's INFO is read before
    connecting; an unreachable one is left to the connection loop (checked after).
    """
    for url in cfg.urls:
        parts = urlsplit(url)
        if parts.scheme in ("ws", "wss") or parts.hostname is None:
            continue
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 4222), 2)
        except (OSError, asyncio.TimeoutError, ValueError):
            continue
        try:
            line = await asyncio.wait_for(reader.readline(), 2)
        except (OSError, asyncio.TimeoutError):
            continue
        finally:
            writer.close()
        if not line.startswith(b"INFO "):
            continue
        try:
            info = json.loads(line[5:])
        except ValueError:
            continue
        if not info.get("tls_required"):
            return redact_url(url)
    return None


def login_refusal(exc: BaseException, credentials: Credentials) -> str | None:
    """Why the server refused this client's login or TLS handshake, naming the config
    keys to check; None for any other error (unreachable, timeouts: worth retrying)."""
    import ssl

    text = str(exc)
    if _is_auth_error(exc):
        if credentials.creds is not None:
            keys = "'creds' (the user JWT or its seed)"
        elif credentials.token is not None:
            keys = "'token' / 'token_file'"
        elif credentials.user is not None:
            keys = "'user' and 'password' / 'password_file'"
        else:
            return "the server asks for a login: give 'user' + 'password_file', 'token_file' or 'creds'"
        return f"authentication failed: the server refused the login; check {keys}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        trusted = f"the CA in 'tls_ca' ({credentials.tls_ca})" if credentials.tls_ca else "a CA this system trusts (set 'tls_ca')"
        detail = getattr(exc, "verify_message", "") or text
        return f"TLS: the server's certificate was refused ({detail}): it is not signed by {trusted} or not for this host"
    if isinstance(exc, ssl.SSLError):
        upper = text.upper()
        if "CERTIFICATE_REQUIRED" in upper:
            return "TLS: the server asks for a client certificate: set 'tls_cert' and 'tls_key'"
        if "UNKNOWN_CA" in upper or "BAD_CERTIFICATE" in upper or "CERTIFICATE_UNKNOWN" in upper:
            return f"TLS: the server refused the client certificate in 'tls_cert' ({credentials.tls_cert})"
    return None


def _refused_login(cfg: _Common, status: StatusFile, reason: str, by_server: bool = True) -> SetupError:
    """Mark the status "login refused" and say so in a SetupError naming the worker and the
    server; ``by_server``: the server refused, else this worker would not log in."""
    worker = status.status.worker
    if by_server:
        message, headline = (f"NATS at {cfg.shown_url} refused worker '{worker}': {reason}",
                             f"worker '{worker}': NATS at {cfg.shown_url} refused the connection")
    else:
        message, headline = (f"worker '{worker}' does not log in to NATS at {cfg.shown_url}: {reason}",
                             f"worker '{worker}': no login to NATS at {cfg.shown_url}")
    status.status.last_error = reason
    status.set(State.LOGIN_REFUSED, message)
    return SetupError(headline, problems=[f"Workers.{worker}.config: {reason}"])


def _is_auth_error(exc: BaseException) -> bool:
    """'Authorization Violation', 'User Authentication Expired' / 'Revoked'; not
    'Authentication Timeout' (a client too slow to log in, e.g. on a loaded machine, may retry)."""
    text = str(exc).lower()
    return "authorization" in text or ("authentication" in text and "timeout" not in text)


def is_api_refusal(exc: BaseException) -> bool:
    """A JetStream API error that retrying will not fix (bad config, limits)."""
    from nats.js.errors import APIError, ServiceUnavailableError

    return isinstance(exc, APIError) and not isinstance(exc, ServiceUnavailableError) and getattr(exc, "code", None) not in (None, 503)


def is_stream_full(exc: BaseException) -> bool:
    """Whether a publish failed because the stream refuses new messages (discard new)."""
    text = str(exc).lower()
    return "maximum" in text and ("exceeded" in text or "bytes" in text or "messages" in text)


def stream_settings(cfg: Any, retention: Retention, metadata: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments of the StreamConfig an exporter creates."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType

    interest = retention is Retention.INTEREST
    return {
        "name": cfg.stream,
        "subjects": [f"mimocorb2.{cfg.stream}.>"],
        "retention": RetentionPolicy.INTEREST if interest else RetentionPolicy.LIMITS,
        "discard": DiscardPolicy.NEW if interest else DiscardPolicy.OLD,
        "max_bytes": cfg.max_bytes,
        "max_age": cfg.max_age or None,
        "storage": StorageType.FILE,
        "duplicate_window": cfg.duplicate_window,
        "metadata": metadata,
    }


async def retry_api(what: str, call: Callable[[], Any], status: StatusFile, cfg: _Common,
                    fatal: Callable[[BaseException], bool] = lambda exc: False) -> Any:
    """Run a JetStream API call, retrying with backoff while the server is unreachable.

    Meanwhile the status says "waiting for NATS at URL (what)". A NotFoundError, and an
    error that ``fatal`` picks (one retrying will not fix), is raised at once.
    """
    from nats.js.errors import NotFoundError

    delay = 0.1
    while True:
        try:
            return await call()
        except NotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - server restarting, no JetStream yet, timeouts
            if fatal(exc):
                raise
            status.set(State.WAITING_FOR_SERVER, f"waiting for NATS at {cfg.shown_url} ({what})",
                       f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.connect_backoff_max)


async def ensure_consumer(js: Any, stream: str, group: str, start: Any, retry: Callable[..., Any],
                          ack_wait: float = DEFAULT_ACK_WAIT) -> Any:
    """Create the durable pull consumer ``group`` on ``stream`` unless it exists; return its info.

    ``start``: None (deliver everything kept), ``"new"``, or a datetime.
    """
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    try:
        return await retry("consumer info", lambda: js.consumer_info(stream, group))
    except NotFoundError:
        pass
    options: dict[str, Any] = {"durable_name": group, "ack_policy": AckPolicy.EXPLICIT,
                               "max_ack_pending": 10_000, "ack_wait": ack_wait}
    if start == "new":
        options["deliver_policy"] = DeliverPolicy.NEW
    elif start is not None:
        options["deliver_policy"] = DeliverPolicy.BY_START_TIME
        options["opt_start_time"] = start
    else:
        options["deliver_policy"] = DeliverPolicy.ALL
    return await retry("creating the consumer", lambda: js.add_consumer(stream, ConsumerConfig(**options)))
