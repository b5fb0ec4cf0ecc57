"""Every start and end marker of a stream, as one importing process sees them for itself.

The group's durable consumer hands each marker to ONE of the group's processes, which
may run on another host (a group shared across hosts keeps no common run directory).
So that every process can decide by itself when the group is done, each importing
process also reads the stream's marker subject through a consumer of its own (a
*marker view*): every start and end marker, from the group's acknowledgement floor
at the time the process started on (what the group consumed before that belongs to
earlier runs of the group and is not read again).

The view is a named pull consumer (``<group>-markers-<random>``) filtered on the
marker subject, with explicit acknowledgements (a marker lost on the way is delivered
again) and an inactivity threshold (the server removes the view of a killed process
by itself; a closing process deletes its own). It survives a server restart like the
group's consumer. Under interest retention a marker stays in the stream until every
view has it, so a running view misses none.

Invariant: :class:`MarkerLog` only grows; a marker read twice changes nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from . import _wire

__all__ = ["MarkerLog", "MarkerView", "SessionKey"]

SessionKey = tuple[str, str]  #: (producer, session)
_VIEW_INACTIVE = 120.0  # seconds after which the server removes the view of a process that died
_VIEW_ACK_WAIT = 2.0  # seconds until the server delivers an unacknowledged marker again
_FOLLOW_WAIT = 1.0  # seconds one fetch of the following task waits
_BATCH = 256


@dataclass
class MarkerLog:
    """Start and end markers by session; written on the loop thread, read on the main thread."""

    started: set[SessionKey] = field(default_factory=set)  #: sessions with a start marker
    ended: dict[SessionKey, set[int]] = field(default_factory=dict)  #: processes that sent their end marker
    processes: dict[SessionKey, int] = field(default_factory=dict)  #: processes of the session's worker
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, block: _wire.Block) -> None:
        """Record a start or end marker (anything else is ignored)."""
        key = (block.producer, block.session)
        with self._lock:
            if block.kind is _wire.BlockKind.START:
                self.started.add(key)
            elif block.kind is _wire.BlockKind.END:
                self.ended.setdefault(key, set()).add(block.process)
                self.processes[key] = block.processes

    def snapshot(self) -> tuple[set[SessionKey], dict[SessionKey, set[int]], dict[SessionKey, int]]:
        """Copies of (started, ended, processes), consistent with each other."""
        with self._lock:
            return set(self.started), {k: set(v) for k, v in self.ended.items()}, dict(self.processes)


class MarkerView:
    """This process's own consumer of the stream's markers; lives on the loop thread."""

    def __init__(self, js: Any, stream: str, group: str, subject: str, log: Any) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.name = f"{group[:100]}-markers-{secrets.token_hex(6)}"
        self.markers = MarkerLog()
        self.log = log  # the worker's logger
        self.sub: Any = None
        self.next_seq = 1  #: first stream sequence not read yet
        self._lock = asyncio.Lock()  # one fetch at a time
        self._task: asyncio.Task[None] | None = None

    async def start(self, floor: int) -> None:
        """Read every marker after stream sequence ``floor`` (the group's acknowledgement floor)."""
        self.next_seq = floor + 1
        await self._create()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _create(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        await self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name=self.name, filter_subject=self.subject, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=_VIEW_ACK_WAIT, inactive_threshold=_VIEW_INACTIVE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.next_seq))
        self.sub = await self.js.pull_subscribe_bind(durable=self.name, stream=self.stream)

    async def _follow(self) -> None:
        """Keep reading markers as they come (keeps the view active on the server)."""
        while True:
            try:
                async with self._lock:
                    await self._fetch(_FOLLOW_WAIT)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - server away, or the view was removed
                await asyncio.sleep(0.5)
                await self._recover()

    async def _recover(self) -> None:
        """Make the view again if the server removed it (inactive too long), reading on where it stopped."""
        from nats.js.errors import NotFoundError

        try:
            async with self._lock:
                try:
                    await self.js.consumer_info(self.stream, self.name)
                except NotFoundError:
                    self.log.warning("marker view %s was removed by the server: reading markers again "
                                     "from stream sequence %d", self.name, self.next_seq)
                    await self._create()
        except Exception:  # noqa: BLE001 - server still away: tried again after the next failure
            pass

    async def _fetch(self, wait: float) -> int:
        """Read the markers that come within ``wait`` seconds; how many were read."""
        import nats.errors

        try:
            msgs = await self.sub.fetch(_BATCH, timeout=wait)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return 0
        for msg in msgs:
            try:
                self.markers.add(_wire.decode_block(msg.headers, msg.data))
            except _wire.WireError:
                pass  # not a mimocorb2 marker: the group's consumer reports such messages
            self.next_seq = max(self.next_seq, msg.metadata.sequence.stream + 1)
            await msg.ack_sync(timeout=5.0)
        return len(msgs)

    async def caught_up(self) -> bool:
        """Read what is waiting; True when every marker now in the stream after the floor was read."""
        async with self._lock:
            for _ in range(8):
                try:
                    info = await self.js.consumer_info(self.stream, self.name)
                except Exception:  # noqa: BLE001 - ask again at the next check (the follower recovers)
                    return False
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return True
                try:
                    await self._fetch(0.2)
                except Exception:  # noqa: BLE001 - ask again at the next check
                    return False
            return False

    async def close(self) -> None:
        """Stop following and delete the view on the server (best effort)."""
        if self._task is not None:
            self._task.cancel()
        try:
            await asyncio.wait_for(self.js.delete_consumer(self.stream, self.name), 2.0)
        except Exception:  # noqa: BLE001 - the server removes it after the inactivity threshold
            pass
