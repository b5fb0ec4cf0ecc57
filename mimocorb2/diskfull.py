"""Disk full: an error that names the file and the free space left, and one line that says so.

A writer that runs out of space (``ENOSPC``) raises :class:`DiskFullError`
(an ``OSError`` with ``errno.ENOSPC`` and ``filename`` set) from inside
:func:`writing`, or with :meth:`DiskFullError.at` in hot paths. The worker
process runner finds it with :func:`find_disk_full` and reports it with
:func:`describe`: one line, no traceback, then the process fails normally.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DiskFullError", "writing", "find_disk_full", "describe", "free_space", "human_bytes"]


def free_space(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(free bytes for unprivileged users, total bytes)`` of the filesystem holding ``path``.

    Walks up to the nearest existing directory; None when nothing can be asked.
    """
    candidate = Path(path)
    for place in (candidate, *candidate.parents):
        try:
            st = os.statvfs(place)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return None


def human_bytes(n: float) -> str:
    """``n`` bytes for a person: ``812 B``, ``3.4 GB`` (decimal units, at most PB)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _space_text(path: str | os.PathLike[str]) -> str:
    space = free_space(path)
    if space is None:
        return "free space unknown"
    free, total = space
    return f"{human_bytes(free)} free of {human_bytes(total)}"


class DiskFullError(OSError):
    """No space left on the device while writing ``filename`` (``errno.ENOSPC``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.space = _space_text(path)  # measured when the write failed
        super().__init__(errno.ENOSPC, f"No space left on device ({self.space})", str(path))

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> "DiskFullError":
        """The error for ``path`` (raise it ``from`` the original OSError)."""
        return cls(path)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``ENOSPC`` raised inside the block into a :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(path) from exc
        raise


def find_disk_full(exc: BaseException | None) -> OSError | None:
    """The first ``ENOSPC`` error in ``exc``'s chain (cause and context), or None."""
    seen = 0
    while exc is not None and seen < 32:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def describe(error: OSError, fallback_dir: str | os.PathLike[str]) -> str:
    """One line naming the file and the free space, e.g. for a worker's log."""
    if isinstance(error, DiskFullError):
        return f"disk full writing {error.filename}: {error.space}"
    where = error.filename or fallback_dir
    what = f"writing {error.filename}" if error.filename else f"writing a file under {fallback_dir}"
    return f"disk full {what}: {_space_text(where)}"
