"""Poison events set aside by a buffer's reclaim, kept in ``RUN_DIR/quarantine/<buffer>.npy``.

Each file is one NumPy structured array, one record per event set aside, with
the fields ``group`` (the reader group whose readers died on it), ``counter``,
``timestamp``, ``deadtime`` (its metadata) and ``data`` (its ``data_length``
elements of the buffer's dtype). A later event of the same buffer rewrites the
file with one more record (atomically: a temporary file renamed over it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..mimo_buffer import QuarantinedEvent

__all__ = ["quarantine_path", "save_quarantined"]

_GROUP_CHARS = 48


def quarantine_path(run_dir: Path, buffer: str) -> Path:
    """Where the poison events of ``buffer`` are saved."""
    return Path(run_dir) / "quarantine" / f"{buffer}.npy"


def save_quarantined(run_dir: Path, events: Sequence[QuarantinedEvent]) -> list[Path]:
    """Append ``events`` to their buffers' quarantine files; returns the files written.

    Raises OSError (disk full, no permission) to the caller, who logs it: the
    events are counted and logged with their counters in any case.
    """
    written = []
    by_buffer: dict[str, list[QuarantinedEvent]] = {}
    for event in events:
        by_buffer.setdefault(event.buffer, []).append(event)
    for buffer, group in by_buffer.items():
        path = quarantine_path(run_dir, buffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        records = _records(group)
        if path.exists():
            records = np.concatenate([np.load(path, allow_pickle=False), records])
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.save(fh, records, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        written.append(path)
    return written


def _records(events: Sequence[QuarantinedEvent]) -> np.ndarray:
    first = events[0]
    dtype = np.dtype([
        ("group", f"U{_GROUP_CHARS}"),
        ("counter", "<i8"),
        ("timestamp", "<f8"),
        ("deadtime", "<f8"),
        ("data", first.data.dtype, (len(first.data),)),
    ])
    records = np.zeros(len(events), dtype)
    for record, event in zip(records, events):
        record["group"] = event.group[:_GROUP_CHARS]
        for name in ("counter", "timestamp", "deadtime"):
            record[name] = event.metadata[name][0]
        record["data"] = event.data
    return records
