"""Per-process heartbeats in shared memory.

A :class:`HeartbeatTable` is one segment with a row per worker process:
``(pid, last beat in CLOCK_MONOTONIC ns, slot moves, reserved, counter of the
event held, held since in CLOCK_MONOTONIC ns)``. The supervisor
creates the table and gives each process its row; inside the process
:func:`attach` binds that row and :func:`beat` stamps it. The buffers call
:func:`beat` whenever they move a slot and on every timeout while waiting for
one, so a quiet heartbeat means the process is stuck outside the data path
(usually in user code), not that the stream is idle.

Readers also record which event they hold (:func:`holding` when a read slot is
taken, :func:`released` when it is given back), so the supervisor can say
"stuck on event N for 33 s" whatever the user code does about beats.
Invariant: ``held since == 0`` exactly when the process holds no read slot;
nested holds (a process reading several buffers) keep the oldest.

Only the owning process writes its row; the supervisor only reads. A torn read
of one 8-byte word cannot happen on the platforms we support.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ._shm import Segment

__all__ = ["HeartbeatTable", "HeartbeatRow", "attach", "detach", "beat", "holding", "released"]

_ROW_WORDS = 6
_PID, _LAST_NS, _MOVES, _HELD_COUNTER, _HELD_SINCE_NS = 0, 1, 2, 4, 5

_row: memoryview | None = None  # this process's row, or None when not supervised
_held_depth = 0  # read slots this process holds right now (only this process changes it)
_monotonic_ns = time.monotonic_ns


def beat() -> None:
    """Stamp this process's heartbeat (a no-op outside a supervised process)."""
    row = _row
    if row is not None:
        row[_LAST_NS] = _monotonic_ns()
        row[_MOVES] += 1


def holding(counter: int) -> None:
    """This process took a read slot holding event ``counter`` (a no-op outside a supervised process)."""
    global _held_depth
    row = _row
    if row is not None:
        if _held_depth == 0:
            row[_HELD_COUNTER] = counter
            row[_HELD_SINCE_NS] = _monotonic_ns()
        _held_depth += 1


def released() -> None:
    """This process gave a read slot back; when it holds none any more, clear the mark."""
    global _held_depth
    row = _row
    if row is not None and _held_depth > 0:
        _held_depth -= 1
        if _held_depth == 0:
            row[_HELD_SINCE_NS] = 0


@dataclass(frozen=True)
class HeartbeatRow:
    """What the supervisor reads of one process's heartbeat.

    ``held_counter`` / ``held_seconds``: the event this process has held the
    longest and for how long (None / 0.0 when it holds no read slot).
    """

    pid: int
    age_seconds: float
    moves: int
    held_counter: int | None = None
    held_seconds: float = 0.0


class HeartbeatTable:
    """A fixed number of heartbeat rows in one shared-memory segment."""

    def __init__(self, rows: int, *, _segment: Segment | None = None) -> None:
        self.rows = rows
        self._segment = _segment or Segment.create("heartbeats", max(rows, 1) * _ROW_WORDS * 8)
        self._words = memoryview(self._segment.mm).cast("q")

    def __reduce__(self):
        return (_attach_table, (self._segment.name, self._segment.creator_pid, self.rows))

    def reset(self, index: int, pid: int) -> None:
        """Give row ``index`` to process ``pid`` and stamp it now."""
        base = index * _ROW_WORDS
        self._words[base + _PID] = pid
        self._words[base + _LAST_NS] = _monotonic_ns()
        self._words[base + _MOVES] = 0
        self._words[base + _HELD_SINCE_NS] = 0

    def read(self, index: int) -> HeartbeatRow:
        """Read row ``index``."""
        base = index * _ROW_WORDS
        now = _monotonic_ns()
        age = (now - self._words[base + _LAST_NS]) / 1e9
        since = self._words[base + _HELD_SINCE_NS]
        if since:
            return HeartbeatRow(self._words[base + _PID], age, self._words[base + _MOVES],
                                self._words[base + _HELD_COUNTER], max(0.0, (now - since) / 1e9))
        return HeartbeatRow(self._words[base + _PID], age, self._words[base + _MOVES])

    def row_view(self, index: int) -> memoryview:
        """The writable words of row ``index`` (for :func:`attach`)."""
        base = index * _ROW_WORDS
        return self._words[base : base + _ROW_WORDS]

    def close(self) -> None:
        """Release the mapping; the creator also unlinks the segment."""
        self._words.release()
        self._segment.unlink()
        self._segment.close()


def _attach_table(name: str, creator_pid: int, rows: int) -> HeartbeatTable:
    return HeartbeatTable(rows, _segment=Segment.attach(name, creator_pid))


def attach(table: HeartbeatTable, index: int) -> None:
    """Bind this process's beats to ``table`` row ``index``."""
    global _row, _held_depth
    import os

    _row = table.row_view(index)
    _row[_PID] = os.getpid()
    _row[_HELD_SINCE_NS] = 0
    _held_depth = 0
    beat()


def detach() -> None:
    """Stop stamping (used by tests)."""
    global _row, _held_depth
    _row = None
    _held_depth = 0
