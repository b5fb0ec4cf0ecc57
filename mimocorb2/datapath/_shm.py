"""Named POSIX shared-memory segments under /dev/shm with a recognizable prefix.

Every segment is named ``mimocorb2-<creator pid>-<label>-<random>``. The creating
process unlinks it when the owner closes it or when that process exits; a segment
whose creator died without cleaning up (``kill -9``) is found and removed by
:func:`remove_stale_segments` (the supervisor calls it at start).

We do not use :mod:`multiprocessing.shared_memory` because on Python 3.11 every
process that *attaches* registers the segment with the resource tracker, which
then unlinks it behind the owner's back.
"""

from __future__ import annotations

import atexit
import mmap
import os
import re
import secrets
import weakref
from pathlib import Path

__all__ = ["SHM_DIR", "SHM_PREFIX", "Segment", "remove_stale_segments", "pid_alive"]

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "mimocorb2-"
_NAME_RE = re.compile(r"^mimocorb2-(\d+)-")


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie (it can still run)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def _safe_label(label: str) -> str:
    """Reduce a buffer name to characters that are safe in a file name."""
    cleaned = re.sub(r"[^A-Za-z0-9_.]", "_", label)[:40]
    return cleaned or "segment"


class Segment:
    """A shared-memory segment mapped into this process.

    Invariant: only the process whose pid is ``creator_pid`` ever unlinks the
    segment, so forked children that inherit the object cannot remove memory the
    parent still uses.
    """

    def __init__(self, name: str, size: int, mm: mmap.mmap, creator_pid: int) -> None:
        self.name = name
        self.size = size
        self.mm = mm
        self.creator_pid = creator_pid
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def create(cls, label: str, size: int) -> "Segment":
        """Create and map a new zero-filled segment of ``size`` bytes."""
        pid = os.getpid()
        name = f"{SHM_PREFIX}{pid}-{_safe_label(label)}-{secrets.token_hex(4)}"
        path = SHM_DIR / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        seg = cls(name, size, mm, pid)
        seg._finalizer = weakref.finalize(seg, _unlink_if_creator, path, pid)
        return seg

    @classmethod
    def attach(cls, name: str, creator_pid: int) -> "Segment":
        """Map an existing segment by name (in another process)."""
        fd = os.open(SHM_DIR / name, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, size, mm, creator_pid)

    @property
    def is_owner(self) -> bool:
        """True in the process that created the segment."""
        return os.getpid() == self.creator_pid

    def unlink(self) -> None:
        """Remove the name from /dev/shm (creator only); mappings stay valid."""
        if self._finalizer is not None and self.is_owner:
            self._finalizer()

    def close(self) -> None:
        """Unmap; succeeds silently if views into the mapping are still alive."""
        try:
            self.mm.close()
        except BufferError:
            pass  # numpy views still exported; the mapping goes with them


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_if_creator(path: Path, creator_pid: int) -> None:
    if os.getpid() == creator_pid:
        _unlink(path)


def remove_stale_segments() -> list[str]:
    """Unlink segments whose creating process no longer exists; return their names."""
    removed = []
    for path in SHM_DIR.glob(f"{SHM_PREFIX}*"):
        match = _NAME_RE.match(path.name)
        if match and not pid_alive(int(match.group(1))):
            _unlink(path)
            removed.append(path.name)
    return removed


# weakref.finalize runs pending finalizers at interpreter exit by itself; make sure
# it is imported early enough that the atexit hook exists in every process.
atexit.register(lambda: None)
