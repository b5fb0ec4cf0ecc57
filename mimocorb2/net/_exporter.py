"""``exporters.nats``: publish a buffer's events to a JetStream stream, in blocks.

Per process (the processes of one worker share the source group's events):

* take slots from the source group, without waiting while a block is open;
* close a block when it holds ``block_size`` bytes, half the ring's slots, or when
  its first event is ``latency`` old, and publish it (at most ``in_flight`` blocks
  awaiting the server's acknowledgement);
* finish (free) a block's slots only after the server stored it: a killed exporter's
  slots come back through the supervisor's reclaim and are sent again;
* a failed publish (server down, link dropped, stream full) is retried with backoff
  under the same message id, so the server stores each block once;
* before the first block, a start marker; when the source ends: publish the rest,
  wait for every acknowledgement, then send this process's end marker and pass the
  end on to the sinks. Blocks and markers name the worker's session (one random id
  per run, :mod:`._session`), so an importer tells this run's end from an earlier one's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datapath import END_OF_STREAM, NOTHING_YET
from ..datapath import heartbeat as _heartbeat
from ..errors import SetupError
from . import _wire
from ._journal import Journal, Orphans
from ._session import run_session
from ._client import (
    LoopThread,
    State,
    StatusFile,
    checked_config,
    connect,
    ensure_consumer,
    is_api_refusal,
    is_stream_full,
    open_status,
    retry_api,
    stream_settings,
)
from ._config import BLOCK_HEADROOM, MAX_DEFAULT_BLOCK, ExporterConfig, Retention, exporter_config, producer_identity

__all__ = ["FUNCTION", "run_exporter"]

FUNCTION = "exporters.nats"
_POLL_MIN, _POLL_MAX = 0.0002, 0.002  # seconds between polls of the source while a block is open
_RETRY_MAX = 2.0  # cap of the backoff between publish retries
_ORPHAN_WAIT = 2.0  # seconds an incomplete interrupted block waits for its other events


@dataclass
class _Sent:
    """A published block awaiting the server's acknowledgement."""

    future: Any
    slots: list[int]
    events: int
    key: int  #: in the journal


