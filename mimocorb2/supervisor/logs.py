"""Reading the worker logs of a run (``RUN_DIR/logs/WORKER.log``), in a thread."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import structlog

from mimocorb2.supervisor.blocking import BlockingTimeout, in_daemon_thread
from mimocorb2.supervisor.errors import RunError

log = structlog.get_logger("mimocorb2.run")

__all__ = ["read_logs", "last_error_line", "MAX_CHUNK"]

#: the most a single ``logs`` reply carries per file
MAX_CHUNK = 4 * 1024 * 1024
_TAIL_BYTES = 16 * 1024
#: how long reading the logs may take (a hung file system) before the request is refused
READ_TIMEOUT = 30.0


async def read_logs(logs_dir: Path, names: list[str], offsets: dict[str, int], max_bytes: int) -> list[dict[str, Any]]:
    """From each worker's offset, up to ``max_bytes`` whole lines of its log."""
    max_bytes = max(1024, min(int(max_bytes), MAX_CHUNK))
    try:
        return await in_daemon_thread(_read_all, logs_dir, names, offsets, max_bytes,
                                      timeout=READ_TIMEOUT, what="reading logs")
    except BlockingTimeout as exc:
        raise RunError(str(exc)) from None


def _read_all(logs_dir: Path, names: list[str], offsets: dict[str, int], max_bytes: int) -> list[dict[str, Any]]:
    chunks = []
    for name in names:
        path = logs_dir / f"{name}.log"
        offset = int(offsets.get(name, 0) or 0)
        text = ""
        try:  # non-blocking open, regular files only: a FIFO put there never wedges us
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise OSError(f"{path} is not a regular file")
                fh.seek(offset)
                data = fh.read(max_bytes)
            # do not cut a line (or a UTF-8 sequence) in half
            if len(data) == max_bytes and b"\n" in data:
                data = data[: data.rindex(b"\n") + 1]
            offset += len(data)
            text = data.decode("utf-8", "replace")
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot read a worker log", path=str(path), error=str(exc))
        chunks.append({"name": name, "path": str(path), "offset": offset, "text": text})
    return chunks


def last_error_line(path: Path) -> str | None:
    """The last line of a worker log that tells what went wrong (blocking; small tail read).

    Prefers the last ERROR record, else the last line of a traceback, else the last line.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if "[error" in line.lower() or " error " in line.lower() or "error:" in line.lower():
            return line[-500:]
    return lines[-1][-500:] if lines else None
