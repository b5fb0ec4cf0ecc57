"""Multiple In Multiple Out buffer: ring buffers of NumPy structured arrays in shared memory.

A :class:`mimoBuffer` holds ``slot_count`` slots, each one event of
``data_length`` elements of ``data_dtype`` plus one metadata record (counter,
timestamp, deadtime). Processes use it through context managers:

>>> buf = mimoBuffer("example", slot_count=4, data_length=10, data_dtype={"value": "f4"})
>>> with BufferWriter(buf) as (metadata, data):
...     data["value"][:] = range(10)
>>> with BufferReader(buf) as (metadata, data):
...     print(data["value"][3])
3.0
>>> buf.close()

Delivery rules (see :mod:`mimocorb2.datapath._ring` for the invariants):

* every *reader group* receives every event committed after it joined; the
  readers (processes) of one group share its events, each to exactly one of
  them, in commit order. A reader made without a group joins ``"default"``.
* a slot is reused only after every group finished it: the slowest group
  applies back-pressure to the writers.
* the buffer ends when ``writers`` processes have flushed; readers get
  ``(None, None)`` once every committed event of their group has been read.
* observers get a private copy of the latest event and never hold a slot.
* an exception inside a writer's ``with`` block discards the slot; inside a
  reader's block the slot is still released.
* a writer that gets its events again after a restart (an importer) can learn
  for certain whether its last event before a SIGKILL was committed: a
  :class:`CommitWitness` announces each commit, and the buffer settles the
  announcement when the process dies.

A buffer may be passed to a :class:`multiprocessing.Process` (fork, forkserver
or spawn) as an argument.
"""

from __future__ import annotations

import enum
import multiprocessing
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .datapath import END_OF_STREAM, NO_TAG, PAUSED, Layout, Segment, SlotRing
from .datapath import heartbeat as _heartbeat
from .datapath._layout import DATA_OFFSET

__all__ = ["mimoBuffer", "Interface", "BufferReader", "BufferWriter", "BufferObserver", "CommitWitness", "NO_TAG",
           "QuarantinedEvent", "make_dtype"]

SPARE_GROUPS = 4  # reader groups that may join after creation (raw API)
MAX_GROUPS = 64
_OBSERVER_POLL_MIN = 0.001
_OBSERVER_POLL_MAX = 0.05
_DEADTIME_WORD = 2  # index of "deadtime" in a metadata record viewed as float64


def make_dtype(data_dtype: Any, buffer_name: str = "?") -> np.dtype:
    """Turn a dtype or a mapping ``field -> dtype string`` into a structured dtype.

    Raises ValueError naming the buffer and the field when a dtype is unknown.
    """
    if isinstance(data_dtype, Mapping):
        if not data_dtype:
            raise ValueError(f"buffer '{buffer_name}': data_dtype is empty; give at least one field")
        fields = []
        for field, kind in data_dtype.items():
            try:
                fields.append((str(field), np.dtype(kind)))
            except TypeError as exc:
                raise ValueError(f"buffer '{buffer_name}': field '{field}' has unknown dtype {kind!r} ({exc})") from None
        return np.dtype(fields)
    try:
        dtype = np.dtype(data_dtype)
    except TypeError as exc:
        raise ValueError(f"buffer '{buffer_name}': unknown data_dtype {data_dtype!r} ({exc})") from None
    if dtype.names is None:
        return np.dtype([("data", dtype)])
    if not dtype.names:
        raise ValueError(f"buffer '{buffer_name}': data_dtype is empty; give at least one field")
    return dtype


class _FlagView:
    """Read-only ``.value`` view of one of the ring's flags (0.0.x used multiprocessing.Value)."""

    __slots__ = ("_ring", "_flag")

    def __init__(self, ring: SlotRing, flag: str) -> None:
        self._ring = ring
        self._flag = flag

    @property
    def value(self) -> bool:
        return getattr(self._ring, self._flag)

    def __bool__(self) -> bool:
        return self.value


