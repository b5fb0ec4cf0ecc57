"""How far an importing process got with the block it is writing, exact across a SIGKILL.

Each importing process keeps one record in ``RUN_DIR/nats/<worker>/progress.<process
index>``: four little-endian int64, written through a shared memory map so that what
the process wrote last survives its death (the page belongs to the file, not to the
process):

* ``seq``: the stream sequence of the block being written;
* ``ordinal``: how many events this process index committed to the sink so far (all
  blocks, across restarts);
* ``base``: the ordinal at which the block's event 0 would have been written, so the
  block's events in the sink are ``ordinal - base``;
* ``count``: the block's events.

Per event only ``ordinal`` is stored, one aligned word: a kill leaves it old or new.

The store comes right after the commit, so a kill between the two would leave the
record one short. The sink's :class:`~mimocorb2.mimo_buffer.CommitWitness` closes that
gap: before each commit the importer announces ``ordinal + 1`` to it, and when the
process dies the sink settles the announcement (the tag stays if the event was
committed). Whoever reads a record takes ``max(ordinal, settled tag)`` of its process
index, so the record is exact.

When a process dies in the middle of a block, the server delivers the block again (it
was never acknowledged). Whoever gets it (the restarted process, or a sibling) looks the
block up here and writes only the events after the recorded count: every event reaches
the sink exactly once.

Invariant: ``max(ordinal, settled tag of the index)`` equals the events the process
index committed, once its process is dead; the settled tag exceeds the stored ordinal
only by the one event committed right before the kill.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["BlockProgress"]

_RECORD = np.dtype([("seq", "<i8"), ("ordinal", "<i8"), ("base", "<i8"), ("count", "<i8")])
_SEQ, _ORDINAL, _BASE, _COUNT = 0, 1, 2, 3  # positions in the int64 view
_PREFIX = "progress."

Settled = Callable[[int], int]
"""The settled witness tag of a process index (``NO_TAG``, -1, when none is known)."""


def _read_record(path: Path) -> tuple[int, int, int, int] | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) != _RECORD.itemsize:
        return None
    seq, ordinal, base, count = np.frombuffer(raw, dtype=_RECORD)[0].tolist()
    return int(seq), int(ordinal), int(base), int(count)


def _process_index(path: Path) -> int | None:
    suffix = path.name[len(_PREFIX):]
    return int(suffix) if suffix.isdigit() else None


class BlockProgress:
    """This process's record, and the unfinished blocks of the group's earlier processes.

    ``settled(index)`` gives the witness verdict of process index ``index`` (see the
    module docstring); this process's own must already be settled (its witness opened).
    """

    def __init__(self, directory: Path, process: int, settled: Settled) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"{_PREFIX}{process}"
        self._settled = settled
        own = _read_record(self.path)
        self.ordinal = max(own[1], settled(process)) if own is not None else 0
        self._unfinished = self._scan(exclude=None)  # read before this process overwrites its file
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != _RECORD.itemsize:
                os.ftruncate(fd, _RECORD.itemsize)
            self._map = mmap.mmap(fd, _RECORD.itemsize)
        finally:
            os.close(fd)
        self._words = memoryview(self._map).cast("q")
        self._words[_ORDINAL] = self.ordinal  # the record now counts the event the witness vouches for

    def _scan(self, exclude: Path | None) -> dict[int, int]:
        """``{stream sequence: events written}`` of the blocks in the group's records (begun ones)."""
        found: dict[int, int] = {}
        for path in self.directory.glob(f"{_PREFIX}*"):
            index = _process_index(path)
            if path == exclude or index is None:
                continue
            record = _read_record(path)
            if record is None:
                continue
            seq, ordinal, base, count = record
            done = min(max(ordinal, self._settled(index)) - base, count)
            if done > 0:
                found[seq] = max(done, found.get(seq, 0))
        return found

    def written_before(self, seq: int, redelivered: bool) -> int:
        """Events of block ``seq`` that an earlier process already put into the sink.

        The records of processes that ended before this one started are known from
        the start; for a block delivered again, the records of the running siblings
        are read too (one of them may have died since, or written the whole block and
        lost its acknowledgement).
        """
        done = self._unfinished.pop(seq, 0)
        if redelivered:
            done = max(done, self._scan(exclude=self.path).get(seq, 0))
        return done

    def begin(self, seq: int, count: int, done: int) -> None:
        """Start (or resume at ``done``) writing block ``seq`` of ``count`` events."""
        words = self._words
        words[_BASE] = self.ordinal - done
        words[_COUNT] = count
        words[_SEQ] = seq

    def committed(self, ordinal: int) -> None:
        """The event announced as ``ordinal`` is in the sink (call right after its commit)."""
        self.ordinal = ordinal
        self._words[_ORDINAL] = ordinal

    def close(self) -> None:
        """Unmap the record (the file stays: a restarted process reads it)."""
        self._words.release()
        self._map.close()
