"""systemd's notify protocol: one datagram per message to ``$NOTIFY_SOCKET``.

Only the daemon talks to systemd. :meth:`Notifier.from_environment` takes the
variables out of ``os.environ`` so that no worker process inherits them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import structlog

log = structlog.get_logger("mimocorb2.sdnotify")

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass
class Notifier:
    """The daemon's client of systemd's notify socket.

    Without ``address`` (not started by systemd with ``Type=notify``) every message is a
    no-op returning False. Invariants: from :meth:`from_environment`, ``watchdog_usec`` is
    set only when systemd asked this very process for watchdog pings; ``_sock`` is opened
    by the first message sent and is None again after :meth:`close`.
    """

    address: str | None = None  # as given: a path or '@abstract'
    watchdog_usec: int | None = None
    _sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None, *, consume: bool = True) -> "Notifier":
        """A notifier for ``$NOTIFY_SOCKET``, with the watchdog when ``$WATCHDOG_PID`` is absent or ours.

        With ``consume`` the three variables are removed from ``environ`` (``os.environ``: from the
        process environment too); call it before any worker is spawned so none inherits them.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC")
        if usec:
            pid = env.get("WATCHDOG_PID")
            try:
                if not pid or int(pid) == os.getpid():
                    watchdog = int(usec) if int(usec) > 0 else None
            except ValueError:
                watchdog = None
        if consume:
            for key in _ENV_KEYS:
                env.pop(key, None)  # os.environ.pop also unsetenv()s for child processes
        return cls(address=address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is known, i.e. the daemon runs under systemd ``Type=notify``."""
        return bool(self.address)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of systemd's watchdog timeout."""
        if not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2e6

    def _sockaddr(self) -> str | bytes:
        assert self.address
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; never raises, returns whether it was sent."""
        if not self.address:
            return False
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self._sockaddr())
            return True
        except OSError as exc:
            log.warning("sd_notify failed", address=self.address, error=str(exc))
            return False

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` with MAINPID (and a status): startup is complete. Returns whether it was sent."""
        return self.notify("READY=1", *( [f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        """A ``STATUS=`` line for ``systemctl status`` (newlines become spaces). Returns whether sent."""
        return self.notify(f"STATUS={text.replace(chr(10), ' ')}")

    def watchdog(self) -> bool:
        """A ``WATCHDOG=1`` ping; systemd kills the daemon if none comes for ``watchdog_usec``.

        Send it from the event loop, so that a stalled loop stops the pings. Returns whether sent.
        """
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` (and a status): shutdown has begun. Returns whether it was sent."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        """Close the datagram socket (idempotent); a later message opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
