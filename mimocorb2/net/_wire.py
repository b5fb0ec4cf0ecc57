"""The wire format of a mimocorb2 NATS stream: self-describing blocks of events.

One NATS message carries a *block*: ``count`` events of one buffer layout, or a
start or end marker of one exporting process. Everything needed to decode a block travels in its headers,
so a consumer written in any language can read a stream (docs/network.md):

``Mimo-Version``        ``2`` (version ``1`` had no session and no start marker; still read)
``Mimo-Kind``           ``events``, ``start`` or ``end``
``Nats-Msg-Id``         the block's identity; JetStream drops a re-publish within the
                        stream's duplicate window (a retried block is stored once)
``Mimo-Producer``       the exporting worker: ``host/run directory/worker``
``Mimo-Session``        a random id of the exporting worker's run, shared by its processes:
                        an end marker ends only the session it names
``Mimo-Process``        index of the exporting process, ``Mimo-Processes`` how many it has
``Mimo-Descr``          the event's numpy dtype as in a ``.npy`` header (``descr``)
``Mimo-Length``         elements per event (the buffer's ``data_length``)
``Mimo-Count``          events in the block
``Mimo-First-Counter``, ``Mimo-Last-Counter``  the ``counter`` of the first and last event

The payload of an ``events`` block is ``count`` metadata records (little-endian
int64 counter, float64 timestamp, float64 deadtime: 24 bytes each) followed by
``count`` events of ``Mimo-Length`` elements of ``Mimo-Descr`` each. A ``start``
block (empty payload) precedes the blocks of process ``Mimo-Process`` of session
``Mimo-Session``; an ``end`` block (empty payload) says that this process will
publish nothing more in this session.

Invariant: a block's message id is a function of the source-buffer commit numbers
of its events, the producer and its session, so re-sending the same events as the same block
(after a lost acknowledgement, a reconnect or a server restart) is a no-op.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.lib import format as _npy_format

__all__ = [
    "META_DTYPE",
    "META_SIZE",
    "READABLE_VERSIONS",
    "VERSION",
    "Block",
    "BlockKind",
    "WireError",
    "block_headers",
    "decode_block",
    "describe_dtype",
    "dtype_from_descr",
    "end_headers",
    "end_message_id",
    "events_message_id",
    "header_overhead",
    "start_headers",
    "start_message_id",
]

VERSION = "2"
#: Versions this module decodes (version 1: no Mimo-Session, no start markers; its session reads as "").
READABLE_VERSIONS = ("1", VERSION)
#: One metadata record on the wire (and in the buffers: mimoBuffer.metadata_dtype, little-endian).
META_DTYPE = np.dtype([("counter", "<i8"), ("timestamp", "<f8"), ("deadtime", "<f8")])
META_SIZE = META_DTYPE.itemsize

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("mimocorb2.net sends the buffers' metadata as little-endian bytes")


class WireError(ValueError):
    """A message that is not a valid mimocorb2 block."""


class BlockKind(Enum):
    """What a message carries."""

    EVENTS = "events"
    START = "start"  #: a process of a session begins (sent before its first block)
    END = "end"  #: a process of a session sends nothing more


def describe_dtype(dtype: np.dtype) -> str:
    """The dtype as the ``descr`` of a ``.npy`` header, e.g. ``[('ch1', '<f4')]``."""
    return repr(_npy_format.dtype_to_descr(np.dtype(dtype)))


def dtype_from_descr(descr: str) -> np.dtype:
    """Inverse of :func:`describe_dtype` (raises WireError for a malformed descr)."""
    try:
        return _npy_format.descr_to_dtype(ast.literal_eval(descr))
    except (ValueError, SyntaxError, TypeError) as exc:
        raise WireError(f"Mimo-Descr {descr!r} is not a numpy descr: {exc}") from None


def events_message_id(producer: str, session: str, sequences: np.ndarray) -> str:
    """The id of a block of ``session`` holding the source-buffer commit numbers ``sequences``."""
    digest = hashlib.blake2b(np.ascontiguousarray(sequences, dtype="<i8").tobytes(), digest_size=16)
    return f"{producer}:{session}:{int(sequences[0])}:{len(sequences)}:{digest.hexdigest()}"


def end_message_id(producer: str, session: str, process: int) -> str:
    """The id of the end marker of one exporting process in ``session``."""
    return f"{producer}:{session}:end:{process}"


def start_message_id(producer: str, session: str, process: int) -> str:
    """The id of the start marker of one exporting process in ``session``."""
    return f"{producer}:{session}:start:{process}"


def _common(producer: str, session: str, process: int, processes: int, kind: BlockKind, msg_id: str) -> dict[str, str]:
    return {
        "Mimo-Version": VERSION,
        "Mimo-Kind": kind.value,
        "Nats-Msg-Id": msg_id,
        "Mimo-Producer": producer,
        "Mimo-Session": session,
        "Mimo-Process": str(process),
        "Mimo-Processes": str(processes),
    }


def block_headers(
    *, producer: str, process: int, processes: int, descr: str, length: int,
    count: int, first_counter: int, last_counter: int, msg_id: str, session: str = "",
) -> dict[str, str]:
    """Headers of an ``events`` block."""
    headers = _common(producer, session, process, processes, BlockKind.EVENTS, msg_id)
    headers.update({
        "Mimo-Descr": descr,
        "Mimo-Length": str(length),
        "Mimo-Count": str(count),
        "Mimo-First-Counter": str(first_counter),
        "Mimo-Last-Counter": str(last_counter),
    })
    return headers


def start_headers(*, producer: str, session: str, process: int, processes: int) -> dict[str, str]:
    """Headers of the start marker of one exporting process (sent before its first block)."""
    return _common(producer, session, process, processes, BlockKind.START,
                   start_message_id(producer, session, process))


def end_headers(*, producer: str, session: str, process: int, processes: int) -> dict[str, str]:
    """Headers of the end marker of one exporting process (sent after its last block)."""
    return _common(producer, session, process, processes, BlockKind.END, end_message_id(producer, session, process))


def header_overhead(producer: str, session: str, descr: str) -> int:
    """Bytes the headers of an events block take at most (for block sizing)."""
    sample = block_headers(producer=producer, session=session, process=10**6, processes=10**6, descr=descr,
                           length=10**12, count=10**12, first_counter=-(10**18), last_counter=-(10**18),
                           msg_id=events_message_id(producer, session, np.array([-(10**18)])))
    return len("NATS/1.0\r\n\r\n") + sum(len(k) + len(v) + 4 for k, v in sample.items())


@dataclass(frozen=True)
class Block:
    """A decoded message: metadata records and raw event bytes (views into the payload)."""

    kind: BlockKind
    producer: str
    process: int
    processes: int
    session: str = ""  #: "" in version 1 blocks
    descr: str = ""
    length: int = 0
    count: int = 0
    metadata: np.ndarray | None = None  #: (count,) of META_DTYPE
    events: np.ndarray | None = None  #: (count, event bytes) uint8

    def data(self, dtype: np.dtype) -> np.ndarray:
        """The events as a ``(count, length)`` array of ``dtype`` (a view, no copy)."""
        assert self.events is not None
        return self.events.view(np.dtype(dtype)).reshape(self.count, self.length)


def _header(headers: dict[str, str], key: str) -> str:
    try:
        return headers[key]
    except KeyError:
        raise WireError(f"header {key} is missing") from None


def _int_header(headers: dict[str, str], key: str) -> int:
    value = _header(headers, key)
    try:
        return int(value)
    except ValueError:
        raise WireError(f"header {key}={value!r} is not an integer") from None


def decode_block(headers: dict[str, str] | None, payload: bytes) -> Block:
    """Decode one message; WireError when it is not a mimocorb2 block of this version."""
    headers = headers or {}
    version = _header(headers, "Mimo-Version")
    if version not in READABLE_VERSIONS:
        raise WireError(f"Mimo-Version {version!r}: this mimocorb2 reads versions {', '.join(READABLE_VERSIONS)}")
    try:
        kind = BlockKind(_header(headers, "Mimo-Kind"))
    except ValueError:
        raise WireError(f"Mimo-Kind {headers.get('Mimo-Kind')!r} is not 'events', 'start' or 'end'") from None
    producer = _header(headers, "Mimo-Producer")
    session = headers.get("Mimo-Session", "") if version != "1" else ""
    process = _int_header(headers, "Mimo-Process")
    processes = _int_header(headers, "Mimo-Processes")
    if kind is not BlockKind.EVENTS:
        return Block(kind, producer, process, processes, session)
    descr = _header(headers, "Mimo-Descr")
    length = _int_header(headers, "Mimo-Length")
    count = _int_header(headers, "Mimo-Count")
    event_size = dtype_from_descr(descr).itemsize * length
    expected = count * (META_SIZE + event_size)
    if len(payload) != expected or count < 1:
        raise WireError(f"payload of {len(payload)} bytes, expected {expected} for {count} events of {event_size} bytes")
    raw = np.frombuffer(payload, dtype=np.uint8)
    metadata = raw[: count * META_SIZE].view(META_DTYPE)
    events = raw[count * META_SIZE:].reshape(count, event_size)
    return Block(kind, producer, process, processes, session, descr, length, count, metadata, events)
