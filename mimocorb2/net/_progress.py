"""How far an importing process got with the block it is writing, kept across a SIGKILL.

Each importing process keeps one record in ``RUN_DIR/nats/<worker>/progress.<process
index>``: three little-endian int64 (the block's stream sequence, how many of its
events are in the sink, how many it has), written through a shared memory map, so
that what the process wrote last survives its death (the page belongs to the file,
not to the process). The count is raised right after each event is committed to the
sink.

When a process dies in the middle of a block, the server delivers the block again
(it was never acknowledged). Whoever gets it (the restarted process, or a sibling)
looks the block up here and writes only the events after the recorded count: every
event reaches the sink once.

Invariant: ``done`` never exceeds the events of ``seq`` committed to the sink, and is
lower only in the instant between a commit and the store that follows it (a kill
exactly there writes that one event twice).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

__all__ = ["BlockProgress"]

_RECORD = np.dtype([("seq", "<i8"), ("done", "<i8"), ("count", "<i8")])
_SEQ, _DONE, _COUNT = 0, 1, 2  # positions in the int64 view


def _read_record(path: Path) -> tuple[int, int, int] | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) != _RECORD.itemsize:
        return None
    seq, done, count = np.frombuffer(raw, dtype=_RECORD)[0].tolist()
    return int(seq), int(done), int(count)


class BlockProgress:
    """This process's record, and the unfinished blocks of the group's earlier processes."""

    def __init__(self, directory: Path, process: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"progress.{process}"
        self._unfinished = self._scan(exclude=None)  # read before this process overwrites its file
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != _RECORD.itemsize:
                os.ftruncate(fd, _RECORD.itemsize)
            self._map = mmap.mmap(fd, _RECORD.itemsize)
        finally:
            os.close(fd)
        self._words = memoryview(self._map).cast("q")

    def _scan(self, exclude: Path | None) -> dict[int, int]:
        """``{stream sequence: events written}`` of the blocks in the group's records (begun ones)."""
        found: dict[int, int] = {}
        for path in self.directory.glob("progress.*"):
            if path == exclude:
                continue
            record = _read_record(path)
            if record is not None and 0 < record[1] <= record[2]:
                found[record[0]] = max(record[1], found.get(record[0], 0))
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
        words[_DONE] = done
        words[_COUNT] = count
        words[_SEQ] = seq

    def committed(self, done: int) -> None:
        """``done`` events of the current block are in the sink (call right after each commit)."""
        self._words[_DONE] = done

    def close(self) -> None:
        self._words.release()
        self._map.close()
