"""``importers.nats``: consume a JetStream stream of blocks into the sink buffer.

Per process (the processes of one worker are one durable pull consumer, the *group*,
and share its messages; every group gets every message):

* fetch a few blocks; write each event into the sink with its metadata restored
  byte for byte; then acknowledge the block (confirmed by the server);
* a block seen again (its acknowledgement was lost when the server restarted) is
  acknowledged and skipped: this process remembers the stream sequence numbers it
  has written recently; a block that a killed process had partly written comes
  again and only its remaining events are written (:mod:`._progress`, exact even for
  a kill right after a commit: each commit is announced to the sink's
  :class:`~mimocorb2.mimo_buffer.CommitWitness` first);
* the sessions (exporter runs) the group has seen a start marker or a block of are
  written to ``RUN_DIR/nats/<worker>/sessions/``, end markers to ``.../end/``, so that
  every process of the worker sees them; besides, every process reads every start and
  end marker after the group's acknowledgement floor through a consumer of its own
  (:mod:`._markers`), so processes of the group on other hosts, which get other
  markers through the group, decide alike. The group ends when every session known
  (seen, or started after the floor) has all its end markers, there are at least
  ``producers`` such sessions, the process has read every marker in the stream, and
  the group's consumer has nothing pending or unacknowledged (asked of the server).
  End markers of a session known neither way (an earlier run whose blocks an earlier
  run of the group took) are ignored. Then the sink gets this process's end of stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SetupError
from ..mimo_buffer import CommitWitness
from . import _wire
from ._client import (LoopThread, State, StatusFile, checked_config, connect, ensure_consumer, is_api_refusal, open_status,
                      retry_api)
from ._config import Deliver, ImporterConfig, importer_config
from ._markers import MarkerLog, MarkerView
from ._progress import BlockProgress

__all__ = ["FUNCTION", "run_importer"]

FUNCTION = "importers.nats"
_FETCH_WAIT = 0.25  # seconds a fetch waits for messages before the end condition is checked
_REMEMBERED = 200_000  # stream sequence numbers remembered against redelivery
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
KILL_AFTER_COMMIT = "MIMOCORB2_TEST_KILL_AFTER_COMMIT"
"""Fault injection for tests only: ``"<n>:<flag file>"`` makes the importing process that
creates the flag file (the first to get there) SIGKILL itself right after its n-th commit
into the sink, before it records it; unset, nothing happens."""


def _witness_key(worker: str, process: int) -> int:
    """The sink's witness key of process ``process`` of importing worker ``worker`` (> 0, stable)."""
    digest = hashlib.blake2b(f"{worker}\0{process}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 1) | 1


class _KillAfterCommit:
    """The test hook of :data:`KILL_AFTER_COMMIT`: SIGKILL once, at the worst moment."""

    def __init__(self, spec: str) -> None:
        n, _, flag = spec.partition(":")
        self.remaining, self.flag = int(n), flag

    def committed(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # a restarted process: it fired already
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class _Progress:
    """Where the group stands: sessions seen, and how many of them have ended."""

    open: int  #: seen sessions with an end marker missing
    ended: int  #: seen sessions with every process's end marker
    ignored: int  #: sessions with end markers but neither a start marker nor a block seen (earlier runs)

    def complete(self, producers: int) -> bool:
        """Whether the group may end: nothing open, at least ``producers`` sessions ended."""
        return self.open == 0 and self.ended >= producers


class _Sessions:
    """Start and end markers of one importing group, per session, shared by its processes through files.

    A session (one run of one exporting worker) is *seen* once the group handled its
    start marker or one of its blocks; only the end markers of seen sessions count.
    Files are written before the message is acknowledged, so a group with nothing
    unacknowledged has every seen session on disk.
    """

    def __init__(self, directory: Path, producers: int) -> None:
        self.seen_dir = directory / "sessions"
        self.end_dir = directory / "end"
        self.producers = producers
        self._recorded: set[tuple[str, str]] = set()  # seen sessions this process wrote already
        self.seen_dir.mkdir(parents=True, exist_ok=True)
        self.end_dir.mkdir(parents=True, exist_ok=True)

    def saw(self, block: _wire.Block) -> None:
        """Remember that the group saw a start marker or a block of ``block``'s session."""
        key = (block.producer, block.session)
        if key not in self._recorded:
            _write_marker(self.seen_dir, f"{block.producer}#{block.session}",
                          {"producer": block.producer, "session": block.session})
            self._recorded.add(key)

    def ended(self, block: _wire.Block) -> None:
        """Remember that process ``block.process`` of ``block``'s session ended (idempotent)."""
        _write_marker(self.end_dir, f"{block.producer}#{block.session}#{block.process}",
                      {"producer": block.producer, "session": block.session, "process": block.process,
                       "processes": block.processes})

    def progress(self, markers: MarkerLog | None = None) -> _Progress:
        """Count the known sessions that ended and those still open: the sessions seen by this
        worker's processes, and those whose start marker ``markers`` (this process's view of
        the stream) holds; end markers from both."""
        seen = {(m["producer"], m["session"]) for m in _read_markers(self.seen_dir)}
        ended: dict[tuple[str, str], set[int]] = {}
        wanted: dict[tuple[str, str], int] = {}
        if markers is not None:
            started, ended, wanted = markers.snapshot()
            seen |= started
        for marker in _read_markers(self.end_dir):
            key = (marker["producer"], marker["session"])
            ended.setdefault(key, set()).add(int(marker["process"]))
            wanted[key] = int(marker["processes"])
        done = {key for key, processes in ended.items() if len(processes) >= wanted[key]}
        return _Progress(open=len(seen - done), ended=len(seen & done), ignored=len(set(ended) - seen))


def _write_marker(directory: Path, name: str, content: dict[str, Any]) -> None:
    """``content`` as JSON in ``directory`` (atomically; rewriting the same marker is harmless)."""
    name = _UNSAFE.sub("_", name)
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(content))
    os.replace(tmp, directory / name)


def _read_markers(directory: Path) -> list[dict[str, Any]]:
    markers = []
    for path in directory.iterdir():
        if path.name.startswith("."):
            continue
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        marker.setdefault("session", "")  # written by a version without sessions
        markers.append(marker)
    return markers


class _Consumer:
    """Lives on the loop thread: connection, stream check, the group's pull subscription."""

    def __init__(self, cfg: ImporterConfig, io: Any, status: StatusFile) -> None:
        self.cfg = cfg
        self.io = io
        self.status = status
        self.nc: Any = None
        self.js: Any = None
        self.sub: Any = None
        self.working: Any = None  # message being written by the main thread (kept "in progress")
        self.view: MarkerView | None = None  # every marker after the group's floor, for this process
        self._ticker: Any = None

    async def start(self, should_stop: Any) -> dict[str, str] | None:
        """Connect, wait for the stream, bind to (or create) the group; return the stream's metadata."""
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        self.nc = await connect(cfg, f"mimocorb2 {self.io.name}", self.status, should_stop)
        if self.nc is None:
            return None
        self.js = self.nc.jetstream(timeout=5.0)
        delay = 0.1
        while True:
            try:
                info = await self.js.stream_info(cfg.stream)
                break
            except NotFoundError:
                self.status.set(State.WAITING_FOR_STREAM, f"waiting for stream '{cfg.stream}' at {cfg.shown_url}")
            except Exception as exc:  # noqa: BLE001 - server restarting
                self.status.set(State.WAITING_FOR_SERVER, f"waiting for NATS at {cfg.shown_url}", f"{type(exc).__name__}: {exc}")
            if should_stop():
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.connect_backoff_max)
        start: Any = None
        if cfg.deliver is Deliver.NEW:
            start = "new"
        elif cfg.deliver is Deliver.START_TIME:
            start = cfg.start_time
        group = await ensure_consumer(self.js, cfg.stream, cfg.group, start, self._retry, cfg.ack_wait)
        self.sub = await self._retry("binding", lambda: self.js.pull_subscribe_bind(durable=cfg.group, stream=cfg.stream))
        await self._open_view(info, group.ack_floor.stream_seq if group.ack_floor else 0)
        self._ticker = asyncio.get_running_loop().create_task(self._keep_in_progress())
        self.status.set(State.RUNNING, f"importing stream '{cfg.stream}' from {cfg.shown_url} as group '{cfg.group}'")
        return dict(getattr(info.config, "metadata", None) or {})

    async def _open_view(self, stream_info: Any, floor: int) -> None:
        """This process's own view of the markers after the group's acknowledgement floor ``floor``."""
        cfg = self.cfg
        # a stream sourced from a leaf has no subjects of its own: its markers keep the exporter's subject
        subject = cfg.end_subject if getattr(stream_info.config, "subjects", None) else "mimocorb2.*.end"
        view = MarkerView(self.js, cfg.stream, cfg.group, subject, self.status.log)
        try:
            await retry_api("creating the marker view", lambda: view.start(floor), self.status, cfg, fatal=is_api_refusal)
        except Exception as exc:  # noqa: BLE001 - refused: this worker's own markers still count
            self.status.log.warning("cannot read the markers of stream '%s' by itself (%s: %s): this worker ends "
                                    "only with the markers the group hands it", cfg.stream, type(exc).__name__, exc)
            return
        self.view = view

    async def view_caught_up(self) -> bool:
        """Whether this process has read every marker now in the stream (True without a view)."""
        return True if self.view is None else await self.view.caught_up()

    async def _retry(self, what: str, call: Any) -> Any:
        """Run a JetStream API call, retrying while the server is unreachable."""
        return await retry_api(what, call, self.status, self.cfg)

    async def _keep_in_progress(self) -> None:
        """While the sink is full, tell the server the block being written is still being worked on."""
        while True:
            await asyncio.sleep(self.cfg.ack_wait / 3)
            msg = self.working
            if msg is not None:
                try:
                    await msg.in_progress()
                except Exception:  # noqa: BLE001 - the redelivery guard covers a lost one
                    pass

    async def close(self) -> None:
        """Stop the in-progress ticker and close the connection."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self.view is not None:
            await self.view.close()
        if self.nc is not None:
            await self.nc.close()

    async def fetch(self) -> list[Any]:
        """Up to ``batch`` messages; [] when none came within a short wait or the server is away."""
        import nats.errors

        try:
            msgs = await self.sub.fetch(self.cfg.batch, timeout=_FETCH_WAIT)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []
        except Exception as exc:  # noqa: BLE001 - disconnected, server restarting
            self.status.set(State.WAITING_FOR_SERVER, f"waiting for NATS at {self.cfg.shown_url}", f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)
            return []
        if self.status.status.state != State.RUNNING.value:
            self.status.set(State.RUNNING, f"importing stream '{self.cfg.stream}' from {self.cfg.shown_url} as group '{self.cfg.group}'")
        return msgs

    async def ack(self, msg: Any) -> bool:
        """Acknowledge and wait for the server's confirmation (False: it did not come)."""
        try:
            await msg.ack_sync(timeout=5.0)
            return True
        except Exception:  # noqa: BLE001 - a lost ack means a redelivery, which is skipped
            return False

    async def nak(self, msgs: list[Any]) -> None:
        for msg in msgs:
            try:
                await msg.nak()
            except Exception:  # noqa: BLE001 - unacked messages come back after ack_wait anyway
                pass

    async def drained(self) -> bool:
        """Whether the group has nothing undelivered and nothing unacknowledged."""
        try:
            info = await self.js.consumer_info(self.cfg.stream, self.cfg.group)
        except Exception:  # noqa: BLE001 - ask again later
            return False
        return info.num_pending == 0 and info.num_ack_pending == 0


