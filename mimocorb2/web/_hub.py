"""The pages' WebSockets: one per page, each with a sender task that keeps only the latest frame.

Producers (the status ticker, scope samplers, the log tail) call
:meth:`Page.offer`; that never waits. Each page's sender task sends what is
waiting; a frame of a kind replaces the unsent one of the same kind, so a slow
or stalled browser costs one pending frame per kind, never the daemon's time.
Log lines are the exception: they queue, up to :data:`MAX_PENDING_LINES`, and
the oldest are dropped (counted) beyond that.

From the page the socket carries only what the page shows (its *view*), never
a command: ``{"type": "view", "scopes": [buffer, ...], "logs": bool, "histograms": bool}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

MAX_PENDING_LINES = 2000
MAX_SCOPES = 16


@dataclass
class View:
    """What a page shows now: it gets frames for nothing else."""

    scopes: set[str] = field(default_factory=set)
    logs: bool = False
    histograms: bool = False


class Page:
    """One open page (one WebSocket)."""

    def __init__(self, ws: web.WebSocketResponse, role: str, remote: str) -> None:
        self.ws = ws
        self.role = role
        self.remote = remote
        self.view = View()
        self._latest: dict[str, str | bytes] = {}
        self._lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_PENDING_LINES)
        self._dropped = 0
        self._wake = asyncio.Event()
        self.sent = 0

    def offer(self, key: str, frame: str | bytes) -> None:
        """Replace the unsent frame of kind ``key``; never blocks."""
        self._latest[key] = frame
        self._wake.set()

    def offer_lines(self, lines: list[dict[str, Any]]) -> None:
        """Queue log lines (bounded: the oldest go first, counted)."""
        overflow = len(self._lines) + len(lines) - MAX_PENDING_LINES
        if overflow > 0:
            self._dropped += overflow
        self._lines.extend(lines)
        self._wake.set()

    async def sender(self) -> None:
        """Send whatever is waiting, until the socket closes."""
        while not self.ws.closed:
            await self._wake.wait()
            self._wake.clear()
            frames, self._latest = self._latest, {}
            if self._lines:
                lines = list(self._lines)
                self._lines.clear()
                frames["logs"] = json.dumps({"type": "logs", "lines": lines, "dropped": self._dropped})
                self._dropped = 0
            for frame in frames.values():
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
                self.sent += 1

    def apply_view(self, message: str, buffers: set[str]) -> None:
        """Take the page's view message; raise ValueError for anything else (the socket is then closed)."""
        data = json.loads(message)
        if not isinstance(data, dict) or data.get("type") != "view" or set(data) - {"type", "scopes", "logs",
                                                                                    "histograms"}:
            raise ValueError("this socket carries only view messages")
        scopes = data.get("scopes", [])
        if not isinstance(scopes, list) or len(scopes) > MAX_SCOPES or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes must be a short list of buffer names")
        self.view = View({s for s in scopes if s in buffers}, bool(data.get("logs")), bool(data.get("histograms")))


class Hub:
    """All open pages."""

    def __init__(self) -> None:
        self.pages: set[Page] = set()

    def broadcast(self, key: str, frame: str | bytes, want: Any = None) -> None:
        """Offer ``frame`` under ``key`` to every page (for which ``want(page)`` is true); never waits on a page."""
        for page in list(self.pages):
            if want is None or want(page):
                page.offer(key, frame)

    def wanted_scopes(self) -> set[str]:
        """The buffers some open page shows an oscilloscope of (their frames are read only then)."""
        return set().union(*(p.view.scopes for p in self.pages)) if self.pages else set()

    def wants_logs(self) -> bool:
        """True when some open page shows the log panel."""
        return any(p.view.logs for p in self.pages)

    def wants_histograms(self) -> bool:
        """True when some open page shows the histogram panels."""
        return any(p.view.histograms for p in self.pages)

    async def serve(self, page: Page, buffers: Any, on_view: Any) -> None:
        """Run one page's socket: its sender task, and its view messages."""
        self.pages.add(page)
        sender = asyncio.create_task(page.sender(), name=f"web-sender-{page.remote}")
        try:
            async for msg in page.ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        page.apply_view(msg.data, set(buffers()))
                    except (ValueError, TypeError) as exc:
                        await page.ws.close(code=1008, message=str(exc)[:100].encode())
                        break
                    on_view(page)
                elif msg.type in (WSMsgType.BINARY,):
                    await page.ws.close(code=1003, message=b"no binary messages")
                    break
        finally:
            self.pages.discard(page)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