class mimoBuffer:
    """A ring buffer of structured-array slots in shared memory.

    Parameters
    ----------
    name: the buffer's name (used in messages and in the shared-memory name).
    slot_count: number of slots (>= 1).
    data_length: elements per event (>= 1).
    data_dtype: a structured dtype, or a mapping ``field -> dtype string``.
    reader_groups: reader groups known from the start; each gets every event.
    writers: how many writer processes must flush before the buffer ends.
    """

    metadata_dtype = np.dtype([("counter", np.int64), ("timestamp", np.float64), ("deadtime", np.float64)])
    metadata_length = 1
    metadata_example = np.zeros(shape=metadata_length, dtype=metadata_dtype)
    metadata_byte_size = metadata_example.nbytes

    def __init__(
        self,
        name: str,
        slot_count: int,
        data_length: int,
        data_dtype: Any,
        *,
        reader_groups: Iterable[str] = ("default",),
        writers: int = 1,
    ) -> None:
        _check_positive_int(name, "slot_count", slot_count)
        _check_positive_int(name, "data_length", data_length)
        if isinstance(writers, bool) or not isinstance(writers, int) or writers < 0:
            raise ValueError(f"buffer '{name}': writers must be an integer >= 0, got {writers!r}")
        groups = list(dict.fromkeys(reader_groups))
        self.name = name
        self.slot_count = int(slot_count)
        self.data_length = int(data_length)
        self.data_dtype = make_dtype(data_dtype, name)
        layout = Layout(self.slot_count, min(len(groups) + SPARE_GROUPS, MAX_GROUPS), self.data_length * self.data_dtype.itemsize)
        ctx = multiprocessing.get_context("spawn")  # picklable for every start method
        self._sync = (ctx.Lock(), ctx.Semaphore(0), [ctx.Semaphore(0) for _ in range(layout.max_groups)], ctx.Lock())
        self._segment = Segment.create(name, layout.total_bytes)
        self._layout = layout
        self._attach_views()
        self._ring.initialize(writers)
        for group in groups:
            self._ring.join_group(group)

    # ------------------------------------------------------------ process-local state
    def _attach_views(self) -> None:
        """Build this process's views: ring, per-slot arrays, scratch slot."""
        layout, mm = self._layout, self._segment.mm
        lock, space, group_sems, repair = self._sync
        self._ring = SlotRing(mm, layout, lock, space, group_sems, repair)
        self.data_example = np.zeros(self.data_length, dtype=self.data_dtype)
        self.data_byte_size = self.data_example.nbytes
        self.slot_byte_size = layout.slot_stride
        raw = np.frombuffer(mm, dtype=np.uint8, count=layout.slots * layout.slot_stride, offset=layout.slots_offset)
        self._raw_slots = raw.reshape(layout.slots, layout.slot_stride)
        # one (metadata, data) pair per slot, built once: no allocation per event
        self._slot_views: list[tuple[np.ndarray, np.ndarray]] = []
        self._deadtime_views: list[memoryview] = []
        for row in self._raw_slots:
            meta = row[: self.metadata_byte_size].view(self.metadata_dtype)
            data = row[DATA_OFFSET : DATA_OFFSET + self.data_byte_size].view(self.data_dtype)
            self._slot_views.append((meta, data))
            self._deadtime_views.append(memoryview(row[: self.metadata_byte_size]).cast("d"))
        # (int64 words, float64 words) of each slot's metadata: counter, timestamp, deadtime
        self._meta_words = [
            (memoryview(row[: self.metadata_byte_size]).cast("q"), floats)
            for row, floats in zip(self._raw_slots, self._deadtime_views)
        ]
        self._byte_views: list[tuple[np.ndarray, np.ndarray]] = [
            (row[: self.metadata_byte_size], row[DATA_OFFSET : DATA_OFFSET + self.data_byte_size]) for row in self._raw_slots
        ]
        self._scratch = (np.zeros(1, self.metadata_dtype), np.zeros(self.data_length, self.data_dtype))
        self._scratch_bytes = (self._scratch[0].view(np.uint8), self._scratch[1].view(np.uint8))
        self._scratch_deadtime = memoryview(self._scratch[0].view(np.uint8)).cast("d")
        self.flush_event_received = _FlagView(self._ring, "ended")
        self.paused = _FlagView(self._ring, "paused")
        self._last_stats = (time.monotonic(), 0, 0.0)
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slot_count": self.slot_count,
            "data_length": self.data_length,
            "data_dtype": self.data_dtype,
            "layout": self._layout,
            "sync": self._sync,
            "segment": (self._segment.name, self._segment.creator_pid),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self.slot_count = state["slot_count"]
        self.data_length = state["data_length"]
        self.data_dtype = state["data_dtype"]
        self._layout = state["layout"]
        self._sync = state["sync"]
        self._segment = Segment.attach(*state["segment"])
        self._attach_views()

    @classmethod
    def from_setup(cls, name: str, setup: Mapping[str, Any], *args: Any, **kwargs: Any) -> "mimoBuffer":
        """Create a buffer from a setup mapping with ``slot_count``, ``data_length``, ``data_dtype``.

        Extra keyword arguments (``reader_groups``, ``writers``) are passed on;
        a positional setup directory (0.0.x signature) is accepted and ignored.
        """
        missing = [k for k in ("slot_count", "data_length", "data_dtype") if k not in setup]
        if missing:
            raise ValueError(f"buffer '{name}': missing key(s) {', '.join(missing)}")
        return cls(name, setup["slot_count"], setup["data_length"], setup["data_dtype"], **kwargs)

    # ------------------------------------------------------------ manual API: raw tokens
    def _access_slot(self, slot_number: int | None) -> list[np.ndarray]:
        """The ``[metadata, data]`` arrays of a slot (the scratch slot for None)."""
        if slot_number is None:
            return list(self._scratch)
        return list(self._slot_views[slot_number])

    def write(self) -> list[Any]:
        """Claim a slot: ``[token, metadata, data]``; return it with :meth:`return_write_token`."""
        slot = self._ring.claim()
        if slot < 0:
            return [_ScratchToken(slot), *self._scratch]
        return [slot, *self._slot_views[slot]]

    def return_write_token(self, token: Any) -> None:
        """Commit the event written under ``token``."""
        if isinstance(token, _ScratchToken) or token is None:
            if getattr(token, "code", PAUSED) == PAUSED:
                self._ring.count_paused_write()
            return
        self._ring.commit(token, self._deadtime_views[token][_DEADTIME_WORD])

    def read(self) -> list[Any]:
        """Take the next event of the default group: ``[token, metadata, data]`` or ``[None]*3`` at the end."""
        group = self._default_group()
        slot = self._ring.take(group)
        if slot == END_OF_STREAM:
            return [None, None, None]
        return [slot, *self._slot_views[slot]]

    def return_read_token(self, token: int | None) -> None:
        """Release a slot taken with :meth:`read`."""
        if token is not None:
            self._ring.finish(self._default_group(), token)

    def observe(self) -> list[Any]:
        """A copy of the latest event: ``[token, metadata, data]`` or ``[None]*3`` at the end."""
        if not hasattr(self, "_raw_observer"):
            self._raw_observer = BufferObserver(self)
        metadata, data = self._raw_observer.__enter__()
        if data is None:
            return [None, None, None]
        return [self._raw_observer.last_seq, metadata, data]

    def return_observe_token(self, token: Any) -> None:
        """Nothing to give back: observers never hold a slot (kept for the manual's API)."""

    def _default_group(self) -> int:
        group = getattr(self, "_default_group_index", None)
        if group is None:
            group = self._default_group_index = self._ring.join_group("default")
        return group

    # ------------------------------------------------------------ control
    def send_flush_event(self) -> None:
        """Count this process's end of stream; the buffer ends when every writer has flushed."""
        self._ring.flush()

    def shutdown(self) -> None:
        """End the buffer now whatever the writers do; readers drain what is committed."""
        self._ring.shutdown()

    def set_event_limit(self, limit: int | None) -> None:
        """End by itself after ``limit`` committed events in total; later writes are rejected (None: no limit)."""
        self._ring.set_event_limit(limit)

    def retire_writer(self, pid: int) -> None:
        """Count dead writer ``pid`` (not coming back) as flushed."""
        self._ring.flush(pid)

    def set_writers(self, writers: int) -> None:
        """Change how many writers must flush before the buffer ends."""
        self._ring.set_writers(writers)

    def reclaim(self, pid: int) -> dict[str, Any]:
        """Take back the slots held by dead process ``pid`` (writes lost, reads redelivered).

        Returns counts ``lost``, ``redelivered``, ``quarantined``, ``repaired`` and
        ``quarantined_events``: one :class:`QuarantinedEvent` (private copies) per
        event set aside because a second reader of its group died holding it.
        """
        result = dict(self._ring.reclaim(pid))
        result["quarantined_events"] = [self._quarantined_event(group, raw) for group, raw in result.pop("set_aside", [])]
        return result

    def _quarantined_event(self, group: str, raw: bytes) -> "QuarantinedEvent":
        row = np.frombuffer(raw, dtype=np.uint8)
        metadata = row[: self.metadata_byte_size].view(self.metadata_dtype).copy()
        data = row[DATA_OFFSET : DATA_OFFSET + self.data_byte_size].view(self.data_dtype).copy()
        return QuarantinedEvent(self.name, group, metadata, data)

    def detach_group(self, group: str) -> None:
        """Stop waiting for reader group ``group`` (its workers failed for good).

        Its unread events are released; later events are no longer kept for it.
        """
        self._ring.detach_group(group)

    def join_group(self, group: str) -> int:
        """Register reader group ``group`` (entitled to events committed from now on)."""
        return self._ring.join_group(group)

    @property
    def reader_groups(self) -> list[str]:
        """Names of the reader groups."""
        return self._ring.group_names()

    @property
    def ended(self) -> bool:
        """True once every writer has flushed (or the buffer was shut down)."""
        return self._ring.ended

    def pause(self) -> None:
        """Pause: data written from now on is discarded (and counted in ``paused_count``)."""
        self._ring.set_paused(True)

    def resume(self) -> None:
        """Resume accepting data."""
        self._ring.set_paused(False)

    def get_stats(self) -> dict[str, Any]:
        """Statistics: the manual's keys plus ``lost``, ``redelivered``, ``quarantined``, ``ended``, ``pending``.

        ``rate`` and ``average_deadtime`` are measured since this process's previous call.
        """
        snap = self._ring.snapshot()
        now = time.monotonic()
        last_time, last_events, last_deadtime = self._last_stats
        events, deadtime = snap["events"], snap["deadtime"]
        new_events = events - last_events
        elapsed = max(now - last_time, 1e-9)
        self._last_stats = (now, events, deadtime)
        return {
            "event_count": events,
            "filled_slots": (self.slot_count - snap["free"]) / self.slot_count,
            "empty_slots": snap["free"] / self.slot_count,
            "flush_event_received": snap["ended"],
            "rate": new_events / elapsed,
            "average_deadtime": (deadtime - last_deadtime) / new_events if new_events else 0.0,
            "paused_count": snap["paused_count"],
            "paused": snap["paused"],
            "lost": snap["lost"],
            "redelivered": snap["redelivered"],
            "quarantined": snap["quarantined"],
            "ended": snap["ended"],
            "pending": snap["pending"],
            "abandoned": snap["abandoned"],
            "rejected": snap["rejected"],
        }

    def counters(self) -> dict[str, Any]:
        """Raw counters including per-group progress (for supervisors and tests)."""
        return self._ring.snapshot()

    def close(self) -> None:
        """Unmap the buffer in this process; the creating process also unlinks it."""
        if self._closed:
            return
        self._closed = True
        self._segment.unlink()
        self._slot_views.clear()
        self._byte_views.clear()
        for ints, floats in self._meta_words:
            ints.release()
            floats.release()
        self._meta_words.clear()
        self._deadtime_views.clear()
        self._raw_slots = None
        self._ring.release_views()
        self._segment.close()
        if self._segment.is_owner:
            _unlink_semaphores(self._sync)

    def __repr__(self) -> str:
        return f"mimoBuffer({self.name!r}, slot_count={self.slot_count}, data_length={self.data_length}, data_dtype={self.data_dtype})"