class _Remembered:
    """Stream sequence numbers of blocks written into the sink (bounded, oldest forgotten first).

    They are also appended to ``written.<process>.seq`` in the group's run folder (int64
    each), so a restarted process (or one started later) skips a block that a killed one
    had written but not yet seen acknowledged.
    """

    def __init__(self, directory: Path, process: int, size: int = _REMEMBERED) -> None:
        self.size = size
        self._seen: OrderedDict[int, None] = OrderedDict()
        directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(directory.glob("written.*.seq")):
            for seq in np.fromfile(path, dtype="<i8")[-size:].tolist():
                self._remember(seq)
        self.path = directory / f"written.{process}.seq"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._appended = 0

    def __contains__(self, seq: int) -> bool:
        return seq in self._seen

    def _remember(self, seq: int) -> None:
        self._seen[seq] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def add(self, seq: int) -> None:
        """Remember ``seq`` (before its acknowledgement is sent)."""
        self._remember(seq)
        os.write(self._fd, int(seq).to_bytes(8, "little", signed=True))
        self._appended += 1
        if self._appended >= 4 * self.size:  # keep the file bounded: rewrite what is remembered
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            np.fromiter(self._seen, dtype="<i8").tofile(tmp)
            os.replace(tmp, self.path)
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self._appended = 0

    def close(self) -> None:
        os.close(self._fd)


