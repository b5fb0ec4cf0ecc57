"""Client library for the control socket (used by `mimoctl`, tests and scripts).

    with Client(path) as c:
        status = c.call("status")
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

from mimocorb2.control import protocol as P


#: how long connect() keeps retrying a full accept queue (EAGAIN) / a refusal (ECONNREFUSED)
CONNECT_BUSY_SECONDS = 30.0
CONNECT_REFUSED_SECONDS = 2.0
CONNECT_FIRST_DELAY = 0.01
CONNECT_MAX_DELAY = 0.2


class DaemonUnreachable(ConnectionError):
    """No daemon answers on the socket path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot reach mimocorb2d at {path}: {reason}")
        self.path = path
        self.reason = reason


class RequestFailed(RuntimeError):
    """The daemon answered with an error reply."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.code = str(error.get("code", "error"))
        self.message = str(error.get("message", ""))
        self.problems = [str(p) for p in error.get("problems", []) or []]
        text = self.message
        if self.problems:
            text += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


def _check_reply(reply: Any, req_id: int) -> Any:
    if not isinstance(reply, dict) or reply.get("v") != P.PROTOCOL_VERSION:
        raise RequestFailed({"code": P.E_VERSION, "message": f"unexpected reply: {reply!r:.200}"})
    if not reply.get("ok"):
        raise RequestFailed(reply.get("error") or {})
    return reply.get("result")


class Client:
    """A blocking client; one connection, many requests in turn.

    Invariants: at most one request is in flight; its reply line is read before the next
    request is sent, so replies are matched by order (their ids are not compared). ``_sock``
    is None before the first call and after :meth:`close`, and the next call reconnects.
    ``_buf`` holds what arrived after the last reply line. A call whose reply was not read
    (a timeout, a lost connection, an interrupt) closes the connection, so a late reply is
    never taken for the next call's.
    """

    def __init__(self, path: str | Path | None = None, timeout: float | None = 30.0) -> None:
        self.path = P.resolve_socket_path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 1
        self.connect_attempts = 0  # connect() calls made, retries included

    def connect(self) -> "Client":
        """Connect, retrying briefly while the daemon's socket exists but does not accept.

        A full accept queue (EAGAIN, a connect storm) is retried for up to
        CONNECT_BUSY_SECONDS, a refusal (a daemon restarting) for CONNECT_REFUSED_SECONDS,
        with backoff from 10 ms to 200 ms, never longer than the client's timeout.
        """
        started = time.monotonic()
        delay = CONNECT_FIRST_DELAY
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            self.connect_attempts += 1
            try:
                sock.connect(str(self.path))
            except FileNotFoundError:
                sock.close()
                raise DaemonUnreachable(self.path, "no socket there") from None
            except (BlockingIOError, InterruptedError, ConnectionRefusedError) as exc:
                sock.close()
                busy = not isinstance(exc, ConnectionRefusedError)
                budget = CONNECT_BUSY_SECONDS if busy else CONNECT_REFUSED_SECONDS
                if self.timeout is not None:
                    budget = min(budget, self.timeout)
                if not self.path.exists() or time.monotonic() - started + delay > budget:
                    reason = ("the daemon's accept queue stayed full (it is overloaded)" if busy
                              else "socket exists but nobody listens (stale)")
                    raise DaemonUnreachable(self.path, reason) from None
                time.sleep(delay)  # backoff before the next attempt, not synchronisation
                delay = min(delay * 2, CONNECT_MAX_DELAY)
                continue
            except PermissionError:
                sock.close()
                raise DaemonUnreachable(
                    self.path, "permission denied (are you in the daemon's group?)"
                ) from None
            except OSError as exc:
                sock.close()
                raise DaemonUnreachable(self.path, str(exc)) from None
            self._sock = sock
            return self

    def close(self) -> None:
        """Close the connection if one is open (idempotent); the next :meth:`call` connects again."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def __enter__(self) -> "Client":
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readline(self) -> bytes:
        assert self._sock is not None
        while b"\n" not in self._buf:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise DaemonUnreachable(self.path, "the daemon closed the connection")
            self._buf += chunk
            if len(self._buf) > P.MAX_REPLY_BYTES:
                raise RequestFailed({"code": P.E_TOO_LARGE, "message": "reply too large"})
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = -1.0) -> Any:
        """Send one request and return its result; raise :class:`RequestFailed` on an error reply.

        A daemon at its connection limit answers ``busy`` without reading the request;
        the call then reconnects and retries with backoff for up to CONNECT_BUSY_SECONDS.
        """
        started = time.monotonic()
        delay = CONNECT_FIRST_DELAY
        while True:
            try:
                return self._call_once(cmd, args, timeout)
            except RequestFailed as exc:
                if exc.code != P.E_BUSY or time.monotonic() - started + delay > CONNECT_BUSY_SECONDS:
                    raise
            self.close()
            time.sleep(delay)  # backoff before reconnecting, not synchronisation
            delay = min(delay * 2, CONNECT_MAX_DELAY)

    def _call_once(self, cmd: str, args: dict[str, Any] | None, timeout: float | None) -> Any:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        if timeout != -1.0:
            self._sock.settimeout(timeout)
        req_id = self._next_id
        self._next_id += 1
        sock = self._sock
        try:
            try:
                sock.sendall(P.encode(P.make_request(cmd, args, req_id)))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have answered (refused us) and hung up: read that answer
            line = self._readline()
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise DaemonUnreachable(self.path, f"connection lost: {exc}") from None
        except BaseException:
            # a timeout, an oversized reply, an interrupt: this request's reply may still come,
            # so the connection is given up rather than read as the next request's reply
            self.close()
            raise
        finally:
            if timeout != -1.0:
                sock.settimeout(self.timeout)
        return _check_reply(json.loads(line), req_id)


