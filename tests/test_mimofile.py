"""The mimo file format: round trip, crash tolerance, header validation."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from mimocorb2.mimofile import (
    FORMAT_VERSION,
    METADATA_DTYPE,
    MimoFileError,
    MimoFileWriter,
    read_mimo_file,
    read_mimo_header,
)

DTYPE = np.dtype([("ch1", "<f4"), ("ch2", "<i2"), ("tag", "S4")])


def _write(path: Path, n: int, length: int = 7) -> tuple[np.ndarray, np.ndarray]:
    meta = np.zeros(n, METADATA_DTYPE)
    meta["counter"] = np.arange(n)
    meta["timestamp"] = 1000.0 + np.arange(n) * 0.5
    meta["deadtime"] = np.linspace(0, 1, n)
    data = np.zeros((n, length), DTYPE)
    rng = np.random.default_rng(0)
    data["ch1"] = rng.normal(size=(n, length))
    data["ch2"] = rng.integers(-1000, 1000, size=(n, length))
    data["tag"] = b"ab"
    with MimoFileWriter(path, DTYPE, length, buffer_name="waveforms", extra={"note": "x"}) as writer:
        for i in range(n):
            writer.write(meta[i : i + 1], data[i])
        assert writer.count == n
    return meta, data


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.mimo"
    meta, data = _write(path, 50)
    header = read_mimo_header(path)
    assert header.buffer_name == "waveforms"
    assert header.data_length == 7
    assert header.data_dtype == DTYPE
    assert header.version == FORMAT_VERSION
    assert header.extra == {"note": "x"}
    assert header.header_size % 64 == 0
    m, d = read_mimo_file(path)
    assert isinstance(m.base, np.memmap) or isinstance(m, np.memmap) or m.base is not None
    assert m.shape == (50,) and d.shape == (50, 7)
    np.testing.assert_array_equal(m, meta)
    np.testing.assert_array_equal(d, data)
    assert os.path.getsize(path) == header.header_size + 50 * header.record_size


def test_read_is_memory_mapped(tmp_path: Path) -> None:
    path = tmp_path / "a.mimo"
    _write(path, 10)
    m, d = read_mimo_file(path)
    base = d
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)
    assert not d.flags.writeable


def test_empty_file_has_zero_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.mimo"
    MimoFileWriter(path, DTYPE, 3, "b").close()
    m, d = read_mimo_file(path)
    assert m.shape == (0,) and d.shape == (0, 3)
    assert d.dtype == DTYPE


def test_truncated_file_readable_up_to_last_complete_record(tmp_path: Path) -> None:
    path = tmp_path / "crash.mimo"
    meta, data = _write(path, 20)
    header = read_mimo_header(path)
    for cut in (1, header.record_size - 1, header.record_size // 2):
        size = header.header_size + 20 * header.record_size
        os.truncate(path, size - cut)
        m, d = read_mimo_file(path)
        assert len(m) == 19
        np.testing.assert_array_equal(d, data[:19])
        _write(path, 20)


def test_killed_writer_leaves_valid_prefix(tmp_path: Path) -> None:
    """Unflushed records are lost, flushed ones survive; the header is valid from the start."""
    path = tmp_path / "live.mimo"
    writer = MimoFileWriter(path, DTYPE, 2, "b")
    assert len(read_mimo_file(path)[0]) == 0
    meta = np.zeros(1, METADATA_DTYPE)
    for i in range(5):
        meta["counter"] = i
        writer.write(meta, np.zeros(2, DTYPE))
    writer.flush()
    m, _ = read_mimo_file(path)
    assert list(m["counter"]) == [0, 1, 2, 3, 4]
    writer.close()


def test_write_rejects_wrong_layout(tmp_path: Path) -> None:
    with MimoFileWriter(tmp_path / "x.mimo", DTYPE, 4) as writer:
        with pytest.raises(ValueError, match="record layout"):
            writer.write(np.zeros(1, METADATA_DTYPE), np.zeros(3, DTYPE))


def _header_bytes(path: Path) -> tuple[bytes, dict, int]:
    raw = path.read_bytes()
    magic, version, size = struct.unpack("<8sHI", raw[:14])
    return raw, json.loads(raw[14:size].decode()), size


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda raw, info, size: b"NOTMIMO!" + raw[8:], "not a mimo file"),
        (lambda raw, info, size: raw[:8] + struct.pack("<H", 99) + raw[10:], "unsupported"),
        (lambda raw, info, size: raw[:5], "too short"),
        (lambda raw, info, size: raw[:14] + b"{broken" + raw[21:], "corrupt JSON"),
        (lambda raw, info, size: raw[:30], "header truncated"),
    ],
)
def test_header_validation(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "h.mimo"
    _write(path, 3)
    raw, info, size = _header_bytes(path)
    path.write_bytes(mutate(raw, info, size))
    with pytest.raises(MimoFileError, match=message):
        read_mimo_file(path)


def _rewrite_header(path: Path, **changes: object) -> None:
    raw, info, size = _header_bytes(path)
    info.update(changes)
    body = json.dumps(info).encode()
    assert len(body) < size - 14
    path.write_bytes(raw[:14] + body + b" " * (size - 14 - len(body)) + raw[size:])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data_dtype": "'not a dtype'"}, "not a valid dtype"),
        ({"record_size": 5}, "record_size"),
        ({"data_length": 0}, "data_length"),
        ({"format_version": 2}, "format version"),
    ],
)
def test_header_fields_validated(tmp_path: Path, changes: dict, message: str) -> None:
    path = tmp_path / "h.mimo"
    _write(path, 3)
    _rewrite_header(path, **changes)
    with pytest.raises(MimoFileError, match=message):
        read_mimo_header(path)


def test_missing_key_in_header(tmp_path: Path) -> None:
    path = tmp_path / "h.mimo"
    _write(path, 3)
    raw, info, size = _header_bytes(path)
    del info["buffer_name"]
    body = json.dumps(info).encode()
    path.write_bytes(raw[:14] + body + b" " * (size - 14 - len(body)) + raw[size:])
    with pytest.raises(MimoFileError, match="buffer_name"):
        read_mimo_file(path)


def test_package_level_reader(tmp_path: Path) -> None:
    import mimocorb2

    path = tmp_path / "p.mimo"
    meta, data = _write(path, 4)
    m, d = mimocorb2.read_mimo_file(path)
    np.testing.assert_array_equal(d, data)