def _dtype_problem(io: Any, cfg: ImporterConfig, descr: str | None, length: str | None, want: str, want_length: int) -> SetupError:
    sink = io.buffer_names_out[0]
    where = f"stream '{cfg.stream}' on {cfg.shown_url}"
    return SetupError(f"worker '{io.name}' ({FUNCTION}): {where} does not match sink '{sink}'", problems=[
        f"Workers.{io.name}.sinks: {where} carries events of dtype {descr} x {length}, "
        f"sink buffer '{sink}' has dtype {want} x {want_length}; make the sink's data_dtype and "
        "data_length those of the exporting buffer"])


class _Writer:
    """Main-thread side: blocks into the sink, acknowledgements, end detection."""

    def __init__(self, io: Any, cfg: ImporterConfig, loop: LoopThread, consumer: _Consumer, status: StatusFile) -> None:
        self.io = io
        self.cfg = cfg
        self.loop = loop
        self.consumer = consumer
        self.status = status
        self.sink = io.write[0]
        self.descr = _wire.describe_dtype(self.sink.data_example.dtype)
        self.length = len(self.sink.data_example)
        self.event_bytes = self.sink.data_example.nbytes
        group_dir = Path(io.run_dir) / "nats" / io.name
        process = int(getattr(io, "process_index", 0))
        self.remembered = _Remembered(group_dir, process)
        # before the progress record is read: opening the witness settles a dead predecessor
        self.witness = CommitWitness(self.sink, _witness_key(io.name, process))
        self.progress = BlockProgress(group_dir, process,
                                      lambda index: self.witness.settled_under(_witness_key(io.name, index)))
        spec = os.environ.get(KILL_AFTER_COMMIT)
        self._fault = _KillAfterCommit(spec) if spec else None
        self.sessions = _Sessions(group_dir, cfg.producers)
        self._ignored_logged = 0
        self.acks: list[Any] = []

    def run(self) -> None:
        """Import until the group's stream ended or the sink was shut down."""
        last_end_check = 0.0
        while not self.sink.is_shutdown.value:
            msgs = self.loop.call(self.consumer.fetch())
            for index, msg in enumerate(msgs):
                if self.sink.is_shutdown.value:
                    self.loop.call(self.consumer.nak(msgs[index:]))
                    return
                self._handle(msg)
            now = time.monotonic()
            if (not msgs or now - last_end_check > 1.0) and self._ended():
                return
            if not msgs:
                last_end_check = now

    def _handle(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        if seq in self.remembered:
            self._ack(msg)
            return
        try:
            block = _wire.decode_block(msg.headers, msg.data)
        except _wire.WireError as exc:
            raise SetupError(f"worker '{self.io.name}' ({FUNCTION}): message {seq} of stream "
                             f"'{self.cfg.stream}' is not a mimocorb2 block: {exc}") from None
        if block.kind is _wire.BlockKind.END:
            self.sessions.ended(block)
        elif block.kind is _wire.BlockKind.START:
            self.sessions.saw(block)
        else:
            self.sessions.saw(block)  # before the first event of the session is written
            if block.descr != self.descr or block.length != self.length:
                raise _dtype_problem(self.io, self.cfg, block.descr, str(block.length), self.descr, self.length)
            skip = self.progress.written_before(seq, redelivered=msg.metadata.num_delivered > 1)
            if skip:
                self.status.log.info("block %d was delivered again: %d of its %d events were written "
                                     "by another process; writing the rest", seq, skip, block.count)
            self.consumer.working = msg
            written = self._write(seq, block, skip)
            self.consumer.working = None
            if written < block.count:  # the sink ended (stop, run limit): the block stays in the stream
                self.loop.call(self.consumer.nak([msg]))
                self.status.log.warning("sink ended after %d of %d events of block %d; the block was "
                                        "given back to the stream", written, block.count, seq)
                return
            self.status.count(blocks=1, events=block.count - skip)
        self.remembered.add(seq)
        self._ack(msg)

    def _write(self, seq: int, block: _wire.Block, skip: int) -> int:
        """The events of ``block`` after the first ``skip`` into the sink, metadata byte for byte;
        how many of the block are in the sink (fewer than its count if the sink ended)."""
        assert block.metadata is not None and block.events is not None
        meta_raw = block.metadata.view(np.uint8).reshape(block.count, _wire.META_SIZE)
        sink, progress, announce, fault = self.sink, self.progress, self.witness.announce, self._fault
        progress.begin(seq, block.count, skip)
        ordinal = progress.ordinal
        for i in range(skip, block.count):
            if not sink.accepting:
                return i
            ordinal += 1
            with sink:
                meta_dst, data_dst = sink.current_bytes()
                data_dst[:] = block.events[i]
                meta_dst[:] = meta_raw[i]
                announce(ordinal)  # a kill from here on leaves a certain answer (see _progress)
            if fault is not None:
                fault.committed()
            progress.committed(ordinal)
        return block.count

    def _ack(self, msg: Any) -> None:
        self.acks.append(self.loop.submit(self.consumer.ack(msg)))
        if len(self.acks) > 64:
            self._settle_acks(keep=16)

    def _settle_acks(self, keep: int = 0) -> None:
        while len(self.acks) > keep:
            self.loop.wait(self.acks.pop(0))

    def _ended(self) -> bool:
        """Whether the group is done: every seen session ended, enough of them, nothing left in the consumer."""
        if not self._progress().complete(self.cfg.producers):
            return False
        self._settle_acks()
        if not self.loop.call(self.consumer.drained()):
            return False
        # every marker the group took so far is in the stream before this point: read them all
        if not self.loop.call(self.consumer.view_caught_up()):
            return False
        # again: a process may have seen a new session's start just before the consumer drained
        return self._progress().complete(self.cfg.producers)

    def _progress(self) -> _Progress:
        """The sessions' progress, also shown in the status file (and stale end markers logged once)."""
        view = self.consumer.view
        progress = self.sessions.progress(view.markers if view is not None else None)
        status = self.status.status
        if (status.runs_open, status.runs_ended) != (progress.open, progress.ended):
            status.runs_open, status.runs_ended = progress.open, progress.ended
            self.status.write()
        else:
            self.status.flush()
        if progress.ignored > self._ignored_logged:
            self._ignored_logged = progress.ignored
            self.status.log.info("ignoring the end markers of %d exporter run(s) of which this group has seen "
                                 "no start marker and no block (an earlier run)", progress.ignored)
        return progress


def run_importer(buffer_io: Any) -> None:
    """The body of ``importers.nats`` (see its docstring in :mod:`mimocorb2.functions.importers`)."""
    cfg = checked_config(buffer_io, FUNCTION, importer_config, sources=0, sinks=1)
    sink = buffer_io.write[0]
    status = open_status(buffer_io, cfg)
    status.set(State.STARTING, f"importing stream '{cfg.stream}' at {cfg.shown_url} into '{sink.name}' as group '{cfg.group}'")
    loop = LoopThread()
    consumer = _Consumer(cfg, buffer_io, status)
    try:
        metadata = loop.call(consumer.start(lambda: bool(sink.is_shutdown.value)))
        if metadata is not None:
            writer = _Writer(buffer_io, cfg, loop, consumer, status)
            _check_stream(buffer_io, cfg, metadata, writer)
            max_payload = int(consumer.nc.max_payload)
            if writer.event_bytes + _wire.META_SIZE > max_payload:
                raise SetupError(f"worker '{buffer_io.name}' ({FUNCTION}): events too large for NATS", problems=[
                    f"Workers.{buffer_io.name}.sinks: one event of '{sink.name}' takes {writer.event_bytes + _wire.META_SIZE} "
                    f"bytes on the wire, more than max_payload {max_payload} of {cfg.shown_url}"])
            try:
                writer.run()
                writer._settle_acks()
            finally:
                writer.remembered.close()
                writer.progress.close()
            status.set(State.FINISHED, f"imported {status.status.events} events in {status.status.blocks} blocks")
    finally:
        try:
            loop.call(consumer.close(), timeout=15)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        loop.close()
    buffer_io.shutdown_sinks()


def _check_stream(io: Any, cfg: ImporterConfig, metadata: dict[str, str], writer: _Writer) -> None:
    """Refuse a stream announced with another event layout than the sink's."""
    descr, length = metadata.get("mimocorb2.descr"), metadata.get("mimocorb2.length")
    if descr is None:
        return  # not made by exporters.nats: every block is still checked
    if descr != writer.descr or length != str(writer.length):
        raise _dtype_problem(io, cfg, descr, length, writer.descr, writer.length)
