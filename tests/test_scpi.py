"""The asyncio SCPI client: framing, timeouts, error queue, binary blocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from mimocorb2.scpi import (
    BlockFormatError,
    ScpiClient,
    ScpiConnectionError,
    ScpiQueryError,
    ScpiTimeout,
    decode_ascii_list,
    decode_block_payload,
    encode_ascii_list,
    encode_block,
    parse_block,
)
from mimocorb2.sim.redpitaya import RedPitayaSimulator

pytestmark = pytest.mark.timeout(20)

Handler = Callable[[str, asyncio.StreamWriter], Awaitable[None]]


# ----------------------------------------------------------------------- codec
def test_block_roundtrip_and_incomplete_prefixes():
    payload = bytes(range(256)) * 5
    framed = encode_block(payload) + b"\r\n"
    assert framed.startswith(b"#41280")
    # every strict prefix is "not yet complete", never an error
    for cut in range(len(framed) - 1):
        assert parse_block(framed[:cut]) is None
    assert parse_block(framed) == (payload, len(framed))
    # coalesced with what follows: only the block and its terminator are consumed
    assert parse_block(framed + b"#13abc\r\n") == (payload, len(framed))


def test_block_with_and_without_terminator():
    a, b = encode_block(b"abc"), encode_block(b"xy")
    # older Red Pitaya OS: blocks back to back, no \r\n after either
    assert parse_block(a + b, terminated=False) == (b"abc", len(a))
    assert parse_block(a + b) == (b"abc", len(a))  # either framing: the '#' decides
    assert parse_block(a + b"\r\n" + b) == (b"abc", len(a) + 2)
    # the stream ends (or pauses) right after the payload
    assert parse_block(a) is None and parse_block(a + b"\r") is None
    assert parse_block(a, at_end=True) == (b"abc", len(a))
    assert parse_block(a, terminated=False) == (b"abc", len(a))
    with pytest.raises(BlockFormatError, match="not terminated"):
        parse_block(a + b, terminated=True)
    assert parse_block(a, terminated=True) is None


@pytest.mark.parametrize("bad", [b"X12", b"#A", b"#0", b"#3a1", b"\r\n"])
def test_block_malformed(bad):
    with pytest.raises(BlockFormatError):
        parse_block(bad + b"0" * 20)


def test_decode_int16_both_byte_orders_and_float32():
    values = np.array([-8192, -1, 0, 1, 8191], dtype=np.int16)
    big = values.astype(">i2").tobytes()
    little = values.astype("<i2").tobytes()
    assert big != little
    np.testing.assert_array_equal(decode_block_payload(big, "int16", "big"), values)
    np.testing.assert_array_equal(decode_block_payload(little, "int16", "little"), values)
    volts = np.array([-1.0, 0.25, 0.999], dtype=np.float32)
    np.testing.assert_array_equal(
        decode_block_payload(volts.astype(">f4").tobytes(), "float32", "big"), volts
    )
    with pytest.raises(BlockFormatError):
        decode_block_payload(b"\x00\x01\x02", "int16")
    with pytest.raises(ValueError):
        decode_block_payload(b"", "int8")  # type: ignore[arg-type]


def test_ascii_list():
    text = encode_ascii_list([1, -2, 3.5])
    assert text == "{1,-2,3.5}"
    np.testing.assert_array_equal(decode_ascii_list(text), [1.0, -2.0, 3.5])
    np.testing.assert_array_equal(decode_ascii_list("{}", int), np.zeros(0, int))
    np.testing.assert_array_equal(decode_ascii_list("4,5", int), [4, 5])
    with pytest.raises(ValueError):
        decode_ascii_list("{1,2")
    with pytest.raises(ValueError):
        decode_ascii_list("{1,x}")


# ----------------------------------------------------------------------- fake server
class FakeServer:
    """A scripted TCP server: ``handler(line, writer)`` runs for each \\r\\n line."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.lines: list[str] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readuntil(b"\r\n")
                text = line[:-2].decode()
                self.lines.append(text)
                await self.handler(text, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_block_split_into_single_bytes():
    samples = np.arange(-500, 500, dtype=np.int16)
    block = encode_block(samples.astype(">i2").tobytes()) + b"\r\n"

    async def handler(line: str, writer: asyncio.StreamWriter) -> None:
        if line == "DATA?":
            for i in range(len(block)):  # one TCP write per byte
                writer.write(block[i : i + 1])
                await writer.drain()
        elif line == "*IDN?":
            writer.write(b"FAKE\r\n")

    async with FakeServer(handler) as srv:
        async with ScpiClient("127.0.0.1", srv.port, timeout=5) as client:
            got = await client.query_samples("DATA?", "int16", "big")
            np.testing.assert_array_equal(got, samples)
            assert await client.query("*IDN?") == "FAKE"


async def test_coalesced_answers_in_one_segment():
    a = np.arange(10, dtype=np.int16)
    b = -np.arange(10, dtype=np.int16)
    blob = (
        encode_block(a.astype("<i2").tobytes()) + b"\r\n"
        + encode_block(b.astype("<i2").tobytes()) + b"\r\n"
        + b"TD\r\n"
    )

    async def handler(line: str, writer: asyncio.StreamWriter) -> None:
        if line == "C?":  # the last of three pipelined queries: answer all at once
            writer.write(blob)

    async with FakeServer(handler) as srv:
        async with ScpiClient("127.0.0.1", srv.port, timeout=5) as client:
            x, y, state = await client.query_many(["A?", "B?", "C?"], ["block", "block", "line"])
            assert isinstance(x, bytes) and isinstance(y, bytes)
            np.testing.assert_array_equal(decode_block_payload(x, "int16", "little"), a)
            np.testing.assert_array_equal(decode_block_payload(y, "int16", "little"), b)
            assert state == "TD"
            assert client.round_trips == 1
    assert srv.lines == ["A?", "B?", "C?"]


@pytest.mark.parametrize("mode", [None, False])
async def test_unterminated_blocks_back_to_back(mode):
    """Before OS 2.00-18 the board sends no \\r\\n after a block."""
    a, b = np.arange(5, dtype=np.int16), -np.arange(7, dtype=np.int16)
    blob = encode_block(a.astype(">i2").tobytes()) + encode_block(b.astype(">i2").tobytes()) + b"TD\r\n"

    async def handler(line: str, writer: asyncio.StreamWriter) -> None:
        if line == "C?":
            writer.write(blob)
        elif line == "D?":
            writer.write(encode_block(b"\x00\x01"))  # last answer of a batch: a block
        elif line == "*IDN?":
            writer.write(b"FAKE\r\n")

    async with FakeServer(handler) as srv:
        async with ScpiClient("127.0.0.1", srv.port, timeout=2, block_terminator=mode) as client:
            x, y, state = await client.query_many(["A?", "B?", "C?"], ["block", "block", "line"])
            np.testing.assert_array_equal(decode_block_payload(x, "int16"), a)  # type: ignore[arg-type]
            np.testing.assert_array_equal(decode_block_payload(y, "int16"), b)  # type: ignore[arg-type]
            assert state == "TD" and client.blocks_terminated is False
            assert await client.query_block("D?") == b"\x00\x01"
            assert await client.query("*IDN?") == "FAKE"


async def test_framing_learned_per_connection_and_strict_mode():
    block = encode_block(b"\x00\x01")

    async def handler(line: str, writer: asyncio.StreamWriter) -> None:
        if line == "D?":
            writer.write(block + b"\r\n")
        elif line == "*IDN?":
            writer.write(b"FAKE\r\n")

    async with FakeServer(handler) as srv:
        async with ScpiClient("127.0.0.1", srv.port, timeout=2) as client:
            assert await client.query_block("D?") == b"\x00\x01"
            assert client.blocks_terminated is None  # nothing followed the block yet
            assert await client.query("*IDN?") == "FAKE"
            assert client.blocks_terminated is True
            await client.connect()  # a new connection learns again
            assert client.blocks_terminated is None
        async with ScpiClient("127.0.0.1", srv.port, timeout=2, block_terminator=False) as client:
            # told "no terminator" but one comes: the next answer is out of step
            assert await client.query_block("D?") == b"\x00\x01"
            with pytest.raises(ScpiConnectionError, match="out of step"):
                await client.query("*IDN?")
            assert not client.connected


async def test_silence_without_error_is_a_timeout_and_closes():
    async def handler(line: str, writer: asyncio.StreamWriter) -> None:
        if line == "*STB?":
            writer.write(b"0\r\n")

    async with FakeServer(handler) as srv:
        client = ScpiClient("127.0.0.1", srv.port, timeout=0.2)
        await client.connect()
        with pytest.raises(ScpiTimeout, match="no error was queued"):
            await client.query("SLOW?")
        assert not client.connected
        with pytest.raises(ScpiConnectionError):
            await client.query("*IDN?")


async def test_stalled_instrument_is_a_timeout():
    async def handler(line: str, writer: asyncio.StreamWriter) -> None:
        return None  # never answers anything

    async with FakeServer(handler) as srv:
        client = ScpiClient("127.0.0.1", srv.port, timeout=0.1)
        await client.connect()
        t0 = time.monotonic()
        with pytest.raises(ScpiTimeout, match=r"\*STB\? did not answer"):
            await client.query("X?")
        assert time.monotonic() - t0 < 2.0
        assert not client.connected


async def test_malformed_block_breaks_connection():
    async def handler(line: str, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\r\n")

    async with FakeServer(handler) as srv:
        async with ScpiClient("127.0.0.1", srv.port, timeout=1) as client:
            with pytest.raises(ScpiConnectionError, match="malformed"):
                await client.query_block("DATA?")
            assert not client.connected


async def test_connection_refused_and_lost():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ScpiClient("127.0.0.1", port, timeout=1)
    await client.connect()
    with pytest.raises(ScpiConnectionError):
        await client.query("*IDN?")
    server.close()
    await server.wait_closed()
    with pytest.raises(ScpiConnectionError, match="cannot connect"):
        await client.connect()


async def test_command_with_newline_rejected():
    client = ScpiClient("127.0.0.1", 1)
    with pytest.raises(ScpiConnectionError):
        await client.write("A")
    with pytest.raises(ValueError):
        client._reader = asyncio.StreamReader()  # pretend connected enough for write()
        client._writer = _DummyWriter()  # type: ignore[assignment]
        await client.write("A\r\nB")


class _DummyWriter:
    def is_closing(self) -> bool:
        return False


# ----------------------------------------------------------------------- against the simulator
@pytest.fixture
async def sim():
    s = RedPitayaSimulator("127.0.0.1", 0, seed=3)
    await s.start()
    yield s
    await s.stop()


async def test_failed_query_reports_queued_error_and_stays_usable(sim):
    async with ScpiClient("127.0.0.1", sim.port, timeout=0.2) as client:
        with pytest.raises(ScpiQueryError) as info:
            await client.query("ACQ:NONSENSE?")
        assert info.value.command == "ACQ:NONSENSE?"
        assert info.value.errors == [(-113, "Undefined header")]
        assert "Undefined header" in str(info.value)
        assert client.connected
        assert (await client.query("*IDN?")).startswith("REDPITAYA")
        # a set command that fails answers nothing; the queue holds its error
        await client.write("ACQ:DEC 3")
        assert await client.check_errors() == [(-222, "Data out of range: decimation 3")]
        assert await client.check_errors() == []


async def test_ret_on_error_answers_fast():
    sim = RedPitayaSimulator("127.0.0.1", 0, seed=3, os="2.07-43")
    await sim.start()
    async with ScpiClient("127.0.0.1", sim.port, timeout=3.0) as client:
        await client.write("RP:RET_ON_ERROR ON")
        t0 = time.monotonic()
        with pytest.raises(ScpiQueryError) as info:
            await client.query_many(["ACQ:SOUR3:DATA?", "*IDN?"], ["block", "line"])
        assert time.monotonic() - t0 < 1.0  # no timeout was needed
        assert info.value.errors[0][0] == -114
        assert (await client.query("ACQ:DEC?")) == "1"
        # probes: a failed known query answers a bare \r\n, an unknown one nothing
        assert await client.probe("ACQ:SOUR3:GAIN?") is None
        assert client.last_probe_errors[0][0] == -114
        assert await client.probe("ACQ:BOGUS?") is None
        assert client.last_probe_errors == [(-113, "Undefined header")]
        assert await client.probe("SYST:BRD:Name?") is not None
        assert time.monotonic() - t0 < 1.0  # none of them waited for a timeout
    await sim.stop()


async def test_pipelined_failure_without_ret_on_error(sim):
    async with ScpiClient("127.0.0.1", sim.port, timeout=0.2) as client:
        # The first query fails silently, so the answers shift by one and the batch
        # runs short: the batch as a whole fails with the queued error (answers of a
        # failed batch are never returned).
        with pytest.raises(ScpiQueryError) as info:
            await client.query_many(["BOGUS?", "*IDN?", "ACQ:DEC?"])
        assert info.value.errors == [(-113, "Undefined header")]
        assert (await client.query("ACQ:DEC?")) == "1"  # back in step


@pytest.mark.parametrize("os_version", ["1.04-28", "2.00-30"])
async def test_probe_tells_known_from_unknown_queries_without_timeouts(os_version):
    s = RedPitayaSimulator("127.0.0.1", 0, seed=3, os=os_version)
    await s.start()
    older = os_version.startswith("1.")
    try:
        async with ScpiClient("127.0.0.1", s.port, timeout=5.0) as client:
            t0 = time.monotonic()
            name = await client.probe("SYST:BRD:Name?")
            assert (name is None) == older
            if older:
                assert client.last_probe_errors == [(-113, "Undefined header")]
            await client.write("ACQ:DATA:FORMAT BIN", "ACQ:DATA:UNITS RAW")
            one = await client.probe("ACQ:SOUR1:DATA:STA:N? 0,1", "block")  # both know STA
            assert isinstance(one, bytes) and len(one) == 2
            long_form = await client.probe("ACQ:SOUR1:DATA:STArt:N? 0,1", "block")
            assert (long_form is None) == older
            assert client.blocks_terminated is (not older)
            # an answer that looks like a status byte with the error bit set
            await client.write("ACQ:DEC 4")
            assert await client.probe("ACQ:DEC?") == "4"
            assert await client.probe("ACQ:BOGUS?") is None
            assert await client.query("ACQ:DEC?") == "4"  # still in step
            assert time.monotonic() - t0 < 2.0  # no probe waited for a timeout
    finally:
        await s.stop()


# ----------------------------------------------------------------------- any TCP segmentation
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=200),
    terminated=st.booleans(),
)
def test_block_reader_any_segmentation(payloads, cuts, terminated):
    """Blocks (with or without \\r\\n) and lines, coalesced, then cut anywhere, read back intact."""
    end = b"\r\n" if terminated else b""
    stream = b"".join(encode_block(p) + end for p in payloads) + b"END\r\n"
    pieces, i = [], 0
    for cut in cuts:
        if i >= len(stream):
            break
        pieces.append(stream[i : i + cut])
        i += cut
    pieces.append(stream[i:])

    async def scenario() -> list[bytes | None]:
        reader = asyncio.StreamReader()
        client = ScpiClient("127.0.0.1", 1)

        async def feed() -> None:
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)  # let the reader consume part of the data
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        got = [await client._read_block_or_empty(reader) for _ in payloads]
        assert await client._read_line(reader) == b"END"
        await feeder
        return got

    assert asyncio.run(scenario()) == payloads
