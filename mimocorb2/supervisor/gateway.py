"""The one way the supervisor calls into its buffers: in a thread, never on the loop.

Every buffer operation that takes a buffer's process-shared lock (counters,
stats, reclaim, retire, end, pause, detach, limits) may wait: a worker killed
inside the lock's critical section leaves it taken until ``reclaim`` repairs
it. So each call runs in a worker thread, and the loop stays free to notice
deaths and answer the socket.

Invariants:

* ``closed`` only goes from False to True (:meth:`close_blocking`); after that
  every call returns None without touching a buffer.
* ``_inflight`` counts calls between their check of ``closed`` and their
  return; :meth:`close_blocking` unmaps the buffers only when it is 0, so no
  thread ever touches an unmapped buffer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from mimocorb2.mimo_buffer import mimoBuffer

log = structlog.get_logger("mimocorb2.run")

T = TypeVar("T")

__all__ = ["BufferGateway"]


class BufferGateway:
    """The run's buffers behind a thread boundary (see the module docstring)."""

    def __init__(self, buffers: dict[str, mimoBuffer]) -> None:
        self.buffers = buffers
        self._calls = threading.Condition()
        self._closed = False
        self._inflight = 0

    # ---------------------------------------------------------------- plumbing
    async def call(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Run ``fn(*args)`` in a thread; None once the buffers are closed."""

        def guarded() -> T | None:
            with self._calls:
                if self._closed:
                    return None
                self._inflight += 1
            try:
                return fn(*args)
            finally:
                with self._calls:
                    self._inflight -= 1
                    self._calls.notify_all()

        return await asyncio.to_thread(guarded)

    def close_blocking(self, timeout: float = 30.0) -> bool:
        """Refuse new calls, wait for those in flight, unmap every buffer (call in a thread)."""
        with self._calls:
            self._closed = True
            if not self._calls.wait_for(lambda: self._inflight == 0, timeout=timeout):
                log.error("buffer calls still running at close; leaving the buffers mapped")
                return False
        for name, buf in self.buffers.items():
            try:
                buf.close()
            except Exception:
                log.exception("closing buffer failed", buffer=name)
        return True

    def _each(self, names: list[str], what: str, fn: Callable[[mimoBuffer], Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            buf = self.buffers.get(name)
            if buf is None:
                continue
            try:
                out[name] = fn(buf)
            except Exception:
                log.exception(f"{what} failed", buffer=name)
        return out

    # ---------------------------------------------------------------- operations (async, threaded)
    async def counters(self) -> dict[str, dict[str, Any]]:
        """Fresh raw counters of every buffer (``mimoBuffer.counters``)."""
        return await self.call(self._each, list(self.buffers), "counters", lambda b: b.counters()) or {}

    async def stats(self) -> dict[str, dict[str, Any]]:
        """``get_stats()`` of every buffer (rates since the previous call)."""
        return await self.call(self._each, list(self.buffers), "get_stats", lambda b: dict(b.get_stats())) or {}

    async def reclaim(self, names: list[str], pid: int) -> dict[str, dict[str, Any]]:
        """Give back what dead process ``pid`` held in ``names`` (repairs a lock it died holding)."""
        return await self.call(self._each, names, "reclaim", lambda b: dict(b.reclaim(pid))) or {}

    async def retire(self, names: list[str], pids: list[int]) -> None:
        """Count writers that will not come back as flushed, so their sinks can end."""
        def retire_all(buf: mimoBuffer) -> None:
            for pid in pids:
                buf.retire_writer(pid)

        await self.call(self._each, names, "retire_writer", retire_all)

    async def end(self, names: list[str]) -> None:
        """Resume and end buffers now (stop, abort): writers get their writes rejected."""
        def end_one(buf: mimoBuffer) -> None:
            buf.resume()
            buf.shutdown()

        await self.call(self._each, names, "ending buffer", end_one)

    async def set_paused(self, names: list[str], paused: bool) -> None:
        """Pause (writes into them are discarded, counted in ``paused_count``) or resume ``names``.

        Runs in a thread; unknown names are skipped, a buffer that fails is logged, not raised.
        """
        await self.call(self._each, names, "pause" if paused else "resume",
                        lambda b: b.pause() if paused else b.resume())

    async def detach(self, group: str, names: list[str]) -> dict[str, int]:
        """Give up reader group ``group`` in ``names``; return the events dropped per buffer."""
        def detach_one(buf: mimoBuffer) -> int:
            groups = buf.counters().get("groups", {})
            dropped = int((groups.get(group) or {}).get("pending", 0))
            dropped += int((groups.get(group) or {}).get("held", 0))
            buf.detach_group(group)
            return dropped

        return await self.call(self._each, names, "detach_group", detach_one) or {}

    def set_event_limit_now(self, names: list[str], limit: int) -> None:
        """Before any process exists (nobody can hold a lock yet): exact event limit on ``names``."""
        for name in names:
            self.buffers[name].set_event_limit(limit)
