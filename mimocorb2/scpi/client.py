"""Asyncio SCPI client over TCP.

Protocol facts this client relies on (Red Pitaya SCPI server, and SCPI in general):

* a command runs when its ``\\r\\n`` arrives; several commands may share one write;
* set commands never answer; a query answers exactly one ``<text>\\r\\n`` line or one
  IEEE 488.2 definite-length block ``#<n><len><payload>``. The Red Pitaya follows a
  block with ``\\r\\n`` from OS 2.00-18 on, older releases send nothing after it;
  ``block_terminator`` says which (``None``: find out from the stream, see below);
* a failed query or an unknown command answers *nothing*; the error is queued
  (``*STB?`` bit 0x04, then ``SYST:ERR:NEXT?`` until ``0,...``). On OS 2.07-43 and
  later, ``RP:RET_ON_ERROR ON`` (a flag of the whole board, not of one connection)
  makes a failed query of a *known* command answer a bare ``\\r\\n``; unknown
  commands still answer nothing.

Invariant: answers arrive in the order the queries were sent. When a query gets no
answer in time, the client asks ``*STB?``; if that is answered and the error bit is
set, the queued errors are read and a :class:`ScpiQueryError` is raised (the
connection stays usable). In every other case (no answer to ``*STB?`` either, or no
error queued) the client can no longer tell which answer belongs to which query, so it
closes the connection and raises :class:`ScpiTimeout`; the caller reconnects.

Block terminators when ``block_terminator`` is ``None``: after a block the client
does not wait for ``\\r\\n`` (it may never come); the next read first skips a
``\\r\\n`` if one is there, and the first block followed by another answer tells the
client, for the rest of the connection, whether this instrument terminates blocks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Literal

import numpy as np

from mimocorb2.scpi.codec import (
    BlockFormatError,
    ByteOrder,
    SampleKind,
    decode_ascii_list,
    decode_block_payload,
    parse_block_header,
)

__all__ = [
    "ScpiClient",
    "ScpiConnectionError",
    "ScpiError",
    "ScpiQueryError",
    "ScpiTimeout",
    "STB_ERROR_QUEUE",
]

#: ``*STB?`` bit that says the error queue is not empty (IEEE 488.2 / SCPI).
STB_ERROR_QUEUE = 0x04
#: Upper bound on ``SYST:ERR:NEXT?`` calls when draining the queue (a real queue holds ~16).
_MAX_ERRORS = 64
#: Stream buffer limit: an ASCII list of 16384 float samples is ~200 kB.
_STREAM_LIMIT = 4 * 1024 * 1024

AnswerKind = Literal["line", "block"]


class ScpiError(RuntimeError):
    """Base class of every error the SCPI client raises."""


class ScpiConnectionError(ScpiError):
    """The connection could not be opened, was lost, or can no longer be trusted."""


class ScpiTimeout(ScpiConnectionError):
    """A query got no answer in time and the instrument queued no error for it.

    The connection has been closed: a late answer would be taken for the next one.
    """


class ScpiQueryError(ScpiError):
    """A query got no (or an empty) answer and the instrument queued errors for it."""

    def __init__(self, command: str, errors: Sequence[tuple[int, str]]) -> None:
        self.command = command
        self.errors = list(errors)
        text = "; ".join(f"{code},{msg}" for code, msg in self.errors) or "no error queued"
        super().__init__(f"SCPI query {command!r} failed: {text}")


def parse_error_line(line: str) -> tuple[int, str]:
    """Parse a ``SYST:ERR:NEXT?`` answer like ``-113,"Undefined header"``."""
    code_text, _, message = line.partition(",")
    try:
        code = int(code_text.strip())
    except ValueError as exc:
        raise ScpiConnectionError(f"unexpected SYST:ERR:NEXT? answer {line!r}") from exc
    return code, message.strip().strip('"')


class ScpiClient:
    """One SCPI connection on asyncio streams; every read is bounded by ``timeout``.

    Counters (for benchmarks and status): ``round_trips`` counts the writes the client
    waited for answers to (one per :meth:`query`/:meth:`query_many` batch),
    ``commands_sent`` and ``bytes_received`` what their names say.
    """

    def __init__(
        self,
        host: str,
        port: int = 5000,
        *,
        timeout: float = 2.0,
        connect_timeout: float | None = None,
        logger: logging.Logger | None = None,
        block_terminator: bool | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else timeout)
        self.logger = logger or logging.getLogger("mimocorb2.scpi")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: Whether blocks end with ``\\r\\n`` (None: learn it per connection).
        self.block_terminator = block_terminator
        self._terminated = block_terminator
        self._terminator_pending = False
        #: Errors the instrument queued for the last :meth:`probe` that got no answer.
        self.last_probe_errors: list[tuple[int, str]] = []
        self.round_trips = 0
        self.commands_sent = 0
        self.bytes_received = 0

    # ------------------------------------------------------------------ connection
    @property
    def blocks_terminated(self) -> bool | None:
        """Whether this connection's blocks end with ``\\r\\n`` (None: not known yet)."""
        return self._terminated

    @property
    def connected(self) -> bool:
        """True while a connection is open and has not been found broken."""
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the TCP connection (Nagle off: our writes are small and latency-bound)."""
        await self.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=_STREAM_LIMIT
                )
        except (OSError, TimeoutError) as exc:
            raise ScpiConnectionError(
                f"cannot connect to {self.host}:{self.port}: {exc or 'timed out'}"
            ) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not a TCP socket
                pass
        self._reader, self._writer = reader, writer
        self._terminated = self.block_terminator
        self._terminator_pending = False

    async def close(self) -> None:
        """Close the connection (idempotent, never raises)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        try:
            writer.close()
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (OSError, TimeoutError, asyncio.CancelledError):
            pass
        except Exception:  # pragma: no cover - defensive, close must not raise
            pass

    async def __aenter__(self) -> ScpiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            raise ScpiConnectionError(f"not connected to {self.host}:{self.port}")
        return self._reader, self._writer

    async def _broken(self, why: str, exc: BaseException | None = None) -> ScpiConnectionError:
        """Close the connection and build the error to raise."""
        await self.close()
        if exc is not None:
            why = f"{why}: {type(exc).__name__}: {exc}"
        return ScpiConnectionError(f"{self.host}:{self.port}: {why}")

    # ------------------------------------------------------------------ writing
    async def write(self, *commands: str) -> None:
        """Send commands in one write, each terminated by ``\\r\\n``. Nothing is read."""
        if not commands:
            return
        _, writer = self._streams()
        for command in commands:
            if "\r" in command or "\n" in command:
                raise ValueError(f"SCPI command must be one line: {command!r}")
        data = ("\r\n".join(commands) + "\r\n").encode("ascii")
        try:
            writer.write(data)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except TimeoutError as exc:
            raise await self._broken("write did not drain (instrument stalled?)", exc) from exc
        except (OSError, ConnectionError) as exc:
            raise await self._broken("write failed", exc) from exc
        self.commands_sent += len(commands)

    # ------------------------------------------------------------------ reading
    async def _answer_start(self, reader: asyncio.StreamReader) -> bytes:
        """The first byte of the next answer, after the previous block's terminator.

        Invariant: ``_terminator_pending`` is True exactly while the last thing read
        was a block payload and this connection's framing is not known yet.
        """
        first = await reader.readexactly(1)
        if not self._terminator_pending:
            return first
        self._terminator_pending = False
        if first != b"\r":
            self._terminated = False  # the next answer followed the block directly
            return first
        if await reader.readexactly(1) != b"\n":
            raise BlockFormatError("lone '\\r' after a binary block")
        self._terminated = True
        self.bytes_received += 2
        return await reader.readexactly(1)

    async def _read_line(self, reader: asyncio.StreamReader, first: bytes | None = None) -> bytes:
        if first is None:
            first = await self._answer_start(reader)
        if first == b"\r":  # the separator would be split between `first` and the stream
            first += await reader.readexactly(1)
            if first == b"\r\n":
                self.bytes_received += 2
                return b""
        line = first + await reader.readuntil(b"\r\n")
        self.bytes_received += len(line)
        return line[:-2]

    async def _read_block_rest(self, reader: asyncio.StreamReader) -> bytes:
        """The rest of a block whose ``#`` was read: header, payload and terminator.

        ``readexactly`` makes the framing independent of how TCP split or coalesced
        the bytes: header, payload and terminator may arrive in any pieces.
        """
        digit = await reader.readexactly(1)
        if not digit.isdigit() or digit == b"0":
            raise BlockFormatError(f"bad block length digit {digit!r}")
        digits = await reader.readexactly(int(digit))
        parsed = parse_block_header(b"#" + digit + digits)
        assert parsed is not None  # the header is complete by construction
        _, length = parsed
        payload = await reader.readexactly(length)
        self.bytes_received += 2 + len(digits) + length
        if self._terminated is None:
            self._terminator_pending = True
        elif self._terminated:
            terminator = await reader.readexactly(2)
            if terminator != b"\r\n":
                raise BlockFormatError(f"block not terminated by \\r\\n but {terminator!r}")
            self.bytes_received += 2
        return payload

    async def _read_block_or_empty(self, reader: asyncio.StreamReader) -> bytes | None:
        """Read one block; ``None`` for a bare ``\\r\\n`` (RET_ON_ERROR answer)."""
        first = await self._answer_start(reader)
        if first == b"\r":
            if await reader.readexactly(1) != b"\n":
                raise BlockFormatError("lone '\\r' where a block was expected")
            self.bytes_received += 2
            return None
        if first != b"#":
            rest = await reader.readuntil(b"\r\n")
            raise BlockFormatError(f"expected a binary block, got {(first + rest)[:40]!r}")
        return await self._read_block_rest(reader)

    async def query_many(
        self,
        commands: Sequence[str],
        kinds: Sequence[AnswerKind] | None = None,
        *,
        timeout: float | None = None,
        preamble: Sequence[str] = (),
    ) -> list[str | bytes]:
        """Send several queries in one write and read their answers in order.

        ``preamble``: set commands (no answers) sent first, in the same write.

        ``kinds`` says per query whether a text line (returned as ``str``) or a binary
        block (returned as ``bytes``) is expected; default: all lines. ``timeout``
        bounds the whole batch. Raises :class:`ScpiQueryError` if the instrument queued
        an error (an empty or missing answer), :class:`ScpiConnectionError` /
        :class:`ScpiTimeout` if the connection is gone or can no longer be trusted.
        """
        kinds = list(kinds) if kinds is not None else ["line"] * len(commands)
        if len(kinds) != len(commands):
            raise ValueError("kinds must name one answer kind per command")
        await self.write(*preamble, *commands)
        reader, _ = self._streams()
        self.round_trips += 1
        answers: list[str | bytes] = []
        budget = self.timeout if timeout is None else float(timeout)
        try:
            async with asyncio.timeout(budget):
                for command, kind in zip(commands, kinds):
                    if kind == "block":
                        payload = await self._read_block_or_empty(reader)
                        if payload is None:
                            raise _EmptyAnswer(command)
                        answers.append(payload)
                    else:
                        line = await self._read_line(reader)
                        if not line and command.rstrip().endswith("?"):
                            raise _EmptyAnswer(command)
                        answers.append(line.decode("ascii", errors="replace"))
        except _EmptyAnswer as empty:
            # RET_ON_ERROR: the instrument answered "" for a failed query. Answers
            # of later queries in this batch may still be on their way: drop the
            # connection only if we cannot account for them.
            errors = await self._drain_after_failure(empty.command, len(commands) - len(answers) - 1)
            raise ScpiQueryError(empty.command, errors) from None
        except TimeoutError:
            failed = commands[len(answers)]
            errors = await self._errors_after_silence(failed)
            raise ScpiQueryError(failed, errors) from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise await self._broken("connection lost while reading", exc) from exc
        except asyncio.LimitOverrunError as exc:
            raise await self._broken("answer line too long", exc) from exc
        except BlockFormatError as exc:
            raise await self._broken("malformed answer", exc) from exc
        return answers

    async def query(self, command: str, *, timeout: float | None = None) -> str:
        """Send one query and return its answer line (without ``\\r\\n``)."""
        (answer,) = await self.query_many([command], timeout=timeout)
        assert isinstance(answer, str)
        return answer

    async def query_block(self, command: str, *, timeout: float | None = None) -> bytes:
        """Send one query whose answer is a definite-length block; return the payload."""
        (answer,) = await self.query_many([command], ["block"], timeout=timeout)
        assert isinstance(answer, bytes)
        return answer

    async def query_samples(
        self,
        command: str,
        kind: SampleKind = "int16",
        byteorder: ByteOrder = "big",
        *,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Query a binary block of int16 or float32 samples and decode it."""
        return decode_block_payload(await self.query_block(command, timeout=timeout), kind, byteorder)

    async def query_ascii_list(
        self, command: str, dtype: type | str = float, *, timeout: float | None = None
    ) -> np.ndarray:
        """Query an ASCII list ``{v,v,...}`` and decode it."""
        return decode_ascii_list(await self.query(command, timeout=timeout), dtype)

    async def probe(
        self, command: str, kind: AnswerKind = "line", *, timeout: float | None = None
    ) -> str | bytes | None:
        """Ask a query the instrument may not know, without waiting for a timeout.

        Sends ``*CLS``, ``command`` and ``*STB?`` in one write. Returns the answer (a
        ``str`` line or the ``bytes`` payload of a block), or ``None`` when the
        instrument answered nothing (or a bare ``\\r\\n``) and queued an error; the
        queued errors are then read, cleared and kept in :attr:`last_probe_errors`.
        A line answer that looks like a status byte with the error bit set is told
        apart from one by a second ``*STB?``. Raises :class:`ScpiConnectionError` when
        the connection fails or nothing at all is answered in time.
        """
        await self.write("*CLS", command, "*STB?")
        reader, _ = self._streams()
        self.round_trips += 1
        self.last_probe_errors = []
        budget = self.timeout if timeout is None else float(timeout)
        try:
            async with asyncio.timeout(budget):
                answer = await self._probe_answer(reader, kind)
        except TimeoutError:
            await self.close()
            raise ScpiTimeout(
                f"{self.host}:{self.port}: probe {command!r} (with *STB?) got no answer "
                f"within {budget:g} s"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError,
                asyncio.LimitOverrunError, BlockFormatError, ValueError) as exc:
            raise await self._broken(f"probe {command!r} failed", exc) from exc
        if answer is None:
            self.last_probe_errors = await self._drain_errors()
        return answer

    async def _probe_answer(self, reader: asyncio.StreamReader, kind: AnswerKind) -> str | bytes | None:
        """Read what ``*CLS; <command>; *STB?`` produced (see :meth:`probe`)."""
        first = await self._answer_start(reader)
        if first == b"#" and kind == "block":
            payload = await self._read_block_rest(reader)
            await self._read_line(reader)  # the *STB? answer
            return payload
        line = (await self._read_line(reader, first)).decode("ascii", errors="replace")
        if line == "":  # RET_ON_ERROR: the failed query's bare answer
            await self._read_line(reader)  # the *STB? answer
            return None
        if not _error_bit_set(line):
            if kind == "block":
                raise BlockFormatError(f"expected a binary block or a status byte, got {line[:40]!r}")
            await self._read_line(reader)  # the *STB? answer
            return line
        if kind == "block":
            return None  # the status byte came first: the block never will
        # `line` is either the status byte (the query failed) or an answer that looks
        # like one. A second *STB? decides: after a failure the error bit is still set,
        # after a success the pending first *STB? answer (no error) comes first.
        await self.write("*STB?")
        if _error_bit_set((await self._read_line(reader)).decode("ascii", errors="replace")):
            return None
        await self._read_line(reader)  # the second *STB? answer
        return line

    # ------------------------------------------------------------------ errors
    async def _errors_after_silence(self, command: str) -> list[tuple[int, str]]:
        """A query went unanswered: ask the status byte, drain errors, or give up.

        Returns the queued errors (non-empty) or raises :class:`ScpiTimeout` after
        closing the connection.
        """
        try:
            stb_text = await self._bare_query("*STB?")
            stb = int(stb_text)
        except (TimeoutError, ValueError, ScpiConnectionError, asyncio.IncompleteReadError,
                ConnectionError, OSError) as exc:
            await self.close()
            raise ScpiTimeout(
                f"{self.host}:{self.port}: query {command!r} got no answer within "
                f"{self.timeout:g} s and *STB? did not answer either ({type(exc).__name__})"
            ) from None
        if not stb & STB_ERROR_QUEUE:
            await self.close()
            raise ScpiTimeout(
                f"{self.host}:{self.port}: query {command!r} got no answer within "
                f"{self.timeout:g} s and no error was queued (*STB? = {stb})"
            )
        return await self._drain_errors()

    async def _drain_after_failure(self, command: str, pending: int) -> list[tuple[int, str]]:
        """After an empty answer: read the ``pending`` answers still due, then the errors."""
        reader, _ = self._streams()
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(pending):
                    # Their content is of no use once one query of the batch failed.
                    first = await self._answer_start(reader)
                    if first == b"#":
                        await self._read_block_rest(reader)
                    else:
                        await self._read_line(reader, first)
        except Exception as exc:  # any trouble here: the stream is out of step
            raise await self._broken(f"lost step after failed query {command!r}", exc) from exc
        return await self._drain_errors()

    async def _bare_query(self, command: str) -> str:
        """A query without the failure handling of :meth:`query_many` (used inside it)."""
        await self.write(command)
        reader, _ = self._streams()
        self.round_trips += 1
        async with asyncio.timeout(self.timeout):
            return (await self._read_line(reader)).decode("ascii", errors="replace")

    async def _drain_errors(self) -> list[tuple[int, str]]:
        errors: list[tuple[int, str]] = []
        try:
            for _ in range(_MAX_ERRORS):
                code, message = parse_error_line(await self._bare_query("SYST:ERR:NEXT?"))
                if code == 0:
                    break
                errors.append((code, message))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise await self._broken("SYST:ERR:NEXT? did not answer", exc) from exc
        except (ScpiConnectionError, ValueError, asyncio.LimitOverrunError) as exc:
            # an answer that is no error line: the stream is out of step
            raise await self._broken("SYST:ERR:NEXT? answered out of step", exc) from exc
        return errors

    async def errors(self) -> list[tuple[int, str]]:
        """Read and clear the instrument's error queue (``SYST:ERR:NEXT?`` until ``0``)."""
        self._streams()
        return await self._drain_errors()

    async def check_errors(self) -> list[tuple[int, str]]:
        """Ask ``*STB?``; if the error bit is set, drain and return the queued errors."""
        stb = int(await self.query("*STB?"))
        if stb & STB_ERROR_QUEUE:
            return await self._drain_errors()
        return []


def _error_bit_set(line: str) -> bool:
    """Whether ``line`` is a status byte with the error-queue bit set."""
    try:
        return bool(int(line.strip()) & STB_ERROR_QUEUE)
    except ValueError:
        return False


class _EmptyAnswer(Exception):
    """Internal: a query was answered by a bare ``\\r\\n``."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command
