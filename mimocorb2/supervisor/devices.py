"""Device and connection state that workers publish as small JSON files in ``RUN_DIR/status/``.

Writers (the Red Pitaya importer, the NATS functions, any user function) replace
``RUN_DIR/status/<worker>.json`` or, one per process, ``<worker>.<index>.json``
atomically. :func:`read_status_files` reads them for the sampler (blocking file
I/O: call it in a thread) and :func:`device_summary` makes the one line that
``mimoctl status`` and the web page show.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MAX_FILE_BYTES", "MAX_FILES", "MAX_SUMMARY_CHARS", "device_summary", "read_status_files"]

MAX_FILE_BYTES = 64 * 1024  #: a bigger status file is skipped
MAX_FILES = 256  #: status files read per sample, in name order
MAX_SUMMARY_CHARS = 120  #: :func:`device_summary` cuts longer lines with an ellipsis
_QUIET_STATES = frozenset({"running", "connected", "finished"})  #: states whose ``last_error`` is history


def read_status_files(directory: Path, complain: Callable[[str, str], None]) -> dict[str, dict[str, Any]]:
    """``{file stem: parsed object}`` of the ``*.json`` files in ``directory``.

    ``complain(file name, reason)`` is called for every file skipped; a missing
    directory is simply no files.
    """
    try:
        with os.scandir(directory) as listing:
            entries = sorted((e for e in listing if e.name.endswith(".json") and not e.name.startswith(".")),
                             key=lambda e: e.name)
    except OSError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for entry in entries[:MAX_FILES]:
        name = entry.name
        try:
            if not entry.is_file(follow_symlinks=False):  # not even opened: a device may act on open
                raise OSError("not a regular file")
            parsed = json.loads(_read_regular_file(directory / name))
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            complain(name, str(exc) or type(exc).__name__)
            continue
        if not isinstance(parsed, dict):
            complain(name, "not a JSON object")
            continue
        found[name[: -len(".json")]] = parsed
    return found


def _read_regular_file(path: Path) -> bytes:
    """Up to MAX_FILE_BYTES of ``path``; OSError for anything but a small regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES} bytes")
    return data


def device_summary(device: dict[str, Any] | None) -> str | None:
    """One line for a person: the ``message`` (else ``state=...``), then ``last_error`` unless running."""
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
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1] + "…"


def _one_line(value: Any) -> str:
    """``value`` as text with every run of whitespace (newlines too) one space."""
    return " ".join(str(value).split()) if value else ""
