"""Device and connection state that workers publish as small JSON files in ``RUN_DIR/status/``.

Writers (the Red Pitaya importer, the NATS functions, any user function) replace
``RUN_DIR/status/<worker>.json`` or, one per process, ``<worker>.<index>.json``
atomically. :func:`read_status_files` reads them for the sampler (blocking file
I/O: call it in a thread) and :func:`device_summary` makes the one line that
``mimoctl status`` and the web page show.

A file outlives the process that wrote it. While the run goes on,
:func:`stale_reason` tells a current file from an old one by its modification
time: a file is current only if it was written after a live process that may
write it started (a per-process file: its slot's process; a worker's file: any
of the worker's processes). The file of a restarted process's predecessor is
"from an earlier process" until the new one rewrites it; the file of a process
that ended, "its process ended". Status shows both marked, never as current.

Invariants:

* only regular files are opened (never a FIFO, device or symlink: ``O_NOFOLLOW``,
  ``O_NONBLOCK`` and an ``fstat`` check), at most :data:`MAX_FILE_BYTES` each and
  at most :data:`MAX_FILES` per read;
* a file that is too big, not JSON or not a JSON object is skipped, never raised.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_FILE_BYTES", "MAX_FILES", "MAX_SUMMARY_CHARS", "STALE_SLACK", "DeviceFile", "device_summary",
           "read_status_files", "stale_reason"]

MAX_FILE_BYTES = 64 * 1024  #: a bigger status file is skipped
MAX_FILES = 256  #: status files read per sample, in name order
MAX_SUMMARY_CHARS = 120  #: :func:`device_summary` cuts longer lines with an ellipsis
_QUIET_STATES = frozenset({"running", "connected", "finished"})  #: states whose ``last_error`` is history
#: seconds a file's time may lag behind a process start (the kernel stamps files with a coarse clock);
#: a restart comes at least 0.5 s (the backoff) after the last write of the process before it
STALE_SLACK = 0.1


@dataclass(frozen=True)
class DeviceFile:
    """One status file as read: its JSON object and when it was last written (wall-clock seconds)."""

    content: dict[str, Any]
    written: float


def read_status_files(directory: Path, complain: Callable[[str, str], None]) -> dict[str, DeviceFile]:
    """``{file stem: DeviceFile}`` of the ``*.json`` files in ``directory``.

    ``complain(file name, reason)`` is called for every file skipped; a missing
    directory is simply no files.
    """
    try:
        with os.scandir(directory) as listing:
            entries = sorted((e for e in listing if e.name.endswith(".json") and not e.name.startswith(".")),
                             key=lambda e: e.name)
    except OSError:
        return {}
    found: dict[str, DeviceFile] = {}
    for entry in entries[:MAX_FILES]:
        name = entry.name
        try:
            if not entry.is_file(follow_symlinks=False):  # not even opened: a device may act on open
                raise OSError("not a regular file")
            data, written = _read_regular_file(directory / name)
            parsed = json.loads(data)
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            complain(name, str(exc) or type(exc).__name__)
            continue
        if not isinstance(parsed, dict):
            complain(name, "not a JSON object")
            continue
        found[name[: -len(".json")]] = DeviceFile(parsed, written)
    return found


def _read_regular_file(path: Path) -> tuple[bytes, float]:
    """Up to MAX_FILE_BYTES of ``path`` and its modification time; OSError for anything but a small regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError("not a regular file")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES} bytes")
    return data, info.st_mtime


def stale_reason(written: float, live_starts: Sequence[float]) -> str | None:
    """Why a status file is not current, or None when it is.

    ``live_starts``: the wall-clock start times of the live processes that may
    write the file. None of them: ``"its process ended"``; the file older than
    each of them: ``"from an earlier process"``.
    """
    if not live_starts:
        return "its process ended"
    if all(written < start - STALE_SLACK for start in live_starts):
        return "from an earlier process"
    return None


def device_summary(device: dict[str, Any] | None, stale: str | None = None) -> str | None:
    """One line for a person: the ``message`` (else ``state=...``), then ``last_error`` unless running.

    ``stale``: why the file is not current (:func:`stale_reason`); the line then begins ``[stale: REASON]``.
    """
    if not device:
        return None
    state = _one_line(device.get("state"))
    pieces = [_one_line(device.get("message")) or (f"state={state}" if state else "")]
    error = _one_line(device.get("last_error"))
    if error and state not in _QUIET_STATES and error not in pieces[0]:
        pieces.append(error)
    text = "  ".join(p for p in pieces if p)
    if not text:
        return None
    if stale:
        text = f"[stale: {stale}] {text}"
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1] + "…"


def _one_line(value: Any) -> str:
    """``value`` as text with every run of whitespace (newlines too) one space."""
    return " ".join(str(value).split()) if value else ""
