"""A Red Pitaya STEMlab 125-14 SCPI server simulator (asyncio TCP).

It speaks the board's SCPI dialect with the board's quirks, so the importer can be
developed and tested without hardware:

* a command runs only when its ``\\r\\n`` arrives; one write may carry several;
* set commands never answer; a query answers ``<text>\\r\\n`` or a binary block
  ``#<n><len><payload>\\r\\n`` (big-endian unless ``ACQ:DATA:BYTE:ORDER LEND``);
* a failed query or an unknown command answers nothing and queues an error
  (``*STB?`` bit 0x04, ``SYST:ERR:NEXT?``); after ``RP:RET_ON_ERROR ON`` a failed
  query answers a bare ``\\r\\n``;
* ``ACQ:TRig:STAT?`` answers ``TD`` whenever the trigger source is disabled, i.e.
  also right after ``ACQ:START`` before ``ACQ:TRig <source>`` arms it;
* each channel has a 16384-sample circular buffer; samples written before the last
  ``ACQ:START`` stay in it ("stale" pre-trigger data if a client arms too early).

Acquisition runs against the wall clock: after ``ACQ:START`` at time ``ts`` the
write pointer advances at ``125 MHz / decimation``. Arming the trigger draws the
Poisson arrival times and amplitudes of the pulses until one crosses the trigger
level with the right slope; the trigger time ``tt`` is when it crosses. ``STAT?``
says ``TD`` once ``now >= tt``; ``FILL?`` says ``1`` once the post-trigger samples
(``8192 + ACQ:TRig:DLY``) are written. The buffer contents are made once, when first
needed after that, with the trigger sample at ``ACQ:TPOS?``.

For tests the simulator can drop every connection or stall (stop answering), on
request (:meth:`RedPitayaSimulator.drop_connections`, :meth:`~RedPitayaSimulator.stall`)
or on the n-th ``ACQ:START`` (:class:`Faults`).

Console entry: ``mimocorb2-redpitaya-sim --host 127.0.0.1 --port 5000 ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ADC_MAX",
    "ADC_MIN",
    "ADC_RATE",
    "BUFFER_SAMPLES",
    "DECIMATIONS",
    "FULL_SCALE",
    "Faults",
    "PulseConfig",
    "RedPitayaSimulator",
    "SimulatorThread",
    "main",
]

#: ADC clock of the STEMlab 125-14, samples per second.
ADC_RATE = 125_000_000
#: Samples per channel in the circular acquisition buffer.
BUFFER_SAMPLES = 16384
#: 14-bit signed ADC range in RAW units.
ADC_MIN, ADC_MAX = -8192, 8191
#: Allowed ``ACQ:DEC`` values (newer OS: every power of two from 1 to 65536).
DECIMATIONS = tuple(2**k for k in range(17))
#: Full-scale input voltage per gain (jumper) setting.
FULL_SCALE = {"LV": 1.0, "HV": 20.0}
_HALF = BUFFER_SAMPLES // 2
_NOISE_TABLE = 1 << 20

log = logging.getLogger("mimocorb2.sim.redpitaya")


# --------------------------------------------------------------------------- config
@dataclass
class PulseConfig:
    """What arrives at the inputs: pulses (volts at the input) plus noise.

    Every pulse appears on both inputs, scaled by ``scale_IN1`` / ``scale_IN2`` (the
    sign is the polarity) and shifted by ``delay_IN2`` seconds on IN2.
    """

    rate: float = 1000.0  #: mean pulse rate, Hz (Poisson)
    shape: str = "exponential"  #: exponential | gaussian | rectangular
    rise_time: float = 16e-9  #: s, exponential rise constant
    decay_time: float = 240e-9  #: s, exponential decay constant
    width: float = 80e-9  #: s, gaussian sigma / rectangular width
    spectrum: str = "uniform"  #: fixed | uniform | exponential | gaussian | lines
    amplitude: float = 0.5  #: V: fixed value, gaussian mean, exponential mean
    amplitude_min: float = 0.05  #: V, uniform lower bound
    amplitude_max: float = 0.9  #: V, uniform upper bound (also the cap for others)
    amplitude_sigma: float = 0.05  #: V, gaussian width
    lines: tuple[tuple[float, float], ...] = ((0.3, 1.0), (0.6, 0.5))  #: (V, weight)
    noise: float = 0.002  #: V rms at the input, per sample at decimation 1
    offset: float = 0.0  #: V baseline
    scale_IN1: float = 1.0
    scale_IN2: float = -0.5
    delay_IN2: float = 0.0  #: s

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work."""
        if self.shape not in ("exponential", "gaussian", "rectangular"):
            raise ValueError(f"shape {self.shape!r}: allowed exponential, gaussian, rectangular")
        if self.spectrum not in ("fixed", "uniform", "exponential", "gaussian", "lines"):
            raise ValueError(
                f"spectrum {self.spectrum!r}: allowed fixed, uniform, exponential, gaussian, lines"
            )
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.shape == "exponential" and not 0 < self.rise_time < self.decay_time:
            raise ValueError("exponential pulses need 0 < rise_time < decay_time")
        if self.shape != "exponential" and not self.width > 0:
            raise ValueError("width must be > 0")
        if self.noise < 0:
            raise ValueError("noise must be >= 0")
        if self.spectrum == "lines" and not self.lines:
            raise ValueError("spectrum 'lines' needs at least one line")


