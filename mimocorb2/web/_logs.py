"""Live tail of the run's log files for the logs panel (file reads in a thread).

Each line goes to the page as ``{"name", "offset", "level", "text"}``; ``offset``
is where the line starts in its file, so "load older" asks for the bytes before
the earliest line the page holds.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any

#: how far back a file is read when the tail first sees it
FIRST_READ = 32 * 1024
#: most bytes read from one file per tick
MAX_READ = 256 * 1024
#: lines kept for a page that subscribes
RECENT_LINES = 400

_CONSOLE_LEVEL = re.compile(r"\[(debug|info|warning|error|critical)\s*\]", re.IGNORECASE)


def line_level(text: str) -> str:
    """debug, info, warning, error or critical: from a JSON record or a console line; info if none."""
    if text.startswith("{"):
        try:
            level = json.loads(text).get("level")
            if isinstance(level, str):
                return level.lower()
        except ValueError:
            pass
    match = _CONSOLE_LEVEL.search(text[:120])
    if match:
        return match.group(1).lower()
    if "Traceback" in text or "stderr" in text[:80]:
        return "error"
    return "info"


def readable(text: str) -> str:
    """A JSON log record (daemon.log) as one console-style line; other lines unchanged."""
    if not text.startswith("{"):
        return text
    try:
        record = json.loads(text)
    except ValueError:
        return text
    if not isinstance(record, dict):
        return text
    head = f"{record.pop('timestamp', '')} [{record.pop('level', 'info'):<8}] {record.pop('event', '')}"
    record.pop("logger", None)
    return head + "".join(f" {k}={v}" for k, v in record.items())


def split_lines(name: str, start: int, data: bytes) -> list[dict[str, Any]]:
    """Whole lines of ``data`` (which begins at byte ``start`` of its file)."""
    lines = []
    offset = start
    for raw in data.splitlines(keepends=True):
        if raw.endswith(b"\n"):
            text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            lines.append({"name": name, "offset": offset, "level": line_level(text), "text": readable(text)})
        offset += len(raw)
    return lines


class LogTail:
    """Where each file was read up to, and the most recent lines of all of them."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_LINES)

    def reset(self) -> None:
        """Forget the read positions and the recent lines (a new run has new files)."""
        self.offsets.clear()
        self.recent.clear()

    def read_new(self, files: dict[str, Path]) -> list[dict[str, Any]]:
        """Blocking (call in a thread): the complete new lines of every file since the last call."""
        out: list[dict[str, Any]] = []
        for name, path in files.items():
            try:
                size = path.stat().st_size
            except OSError:
                continue
            offset = self.offsets.get(name)
            if offset is None:
                offset = max(0, size - FIRST_READ)
            if size < offset:  # truncated or replaced
                offset = 0
            if size == offset:
                self.offsets[name] = offset
                continue
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(min(MAX_READ, size - offset))
            if offset and offset == max(0, size - FIRST_READ) and name not in self.offsets:
                cut = data.find(b"\n")  # started inside a line: skip to the next one
                data, offset = (data[cut + 1 :], offset + cut + 1) if cut >= 0 else (b"", offset)
            lines = split_lines(name, offset, data)
            end = data.rfind(b"\n") + 1
            self.offsets[name] = offset + end if end else offset
            out.extend(lines)
        self.recent.extend(out)
        return out


def read_before(path: Path, name: str, before: int, size: int = 64 * 1024) -> dict[str, Any]:
    """Blocking: whole lines ending before byte ``before`` of ``path`` (at most ``size`` bytes)."""
    before = min(before, path.stat().st_size)
    start = max(0, before - size)
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(before - start)
    if start:
        cut = data.find(b"\n")
        data, start = (data[cut + 1 :], start + cut + 1) if cut >= 0 else (b"", before)
    return {"name": name, "start": start, "lines": split_lines(name, start, data)}
