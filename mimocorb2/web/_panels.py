"""Data for the scope and histogram panels, computed in worker threads (never on the loop).

Scope frames are binary WebSocket messages::

    uint32 LE  n = length of the JSON header
    n bytes    {"type": "scope", "buffer", "counter", "channels": [...], "length"}
    padding    to a multiple of 4
    float32    length samples of each channel, in the order of "channels"
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mimocorb2.web._backend import HISTOGRAM_FUNCTIONS

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def encode_scope_frame(buffer: str, metadata: np.ndarray, data: np.ndarray) -> bytes:
    """One scope frame of the event ``data`` (scalar numeric fields only)."""
    names = [n for n in (data.dtype.names or ()) if data.dtype[n].shape == () and data.dtype[n].kind in "biuf"]
    counter = int(metadata["counter"][0]) if metadata is not None and "counter" in (metadata.dtype.names or ()) else -1
    header = json.dumps({"type": "scope", "buffer": buffer, "counter": counter, "channels": names,
                         "length": int(len(data))}).encode()
    pad = (-(4 + len(header))) % 4
    body = b"".join(np.ascontiguousarray(data[n], dtype="<f4").tobytes() for n in names)
    return struct.pack("<I", len(header)) + header + b" " * pad + body


def histogram_directories(graph: dict[str, Any] | None, run_dir: Path | None) -> dict[str, dict[str, Any]]:
    """``Histograms_<buffer>`` directories of the setup's histogram workers -> {path, workers}."""
    out: dict[str, dict[str, Any]] = {}
    if not graph or run_dir is None:
        return out
    for name, w in graph["workers"].items():
        if w["function"] not in HISTOGRAM_FUNCTIONS:
            continue
        buffers = w["sources"] if w["function"].startswith("exporters.") and w["sources"] else w["observes"]
        for buffer in buffers[:1]:
            key = f"Histograms_{buffer}"
            entry = out.setdefault(key, {"path": run_dir / key, "buffer": buffer, "workers": []})
            entry["workers"].append(name)
    return out


def read_histogram_panels(dirs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every channel of every histogram directory, counts as lists (JSON-able)."""
    from mimocorb2.functions.visualizers import read_histograms

    panels = []
    for key, entry in dirs.items():
        try:
            channels = read_histograms(entry["path"])
        except (OSError, ValueError, KeyError):
            channels = []
        out = []
        for ch in channels:
            counts = ch.get("counts")
            counts_list = [] if counts is None else np.asarray(counts).astype(float).tolist()
            out.append({"channel": ch["channel"], "min": ch["min"], "max": ch["max"], "bins": ch["bins"],
                        "underflow": ch["underflow"], "overflow": ch["overflow"], "counts": counts_list,
                        "entries": int(sum(counts_list))})
        panels.append({"directory": key, "buffer": entry["buffer"], "workers": entry["workers"],
                       "complete": (entry["path"] / ".complete").exists(), "channels": out})
    return panels


def histogram_file(dirs: dict[str, dict[str, Any]], directory: str, filename: str) -> Path | None:
    """The file to download, only if it is info.csv or a channel's .npy of a known directory."""
    entry = dirs.get(directory)
    if entry is None or not _SAFE_NAME.match(filename):
        return None
    if filename != "info.csv" and not filename.endswith(".npy"):
        return None
    path = entry["path"] / filename
    return path if path.is_file() else None


def process_memory(pids: list[int]) -> dict[int, int]:
    """Resident memory in bytes of each pid (from /proc; missing ones left out)."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                out[pid] = int(fh.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return out
