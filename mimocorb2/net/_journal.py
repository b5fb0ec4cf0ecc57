"""The exporter's journal: blocks published but not yet known to be stored, re-sent identically.

Before an exporter process publishes a block it writes the block's source-buffer
sequence numbers to ``RUN_DIR/nats/<worker>/journal.<process index>.json``. If the
process is killed, the supervisor's reclaim gives its slots back to the group and the
restarted process (or a sibling started later) reads the journals: a slot whose
sequence number belongs to a journaled block waits until the whole block is together
again and is then published as exactly that block, in the same order, so it gets the
same message id and the server stores it at most once.

Invariant: a journal lists a superset of the process's unacknowledged blocks (entries
are dropped lazily: an entry whose events were stored is harmless, because their
sequence numbers are never taken again).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Journal", "Orphans"]


def _ranges(sequences: np.ndarray) -> list[list[int]]:
    """``[[first, last], ...]`` runs of consecutive numbers, in the given order."""
    runs: list[list[int]] = []
    for value in sequences.tolist():
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return runs


def _expand(runs: list[list[int]]) -> list[int]:
    out: list[int] = []
    for first, last in runs:
        out.extend(range(first, last + 1))
    return out


class Journal:
    """This process's open blocks, rewritten atomically before each publish."""

    def __init__(self, directory: Path, process: int) -> None:
        self.directory = directory
        self.path = directory / f"journal.{process}.json"
        self._open: dict[int, list[list[int]]] = {}
        self._next = 0
        directory.mkdir(parents=True, exist_ok=True)

    def leftovers(self) -> list[list[int]]:
        """Open blocks of earlier processes of this worker (read before this one writes)."""
        blocks: list[list[int]] = []
        for path in sorted(self.directory.glob("journal.*.json")):
            try:
                blocks.extend(_expand(runs) for runs in json.loads(path.read_text())["blocks"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return [b for b in blocks if b]

    def opened(self, sequences: np.ndarray) -> int:
        """Record a block about to be published; returns its key for :meth:`settled`."""
        key = self._next
        self._next += 1
        self._open[key] = _ranges(sequences)
        self._write()
        return key

    def settled(self, key: int) -> None:
        """The block is stored (the file is brought up to date with the next publish)."""
        self._open.pop(key, None)

    def _write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "blocks": list(self._open.values())}))
        os.replace(tmp, self.path)

    def close(self) -> None:
        """Every block is stored: nothing to leave behind."""
        self._open.clear()
        self._write()


@dataclass
class _Orphan:
    sequences: list[int]
    slots: dict[int, int] = field(default_factory=dict)  # seq -> slot
    touched: float = 0.0


class Orphans:
    """Slots of journaled blocks, gathered until each block is whole again."""

    def __init__(self, blocks: list[list[int]]) -> None:
        self._blocks = [_Orphan(b) for b in blocks]
        self._by_seq = {seq: block for block in self._blocks for seq in block.sequences}

    def __bool__(self) -> bool:
        return bool(self._by_seq)

    @property
    def holding(self) -> bool:
        """Whether some partial block holds slots."""
        return any(b.slots for b in self._blocks)

    def claims(self, seq: int) -> bool:
        """Whether ``seq`` belongs to a journaled block."""
        return seq in self._by_seq

    def put(self, seq: int, slot: int) -> list[int] | None:
        """File ``slot``; the block's slots in the original order once it is whole."""
        block = self._by_seq.pop(seq)
        block.slots[seq] = slot
        block.touched = time.monotonic()
        if len(block.slots) < len(block.sequences):
            return None
        self._blocks.remove(block)
        return [block.slots[s] for s in block.sequences]

    def stale(self, older_than: float) -> list[list[int]]:
        """Partial blocks untouched for ``older_than`` seconds (their missing slots went elsewhere)."""
        now = time.monotonic()
        out = []
        for block in list(self._blocks):
            if block.slots and now - block.touched >= older_than:
                out.append([block.slots[s] for s in block.sequences if s in block.slots])
                self._forget(block)
        return out

    def rest(self) -> list[list[int]]:
        """Every partial block (at the end of the stream)."""
        out = [[b.slots[s] for s in b.sequences if s in b.slots] for b in self._blocks if b.slots]
        for block in list(self._blocks):
            self._forget(block)
        return out

    def _forget(self, block: _Orphan) -> None:
        self._blocks.remove(block)
        for seq in block.sequences:
            if self._by_seq.get(seq) is block:
                del self._by_seq[seq]