@dataclass
class Faults:
    """Deterministic fault plan, counted in ``ACQ:START`` commands (1-based).

    ``drop_every``: on every n-th ``ACQ:START`` close all connections instead of
    starting. ``stall_every``: on every n-th ``ACQ:START`` stop answering anything for
    ``stall_seconds`` (new connections are accepted but not answered either).
    ``drop_at`` / ``stall_at`` name single ``ACQ:START`` numbers.
    """

    drop_every: int = 0
    stall_every: int = 0
    stall_seconds: float = 1.0
    drop_at: frozenset[int] = frozenset()
    stall_at: frozenset[int] = frozenset()

    def action(self, n: int) -> str | None:
        """``"drop"``, ``"stall"`` or ``None`` for the n-th ``ACQ:START``."""
        if n in self.drop_at or (self.drop_every and n % self.drop_every == 0):
            return "drop"
        if n in self.stall_at or (self.stall_every and n % self.stall_every == 0):
            return "stall"
        return None


class _ScpiFailure(Exception):
    """A command failed; ``code``/``message`` go into the error queue."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code},{message}")
        self.code = code
        self.message = message


def _undefined() -> _ScpiFailure:
    return _ScpiFailure(-113, "Undefined header")


def _bad_value(what: str) -> _ScpiFailure:
    return _ScpiFailure(-224, f"Illegal parameter value: {what}")


def _out_of_range(what: str) -> _ScpiFailure:
    return _ScpiFailure(-222, f"Data out of range: {what}")


# --------------------------------------------------------------------------- patterns
class _Token:
    """One SCPI mnemonic like ``TRig`` (short ``TR``, long ``TRIG``) or ``SOUR#``."""

    def __init__(self, text: str) -> None:
        self.numeric = text.endswith("#")
        word = text.rstrip("#")
        self.long = word.upper()
        short = re.match(r"[A-Z_]*", word)
        self.short = short.group(0) if short and short.group(0) else self.long

    def match(self, token: str) -> int | None | bool:
        """Return False on mismatch; else the numeric suffix (or None)."""
        word = token.upper()
        suffix: int | None = None
        if self.numeric:
            m = re.fullmatch(r"([A-Z_]+)(\d*)", word)
            if not m:
                return False
            word, digits = m.group(1), m.group(2)
            suffix = int(digits) if digits else 1
        if word in (self.short, self.long):
            return suffix
        return False


class _Pattern:
    def __init__(self, text: str, handler: Callable[..., bytes | None]) -> None:
        self.query = text.endswith("?")
        self.tokens = [_Token(t) for t in text.rstrip("?").split(":")]
        self.handler = handler

    def match(self, header: str) -> list[int] | None:
        if header.endswith("?") != self.query:
            return None
        parts = header.rstrip("?").lstrip(":").split(":")
        if len(parts) != len(self.tokens):
            return None
        suffixes: list[int] = []
        for tok, part in zip(self.tokens, parts):
            res = tok.match(part)
            if res is False:
                return None
            if tok.numeric:
                assert isinstance(res, int)
                suffixes.append(res)
        return suffixes


# --------------------------------------------------------------------------- board
@dataclass
class _Trigger:
    """The pulse that triggered (drawn when the trigger is armed)."""

    time: float  #: wall-clock trigger time (math.inf: never)
    amplitude: float  #: V at the input before the channel scale; 0 for NOW
    crossing: int  #: samples from the pulse start to the trigger sample (noise-free)
    pulse: bool  #: False for a NOW/forced trigger without a pulse


@dataclass
class _Acquisition:
    start_time: float
    start_pointer: int
    decimation: int
    post: int  #: samples written from the trigger sample on (8192 + delay)
    trigger: _Trigger | None = None
    source: str = "DISABLED"
    materialized: bool = False
    stopped_at: float | None = None