class _Publisher:
    """Lives on the loop thread: connection, stream, retrying publishes."""

    def __init__(self, cfg: ExporterConfig, io: Any, status: StatusFile, descr: str, length: int) -> None:
        self.cfg = cfg
        self.io = io
        self.status = status
        self.descr = descr
        self.length = length
        self.nc: Any = None
        self.js: Any = None

    async def start(self) -> int:
        """Connect, make sure the stream (and the named groups) exist; return the server's max payload."""
        self.nc = await connect(self.cfg, f"mimocorb2 {self.io.name}", self.status, lambda: False)
        self.js = self.nc.jetstream(timeout=self.cfg.publish_timeout)
        await self._ensure_stream()
        return int(self.nc.max_payload)

    async def _api_retry(self, what: str, call: Callable[[], Any]) -> Any:
        """Run a JetStream API call, retrying while the server is unreachable; a refusal is raised."""
        return await retry_api(what, call, self.status, self.cfg, fatal=is_api_refusal)

    async def _ensure_stream(self) -> None:
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        metadata = {"mimocorb2.descr": self.descr, "mimocorb2.length": str(self.length),
                    "mimocorb2.retention": cfg.retention.value}
        try:
            info = await self._api_retry("stream info", lambda: self.js.stream_info(cfg.stream))
        except NotFoundError:
            settings = stream_settings(cfg, cfg.retention, metadata)
            await self._api_retry("creating the stream", lambda: self.js.add_stream(StreamConfig(**settings)))
        else:
            self._check_existing(info.config)
        for group in cfg.groups:
            await ensure_consumer(self.js, cfg.stream, group, None, self._api_retry)

    def _check_existing(self, config: Any) -> None:
        cfg, meta = self.cfg, dict(getattr(config, "metadata", None) or {})
        where = f"stream '{cfg.stream}' on {cfg.shown_url}"
        buffer = self.io.buffer_names_in[0]
        if meta.get("mimocorb2.descr", self.descr) != self.descr or meta.get("mimocorb2.length", str(self.length)) != str(self.length):
            raise SetupError(f"worker '{self.io.name}' ({FUNCTION}): {where} holds other events", problems=[
                f"Workers.{self.io.name}.config.stream: {where} holds events of dtype {meta.get('mimocorb2.descr')} "
                f"x {meta.get('mimocorb2.length')}, source buffer '{buffer}' has {self.descr} x {self.length}; "
                "use another stream name or delete the stream (nats stream rm)"])
        retention = meta.get("mimocorb2.retention")
        if retention is not None and retention != cfg.retention.value:
            raise SetupError(f"worker '{self.io.name}' ({FUNCTION}): {where} has retention {retention}", problems=[
                f"Workers.{self.io.name}.config.retention: {where} exists with retention '{retention}', "
                f"the config asks for '{cfg.retention.value}'; use another stream name or delete the stream"])

    async def wait_for_consumer(self, should_stop: Callable[[], bool]) -> None:
        """Interest retention drops what no group wants: wait until one group exists."""
        shown = f"waiting for an importing group on stream '{self.cfg.stream}' at {self.cfg.shown_url}"
        while True:
            info = await self._api_retry("stream info", lambda: self.js.stream_info(self.cfg.stream))
            if info.state.consumer_count > 0 or should_stop():
                return
            self.status.set(State.WAITING_FOR_CONSUMER, shown)
            await asyncio.sleep(0.2)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        """Publish until the server acknowledges (same id every time: stored once)."""
        delay = 0.05
        while True:
            try:
                await self.js.publish(subject, payload, timeout=self.cfg.publish_timeout, headers=headers)
                if self.status.status.state != State.RUNNING.value:
                    self.status.set(State.RUNNING, f"publishing to stream '{self.cfg.stream}' at {self.cfg.shown_url}")
                return
            except Exception as exc:  # noqa: BLE001 - every failure is retried: no event is dropped
                self.status.status.retries += 1
                error = f"{type(exc).__name__}: {exc}"
                if is_stream_full(exc):
                    self.status.set(State.STREAM_FULL, f"stream '{self.cfg.stream}' is full "
                                    f"(max_bytes {self.cfg.max_bytes}): waiting for the importing groups", error)
                elif _no_stream(exc):
                    self.status.set(State.WAITING_FOR_STREAM, f"stream '{self.cfg.stream}' is missing: creating it", error)
                    try:
                        await self._ensure_stream()
                    except Exception:  # noqa: BLE001 - retried with the publish
                        pass
                else:
                    self.status.set(State.WAITING_FOR_SERVER, f"waiting for NATS at {self.cfg.shown_url}", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)


def _no_stream(exc: BaseException) -> bool:
    from nats.errors import NoRespondersError

    return isinstance(exc, NoRespondersError)