def _unlink_semaphores(sync: tuple[Any, Any, list[Any], Any]) -> None:
    """Run the creator's cleanup of the named semaphores now instead of at exit.

    multiprocessing unlinks a named semaphore when the creating object is
    garbage collected (through a ``multiprocessing.util.Finalize``); interfaces
    may keep references alive, so we trigger those finalizers explicitly.
    """
    from multiprocessing import util

    lock, space, group_sems, repair = sync
    ours = {id(lock), id(space), id(repair), *(id(s) for s in group_sems)}
    for finalizer in list(util._finalizer_registry.values()):
        ref = getattr(finalizer, "_weakref", None)
        target = ref() if ref is not None else None
        if target is not None and id(target) in ours:
            finalizer()


@dataclass(frozen=True)
class QuarantinedEvent:
    """A poison event set aside by :meth:`mimoBuffer.reclaim`: private copies of its slot.

    ``group`` is the reader group whose readers died on it; ``metadata`` (one
    record) and ``data`` (``data_length`` elements) have the buffer's dtypes.
    """

    buffer: str
    group: str
    metadata: np.ndarray
    data: np.ndarray

    @property
    def counter(self) -> int:
        """The event's counter (from its metadata)."""
        return int(self.metadata["counter"][0])


class _Copy(enum.Enum):
    """What one try of :meth:`BufferObserver._copy_newest` found."""

    DONE = "copied"  # a new event is in the private copy
    NOTHING_NEW = "nothing new"  # no event since the last copy (yet)
    ENDED = "ended"  # nothing new and the stream has ended
    RACED = "raced"  # the slot was rewritten while copying: try again


