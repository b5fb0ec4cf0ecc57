"""The simulated board: settings, the acquisition model, the buffers and every SCPI command.

Acquisition runs against a clock: after ``ACQ:START`` at time ``ts`` the write pointer
advances at ``125 MHz / decimation``. Arming the trigger draws the Poisson arrival
times and amplitudes of the pulses until one crosses the trigger level with the right
slope; the trigger time ``tt`` is when it crosses. ``STAT?`` says ``TD`` once
``now >= tt``; ``FILL?`` says ``1`` once the post-trigger samples (``8192 +
ACQ:TRig:DLY``) are written. The buffer contents are made once, when first needed
after that, with the trigger sample at ``ACQ:TPOS?``.

Nothing here does I/O: :meth:`Board.execute` turns one command line into the bytes the
server sends back (or a :class:`ServerAction`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .commands import (
    CommandTable,
    Pattern,
    ScpiFailure,
    bad_value,
    int_parameters,
    one_parameter,
    out_of_range,
    undefined,
)
from .hardware import (
    ADC_MAX,
    ADC_MIN,
    BUFFER_SAMPLES,
    DECIMATIONS,
    FULL_SCALE,
    HALF_BUFFER,
    sample_period,
    samples_in,
)
from .os_versions import OsProfile
from .signal import PulseConfig, PulseSource, Trigger

__all__ = ["Board", "ServerAction"]

_TRIGGER_SOURCES = ("DISABLED", "NOW", "CH1_PE", "CH1_NE", "CH2_PE", "CH2_NE", "EXT_PE",
                    "EXT_NE", "AWG_PE", "AWG_NE")


class ServerAction(Enum):
    """What a command asks of the server beyond an answer."""

    DROP_ALL = "drop"  #: close every connection (fault plan, or a crashed server)
    STALL = "stall"  #: stop answering for the fault plan's stall time


@dataclass
class _Acquisition:
    start_time: float
    start_pointer: int
    decimation: int
    post: int  #: samples written from the trigger sample on (8192 + delay)
    trigger: Trigger | None = None
    source: str = "DISABLED"
    materialized: bool = False
    stopped_at: float | None = None


class Board:
    """One simulated STEMlab 125-14 speaking the SCPI dialect of ``os``.

    ``stats`` is shared with the server (counters for tests and benchmarks);
    ``start_fault(n)`` says what the n-th ``ACQ:START`` does (``"drop"``, ``"stall"``
    or None); ``unknown_headers`` are treated as unknown commands (a fault for tests).
    """

    def __init__(
        self,
        os: OsProfile,
        pulses: PulseConfig,
        rng: np.random.Generator,
        clock: Callable[[], float],
        stats: dict[str, int],
        *,
        ret_on_error: bool = False,
        supports_little_endian: bool | None = None,
        supports_fill: bool | None = None,
        start_fault: Callable[[int], str | None] = lambda n: None,
        unknown_headers: frozenset[str] = frozenset(),
    ) -> None:
        if ret_on_error and not os.ret_on_error:
            raise ValueError(f"RP:RET_ON_ERROR needs OS 2.07-43 or later, not {os.version}")
        self.os = os
        self.pulses = pulses
        self.source = PulseSource(pulses, rng)
        self.clock = clock
        self.stats = stats
        self.start_fault = start_fault
        self.unknown_headers = frozenset(h.upper() for h in unknown_headers)
        #: Board-wide (every connection sees it), as on the real server.
        self.ret_on_error = ret_on_error
        self.supports_little_endian = os.little_endian if supports_little_endian is None else supports_little_endian
        self.supports_fill = os.fill_query if supports_fill is None else supports_fill
        #: ``ACQ:DEC`` values this board accepts.
        self.decimations: tuple[int, ...] = DECIMATIONS
        self.errors: deque[tuple[int, str]] = deque(maxlen=16)
        self.buffers = {1: np.zeros(BUFFER_SAMPLES, np.int16), 2: np.zeros(BUFFER_SAMPLES, np.int16)}
        self._write_pointer = 0
        self._acq: _Acquisition | None = None
        self.reset_settings()
        self.commands = CommandTable(self._patterns())

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

    # ----------------------------------------------------------------- execution
    def execute(self, line: str) -> bytes | ServerAction | None:
        """Run one command line; return the answer with its terminator, None, or an action."""
        line = line.strip()
        if not line:
            return None
        self.stats["commands"] += 1
        header, _, rest = line.partition(" ")
        params = [p.strip() for p in rest.split(",")] if rest.strip() else []
        is_query = header.endswith("?")
        if is_query:
            self.stats["queries"] += 1
        found = None if header.upper() in self.unknown_headers else self.commands.lookup(header)
        try:
            if found is None:
                raise undefined()
            pattern, suffixes = found
            answer = pattern.handler(suffixes, params)
        except ScpiFailure as fail:
            self.stats["errors"] += 1
            self.errors.append((fail.code, fail.message))
            # RET_ON_ERROR answers failed queries it knows; unknown ones still get nothing.
            if is_query and found is not None and self.ret_on_error:
                return b"\r\n"
            return None
        if answer is None or isinstance(answer, ServerAction):
            return answer
        assert isinstance(answer, bytes)
        if answer.startswith(b"#") and not self.os.block_terminated:
            return answer  # before 2.00-18 a binary block has no terminator
        return answer + b"\r\n"

    def _patterns(self) -> list[Pattern]:
        p = Pattern
        os = self.os
        table = [
            p("*IDN?", lambda s, a: f"REDPITAYA,INSTR2020,0,SIM-{os.version}".encode()),
            p("*STB?", self._q_stb),
            p("*CLS", self._c_cls),
            p("*RST", lambda s, a: self.reset_settings()),
            p("SYSTem:ERRor:NEXT?", self._q_err_next),
            p("SYSTem:ERRor:COUNt?", lambda s, a: str(len(self.errors)).encode()),
            p("ACQ:RST", lambda s, a: self.reset_settings()),
            p("ACQ:START", self._c_start),
            p("ACQ:STOP", self._c_stop),
            p("ACQ:DEC", self._c_dec),
            p("ACQ:DEC?", lambda s, a: str(self.decimation).encode()),
            p("ACQ:AVG", self._c_avg),
            p("ACQ:AVG?", lambda s, a: b"ON" if self.averaging else b"OFF"),
            p("ACQ:TRig", self._c_trig),
            p("ACQ:TRig:STAT?", self._q_trig_stat),
            p("ACQ:TRig:FILL?", self._q_trig_fill),
            p("ACQ:TRig:LEV", self._c_level),
            p("ACQ:TRig:LEV?", lambda s, a: f"{self.trigger_level:.6g}".encode()),
            p("ACQ:TRig:DLY", self._c_delay),
            p("ACQ:TRig:DLY?", lambda s, a: str(self.trigger_delay).encode()),
            p("ACQ:TRig:HYST", self._c_hyst),
            p("ACQ:TRig:HYST?", lambda s, a: f"{self.trigger_hysteresis:.6g}".encode()),
            p("ACQ:TPOS?", self._q_tpos),
            p("ACQ:WPOS?", lambda s, a: str(self.current_pointer()).encode()),
            p("ACQ:BUF:SIZE?", lambda s, a: str(BUFFER_SAMPLES).encode()),
            p("ACQ:SOUR#:GAIN", self._c_gain),
            p("ACQ:SOUR#:GAIN?", lambda s, a: self.gain[self._channel(s)].encode()),
            p("ACQ:DATA:FORMAT", self._c_format),
            p("ACQ:DATA:UNITS", self._c_units),
            p("ACQ:DATA:UNITS?", lambda s, a: self.data_units.encode()),
            p("ACQ:DATA:BYTE:ORDER", self._c_byte_order),
            p("ACQ:SOUR#:DATA?", self._q_data_all),
        ]
        if os.older:
            # Before 2.00-18 only the short word is accepted: STA, not STArt/START.
            table += [
                p("ACQ:SOUR#:DATA:STA:N?", self._q_data_start_n),
                p("ACQ:SOUR#:DATA:STA:End?", self._q_data_start_end),
            ]
        else:
            table += [
                p("SYSTem:BRD:Name?", lambda s, a: b"STEMlab 125-14 v1.0 (simulated)"),
                p("ACQ:SOUR#:DATA:STArt:N?", self._q_data_start_n),
                p("ACQ:SOUR#:DATA:STArt:End?", self._q_data_start_end),
            ]
        if os.dec_factor:
            table += [p("ACQ:DEC:Factor", self._c_dec), p("ACQ:DEC:Factor?", lambda s, a: str(self.decimation).encode())]
        if os.ret_on_error:
            table.append(p("RP:RET_ON_ERROR", self._c_ret_on_error))
        return table

    @staticmethod
    def _channel(suffixes: Sequence[int]) -> int:
        if suffixes[0] not in (1, 2):
            raise ScpiFailure(-114, "Header suffix out of range")
        return suffixes[0]

    # ----------------------------------------------------------------- commands
    def _q_stb(self, s: list[int], a: list[str]) -> bytes:
        return str(0x04 if self.errors else 0).encode()

    def _c_cls(self, s: list[int], a: list[str]) -> None:
        self.errors.clear()

    def _q_err_next(self, s: list[int], a: list[str]) -> bytes:
        if not self.errors:
            return b'0,"No error"'
        code, msg = self.errors.popleft()
        return f'{code},"{msg}"'.encode()

    def _c_ret_on_error(self, s: list[int], a: list[str]) -> None:
        value = one_parameter(a, "RP:RET_ON_ERROR").upper()
        if value not in ("ON", "OFF", "1", "0"):
            raise bad_value(value)
        self.ret_on_error = value in ("ON", "1")

    def _c_dec(self, s: list[int], a: list[str]) -> None:
        text = one_parameter(a, "ACQ:DEC")
        try:
            dec = int(text)
        except ValueError:
            raise ScpiFailure(-104, f"Data type error: {text}") from None
        if dec not in self.decimations:
            raise out_of_range(f"decimation {dec}")
        self.decimation = dec

    def _c_avg(self, s: list[int], a: list[str]) -> None:
        value = one_parameter(a, "ACQ:AVG").upper()
        if value not in ("ON", "OFF"):
            raise bad_value(value)
        self.averaging = value == "ON"

    def _c_level(self, s: list[int], a: list[str]) -> None:
        text = one_parameter(a, "ACQ:TRig:LEV")
        try:
            volts = float(text[:-1]) if text.upper().endswith("V") else float(text)
        except ValueError:
            raise ScpiFailure(-104, f"Data type error: {text}") from None
        if not -20.0 <= volts <= 20.0:
            raise out_of_range(f"level {volts}")
        self.trigger_level = volts

    def _c_delay(self, s: list[int], a: list[str]) -> None:
        text = one_parameter(a, "ACQ:TRig:DLY")
        try:
            delay = int(text)
        except ValueError:
            raise ScpiFailure(-104, f"Data type error: {text}") from None
        if not -HALF_BUFFER <= delay <= HALF_BUFFER:
            raise out_of_range(f"delay {delay}")
        self.trigger_delay = delay

    def _c_hyst(self, s: list[int], a: list[str]) -> None:
        try:
            self.trigger_hysteresis = float(one_parameter(a, "ACQ:TRig:HYST"))
        except ValueError:
            raise ScpiFailure(-104, "Data type error") from None

    def _c_gain(self, s: list[int], a: list[str]) -> None:
        value = one_parameter(a, "ACQ:SOUR:GAIN").upper()
        if value not in FULL_SCALE:
            raise bad_value(value)
        self.gain[self._channel(s)] = value

    def _c_format(self, s: list[int], a: list[str]) -> None:
        value = one_parameter(a, "ACQ:DATA:FORMAT").upper()
        if value not in ("BIN", "ASCII"):
            raise bad_value(value)
        self.data_format = value

    def _c_units(self, s: list[int], a: list[str]) -> None:
        value = one_parameter(a, "ACQ:DATA:UNITS").upper()
        if value not in ("RAW", "VOLTS"):
            raise bad_value(value)
        self.data_units = value

    def _c_byte_order(self, s: list[int], a: list[str]) -> None:
        if not self.supports_little_endian:
            raise undefined()  # an OS that does not know the command
        value = one_parameter(a, "ACQ:DATA:BYTE:ORDER").upper()
        if value not in ("LEND", "BEND"):
            raise bad_value(value)
        self.little_endian = value == "LEND"

    # ----------------------------------------------------------------- acquisition
    def current_pointer(self) -> int:
        """Write pointer now (the sample position to be written next)."""
        acq = self._acq
        if acq is None:
            return self._write_pointer
        end = self._end_time(acq)
        t = self.clock() if acq.stopped_at is None else acq.stopped_at
        if t >= end:
            # Invariant: a finished acquisition ends `post` samples after the trigger.
            return (self._trigger_pointer(acq) + acq.post) % BUFFER_SAMPLES
        n = samples_in(t - acq.start_time, sample_period(acq.decimation))
        return (acq.start_pointer + n) % BUFFER_SAMPLES

    def _end_time(self, acq: _Acquisition) -> float:
        if acq.trigger is None or acq.trigger.never:
            return math.inf
        return acq.trigger.time + acq.post * sample_period(acq.decimation)

    def _c_start(self, s: list[int], a: list[str]) -> ServerAction | None:
        self.stats["acquisitions"] += 1
        fault = self.start_fault(self.stats["acquisitions"])
        if fault == "drop":
            return ServerAction.DROP_ALL
        self._materialize()
        self._write_pointer = self.current_pointer()
        self._acq = _Acquisition(
            start_time=self.clock(),
            start_pointer=self._write_pointer,
            decimation=self.decimation,
            post=HALF_BUFFER + self.trigger_delay,
        )
        return ServerAction.STALL if fault == "stall" else None

    def _c_stop(self, s: list[int], a: list[str]) -> None:
        if self._acq is not None and self._acq.stopped_at is None:
            self._acq.stopped_at = self.clock()
            self._acq.source = "DISABLED"

    def _c_trig(self, s: list[int], a: list[str]) -> None:
        source = one_parameter(a, "ACQ:TRig").upper()
        if source not in _TRIGGER_SOURCES:
            raise bad_value(source)
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
            acq.trigger = Trigger(now, 0.0, 0, False)
        else:
            channel = 2 if source.startswith("CH2") else 1
            acq.trigger = self.source.draw_trigger(
                now, source, acq.decimation, self.trigger_level, FULL_SCALE[self.gain[channel]]
            )
        if not acq.trigger.never:
            self.stats["triggers"] += 1

    def _triggered(self, acq: _Acquisition) -> bool:
        return acq.trigger is not None and self.clock() >= acq.trigger.time

    def _q_trig_stat(self, s: list[int], a: list[str]) -> bytes:
        acq = self._acq
        if self.os.stat_means_received:
            # 2.05-37 and later: TD means "a trigger was received".
            return b"TD" if acq is not None and self._triggered(acq) else b"WAIT"
        # Up to 2.04-35: TD means "trigger disabled", so it also reads TD before arming.
        if acq is None or acq.trigger is None or acq.stopped_at is not None:
            return b"TD"
        return b"TD" if self._triggered(acq) else b"WAIT"

    def _q_trig_fill(self, s: list[int], a: list[str]) -> bytes:
        if not self.supports_fill:
            raise undefined()  # ACQ:TRig:FILL? exists from OS 1.04-28
        acq = self._acq
        if acq is None or acq.trigger is None:
            return b"0"
        return b"1" if self.clock() >= self._end_time(acq) else b"0"

    def _q_tpos(self, s: list[int], a: list[str]) -> bytes:
        acq = self._acq
        if acq is None or not self._triggered(acq):
            return str(self.current_pointer()).encode()
        return str(self._trigger_pointer(acq)).encode()

    def _trigger_pointer(self, acq: _Acquisition) -> int:
        assert acq.trigger is not None
        n = samples_in(acq.trigger.time - acq.start_time, sample_period(acq.decimation))
        return (acq.start_pointer + n) % BUFFER_SAMPLES

    def _to_raw(self, volts: np.ndarray | float, channel: int) -> np.ndarray | float:
        return np.asarray(volts) / FULL_SCALE[self.gain[channel]] * (ADC_MAX + 1)

    def _materialize(self) -> None:
        """Write the finished acquisition into the circular buffers (once)."""
        acq = self._acq
        if acq is None or acq.materialized:
            return
        now = self.clock()
        stop = acq.stopped_at
        if stop is None and now < self._end_time(acq):
            return  # still running: the buffer is written when it completes or stops
        acq.materialized = True
        dt = sample_period(acq.decimation)
        cfg = self.pulses
        trig = acq.trigger
        fired = trig is not None and not trig.never and (stop is None or trig.time <= stop)
        if fired:
            assert trig is not None
            n_written = samples_in(trig.time - acq.start_time, dt) + acq.post
            pre_len = BUFFER_SAMPLES - acq.post  # samples before the trigger sample
        else:
            t_end = stop if stop is not None else now
            n_written = samples_in(t_end - acq.start_time, dt)
            pre_len = BUFFER_SAMPLES
        fresh = min(n_written, BUFFER_SAMPLES)
        if fresh <= 0:
            return
        noise_scale = cfg.noise / (math.sqrt(acq.decimation) if self.averaging else 1.0)
        shape, _ = self.source.template(acq.decimation)
        for ch in (1, 2):
            volts = cfg.offset + noise_scale * self.source.noise(BUFFER_SAMPLES).astype(np.float64)
            if fired and trig is not None and trig.pulse:
                shift = int(round(cfg.delay_IN2 / dt)) if ch == 2 else 0
                # content index pre_len is the trigger sample = pulse sample trig.crossing
                start = pre_len - trig.crossing + shift
                lo, hi = max(0, start), min(BUFFER_SAMPLES, start + shape.size)
                if hi > lo:
                    volts[lo:hi] += trig.amplitude * cfg.scale(ch) * shape[lo - start : hi - start]
            raw = np.clip(np.round(self._to_raw(volts, ch)), ADC_MIN, ADC_MAX).astype(np.int16)
            # Only the last `fresh` samples were written in this acquisition.
            content = raw[BUFFER_SAMPLES - fresh :]
            first = (acq.start_pointer + n_written - fresh) % BUFFER_SAMPLES
            _write_circular(self.buffers[ch], first, content)
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
        prev = (tpos - 1) % BUFFER_SAMPLES
        if source.endswith("PE"):
            if buf[tpos] < level:
                buf[tpos] = min(ADC_MAX, math.ceil(level))
            if buf[prev] >= level:
                buf[prev] = max(ADC_MIN, math.ceil(level) - 1)
        else:
            if buf[tpos] > level:
                buf[tpos] = max(ADC_MIN, math.floor(level))
            if buf[prev] <= level:
                buf[prev] = min(ADC_MAX, math.floor(level) + 1)

    # ----------------------------------------------------------------- data reads
    def _read(self, ch: int, start: int, count: int, *, positional: bool = True) -> bytes | ServerAction:
        self._materialize()
        if not 0 <= start < BUFFER_SAMPLES:
            raise out_of_range(f"start {start}")
        if not 1 <= count <= BUFFER_SAMPLES:
            raise out_of_range(f"count {count}")
        if positional and start + count > BUFFER_SAMPLES and self.os.wrapping_read_crashes:
            # Before 2.00-18 the server copies past a stack buffer here and dies.
            self.stats["crashes"] += 1
            return ServerAction.DROP_ALL
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

    def _q_data_all(self, s: list[int], a: list[str]) -> bytes | ServerAction:
        ch = self._channel(s)
        self._materialize()
        # The whole buffer from the oldest sample (the write pointer) on.
        return self._read(ch, self.current_pointer(), BUFFER_SAMPLES, positional=False)

    def _q_data_start_n(self, s: list[int], a: list[str]) -> bytes | ServerAction:
        ch = self._channel(s)
        start, count = int_parameters(a, 2)
        return self._read(ch, start, count)

    def _q_data_start_end(self, s: list[int], a: list[str]) -> bytes | ServerAction:
        ch = self._channel(s)
        start, end = int_parameters(a, 2)
        if not 0 <= end < BUFFER_SAMPLES:
            raise out_of_range(f"end {end}")
        return self._read(ch, start, (end - start) % BUFFER_SAMPLES + 1)


def _write_circular(buf: np.ndarray, first: int, content: np.ndarray) -> None:
    n = content.size
    head = min(n, BUFFER_SAMPLES - first)
    buf[first : first + head] = content[:head]
    if n > head:
        buf[: n - head] = content[head:]