class _BlockSender:
    """Main-thread side: turns held slots into blocks and tracks their acknowledgements."""

    def __init__(self, io: Any, cfg: ExporterConfig, loop: LoopThread, publisher: _Publisher, max_events: int,
                 sinks: list[Any], session: str) -> None:
        reader = io.read[0]
        self.sinks = sinks  # each stored event is also passed on to them
        self.ring = reader._ring
        self.group = reader._group_index
        self.bytes = reader._bytes
        self.seq_base = self.ring._seq
        self.cfg = cfg
        self.loop = loop
        self.publisher = publisher
        self.max_events = max_events
        self.producer = producer_identity(io)
        self.session = session
        self.process = int(getattr(io, "process_index", 0))
        self.processes = int(getattr(io, "number_of_processes", 1) or 1)
        self.descr = publisher.descr
        self.length = publisher.length
        self.sent: deque[_Sent] = deque()
        self.status = publisher.status
        self.journal = Journal(Path(io.run_dir) / "nats" / io.name, self.process)
        self.orphans = Orphans(self.journal.leftovers())

    def send(self, slots: list[int]) -> None:
        """Publish the events in ``slots`` as one block (waits while too many are in flight)."""
        while len(self.sent) >= self.cfg.in_flight:
            self.settle_oldest()
        views = self.bytes
        metas = [views[s][0] for s in slots]
        payload = b"".join([*metas, *(views[s][1] for s in slots)])
        sequences = self.sequences(slots)
        first = int(metas[0].view(np.int64)[0])
        last = int(metas[-1].view(np.int64)[0])
        headers = _wire.block_headers(
            producer=self.producer, process=self.process, processes=self.processes, descr=self.descr,
            length=self.length, count=len(slots), first_counter=first, last_counter=last, session=self.session,
            msg_id=_wire.events_message_id(self.producer, self.session, sequences))
        key = self.journal.opened(sequences)
        future = self.loop.submit(self.publisher.publish(self.cfg.events_subject, payload, headers))
        self.sent.append(_Sent(future, slots, len(slots), key))

    def sequences(self, slots: list[int]) -> np.ndarray:
        """The source-buffer commit numbers of the events in ``slots`` (unique per event in a run)."""
        cb, base = self.ring.cb, self.seq_base
        return np.fromiter((cb[base + s] for s in slots), dtype=np.int64, count=len(slots))

    def settle_oldest(self) -> None:
        """Wait for the oldest block's acknowledgement, then free its slots."""
        sent = self.sent.popleft()
        self.loop.wait(sent.future)
        self._finish(sent)

    def settle_done(self) -> None:
        """Free the slots of every acknowledged block (in order; does not wait)."""
        while self.sent and self.sent[0].future.done():
            sent = self.sent.popleft()
            sent.future.result()  # re-raises a failure of the loop thread
            self._finish(sent)

    def settle_all(self) -> None:
        while self.sent:
            self.settle_oldest()

    def _finish(self, sent: _Sent) -> None:
        if self.sinks:
            self._pass_on(sent.slots)
        for slot in sent.slots:
            self.ring.finish(self.group, slot)
        self.journal.settled(sent.key)
        self.status.count(blocks=1, events=sent.events)

    def _pass_on(self, slots: list[int]) -> None:
        """Copy the events in ``slots`` to the sinks, byte for byte (same layout)."""
        for slot in slots:
            meta, data = self.bytes[slot]
            for sink in self.sinks:
                with sink:
                    meta_dst, data_dst = sink.current_bytes()
                    data_dst[:] = data
                    meta_dst[:] = meta

    def resend_partial(self, slots: list[int]) -> None:
        """Part of an interrupted block whose other events went to another process: a new block."""
        self.publisher.status.log.warning(
            "re-sending %d events of an interrupted block under a new id (the rest went elsewhere): "
            "they may arrive twice", len(slots))
        self.send(slots)

    def send_start(self) -> None:
        """This process's start marker (before its first block; a restarted process sends it again,
        under the same id)."""
        headers = _wire.start_headers(producer=self.producer, session=self.session, process=self.process,
                                      processes=self.processes)
        self.loop.call(self.publisher.publish(self.cfg.end_subject, b"", headers))

    def send_end(self) -> None:
        """This process's end marker (after every block was acknowledged)."""
        headers = _wire.end_headers(producer=self.producer, session=self.session, process=self.process,
                                    processes=self.processes)
        self.loop.call(self.publisher.publish(self.cfg.end_subject, b"", headers))
        self.journal.close()


