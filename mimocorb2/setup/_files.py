"""Reading the files a setup names (setup, config, worker source) without ever blocking.

A setup path comes from an operator or a socket client: it may name a FIFO (whose
``open`` waits for a writer), ``/dev/zero`` (endless), a directory or a huge file.
:func:`read_small_file` reads only regular files, opens them with ``O_NONBLOCK`` and
stops at a size limit (:data:`MAX_YAML_BYTES` for YAML, :data:`MAX_FILE_BYTES` for
Python source), so validating a setup always ends promptly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: the largest worker source file read (4 MiB)
MAX_FILE_BYTES = 4 * 1024 * 1024
#: the largest setup or config file read (1 MiB: parsing YAML costs about 5 s of CPU per MiB)
MAX_YAML_BYTES = 1024 * 1024


class FileProblem(Exception):
    """A file cannot be read; ``str()`` is the one-line reason (without the file name)."""


def _kind(mode: int) -> str:
    """What a non-regular file is, for a message."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _size_text(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size} bytes"


def read_small_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``; FileProblem if it is anything else or too big.

    Never blocks on a FIFO or device: the type is checked before opening, the file
    is opened non-blocking and checked again on the open descriptor (the path may
    have been swapped in between), and at most ``limit + 1`` bytes are read.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileProblem("file not found") from None
    except OSError as err:
        raise FileProblem(f"cannot read file: {err.strerror or err}") from None
    if stat.S_ISDIR(mode):
        raise FileProblem("is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise FileProblem(f"is {_kind(mode)}, not a regular file; refused")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as err:
        raise FileProblem(f"cannot read file: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"is {_kind(info.st_mode)}, not a regular file; refused")
        if info.st_size > limit:
            raise FileProblem(f"file is {_size_text(info.st_size)}, more than the "
                              f"{_size_text(limit)} limit; refused")
        return _read_at_most(fd, limit)
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int) -> bytes:
    """Read ``fd`` to its end; FileProblem once more than ``limit`` bytes arrive (it grew)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        except OSError as err:
            raise FileProblem(f"cannot read file: {err.strerror or err}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise FileProblem(f"file is larger than the {_size_text(limit)} limit; refused")
