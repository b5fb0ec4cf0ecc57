"""The daemon side of the control socket: listening, peer checks, framing, dispatch.

The server knows nothing about runs; it hands each valid request to a
``dispatch(cmd, args, peer)`` coroutine supplied by the supervisor and writes
back what it returns (or the :class:`CommandError` it raises).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mimocorb2.control import protocol as P

log = structlog.get_logger("mimocorb2.control")

SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750
#: how long a connection may keep sending the rest of an over-long request before it is cut
DISCARD_TIMEOUT = 10.0
#: pending connections the kernel queues before connect() fails with EAGAIN (capped by somaxconn)
LISTEN_BACKLOG = 1024
#: connections served at once; one more is answered ``busy`` and closed
MAX_CONNECTIONS = 256
#: seconds a connection may stay open without sending a request
IDLE_TIMEOUT = 120.0


class CommandError(Exception):
    """Raised by a handler: the request was understood but is refused or failed."""

    def __init__(self, message: str, problems: list[str] | None = None, code: str = P.E_REFUSED) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = list(problems or [])


class SocketInUse(RuntimeError):
    """Another daemon already answers on the socket path."""


@dataclass(frozen=True)
class Peer:
    """The kernel's credentials (``SO_PEERCRED``) of the process at the other end of a connection."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


Dispatch = Callable[[str, dict[str, Any], Peer], Awaitable[Any]]


def peer_credentials(sock: socket.socket) -> Peer:
    """The :class:`Peer` of a connected Unix socket, as the kernel recorded it at connect time.

    The client cannot forge them. Raises OSError if the socket has none.
    """
    fmt = "3i"
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    pid, uid, gid = struct.unpack(fmt, raw)
    return Peer(pid, uid, gid)


def _supplementary_groups(pid: int) -> set[int]:
    """The peer's supplementary groups from /proc (procfs, never blocks on disk)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def peer_allowed(peer: Peer, socket_gid: int, own_uid: int | None = None) -> bool:
    """Same uid as the daemon, root, or a member of the socket's group."""
    own = os.geteuid() if own_uid is None else own_uid
    if peer.uid in (own, 0):
        return True
    if peer.gid == socket_gid:
        return True
    if socket_gid in _supplementary_groups(peer.pid):
        return True
    try:
        name = pwd.getpwuid(peer.uid).pw_name
        return name in grp.getgrgid(socket_gid).gr_mem
    except KeyError:
        return False