class RedPitayaSimulator:
    """The simulated board and its SCPI TCP server (one board, many connections).

    Create it, ``await start()`` inside a running loop (or use
    :class:`SimulatorThread`), read :attr:`port`, ``await stop()``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        pulses: PulseConfig | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        ret_on_error: bool = False,
        supports_little_endian: bool = True,
        supports_fill: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.pulses = pulses or PulseConfig()
        self.pulses.validate()
        self.faults = faults or Faults()
        self.ret_on_error_default = ret_on_error
        self.supports_little_endian = supports_little_endian
        self.supports_fill = supports_fill
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self._noise = self.rng.standard_normal(_NOISE_TABLE).astype(np.float32)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._stall_until = 0.0
        self._stalled_forever = False
        self._resume: asyncio.Event | None = None
        self._templates: dict[tuple[str, int], tuple[np.ndarray, int]] = {}
        #: Counters for tests and benchmarks.
        self.stats = {"connections": 0, "commands": 0, "queries": 0, "acquisitions": 0,
                      "triggers": 0, "drops": 0, "stalls": 0, "errors": 0}
        self.errors: deque[tuple[int, str]] = deque(maxlen=16)
        self.buffers = {1: np.zeros(BUFFER_SAMPLES, np.int16), 2: np.zeros(BUFFER_SAMPLES, np.int16)}
        self._write_pointer = 0
        self._acq: _Acquisition | None = None
        self.reset_settings()
        self._patterns = self._build_patterns()
        self._header_cache: dict[str, tuple[_Pattern, list[int]] | None] = {}
        #: Test hook: called with every command line after it ran (on the server's loop).
        self.on_command: Callable[[str], object] | None = None

    # ----------------------------------------------------------------- settings
    def reset_settings(self) -> None:
        """``ACQ:RST``: defaults of the real board (ASCII, VOLTS, big-endian, dec 1)."""
        self.decimation = 1
        self.averaging = True
        self.trigger_level = 0.0  # V
        self.trigger_delay = 0  # samples
        self.trigger_hysteresis = 0.003
        self.gain = {1: "LV", 2: "LV"}
        self.data_format = "ASCII"
        self.data_units = "VOLTS"
        self.little_endian = False
        self._acq = None

    # ----------------------------------------------------------------- server
    async def start(self) -> None:
        """Listen on ``host:port`` (port 0: an ephemeral port, then in :attr:`port`)."""
        self._resume = asyncio.Event()
        self._resume.set()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("Red Pitaya simulator listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Close the listening socket and every connection."""
        if self._server is not None:
            self._server.close()
        self.drop_connections(count=False)
        self.resume()  # stalled handlers must run to their end
        if self._handlers:
            # Let every connection handler see its aborted transport and finish.
            await asyncio.wait(list(self._handlers), timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self, count: bool = True) -> None:
        """Abort every open connection (as a board reboot or cable pull would)."""
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()
        if count:
            self.stats["drops"] += 1

    def stall(self, seconds: float | None = None) -> None:
        """Stop answering for ``seconds`` (None: until :meth:`resume`)."""
        self.stats["stalls"] += 1
        if seconds is None:
            self._stalled_forever = True
        else:
            self._stall_until = max(self._stall_until, self.clock() + seconds)
        if self._resume is not None:
            self._resume.clear()

    def resume(self) -> None:
        """End a stall."""
        self._stalled_forever = False
        self._stall_until = 0.0
        if self._resume is not None:
            self._resume.set()

    async def _wait_not_stalled(self) -> None:
        assert self._resume is not None
        while True:
            if self._stalled_forever:
                await self._resume.wait()
                continue
            left = self._stall_until - self.clock()
            if left <= 0:
                self._resume.set()
                return
            try:
                async with asyncio.timeout(left):
                    await self._resume.wait()
            except TimeoutError:
                pass
            if not self._stalled_forever and self._stall_until <= self.clock():
                return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        self._connections.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn = {"ret_on_error": self.ret_on_error_default}
        pending = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                pending += chunk
                # Invariant: only complete "\r\n"-terminated commands run; the rest waits.
                *lines, pending = pending.split(b"\r\n")
                out: list[bytes] = []
                for raw in lines:
                    if self._stalled_forever or self._stall_until > self.clock():
                        if out:
                            writer.write(b"".join(out))
                            out.clear()
                        await self._wait_not_stalled()
                    if writer.is_closing():
                        return
                    answer = self._execute(raw.decode("ascii", errors="replace"), conn)
                    if answer is _DROP:
                        self.drop_connections()
                        return
                    if answer is not None:
                        out.append(answer + b"\r\n")
                if out and not writer.is_closing():
                    writer.write(b"".join(out))
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(writer)
            if not writer.is_closing():
                writer.close()

    # ----------------------------------------------------------------- execution
    def _execute(self, line: str, conn: dict) -> bytes | None | object:
        """Run one command line; return the answer (no terminator), None, or _DROP."""
        line = line.strip()
        if not line:
            return None
        self.stats["commands"] += 1
        header, _, rest = line.partition(" ")
        params = [p.strip() for p in rest.split(",")] if rest.strip() else []
        is_query = header.endswith("?")
        if is_query:
            self.stats["queries"] += 1
        try:
            found = self._lookup(header)
            if found is None:
                raise _undefined()
            pattern, suffixes = found
            return pattern.handler(conn, suffixes, params)
        except _ScpiFailure as fail:
            self.stats["errors"] += 1
            self.errors.append((fail.code, fail.message))
            if is_query and conn["ret_on_error"]:
                return b""
            return None
        finally:
            if self.on_command is not None:
                self.on_command(line)

    def _lookup(self, header: str) -> tuple[_Pattern, list[int]] | None:
        """The pattern matching ``header`` (cached: clients repeat the same headers)."""
        key = header.upper()
        try:
            return self._header_cache[key]
        except KeyError:
            pass
        found = None
        for pattern in self._patterns:
            suffixes = pattern.match(key)
            if suffixes is not None:
                found = (pattern, suffixes)
                break
        if len(self._header_cache) > 4096:  # bound the cache against junk headers
            self._header_cache.clear()
        self._header_cache[key] = found
        return found

    def _build_patterns(self) -> list[_Pattern]:
        p = _Pattern
        return [
            p("*IDN?", lambda c, s, a: b"REDPITAYA,INSTR2020,0,SIM-2.00"),
            p("*STB?", self._q_stb),
            p("*CLS", self._c_cls),
            p("*RST", lambda c, s, a: self.reset_settings()),
            p("SYSTem:ERRor:NEXT?", self._q_err_next),
            p("SYSTem:ERRor:COUNt?", lambda c, s, a: str(len(self.errors)).encode()),
            p("RP:RET_ON_ERROR", self._c_ret_on_error),
            p("ACQ:RST", lambda c, s, a: self.reset_settings()),
            p("ACQ:START", self._c_start),
            p("ACQ:STOP", self._c_stop),
            p("ACQ:DEC", self._c_dec),
            p("ACQ:DEC?", lambda c, s, a: str(self.decimation).encode()),
            p("ACQ:AVG", self._c_avg),
            p("ACQ:AVG?", lambda c, s, a: b"ON" if self.averaging else b"OFF"),
            p("ACQ:TRig", self._c_trig),
            p("ACQ:TRig:STAT?", self._q_trig_stat),
            p("ACQ:TRig:FILL?", self._q_trig_fill),
            p("ACQ:TRig:LEV", self._c_level),
            p("ACQ:TRig:LEV?", lambda c, s, a: f"{self.trigger_level:.6g}".encode()),
            p("ACQ:TRig:DLY", self._c_delay),
            p("ACQ:TRig:DLY?", lambda c, s, a: str(self.trigger_delay).encode()),
            p("ACQ:TRig:HYST", self._c_hyst),
            p("ACQ:TRig:HYST?", lambda c, s, a: f"{self.trigger_hysteresis:.6g}".encode()),
            p("ACQ:TPOS?", self._q_tpos),
            p("ACQ:WPOS?", lambda c, s, a: str(self._current_pointer()).encode()),
            p("ACQ:BUF:SIZE?", lambda c, s, a: str(BUFFER_SAMPLES).encode()),
            p("ACQ:SOUR#:GAIN", self._c_gain),
            p("ACQ:SOUR#:GAIN?", lambda c, s, a: self.gain[self._channel(s)].encode()),
            p("ACQ:DATA:FORMAT", self._c_format),
            p("ACQ:DATA:UNITS", self._c_units),
            p("ACQ:DATA:UNITS?", lambda c, s, a: self.data_units.encode()),
            p("ACQ:DATA:BYTE:ORDER", self._c_byte_order),
            p("ACQ:SOUR#:DATA?", self._q_data_all),
            p("ACQ:SOUR#:DATA:STArt:N?", self._q_data_start_n),
            p("ACQ:SOUR#:DATA:STArt:End?", self._q_data_start_end),
        ]

    @staticmethod
    def _one(params: Sequence[str], what: str) -> str:
        if len(params) != 1:
            raise _ScpiFailure(-109 if not params else -108, f"{what} takes one parameter")
        return params[0]

    @staticmethod
    def _channel(suffixes: Sequence[int]) -> int:
        if suffixes[0] not in (1, 2):
            raise _ScpiFailure(-114, "Header suffix out of range")
        return suffixes[0]

    # ----------------------------------------------------------------- commands
    def _q_stb(self, c: dict, s: list[int], a: list[str]) -> bytes:
        return str(0x04 if self.errors else 0).encode()

    def _c_cls(self, c: dict, s: list[int], a: list[str]) -> None:
        self.errors.clear()

    def _q_err_next(self, c: dict, s: list[int], a: list[str]) -> bytes:
        if not self.errors:
            return b'0,"No error"'
        code, msg = self.errors.popleft()
        return f'{code},"{msg}"'.encode()

    def _c_ret_on_error(self, c: dict, s: list[int], a: list[str]) -> None:
        value = self._one(a, "RP:RET_ON_ERROR").upper()
        if value not in ("ON", "OFF", "1", "0"):
            raise _bad_value(value)
        c["ret_on_error"] = value in ("ON", "1")

    def _c_dec(self, c: dict, s: list[int], a: list[str]) -> None:
        text = self._one(a, "ACQ:DEC")
        try:
            dec = int(text)
        except ValueError:
            raise _ScpiFailure(-104, f"Data type error: {text}") from None
        if dec not in DECIMATIONS:
            raise _out_of_range(f"decimation {dec}")
        self.decimation = dec

    def _c_avg(self, c: dict, s: list[int], a: list[str]) -> None:
        value = self._one(a, "ACQ:AVG").upper()
        if value not in ("ON", "OFF"):
            raise _bad_value(value)
        self.averaging = value == "ON"

    def _c_level(self, c: dict, s: list[int], a: list[str]) -> None:
        text = self._one(a, "ACQ:TRig:LEV")
        try:
            volts = float(text[:-1]) if text.upper().endswith("V") else float(text)
        except ValueError:
            raise _ScpiFailure(-104, f"Data type error: {text}") from None
        if not -20.0 <= volts <= 20.0:
            raise _out_of_range(f"level {volts}")
        self.trigger_level = volts

    def _c_delay(self, c: dict, s: list[int], a: list[str]) -> None:
        text = self._one(a, "ACQ:TRig:DLY")
        try:
            delay = int(text)
        except ValueError:
            raise _ScpiFailure(-104, f"Data type error: {text}") from None
        if not -_HALF <= delay <= _HALF:
            raise _out_of_range(f"delay {delay}")
        self.trigger_delay = delay

    def _c_hyst(self, c: dict, s: list[int], a: list[str]) -> None:
        try:
            self.trigger_hysteresis = float(self._one(a, "ACQ:TRig:HYST"))
        except ValueError:
            raise _ScpiFailure(-104, "Data type error") from None

    def _c_gain(self, c: dict, s: list[int], a: list[str]) -> None:
        value = self._one(a, "ACQ:SOUR:GAIN").upper()
        if value not in FULL_SCALE:
            raise _bad_value(value)
        self.gain[self._channel(s)] = value

    def _c_format(self, c: dict, s: list[int], a: list[str]) -> None:
        value = self._one(a, "ACQ:DATA:FORMAT").upper()
        if value not in ("BIN", "ASCII"):
            raise _bad_value(value)
        self.data_format = value

    def _c_units(self, c: dict, s: list[int], a: list[str]) -> None:
        value = self._one(a, "ACQ:DATA:UNITS").upper()
        if value not in ("RAW", "VOLTS"):
            raise _bad_value(value)
        self.data_units = value

    def _c_byte_order(self, c: dict, s: list[int], a: list[str]) -> None:
        if not self.supports_little_endian:
            raise _undefined()  # an older OS does not know the command
        value = self._one(a, "ACQ:DATA:BYTE:ORDER").upper()
        if value not in ("LEND", "BEND"):
            raise _bad_value(value)
        self.little_endian = value == "LEND"

    # ----------------------------------------------------------------- acquisition
    def _sample_period(self, dec: int) -> float:
        return dec / ADC_RATE

    def _current_pointer(self) -> int:
        """Write pointer now (the sample position to be written next)."""
        acq = self._acq
        if acq is None:
            return self._write_pointer
        now = self.clock()
        end = self._end_time(acq)
        t = now if acq.stopped_at is None else acq.stopped_at
        if t >= end:
            # Invariant: a finished acquisition ends `post` samples after the trigger.
            return (self._trigger_pointer(acq) + acq.post) % BUFFER_SAMPLES
        n = _samples(t - acq.start_time, self._sample_period(acq.decimation))
        return (acq.start_pointer + n) % BUFFER_SAMPLES

    def _end_time(self, acq: _Acquisition) -> float:
        if acq.trigger is None or math.isinf(acq.trigger.time):
            return math.inf
        return acq.trigger.time + acq.post * self._sample_period(acq.decimation)

    def _c_start(self, c: dict, s: list[int], a: list[str]) -> object:
        self.stats["acquisitions"] += 1
        action = self.faults.action(self.stats["acquisitions"])
        if action == "drop":
            return _DROP
        if action == "stall":
            self.stall(self.faults.stall_seconds)
        self._materialize()
        self._write_pointer = self._current_pointer()
        self._acq = _Acquisition(
            start_time=self.clock(),
            start_pointer=self._write_pointer,
            decimation=self.decimation,
            post=_HALF + self.trigger_delay,
        )
        return None

    def _c_stop(self, c: dict, s: list[int], a: list[str]) -> None:
        if self._acq is not None and self._acq.stopped_at is None:
            self._acq.stopped_at = self.clock()
            self._acq.source = "DISABLED"

    def _c_trig(self, c: dict, s: list[int], a: list[str]) -> None:
        source = self._one(a, "ACQ:TRig").upper()
        allowed = ("DISABLED", "NOW", "CH1_PE", "CH1_NE", "CH2_PE", "CH2_NE", "EXT_PE",
                   "EXT_NE", "AWG_PE", "AWG_NE")
        if source not in allowed:
            raise _bad_value(source)
        acq = self._acq
        if acq is None or acq.stopped_at is not None or self._triggered(acq):
            # Not acquiring (or already triggered): the board accepts and ignores it.
            return
        # Re-arming a waiting trigger (e.g. NOW after a timeout) replaces the source.
        acq.source = source
        now = self.clock()
        if source == "DISABLED":
            return
        if source == "NOW":
            acq.trigger = _Trigger(now, 0.0, 0, False)
        else:
            acq.trigger = self._draw_trigger(now, source, acq.decimation)
        if not math.isinf(acq.trigger.time):
            self.stats["triggers"] += 1

    def _triggered(self, acq: _Acquisition) -> bool:
        return acq.trigger is not None and self.clock() >= acq.trigger.time

    def _q_trig_stat(self, c: dict, s: list[int], a: list[str]) -> bytes:
        acq = self._acq
        # Quirk of the real board: a disabled trigger source reads as "TD".
        if acq is None or acq.trigger is None or acq.stopped_at is not None:
            return b"TD"
        return b"TD" if self._triggered(acq) else b"WAIT"

    def _q_trig_fill(self, c: dict, s: list[int], a: list[str]) -> bytes:
        if not self.supports_fill:
            raise _undefined()  # OS versions before 1.04 lack ACQ:TRig:FILL?
        acq = self._acq
        if acq is None or acq.trigger is None:
            return b"0"
        return b"1" if self.clock() >= self._end_time(acq) else b"0"

    def _q_tpos(self, c: dict, s: list[int], a: list[str]) -> bytes:
        acq = self._acq
        if acq is None or not self._triggered(acq):
            return str(self._current_pointer()).encode()
        return str(self._trigger_pointer(acq)).encode()

    def _trigger_pointer(self, acq: _Acquisition) -> int:
        assert acq.trigger is not None
        n = _samples(acq.trigger.time - acq.start_time, self._sample_period(acq.decimation))
        return (acq.start_pointer + n) % BUFFER_SAMPLES

    # ----------------------------------------------------------------- pulses
    def _template(self, dec: int) -> tuple[np.ndarray, int]:
        """Pulse shape sampled at the decimated rate, peak 1, and its peak index."""
        key = (self.pulses.shape, dec)
        if key not in self._templates:
            cfg = self.pulses
            dt = self._sample_period(dec)
            if cfg.shape == "exponential":
                length = cfg.decay_time * 8 + cfg.rise_time * 8
            elif cfg.shape == "gaussian":
                length = cfg.width * 8
            else:
                length = cfg.width
            n = int(min(BUFFER_SAMPLES // 4, max(1, math.ceil(length / dt))))
            t = np.arange(n) * dt
            if cfg.shape == "exponential":
                shape = np.exp(-t / cfg.decay_time) - np.exp(-t / cfg.rise_time)
            elif cfg.shape == "gaussian":
                shape = np.exp(-0.5 * ((t - 4 * cfg.width) / cfg.width) ** 2)
            else:
                shape = np.ones(n)
            if shape.max() <= 0:
                shape = np.ones(n)
            shape = (shape / shape.max()).astype(np.float64)
            self._templates[key] = (shape, int(np.argmax(shape)))
        return self._templates[key]

    def _draw_amplitudes(self, n: int) -> np.ndarray:
        cfg, rng = self.pulses, self.rng
        if cfg.spectrum == "fixed":
            amp = np.full(n, cfg.amplitude)
        elif cfg.spectrum == "uniform":
            amp = rng.uniform(cfg.amplitude_min, cfg.amplitude_max, n)
        elif cfg.spectrum == "exponential":
            amp = rng.exponential(cfg.amplitude, n)
        elif cfg.spectrum == "gaussian":
            amp = rng.normal(cfg.amplitude, cfg.amplitude_sigma, n)
        else:
            values = np.array([v for v, _ in cfg.lines])
            weights = np.array([w for _, w in cfg.lines], dtype=float)
            amp = rng.choice(values, size=n, p=weights / weights.sum())
        return np.minimum(amp, cfg.amplitude_max if cfg.spectrum != "fixed" else np.inf)

    def _to_raw(self, volts: np.ndarray | float, channel: int) -> np.ndarray | float:
        return np.asarray(volts) / FULL_SCALE[self.gain[channel]] * (ADC_MAX + 1)

    def _draw_trigger(self, armed: float, source: str, dec: int) -> _Trigger:
        """Walk the Poisson pulse train from ``armed`` until a pulse fires the trigger."""
        cfg = self.pulses
        shape, peak = self._template(dec)
        dt = self._sample_period(dec)
        t = armed
        if source.startswith("EXT") or source.startswith("AWG"):
            t += float(self.rng.exponential(1.0 / cfg.rate))
            return _Trigger(t, float(self._draw_amplitudes(1)[0]), 0, True)
        channel = 1 if source.startswith("CH1") else 2
        scale = cfg.scale_IN1 if channel == 1 else cfg.scale_IN2
        fs = FULL_SCALE[self.gain[channel]]
        rising = source.endswith("PE")
        base = cfg.offset
        level = self.trigger_level
        # Invariant: a pulse fires if its noise-free height crosses the level with
        # the right slope from the baseline side; the crossing sample is computed.
        for _ in range(100):  # at most 100 * 1024 pulses, then "never"
            gaps = self.rng.exponential(1.0 / cfg.rate, 1024)
            amps = self._draw_amplitudes(1024)
            heights = np.clip(base + amps * scale, -fs, fs)
            if rising:
                ok = (base < level) & (heights >= level)
            else:
                ok = (base > level) & (heights <= level)
            hits = np.flatnonzero(ok)
            if hits.size:
                i = int(hits[0])
                t += float(gaps[: i + 1].sum())
                pulse = base + amps[i] * scale * shape[: peak + 1]
                cross = pulse >= level if rising else pulse <= level
                k = int(np.argmax(cross))
                return _Trigger(t + k * dt, float(amps[i]), k, True)
            t += float(gaps.sum())
        return _Trigger(math.inf, 0.0, 0, False)

    def _noise_slice(self, n: int) -> np.ndarray:
        start = int(self.rng.integers(0, _NOISE_TABLE - n))
        return self._noise[start : start + n]

    def _materialize(self) -> None:
        """Write the finished acquisition into the circular buffers (once)."""
        acq = self._acq
        if acq is None or acq.materialized:
            return
        now = self.clock()
        end = self._end_time(acq)
        stop = acq.stopped_at
        if stop is None and now < end:
            return  # still running: the buffer is written when it completes or stops
        acq.materialized = True
        dt = self._sample_period(acq.decimation)
        cfg = self.pulses
        trig = acq.trigger
        fired = trig is not None and not math.isinf(trig.time) and (stop is None or trig.time <= stop)
        if fired:
            assert trig is not None
            n_written = _samples(trig.time - acq.start_time, dt) + acq.post
            pre_len = BUFFER_SAMPLES - acq.post  # samples before the trigger sample
        else:
            t_end = stop if stop is not None else now
            n_written = _samples(t_end - acq.start_time, dt)
            pre_len = BUFFER_SAMPLES
        fresh = min(n_written, BUFFER_SAMPLES)
        if fresh <= 0:
            return
        noise_scale = cfg.noise / (math.sqrt(acq.decimation) if self.averaging else 1.0)
        shape, _ = self._template(acq.decimation)
        for ch in (1, 2):
            volts = cfg.offset + noise_scale * self._noise_slice(BUFFER_SAMPLES).astype(np.float64)
            if fired and trig is not None and trig.pulse:
                scale = cfg.scale_IN1 if ch == 1 else cfg.scale_IN2
                shift = int(round(cfg.delay_IN2 / dt)) if ch == 2 else 0
                # content index pre_len is the trigger sample = pulse sample trig.crossing
                start = pre_len - trig.crossing + shift
                lo, hi = max(0, start), min(BUFFER_SAMPLES, start + shape.size)
                if hi > lo:
                    volts[lo:hi] += trig.amplitude * scale * shape[lo - start : hi - start]
            raw = np.clip(np.round(self._to_raw(volts, ch)), ADC_MIN, ADC_MAX).astype(np.int16)
            # Only the last `fresh` samples were written in this acquisition.
            content = raw[BUFFER_SAMPLES - fresh :]
            first = (acq.start_pointer + n_written - fresh) % BUFFER_SAMPLES
            self._write_circular(self.buffers[ch], first, content)
        if fired:
            self._fix_trigger_crossing(acq)

    def _fix_trigger_crossing(self, acq: _Acquisition) -> None:
        """Make the sample at TPOS the first one past the level (noise may move it).

        The hardware compares the noisy samples; to stay exact, the sample just
        before the trigger is pulled to the baseline side and the trigger sample to
        the far side of the level when noise put them elsewhere.
        """
        trig = acq.trigger
        source = acq.source
        if trig is None or not trig.pulse or not source.startswith("CH"):
            return
        ch = int(source[2])
        buf = self.buffers[ch]
        tpos = self._trigger_pointer(acq)
        level = float(self._to_raw(self.trigger_level, ch))
        rising = source.endswith("PE")
        prev = (tpos - 1) % BUFFER_SAMPLES
        if rising:
            if buf[tpos] < level:
                buf[tpos] = min(ADC_MAX, math.ceil(level))
            if buf[prev] >= level:
                buf[prev] = max(ADC_MIN, math.ceil(level) - 1)
        else:
            if buf[tpos] > level:
                buf[tpos] = max(ADC_MIN, math.floor(level))
            if buf[prev] <= level:
                buf[prev] = min(ADC_MAX, math.floor(level) + 1)

    @staticmethod
    def _write_circular(buf: np.ndarray, first: int, content: np.ndarray) -> None:
        n = content.size
        head = min(n, BUFFER_SAMPLES - first)
        buf[first : first + head] = content[:head]
        if n > head:
            buf[: n - head] = content[head:]

    # ----------------------------------------------------------------- data reads
    def _read(self, ch: int, start: int, count: int) -> bytes:
        self._materialize()
        if not 0 <= start < BUFFER_SAMPLES:
            raise _out_of_range(f"start {start}")
        if not 1 <= count <= BUFFER_SAMPLES:
            raise _out_of_range(f"count {count}")
        idx = (start + np.arange(count)) % BUFFER_SAMPLES
        raw = self.buffers[ch][idx]
        fs = FULL_SCALE[self.gain[ch]]
        if self.data_format == "ASCII":
            if self.data_units == "RAW":
                return ("{" + ",".join(map(str, raw.tolist())) + "}").encode()
            volts = raw.astype(np.float64) / (ADC_MAX + 1) * fs
            return ("{" + ",".join(f"{v:.6f}" for v in volts) + "}").encode()
        order = "<" if self.little_endian else ">"
        if self.data_units == "RAW":
            payload = raw.astype(order + "i2").tobytes()
        else:
            payload = (raw.astype(np.float32) / (ADC_MAX + 1) * fs).astype(order + "f4").tobytes()
        length = str(len(payload)).encode()
        return b"#" + str(len(length)).encode() + length + payload

    @staticmethod
    def _ints(params: Sequence[str], n: int) -> list[int]:
        if len(params) != n:
            raise _ScpiFailure(-109 if len(params) < n else -108, f"expected {n} parameters")
        try:
            return [int(p) for p in params]
        except ValueError:
            raise _ScpiFailure(-104, "Data type error") from None

    def _q_data_all(self, c: dict, s: list[int], a: list[str]) -> bytes:
        ch = self._channel(s)
        self._materialize()
        # The whole buffer from the oldest sample (the write pointer) on.
        return self._read(ch, self._current_pointer(), BUFFER_SAMPLES)

    def _q_data_start_n(self, c: dict, s: list[int], a: list[str]) -> bytes:
        ch = self._channel(s)
        start, count = self._ints(a, 2)
        return self._read(ch, start, count)

    def _q_data_start_end(self, c: dict, s: list[int], a: list[str]) -> bytes:
        ch = self._channel(s)
        start, end = self._ints(a, 2)
        if not 0 <= end < BUFFER_SAMPLES:
            raise _out_of_range(f"end {end}")
        return self._read(ch, start, (end - start) % BUFFER_SAMPLES + 1)


_DROP = object()


def _samples(seconds: float, period: float) -> int:
    """Whole samples written in ``seconds`` (robust to float rounding of the clock)."""
    return int(seconds / period + 1e-4)


# --------------------------------------------------------------------------- thread runner
class SimulatorThread:
    """Run a :class:`RedPitayaSimulator` on its own event loop in a daemon thread.

    ``with SimulatorThread(pulses=...) as sim: ... sim.port ...``. Fault hooks are
    forwarded thread-safely: :meth:`drop_connections`, :meth:`stall`, :meth:`resume`.
    """

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("port", 0)
        self.simulator = RedPitayaSimulator(**kwargs)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="redpitaya-sim", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def host(self) -> str:
        """Host the simulator listens on."""
        return self.simulator.host

    @property
    def port(self) -> int:
        """Port the simulator listens on."""
        return self.simulator.port

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.simulator.start())
        except BaseException as exc:  # pragma: no cover - reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.simulator.stop())
        self._loop.close()

    def start(self) -> SimulatorThread:
        """Start the thread and wait (at most 10 s) until the server listens."""
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("simulator did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def call(self, fn: Callable[[], object], timeout: float = 5.0) -> object:
        """Run ``fn()`` on the simulator's loop and return its result."""
        fut: asyncio.Future = asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop)
        return fut.result(timeout)

    def drop_connections(self) -> None:
        """Abort every connection now."""
        self.call(self.simulator.drop_connections)

    def stall(self, seconds: float | None = None) -> None:
        """Stop answering (see :meth:`RedPitayaSimulator.stall`)."""
        self.call(lambda: self.simulator.stall(seconds))

    def resume(self) -> None:
        """End a stall."""
        self.call(self.simulator.resume)

    def stop(self) -> None:
        """Stop the server and join the thread (at most 10 s)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _as_coro(fn: Callable[[], object]) -> object:
    return fn()


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mimocorb2-redpitaya-sim",
        description="Red Pitaya STEMlab 125-14 SCPI server simulator (for mimocorb2 tests and demos).",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000, help="0: pick a free port (printed)")
    ap.add_argument("--rate", type=float, default=1000.0, help="pulse rate, Hz")
    ap.add_argument("--shape", default="exponential", choices=["exponential", "gaussian", "rectangular"])
    ap.add_argument("--rise-time", type=float, default=16e-9, help="s")
    ap.add_argument("--decay-time", type=float, default=240e-9, help="s")
    ap.add_argument("--width", type=float, default=80e-9, help="s (gaussian sigma, rectangular width)")
    ap.add_argument("--spectrum", default="uniform",
                    choices=["fixed", "uniform", "exponential", "gaussian", "lines"])
    ap.add_argument("--amplitude", type=float, default=0.5, help="V")
    ap.add_argument("--amplitude-min", type=float, default=0.05, help="V")
    ap.add_argument("--amplitude-max", type=float, default=0.9, help="V")
    ap.add_argument("--amplitude-sigma", type=float, default=0.05, help="V")
    ap.add_argument("--lines", default="0.3:1,0.6:0.5", help="V:weight,... for --spectrum lines")
    ap.add_argument("--noise", type=float, default=0.002, help="V rms")
    ap.add_argument("--offset", type=float, default=0.0, help="V baseline")
    ap.add_argument("--scale-in1", type=float, default=1.0)
    ap.add_argument("--scale-in2", type=float, default=-0.5)
    ap.add_argument("--delay-in2", type=float, default=0.0, help="s")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--ret-on-error", action="store_true", help="answer \\r\\n to failed queries")
    ap.add_argument("--no-lend", action="store_true",
                    help="behave like an older OS without ACQ:DATA:BYTE:ORDER")
    ap.add_argument("--no-fill", action="store_true",
                    help="behave like an OS before 1.04 without ACQ:TRig:FILL?")
    ap.add_argument("--drop-every", type=int, default=0, help="drop connections every n-th ACQ:START")
    ap.add_argument("--stall-every", type=int, default=0, help="stall every n-th ACQ:START")
    ap.add_argument("--stall-seconds", type=float, default=1.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry ``mimocorb2-redpitaya-sim``: serve until interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        lines = tuple(
            (float(v), float(w)) for v, w in (item.split(":") for item in args.lines.split(",") if item)
        )
        pulses = PulseConfig(
            rate=args.rate, shape=args.shape, rise_time=args.rise_time, decay_time=args.decay_time,
            width=args.width, spectrum=args.spectrum, amplitude=args.amplitude,
            amplitude_min=args.amplitude_min, amplitude_max=args.amplitude_max,
            amplitude_sigma=args.amplitude_sigma, lines=lines, noise=args.noise, offset=args.offset,
            scale_IN1=args.scale_in1, scale_IN2=args.scale_in2, delay_IN2=args.delay_in2,
        )
        sim = RedPitayaSimulator(
            args.host, args.port, pulses=pulses, seed=args.seed, ret_on_error=args.ret_on_error,
            supports_little_endian=not args.no_lend,
            supports_fill=not args.no_fill,
            faults=Faults(drop_every=args.drop_every, stall_every=args.stall_every,
                          stall_seconds=args.stall_seconds),
        )
    except ValueError as exc:
        print(f"mimocorb2-redpitaya-sim: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        await sim.start()
        print(f"listening on {sim.host}:{sim.port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
