"""Every start and end marker of a stream, as one importing process sees them for itself.

The group's durable consumer hands each marker to ONE of the group's processes, which
may run on another host (a group shared across hosts keeps no common run directory).
So that every process can decide by itself when the group is done, each importing
process also reads the stream's marker subject through a consumer of its own (a
*marker view*): every start and end marker, from the group's acknowledgement floor
at the time the process started on (what the group consumed before that belongs to
earlier runs of the group and is not read again).

The view is a named pull consumer (``<group>-markers-<12 hex digits>``) filtered on the
marker subject. It never acknowledges a marker, so under interest retention a marker
stays in the stream while any view of the group exists. A process that joins a group
whose other members are running (on any host) starts its view at the lowest floor of
their views, and so reads the start markers of the run it joins, even those the group
took before it came. A view counts as running while the server holds a fetch of it
(each view always has one waiting); the view of a process that died has none after a
second, and the server removes it after ``_VIEW_INACTIVE`` seconds (a closing process
deletes its own at once). A group whose processes all stopped is not running: its next
run starts at the group's acknowledgement floor, so the markers of an earlier run the
group took entirely (its blocks, its start marker) never end it.

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
_VIEW_INACTIVE = 30.0  # seconds after which the server removes the view of a process that died
_VIEW_ACK_WAIT = 86_400.0  # markers are never acknowledged: read again (harmlessly) once a day
_FOLLOW_WAIT = 1.0  # seconds one fetch of the following task waits (then the next one is sent)
_LIVENESS_SAMPLES = 4  # looks at another view for a waiting fetch (its process runs) ...
_LIVENESS_INTERVAL = 0.25  # ... this many seconds apart (longer than a fetch's gap, shorter than its wait)
_NAME_HEX = 12  # random hex digits in a view's name
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
        self.prefix = f"{group[:100]}-markers-"
        self.name = self.prefix + secrets.token_hex(_NAME_HEX // 2)
        self.markers = MarkerLog()
        self.log = log  # the worker's logger
        self.sub: Any = None
        self.floor: int | None = None  #: the view reads the markers after this stream sequence (set by start)
        self.received = 0  #: highest stream sequence read
        self._lock = asyncio.Lock()  # one fetch at a time
        self._task: asyncio.Task[None] | None = None

    async def start(self, floor: int) -> None:
        """Read every marker after stream sequence ``floor`` (the group's acknowledgement floor), or
        after the floor of a running view of the group, if that is lower (this process joins its run)."""
        if self._task is not None:
            return
        if self.floor is None:  # chosen once: a start retried after a failure makes the same view
            self.floor = min([floor, *await self._running_floors()])
            self.received = self.floor
        await self._create()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _running_floors(self) -> list[int]:
        """The floors of the group's other views whose process is running (it has a fetch waiting)."""
        candidates = {info.name: info for info in await self.js.consumers_info(self.stream)
                      if self._is_view_of_group(info.name)}
        floors = []
        for attempt in range(_LIVENESS_SAMPLES):
            for name, info in list(candidates.items()):
                if info.num_waiting:
                    floors.append(int(info.config.opt_start_seq or 1) - 1)
                    del candidates[name]
            if not candidates or attempt == _LIVENESS_SAMPLES - 1:
                break
            await asyncio.sleep(_LIVENESS_INTERVAL)
            for name in list(candidates):
                try:
                    candidates[name] = await self.js.consumer_info(self.stream, name)
                except Exception:  # noqa: BLE001 - removed meanwhile: not running
                    del candidates[name]
        return floors

    def _is_view_of_group(self, name: str) -> bool:
        tail = name[len(self.prefix):]
        return (name != self.name and name.startswith(self.prefix) and len(tail) == _NAME_HEX
                and all(c in "0123456789abcdef" for c in tail))

    async def _create(self) -> None:
        """The view on the server (again: every marker after the floor is read again, harmlessly)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        await self.js.add_consumer(self.stream, ConsumerConfig(
            durable_name=self.name, filter_subject=self.subject, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=_VIEW_ACK_WAIT, max_ack_pending=-1, inactive_threshold=_VIEW_INACTIVE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=(self.floor or 0) + 1))
        self.sub = await self.js.pull_subscribe_bind(durable=self.name, stream=self.stream)

    async def _follow(self) -> None:
        """Keep reading markers as they come (keeps the view active, and shows it running, on the server)."""
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
        """Make the view again if the server removed it (inactive too long while the link was down)."""
        from nats.js.errors import NotFoundError

        try:
            async with self._lock:
                try:
                    await self.js.consumer_info(self.stream, self.name)
                except NotFoundError:
                    self.log.warning("marker view %s was removed by the server: reading the markers "
                                     "after stream sequence %d again", self.name, self.floor)
                    await self._create()
        except Exception:  # noqa: BLE001 - server still away: tried again after the next failure
            pass

    async def _fetch(self, wait: float) -> int:
        """Read the markers that come within ``wait`` seconds; how many were read.

        They are never acknowledged: under interest retention they stay in the stream while
        a view of the group runs, so a process that joins the group's run reads them too.
        """
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
            self.received = max(self.received, msg.metadata.sequence.stream)
        return len(msgs)

    async def caught_up(self) -> bool:
        """Read what is waiting; True when every marker now in the stream after the floor was read."""
        async with self._lock:
            for _ in range(8):
                try:
                    info = await self.js.consumer_info(self.stream, self.name)
                except Exception:  # noqa: BLE001 - ask again at the next check (the follower recovers)
                    return False
                try:
                    if info.num_pending == 0:
                        if info.delivered.stream_seq <= self.received:
                            return True
                        # delivered but never received (lost with a connection): read them all again
                        self.log.warning("marker view %s: markers up to stream sequence %d were delivered but "
                                         "not received; reading the markers after %d again", self.name,
                                         info.delivered.stream_seq, self.floor)
                        await self.js.delete_consumer(self.stream, self.name)
                        await self._create()
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