class _ScratchToken:
    """Token of a write that went to the scratch slot (paused or after the end)."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


def _check_positive_int(name: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"buffer '{name}': {key} must be an integer >= 1, got {value!r}")


class Interface:
    """Base class of the objects through which a process uses a :class:`mimoBuffer`.

    Attributes: ``buffer``, ``name``, ``slot_count``, ``data_example``,
    ``metadata_example``, ``shutdown_buffer`` (send a flush event),
    ``get_stats``, ``is_shutdown`` (``.value`` is True once the buffer ended).
    """

    def __init__(self, buffer: mimoBuffer) -> None:
        self.buffer = buffer
        self.shutdown_buffer = buffer.send_flush_event
        self.get_stats = buffer.get_stats
        self.name = buffer.name
        self.slot_count = buffer.slot_count
        self.data_example = buffer.data_example
        self.metadata_example = buffer.metadata_example
        self.is_shutdown = buffer.flush_event_received


class BufferReader(Interface):
    """Context manager taking the next event of a reader group.

    ``with reader as (metadata, data)`` yields views into the slot (valid inside
    the block only), or ``(None, None)`` once the stream has ended for the group.
    """

    def __init__(self, buffer: mimoBuffer, group: str | None = None) -> None:
        super().__init__(buffer)
        self.group = group or "default"
        self._group_index = buffer.join_group(self.group)
        self._ring = buffer._ring
        self._views = buffer._slot_views
        self._bytes = buffer._byte_views
        self._meta_words = buffer._meta_words
        self.token: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"buffer": self.buffer, "group": self.group}

    def current_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(metadata, data)`` of the slot being read, as flat uint8 arrays (for byte copies)."""
        assert self.token is not None, "current_bytes() is only valid inside a `with` block with data"
        return self._bytes[self.token]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["buffer"], state["group"])

    def __enter__(self) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        slot = self._ring.take(self._group_index)
        if slot == END_OF_STREAM:
            self.token = None
            return (None, None)
        self.token = slot
        _heartbeat.holding(self._meta_words[slot][0][0])
        return self._views[slot]

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        slot = self.token
        if slot is not None:
            self.token = None
            self._ring.finish(self._group_index, slot)
            _heartbeat.released()