def call(cmd: str, args: dict[str, Any] | None = None, path: str | Path | None = None,
         timeout: float | None = 30.0) -> Any:
    """One request on a fresh connection."""
    with Client(path, timeout=timeout) as client:
        return client.call(cmd, args)


async def acall(cmd: str, args: dict[str, Any] | None = None, path: str | Path | None = None,
                timeout: float = 30.0) -> Any:
    """One request from asyncio code (tests, tools with their own loop).

    Retries like :meth:`Client.call` while the daemon is too busy to take the connection.
    """
    sock_path = P.resolve_socket_path(path)
    started = time.monotonic()
    delay = CONNECT_FIRST_DELAY
    while True:
        try:
            return await _acall_once(sock_path, cmd, args, timeout)
        except (_Busy, RequestFailed) as exc:
            if isinstance(exc, RequestFailed) and exc.code != P.E_BUSY:
                raise
            refused = isinstance(exc, _Busy) and exc.refused
            budget = CONNECT_REFUSED_SECONDS if refused else CONNECT_BUSY_SECONDS
            if time.monotonic() - started + delay > min(budget, timeout):
                if isinstance(exc, RequestFailed):
                    raise
                raise DaemonUnreachable(sock_path, str(exc)) from None
        await asyncio.sleep(delay)  # backoff before the next attempt, not synchronisation
        delay = min(delay * 2, CONNECT_MAX_DELAY)


class _Busy(Exception):
    """The socket exists but the connection was not accepted (yet)."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


async def _acall_once(sock_path: Path, cmd: str, args: dict[str, Any] | None,
                      timeout: float) -> Any:
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock_path), limit=P.MAX_REPLY_BYTES)
    except (BlockingIOError, ConnectionRefusedError) as exc:
        if not sock_path.exists():
            raise DaemonUnreachable(sock_path, "no socket there") from None
        raise _Busy(str(exc), isinstance(exc, ConnectionRefusedError)) from None
    except (FileNotFoundError, PermissionError) as exc:
        raise DaemonUnreachable(sock_path, str(exc)) from None
    try:
        writer.write(P.encode(P.make_request(cmd, args, 1)))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise DaemonUnreachable(sock_path, "the daemon closed the connection")
        return _check_reply(json.loads(line), 1)
    finally:
        writer.close()