def _prepare_path(path: Path) -> None:
    """Create the socket's directory and remove a stale socket; refuse if a daemon answers."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    st_dir = parent.stat()
    if st_dir.st_uid not in (os.geteuid(), 0) and st_dir.st_mode & stat.S_IWOTH:
        raise SocketInUse(f"{parent} belongs to uid {st_dir.st_uid} and is writable by anyone; "
                          "refusing to put the control socket there")
    if st_dir.st_uid != os.geteuid() and str(parent).startswith("/tmp/"):
        raise SocketInUse(f"{parent} belongs to uid {st_dir.st_uid}, not to us; refusing to use it "
                          "(someone may be impersonating the daemon)")
    if path.is_socket() or path.exists():
        st = path.lstat()
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise SocketInUse(f"cannot probe existing socket {path}: {exc}") from None
            path.unlink(missing_ok=True)  # stale: left by a daemon that crashed
        else:
            raise SocketInUse(f"another mimocorb2d is already listening on {path}")
        finally:
            probe.close()


def bind_control_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` with mode 0660 from its first moment."""
    _prepare_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # daemon startup, single thread: umask is process wide
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class ControlServer:
    """Serves the control protocol on a Unix socket; each connection is its own task.

    Invariants: ``_server`` and ``_inode`` (device and inode of the socket file it bound)
    are set by :meth:`start`; ``_server`` is None again after :meth:`close`. ``_connections``
    holds the tasks being served, never more than ``max_connections``; one more connection
    is answered ``busy`` and its request is not carried out. Requests of one connection are
    handled in turn, each reply written before the next line is read.
    """

    def __init__(self, path: Path, dispatch: Dispatch, *, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.path = Path(path)
        self._dispatch = dispatch
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._inode: tuple[int, int] | None = None

    async def start(self) -> None:
        """Bind the socket (mode 0660, see :func:`bind_control_socket`) and begin accepting.

        Raises :class:`SocketInUse` if another daemon answers on the path or its directory is
        unsafe, OSError if the path cannot be bound. A stale socket left by a crash is replaced.
        """
        sock = bind_control_socket(self.path)
        st = self.path.stat()
        self._inode = (st.st_dev, st.st_ino)
        self._server = await asyncio.start_unix_server(
            self._on_connection, sock=sock, limit=P.MAX_REQUEST_BYTES, backlog=LISTEN_BACKLOG
        )
        log.info("control socket listening", socket=str(self.path))

    @property
    def socket_gid(self) -> int:
        """The group of the socket file, whose members may connect (the daemon's group if unreadable).

        Read on every connection, so a ``chgrp`` of the socket takes effect at once.
        """
        try:
            return self.path.stat().st_gid
        except OSError:
            return os.getegid()

    async def close(self) -> None:
        """Stop accepting, cancel the open connections (``logs -f`` streams too), remove the socket.

        The file is removed only if it is still the one :meth:`start` bound: a newer daemon's
        socket is left alone. Waits at most about 2 s for the server to close.
        """
        if self._server is not None:
            self._server.close()
            # do not wait for handlers still streaming (logs -f); cancel them
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        # unlink only our own socket, not one a newer daemon has put there
        with contextlib.suppress(OSError):
            st = self.path.stat()
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            await self._refuse_busy(reader, writer)
            return
        self._connections.add(task)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError):
            pass  # a client that goes away mid-request disturbs nobody
        except asyncio.CancelledError:
            pass
        except Exception:  # never let one connection take the daemon down
            log.exception("control connection failed")
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _refuse_busy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer ``busy`` (the request is not carried out, so retrying is safe) and hang up."""
        log.warning("control connection refused: too many connections",
                    limit=self.max_connections)
        message = (f"the daemon already serves {self.max_connections} connections; "
                   "retry in a moment")
        with contextlib.suppress(Exception):
            writer.write(P.encode(P.error_reply(None, P.E_BUSY, message)))
            await asyncio.wait_for(writer.drain(), 1.0)
            # take the request the client is sending, so that it reads our reply, not a reset
            await asyncio.wait_for(reader.readline(), 1.0)
        with contextlib.suppress(Exception):
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(P.encode(reply))
        await writer.drain()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            peer = peer_credentials(sock)
        except OSError as exc:
            log.warning("no peer credentials", error=str(exc))
            return
        if not peer_allowed(peer, self.socket_gid):
            log.warning("control client refused", peer=str(peer))
            await self._send(
                writer,
                P.error_reply(
                    None,
                    P.E_PERMISSION,
                    f"uid {peer.uid} may not control this daemon "
                    "(only its own user, root, or members of the socket's group)",
                ),
            )
            # take the request the client is sending, so that it reads our reply, not EPIPE
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.readline(), 1.0)
            return
        while True:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
            except asyncio.TimeoutError:
                await self._send(writer, P.error_reply(
                    None, P.E_IDLE, f"no request for {self.idle_timeout:g} s: closing the connection"))
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    # last request without newline: answer it anyway
                    line = exc.partial
                else:
                    return
            except asyncio.LimitOverrunError:
                await self._send(
                    writer,
                    P.error_reply(None, P.E_TOO_LARGE, f"request larger than {P.MAX_REQUEST_BYTES} bytes"),
                )
                log.warning("oversized request refused", peer=str(peer))
                await self._discard_line(reader)
                return
            if not line.strip():
                continue
            reply = await self._handle_line(line, peer)
            await self._send(writer, reply)
            if reader.at_eof():
                return

    async def _discard_line(self, reader: asyncio.StreamReader) -> None:
        """Swallow the rest of an over-long request so the client sees our reply, then hang up."""

        async def discard() -> None:
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk or b"\n" in chunk:
                    return

        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(discard(), DISCARD_TIMEOUT)

    async def _handle_line(self, line: bytes, peer: Peer) -> dict[str, Any]:
        req_id: Any = None
        try:
            request = P.parse_request(line)
            req_id = request.get("id")
            result = await self._dispatch(request["cmd"], request["args"], peer)
            return P.ok_reply(req_id, result)
        except P.ProtocolError as exc:
            return P.error_reply(req_id, exc.code, exc.message, exc.problems)
        except CommandError as exc:
            return P.error_reply(req_id, exc.code, exc.message, exc.problems)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a handler must not take the daemon down
            log.exception("handler failed", peer=str(peer))
            return P.error_reply(req_id, P.E_INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
