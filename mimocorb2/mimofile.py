"""The "mimo file": a self-describing, append-only binary file of buffer events.

Layout (all integers little-endian)::

    offset 0   8 bytes   magic  b"MIMOFILE"
    offset 8   uint16    format version (currently 1)
    offset 10  uint32    header_size: total size of the header in bytes, i.e. the
                         offset of the first record (a multiple of 64)
    offset 14  ...       UTF-8 JSON object, padded with spaces up to header_size
    header_size ...      records, each record_size bytes: the metadata of one event
                         (counter int64, timestamp float64, deadtime float64) followed
                         by its data (data_length elements of the data dtype)

The JSON header holds ``format_version``, ``buffer_name``, ``data_length``,
``data_dtype`` and ``metadata_dtype`` (``repr`` of numpy's dtype description, as
produced by ``numpy.lib.format.dtype_to_descr``), ``record_size`` and ``created``
(unix time). Records are only ever appended, so a file whose writer was killed
mid-write is readable up to its last complete record: the number of records is
``(file_size - header_size) // record_size``.

:func:`read_mimo_file` maps the records with :class:`numpy.memmap` and returns
``(metadata, data)`` views without reading the file into memory.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .diskfull import DiskFullError
from .diskfull import writing as _writing

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "METADATA_DTYPE",
    "MimoFileError",
    "MimoFileHeader",
    "MimoFileWriter",
    "read_mimo_file",
    "read_mimo_header",
]

MAGIC = b"MIMOFILE"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")  # magic, version, header_size
_ALIGN = 64
_MAX_HEADER = 1 << 20

METADATA_DTYPE = np.dtype([("counter", "<i8"), ("timestamp", "<f8"), ("deadtime", "<f8")])


class MimoFileError(ValueError):
    """A file is not a valid mimo file (bad magic, version, header or dtype)."""


def _dtype_to_text(dtype: np.dtype) -> str:
    return repr(np.lib.format.dtype_to_descr(np.dtype(dtype)))


def _dtype_from_text(text: str, path: str | os.PathLike[str], what: str) -> np.dtype:
    try:
        descr = ast.literal_eval(text)
        return np.lib.format.descr_to_dtype(descr)
    except Exception as exc:  # noqa: BLE001 - any failure means a corrupt header
        raise MimoFileError(f"{path}: header field {what!r} is not a valid dtype: {text!r} ({exc})") from exc


class MimoFileHeader:
    """The parsed header of a mimo file."""

    def __init__(
        self,
        *,
        buffer_name: str,
        data_dtype: np.dtype,
        data_length: int,
        header_size: int,
        version: int = FORMAT_VERSION,
        metadata_dtype: np.dtype = METADATA_DTYPE,
        created: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.buffer_name = buffer_name
        self.data_dtype = np.dtype(data_dtype)
        self.data_length = int(data_length)
        self.header_size = int(header_size)
        self.version = int(version)
        self.metadata_dtype = np.dtype(metadata_dtype)
        self.created = created
        self.extra = dict(extra or {})

    @property
    def record_dtype(self) -> np.dtype:
        """Structured dtype of one record: ``metadata`` then ``data`` (data_length,)."""
        return np.dtype(
            [("metadata", self.metadata_dtype), ("data", self.data_dtype, (self.data_length,))]
        )

    @property
    def record_size(self) -> int:
        """Size of one record in bytes."""
        return self.metadata_dtype.itemsize + self.data_dtype.itemsize * self.data_length

    def __repr__(self) -> str:
        return (
            f"MimoFileHeader(buffer_name={self.buffer_name!r}, data_length={self.data_length}, "
            f"data_dtype={self.data_dtype}, version={self.version})"
        )


def _encode_header(
    buffer_name: str, data_dtype: np.dtype, data_length: int, extra: dict[str, Any] | None
) -> bytes:
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "buffer_name": buffer_name,
        "data_length": int(data_length),
        "data_dtype": _dtype_to_text(data_dtype),
        "metadata_dtype": _dtype_to_text(METADATA_DTYPE),
        "record_size": METADATA_DTYPE.itemsize + np.dtype(data_dtype).itemsize * int(data_length),
        "created": time.time(),
    }
    if extra:
        info["extra"] = extra
    body = json.dumps(info).encode("utf-8")
    total = _PREFIX.size + len(body) + 1
    total = (total + _ALIGN - 1) // _ALIGN * _ALIGN
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, total)
    padding = b" " * (total - _PREFIX.size - len(body) - 1) + b"\n"
    return prefix + body + padding


def read_mimo_header(path: str | os.PathLike[str]) -> MimoFileHeader:
    """Read and validate the header of the mimo file at ``path``.

    Raises:
        MimoFileError: the file is not a mimo file, has an unsupported version or a
            corrupt header.
    """
    with open(path, "rb") as fh:
        return _read_header(fh, path)


def _read_header(fh: BinaryIO, path: str | os.PathLike[str]) -> MimoFileHeader:
    prefix = fh.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise MimoFileError(f"{path}: too short to be a mimo file ({len(prefix)} bytes)")
    magic, version, header_size = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise MimoFileError(f"{path}: not a mimo file (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise MimoFileError(
            f"{path}: unsupported mimo file format version {version} (this reader knows {FORMAT_VERSION})"
        )
    if header_size < _PREFIX.size or header_size > _MAX_HEADER:
        raise MimoFileError(f"{path}: corrupt header size {header_size}")
    body = fh.read(header_size - _PREFIX.size)
    if len(body) < header_size - _PREFIX.size:
        raise MimoFileError(f"{path}: header truncated ({_PREFIX.size + len(body)} of {header_size} bytes)")
    try:
        info = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MimoFileError(f"{path}: corrupt JSON header ({exc})") from exc
    if not isinstance(info, dict):
        raise MimoFileError(f"{path}: corrupt JSON header (not an object)")
    for key in ("format_version", "buffer_name", "data_length", "data_dtype", "metadata_dtype", "record_size"):
        if key not in info:
            raise MimoFileError(f"{path}: header lacks {key!r}")
    if info["format_version"] != version:
        raise MimoFileError(
            f"{path}: header says format version {info['format_version']}, prefix says {version}"
        )
    data_length = info["data_length"]
    if not isinstance(data_length, int) or data_length < 1:
        raise MimoFileError(f"{path}: header data_length must be a positive integer, got {data_length!r}")
    header = MimoFileHeader(
        buffer_name=str(info["buffer_name"]),
        data_dtype=_dtype_from_text(info["data_dtype"], path, "data_dtype"),
        data_length=data_length,
        header_size=header_size,
        version=version,
        metadata_dtype=_dtype_from_text(info["metadata_dtype"], path, "metadata_dtype"),
        created=info.get("created"),
        extra=info.get("extra"),
    )
    if header.record_size != info["record_size"]:
        raise MimoFileError(
            f"{path}: header record_size {info['record_size']} does not match its dtypes ({header.record_size})"
        )
    return header


def read_mimo_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(metadata, data)`` of every complete record of the mimo file at ``path``.

    ``metadata`` has shape ``(n,)`` with fields counter, timestamp, deadtime; ``data``
    has shape ``(n, data_length)`` with the buffer's data dtype. Both are read-only
    views of a :class:`numpy.memmap`, so nothing is read until it is used. An
    incomplete last record (the writer was killed mid-write) is ignored.

    Examples:
        >>> metadata, data = read_mimo_file("run_dir/export.mimo")  # doctest: +SKIP
        >>> data["ch1"].mean(axis=1)  # doctest: +SKIP
    """
    path = os.fspath(path)
    header = read_mimo_header(path)
    size = os.path.getsize(path)
    n = max(0, (size - header.header_size) // header.record_size)
    if n == 0:
        records = np.zeros(0, dtype=header.record_dtype)
    else:
        records = np.memmap(path, dtype=header.record_dtype, mode="r", offset=header.header_size, shape=(n,))
    return records["metadata"], records["data"]


class MimoFileWriter:
    """Append events to a new mimo file.

    Args:
        path: file to create (an existing file is replaced).
        data_dtype: structured dtype of the buffer's data.
        data_length: number of elements per event.
        buffer_name: name of the buffer the events come from.
        extra: optional JSON-serialisable information stored in the header.

    The header is written and synced at once, so the file is valid (with zero
    records) from the start. Records are appended whole; :meth:`flush` pushes them
    to the operating system. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        data_dtype: np.dtype | Any,
        data_length: int,
        buffer_name: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.data_dtype = np.dtype(data_dtype)
        self.data_length = int(data_length)
        if self.data_length < 1:
            raise ValueError(f"data_length must be >= 1, got {data_length}")
        self.buffer_name = buffer_name
        self._data_bytes = self.data_dtype.itemsize * self.data_length
        self.record_size = METADATA_DTYPE.itemsize + self._data_bytes
        self.count = 0
        header = _encode_header(buffer_name, self.data_dtype, self.data_length, extra)
        self._fh: BinaryIO | None = None
        with _writing(self.path):
            self._fh = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115
            self._fh.write(header)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def write(self, metadata: np.ndarray, data: np.ndarray) -> None:
        """Append one event (metadata of 1 element, data of data_length elements).

        The bytes are taken as they are, so the arrays must have the dtypes given
        to the constructor.
        """
        fh = self._fh
        if fh is None:
            raise ValueError(f"{self.path}: mimo file writer is closed")
        mbytes = memoryview(np.ascontiguousarray(metadata)).cast("B")
        dbytes = memoryview(np.ascontiguousarray(data)).cast("B")
        if mbytes.nbytes != METADATA_DTYPE.itemsize or dbytes.nbytes != self._data_bytes:
            raise ValueError(
                f"{self.path}: event of {mbytes.nbytes}+{dbytes.nbytes} bytes does not match "
                f"the record layout {METADATA_DTYPE.itemsize}+{self._data_bytes}"
            )
        try:
            fh.write(mbytes)
            fh.write(dbytes)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(self.path) from exc
            raise
        self.count += 1

    def flush(self) -> None:
        """Push buffered records to the operating system."""
        if self._fh is not None:
            with _writing(self.path):
                self._fh.flush()

    def close(self) -> None:
        """Flush and close the file (a full disk raises DiskFullError; the file is closed anyway)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                with _writing(self.path):
                    fh.flush()
            finally:
                try:
                    fh.close()
                except OSError:
                    pass  # the flush above already reported why

    def __enter__(self) -> MimoFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