def _pump(sender: _BlockSender) -> None:
    """Move the source's events into blocks until the source ends."""
    ring, group, latency, orphans = sender.ring, sender.group, sender.cfg.latency, sender.orphans
    block: list[int] = []
    opened = 0.0
    poll = _POLL_MIN
    while True:
        slot = ring.take(group, wait=not block and not sender.sent and not orphans.holding)
        if slot >= 0:
            if orphans and orphans.claims(seq := int(ring.cb[sender.seq_base + slot])):
                whole = orphans.put(seq, slot)
                if whole is not None:  # the interrupted block again: same events, same order, same id
                    sender.status.log.info("re-sending an interrupted block of %d events under its id", len(whole))
                    sender.send(whole)
                continue
            if not block:
                opened = time.monotonic()
            block.append(slot)
            poll = _POLL_MIN
            if len(block) >= sender.max_events:
                sender.send(block)
                block = []
            continue
        if slot == END_OF_STREAM:
            for partial in [block, *orphans.rest()]:
                if partial:
                    sender.send(partial)
            sender.settle_all()
            return
        assert slot == NOTHING_YET
        sender.settle_done()
        for partial in orphans.stale(_ORPHAN_WAIT):
            sender.resend_partial(partial)
        if block and time.monotonic() - opened >= latency:
            sender.send(block)
            block = []
            continue
        if not block and sender.sent:
            sender.settle_oldest()  # nothing to collect: free the ring while we wait
            continue
        _heartbeat.beat()
        time.sleep(poll)
        poll = min(poll * 2, _POLL_MAX)


def run_exporter(buffer_io: Any) -> None:
    """The body of ``exporters.nats`` (see its docstring in :mod:`mimocorb2.functions.exporters`)."""
    cfg = checked_config(buffer_io, FUNCTION, exporter_config, sources=1)  # the sinks: checked by Exporter
    from ..worker_templates import Exporter

    exporter = Exporter(buffer_io)  # checks the sinks' layout; we read the source ourselves
    source = buffer_io.read[0]
    dtype, length = source.data_example.dtype, len(source.data_example)
    descr = _wire.describe_dtype(dtype)
    event_bytes = _wire.META_SIZE + dtype.itemsize * length
    status = open_status(buffer_io, cfg)
    status.set(State.STARTING, f"exporting '{source.name}' to stream '{cfg.stream}' at {cfg.shown_url}")
    loop = LoopThread()
    publisher = _Publisher(cfg, buffer_io, status, descr, length)
    try:
        max_payload = loop.call(publisher.start())
        block_size = cfg.block_size or min(max_payload, MAX_DEFAULT_BLOCK) - BLOCK_HEADROOM
        session = run_session(Path(buffer_io.run_dir) / "nats" / buffer_io.name)
        status.status.session = session
        room = min(block_size, max_payload) - _wire.header_overhead(producer_identity(buffer_io), session, descr)
        if event_bytes > room:
            raise SetupError(f"worker '{buffer_io.name}' ({FUNCTION}): events too large for NATS", problems=[
                f"Workers.{buffer_io.name}.sources: one event of '{source.name}' takes {event_bytes} bytes on the "
                f"wire, more than the {room} bytes a message may carry (max_payload {max_payload} of "
                f"{cfg.shown_url}, block_size {block_size}); raise max_payload in nats-server.conf "
                "and block_size, or make events smaller"])
        if cfg.retention is Retention.INTEREST and not cfg.groups:
            loop.call(publisher.wait_for_consumer(lambda: False))
        max_events = max(1, min(room // event_bytes, source.slot_count // 2))
        sender = _BlockSender(buffer_io, cfg, loop, publisher, max_events, exporter.write, session)
        sender.send_start()
        status.set(State.RUNNING, f"publishing to stream '{cfg.stream}' at {cfg.shown_url}")
        _pump(sender)
        sender.send_end()
        status.set(State.FINISHED, f"sent {status.status.events} events in {status.status.blocks} blocks")
    finally:
        loop.close(publisher.nc)
    buffer_io.shutdown_sinks()