class BufferWriter(Interface):
    """Context manager claiming a free slot to write one event.

    The event is published when the block ends normally and discarded if it
    raises. While the buffer is paused the block writes into a private scratch
    slot and the event is counted in ``paused_count``.
    """

    def __init__(self, buffer: mimoBuffer) -> None:
        super().__init__(buffer)
        self._ring = buffer._ring
        self._views = buffer._slot_views
        self._deadtimes = buffer._deadtime_views
        self._scratch = buffer._scratch
        self._bytes = buffer._byte_views
        self._scratch_bytes = buffer._scratch_bytes
        self.token: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"buffer": self.buffer}

    def current_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(metadata, data)`` of the slot being written, as flat uint8 arrays (for byte copies)."""
        slot = self.token
        assert slot is not None, "current_bytes() is only valid inside a `with` block"
        return self._scratch_bytes if slot < 0 else self._bytes[slot]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["buffer"])

    def __enter__(self) -> tuple[np.ndarray, np.ndarray]:
        slot = self._ring.claim()
        self.token = slot
        if slot < 0:
            return self._scratch
        return self._views[slot]

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        slot = self.token
        self.token = None
        if slot is None:
            return
        if slot < 0:
            if slot == PAUSED and exc_type is None:
                self._ring.count_paused_write()
            return
        if exc_type is not None:
            self._ring.abandon(slot)
        else:
            self._ring.commit(slot, self._deadtimes[slot][_DEADTIME_WORD])

    def send_flush_event(self) -> None:
        """Tell the readers this process will write no more (end of stream)."""
        self.buffer.send_flush_event()

    @property
    def accepting(self) -> bool:
        """False once the buffer has ended (writes would be rejected)."""
        return not self._ring.ended


class CommitWitness:
    """Tells for certain, after a writer process died, whether its last announced event was committed.

    ``CommitWitness(writer, key)`` takes the buffer's witness entry ``key`` (an
    int > 0 the writer chooses, the same for its restarted process). Inside
    ``with writer``, with the event filled, :meth:`announce` a tag (>= 0,
    growing: e.g. a running count of the events this key wrote). When the
    process dies, the buffer records the tag as *settled* if that event was
    committed (before it frees the dead process's slots, which are the
    evidence); its next process reads :attr:`settled` and anyone may ask
    :meth:`settled_under`. A kill anywhere, even between the commit and the
    writer's own record of it, leaves a certain answer.

    ``settled``: the highest announced tag that a dead process under ``key``
    committed, or NO_TAG. A tag named is always committed; the last announced
    one of a dead process is missing only when it had claimed its slot again
    (an abandoned write withdraws its announcement), so a writer that records
    each commit right after it knows exactly what it committed:
    ``max(its record, settled)``.
    """

    def __init__(self, writer: BufferWriter, key: int) -> None:
        self._writer = writer
        self._ring = writer._ring
        self.key = key
        try:
            self.entry, self.settled = self._ring.open_witness(key)
        except RuntimeError as exc:
            raise RuntimeError(f"buffer '{writer.name}': {exc}") from None

    def announce(self, tag: int) -> None:
        """The event being written (inside ``with writer``) is about to be committed as ``tag``.

        Nothing is announced for an event going to the scratch slot (paused:
        it is discarded anyway).
        """
        slot = self._writer.token
        if slot is not None and slot >= 0:
            self._ring.announce(self.entry, tag, slot)

    def settled_under(self, key: int) -> int:
        """The settled tag of the last process that died under ``key`` (NO_TAG: none known)."""
        return self._ring.witnessed(key)


class BufferObserver(Interface):
    """Context manager giving a private copy of the most recent event.

    It never holds a slot, so it never delays writers or readers. Each
    ``with`` returns an event not seen before by this observer, waiting for one
    if needed, and ``(None, None)`` at the end of the stream.
    """

    def __init__(self, buffer: mimoBuffer) -> None:
        super().__init__(buffer)
        self._ring = buffer._ring
        self._raw = buffer._raw_slots
        self._copy_meta = np.zeros(1, buffer.metadata_dtype)
        self._copy_data = np.zeros(buffer.data_length, buffer.data_dtype)
        self._meta_bytes = self._copy_meta.view(np.uint8)
        self._data_bytes = self._copy_data.view(np.uint8)
        self._copy_bytes = (self._meta_bytes, self._data_bytes)
        self._meta_size = buffer.metadata_byte_size
        self._data_size = buffer.data_byte_size
        self.last_seq = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"buffer": self.buffer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["buffer"])

    def __enter__(self) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        poll = _OBSERVER_POLL_MIN
        while True:
            got = self._copy_newest()
            if got is _Copy.DONE:
                _heartbeat.beat()  # observing an event is progress too
                return (self._copy_meta, self._copy_data)
            if got is _Copy.RACED:
                continue
            if got is _Copy.ENDED:
                return (None, None)
            _heartbeat.beat()
            time.sleep(poll)
            poll = min(poll * 2, _OBSERVER_POLL_MAX)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        return None

    def latest(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Non-blocking: ``(metadata, data)`` of the newest event not seen before, else None.

        The arrays are this observer's private copy (overwritten by the next call);
        like ``with observer``, it never holds a slot.
        """
        for _attempt in range(8):
            got = self._copy_newest()
            if got is _Copy.DONE:
                return (self._copy_meta, self._copy_data)
            if got is not _Copy.RACED:
                return None
        return None  # rewritten under us every time (very high rate): try again later

    def _copy_newest(self) -> "_Copy":
        """One try at copying the newest unseen event into this observer's private arrays.

        Invariant: ``last_seq`` advances only when the copy is known to be whole
        (the slot still held the same commit after copying).
        """
        seq, slot, gen, ended = self._ring.latest()
        if seq <= self.last_seq or slot < 0:
            return _Copy.ENDED if ended else _Copy.NOTHING_NEW
        row = self._raw[slot]
        self._meta_bytes[:] = row[: self._meta_size]
        self._data_bytes[:] = row[DATA_OFFSET : DATA_OFFSET + self._data_size]
        if not self._ring.still_holds(slot, seq, gen):  # rewritten while we copied
            return _Copy.RACED
        self.last_seq = seq
        return _Copy.DONE

    def current_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(metadata, data)`` of the observer's private copy, as flat uint8 arrays."""
        return self._copy_bytes

    def poll(self) -> tuple[np.ndarray, np.ndarray] | tuple[None, None] | None:
        """Non-blocking: the newest unseen event, ``(None, None)`` at the end, or None if nothing new."""
        seq, slot, gen, ended = self._ring.latest()
        if seq > self.last_seq and slot >= 0:
            return self.__enter__()
        if ended:
            return (None, None)
        return None
