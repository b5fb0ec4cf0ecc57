"""Processes as /proc shows them (Linux): is one still running, who is its parent."""

from __future__ import annotations


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the command name (state first, then the parent's pid)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].split()


def is_alive(pid: int) -> bool:
    """Process ``pid`` exists and is not a zombie."""
    try:
        state = _stat_fields(pid)[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def parent_of(pid: int) -> int:
    """The pid of the parent of process ``pid`` (OSError when it is gone)."""
    return int(_stat_fields(pid)[1])


def descendants(root: int, exclude: int = 0) -> list[int]:
    """Every process under ``root`` (children, grandchildren, ...) except the subtree of ``exclude``.

    One pass over /proc; processes that end meanwhile are skipped.
    """
    from pathlib import Path

    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = parent_of(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    out = []
    for pid in parents:
        p = pid
        while p in parents and p not in (root, exclude, 0, 1):
            p = parents[p]
        if p == root and pid != root:
            out.append(pid)
    return out
