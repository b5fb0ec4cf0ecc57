"""Pure encoders and decoders for SCPI data: IEEE 488.2 blocks and ASCII lists.

Nothing here touches a socket, so the framing rules can be tested byte by byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

__all__ = [
    "BlockFormatError",
    "ByteOrder",
    "SampleKind",
    "decode_ascii_list",
    "decode_block_payload",
    "encode_ascii_list",
    "encode_block",
    "parse_block",
    "parse_block_header",
]

ByteOrder = Literal["big", "little"]
SampleKind = Literal["int16", "float32"]

_NUMPY_KINDS: dict[str, str] = {"int16": "i2", "float32": "f4"}


class BlockFormatError(ValueError):
    """Bytes that should start an IEEE 488.2 definite-length block do not."""


def encode_block(payload: bytes) -> bytes:
    """Wrap ``payload`` as a definite-length block ``#<n><len><payload>`` (no terminator)."""
    length = str(len(payload)).encode("ascii")
    if len(length) > 9:
        raise BlockFormatError("payload too long for a definite-length block")
    return b"#" + str(len(length)).encode("ascii") + length + payload


def parse_block_header(head: bytes) -> tuple[int, int] | None:
    """Parse the start of a block.

    Returns ``(header_size, payload_length)`` or ``None`` when ``head`` is still too
    short to tell. Raises :class:`BlockFormatError` when it can never be a block.
    """
    if not head:
        return None
    if head[:1] != b"#":
        raise BlockFormatError(f"block must start with '#', got {head[:16]!r}")
    if len(head) < 2:
        return None
    digit = head[1:2]
    if not digit.isdigit():
        raise BlockFormatError(f"block length digit expected after '#', got {digit!r}")
    n = int(digit)
    if n == 0:
        # '#0' is the indefinite-length form; the Red Pitaya never sends it.
        raise BlockFormatError("indefinite-length blocks ('#0') are not supported")
    if len(head) < 2 + n:
        return None
    digits = head[2 : 2 + n]
    if not digits.isdigit():
        raise BlockFormatError(f"block length must be {n} digits, got {digits!r}")
    return 2 + n, int(digits)


def parse_block(
    data: bytes | bytearray | memoryview,
    *,
    terminated: bool | None = None,
    at_end: bool = False,
) -> tuple[bytes, int] | None:
    """Parse one block (and its ``\\r\\n`` terminator, if any) from the start of ``data``.

    Returns ``(payload, consumed)``, or ``None`` if ``data`` does not yet hold the whole
    block. ``terminated``: True if the sender always follows a block with ``\\r\\n``
    (Red Pitaya OS 2.00-18 and later; anything else there is a :class:`BlockFormatError`),
    False if it never does (older OS releases), None if either may happen: then the
    terminator is consumed when present, and when ``data`` ends right after the payload
    we cannot know whether one follows, so ``None`` is returned unless ``at_end`` says
    that no more data will come.
    """
    data = bytes(data)
    header = parse_block_header(data[:11])
    if header is None:
        return None
    header_size, length = header
    end = header_size + length
    if len(data) < end:
        return None
    payload = data[header_size:end]
    if terminated is False:
        return payload, end
    after = data[end : end + 2]
    if after == b"\r\n":
        return payload, end + 2
    if b"\r\n".startswith(after) and not at_end:
        return None  # the terminator may still be on its way
    if terminated:
        raise BlockFormatError(f"block not terminated by \\r\\n but {after!r}")
    return payload, end


def decode_block_payload(
    payload: bytes, kind: SampleKind = "int16", byteorder: ByteOrder = "big"
) -> np.ndarray:
    """Decode a block payload of int16 (RAW units) or float32 (VOLTS) samples.

    The result is a read-only view in native-or-declared byte order; copy it (or assign
    it into a structured array field) before modifying it.
    """
    if kind not in _NUMPY_KINDS:
        raise ValueError(f"unknown sample kind {kind!r}; allowed: {sorted(_NUMPY_KINDS)}")
    if byteorder not in ("big", "little"):
        raise ValueError(f"unknown byte order {byteorder!r}; allowed: big, little")
    code = _NUMPY_KINDS[kind]
    size = int(code[1])
    if len(payload) % size:
        raise BlockFormatError(
            f"block of {len(payload)} bytes is not a whole number of {kind} samples"
        )
    return np.frombuffer(payload, dtype=(">" if byteorder == "big" else "<") + code)


def decode_ascii_list(text: str, dtype: type | str = float) -> np.ndarray:
    """Decode an ASCII list ``{v,v,...}`` (braces optional) into a numpy array."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise ValueError(f"unterminated ASCII list: {body[:40]!r}...")
        body = body[1:-1]
    body = body.strip()
    if not body:
        return np.zeros(0, dtype=dtype)
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError as exc:
        raise ValueError(f"not an ASCII number list: {text[:40]!r}") from exc
    return np.asarray(values, dtype=dtype)


def encode_ascii_list(values: Iterable[float], fmt: str = "{:g}") -> str:
    """Encode numbers as an ASCII list ``{v,v,...}`` as the Red Pitaya sends them."""
    return "{" + ",".join(fmt.format(v) for v in values) + "}"
