"""Red Pitaya STEMlab 125-14 waveform importer over SCPI (``importers.redpitaya.waveform``).

The importer runs a small asyncio SCPI client inside its worker process: each event
is fetched by ``loop.run_until_complete(session.next_event())`` from the generator
that the :class:`~mimocorb2.worker_templates.Importer` template drives, so no read
ever blocks on the socket without a timeout. See ``docs/redpitaya.md`` for the
mapping of every config key onto SCPI commands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from mimocorb2.datapath import heartbeat as _heartbeat
from mimocorb2.functions._common import ConfigChecker, is_int, is_number, single_process
from mimocorb2.scpi import ScpiClient, ScpiConnectionError, ScpiError, ScpiQueryError
from mimocorb2.scpi.codec import decode_block_payload

__all__ = [
    "ADC_CLOCK",
    "BoardDialect",
    "BoardError",
    "FULL_SCALE",
    "GAINS",
    "INPUTS",
    "MAXIMUM_SAMPLES",
    "MAX_ADC_VALUE",
    "MIN_ADC_VALUE",
    "SAMPLE_RATES",
    "TRIGGER_MODES",
    "TRIGGER_SLOPES",
    "TRIGGER_SOURCES",
    "RedPitayaSession",
    "SessionState",
    "Status",
    "WaveformConfig",
    "parse_config",
    "waveform",
]

#: ADC clock, samples per second.
ADC_CLOCK = 125_000_000
#: Allowed ``sample_rate`` values: 125 MHz samples averaged into one (``ACQ:DEC``).
SAMPLE_RATES: tuple[int, ...] = tuple(2**k for k in range(17))
#: Allowed ``trigger_slope`` values.
TRIGGER_SLOPES: tuple[str, ...] = ("rising", "falling")
#: Allowed ``trigger_mode`` values (``auto``: force a trigger after ``auto_trigger_timeout``).
TRIGGER_MODES: tuple[str, ...] = ("normal", "auto")
#: The board's analog inputs (also the sink's field names).
INPUTS: tuple[str, ...] = ("IN1", "IN2")
#: Allowed ``trigger_source`` values: an input, or the external trigger connector.
TRIGGER_SOURCES: tuple[str, ...] = INPUTS + ("EXT",)
#: Allowed ``gain`` values (the inputs' jumper setting) and their full scale in volts.
GAINS: tuple[str, ...] = ("LV", "HV")
FULL_SCALE: dict[str, float] = {"LV": 1.0, "HV": 20.0}
#: 14-bit signed ADC range, RAW units.
MIN_ADC_VALUE, MAX_ADC_VALUE = -8192, 8191
#: Samples per channel in the board's acquisition buffer.
MAXIMUM_SAMPLES = 16384
_HALF = MAXIMUM_SAMPLES // 2

_SLOPE_CODE = {"rising": "PE", "falling": "NE"}
_SOURCE_CODE = {"IN1": "CH1", "IN2": "CH2", "EXT": "EXT"}
_FUNCTION = "importers.redpitaya.waveform"

_REQUIRED = ("ip", "sample_rate", "trigger_level", "number_of_samples_before_trigger")


class BoardError(RuntimeError):
    """A persistent board problem that reconnecting won't fix.

    The board refused the configuration, answers no data query the importer knows, or
    refused the same query again right after a fresh configuration. The message names
    the board, its OS generation and the board's own error text.
    """


@dataclass(frozen=True)
class WaveformConfig:
    """A checked configuration of the importer (see :func:`parse_config`)."""

    ip: str
    sample_rate: int
    trigger_level: int
    number_of_samples_before_trigger: int
    data_length: int
    port: int = 5000
    negator_IN1: bool = False
    negator_IN2: bool = False
    trigger_slope: str = "rising"
    trigger_mode: str = "normal"
    trigger_source: str = "IN1"
    set_size: int = 100
    timeout: float = 2.0
    gain: str = "LV"
    max_events: int | None = None
    auto_trigger_timeout: float = 0.1
    poll_interval: float = 0.0005
    reconnect_max_delay: float = 30.0

    # -- derived SCPI values -------------------------------------------------------
    @property
    def post_trigger_samples(self) -> int:
        """Samples the board records from the trigger sample on."""
        return self.data_length - self.number_of_samples_before_trigger

    @property
    def trigger_delay(self) -> int:
        """``ACQ:TRig:DLY``: 0 would leave 8192 samples after the trigger."""
        return self.post_trigger_samples - _HALF

    @property
    def trigger_level_volts(self) -> float:
        """``ACQ:TRig:LEV``: the raw ADC level converted with the gain's full scale."""
        return self.trigger_level / (MAX_ADC_VALUE + 1) * FULL_SCALE[self.gain]

    @property
    def trigger_command(self) -> str:
        """``ACQ:TRig <source>`` that arms the trigger, e.g. ``ACQ:TRig CH1_PE``."""
        return f"ACQ:TRig {_SOURCE_CODE[self.trigger_source]}_{_SLOPE_CODE[self.trigger_slope]}"

    @property
    def sample_period(self) -> float:
        """Seconds between two stored samples."""
        return self.sample_rate / ADC_CLOCK

    def setup_commands(self) -> list[str]:
        """The set commands that configure an acquisition (no answers expected)."""
        return [
            "ACQ:RST",
            "ACQ:DATA:FORMAT BIN",
            "ACQ:DATA:UNITS RAW",
            f"ACQ:DEC {self.sample_rate}",
            "ACQ:AVG ON",
            f"ACQ:SOUR1:GAIN {self.gain}",
            f"ACQ:SOUR2:GAIN {self.gain}",
            f"ACQ:TRig:LEV {self.trigger_level_volts:.6f}",
            f"ACQ:TRig:DLY {self.trigger_delay}",
        ]


#: Defaults of the optional keys: the defaults of :class:`WaveformConfig`, defined once there.
_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(WaveformConfig) if f.default is not MISSING
}
_KNOWN = frozenset(_REQUIRED) | frozenset(_DEFAULTS)


def parse_config(
    config: Mapping[str, Any], data_length: int, worker: str = "?"
) -> WaveformConfig:
    """Check every key of ``config`` (and ``data_length``); return the checked config.

    Uses the shared :class:`~mimocorb2.functions._common.ConfigChecker`: raises
    :class:`~mimocorb2.errors.SetupError` listing every problem, each naming the key
    (``Workers.<worker>.config.<key>``), what is allowed and the value given.
    """
    return _parse(ConfigChecker.for_config(config, worker, _FUNCTION), data_length)


def _parse(check: ConfigChecker, data_length: int) -> WaveformConfig:
    """:func:`parse_config` on a checker that may already hold buffer problems."""
    config = check.config
    check.reject_unknown(_KNOWN)
    values = {key: check.raw(key) for key in _REQUIRED}  # a missing one is a problem
    values.update({key: check.raw(key, default) for key, default in _DEFAULTS.items()})

    def integer_in(key: str, lo: int, hi: int, lo_text: str = "", hi_text: str = "") -> None:
        value = values[key]
        if key in _REQUIRED and key not in config:
            return  # already reported as missing
        if not is_int(value) or not lo <= int(value) <= hi:
            check.expected(key, f"an integer from {lo_text or lo} to {hi_text or hi}", value)

    def choice(key: str, allowed: tuple[Any, ...], name: str) -> None:
        if key in config and (values[key] not in allowed or isinstance(values[key], bool)):
            check.expected(key, f"one of {name} {list(allowed)}", values[key])

    ip = values["ip"]
    if "ip" in config and (not isinstance(ip, str) or not ip.strip()):
        check.expected("ip", "a host name or IP address (a non-empty string)", ip)
    integer_in("port", 1, 65535)
    if "sample_rate" in config and (not is_int(values["sample_rate"])
                                    or int(values["sample_rate"]) not in SAMPLE_RATES):
        check.expected("sample_rate", f"one of SAMPLE_RATES {list(SAMPLE_RATES)}", values["sample_rate"])
    for key in ("negator_IN1", "negator_IN2"):
        if not isinstance(values[key], bool | np.bool_):
            check.expected(key, "true or false", values[key])
    choice("trigger_slope", TRIGGER_SLOPES, "TRIGGER_SLOPES")
    choice("trigger_mode", TRIGGER_MODES, "TRIGGER_MODES")
    choice("trigger_source", TRIGGER_SOURCES, "INPUTS (or 'EXT')")
    choice("gain", GAINS, "GAINS")
    integer_in("trigger_level", MIN_ADC_VALUE, MAX_ADC_VALUE,
               f"MIN_ADC_VALUE={MIN_ADC_VALUE}", f"MAX_ADC_VALUE={MAX_ADC_VALUE} (ADC units)")
    if not 1 <= data_length <= MAXIMUM_SAMPLES:
        check.buffer_problem(
            "sinks", f"data_length = {data_length}: must be from 1 to MAXIMUM_SAMPLES={MAXIMUM_SAMPLES}"
        )
    else:
        integer_in("number_of_samples_before_trigger", 0, data_length - 1,
                   hi_text=f"data_length - 1 = {data_length - 1}")
    for key in ("set_size", "max_events"):
        value = values[key]
        if not (key == "max_events" and value is None) and (not is_int(value) or int(value) < 1):
            check.expected(key, "an integer >= 1", value)
    for key in ("timeout", "auto_trigger_timeout", "reconnect_max_delay"):
        if not is_number(values[key]) or float(values[key]) <= 0:
            check.expected(key, "a number of seconds > 0", values[key])
    if not is_number(values["poll_interval"]) or float(values["poll_interval"]) < 0:
        check.expected("poll_interval", "a number of seconds >= 0", values["poll_interval"])
    check.done()
    return WaveformConfig(
        ip=str(ip).strip(),
        sample_rate=int(values["sample_rate"]),
        trigger_level=int(values["trigger_level"]),
        number_of_samples_before_trigger=int(values["number_of_samples_before_trigger"]),
        data_length=int(data_length),
        port=int(values["port"]),
        negator_IN1=bool(values["negator_IN1"]),
        negator_IN2=bool(values["negator_IN2"]),
        trigger_slope=str(values["trigger_slope"]),
        trigger_mode=str(values["trigger_mode"]),
        trigger_source=str(values["trigger_source"]),
        set_size=int(values["set_size"]),
        timeout=float(values["timeout"]),
        gain=str(values["gain"]),
        max_events=None if values["max_events"] is None else int(values["max_events"]),
        auto_trigger_timeout=float(values["auto_trigger_timeout"]),
        poll_interval=float(values["poll_interval"]),
        reconnect_max_delay=float(values["reconnect_max_delay"]),
    )


# ----------------------------------------------------------------------------- status
class SessionState(str, Enum):
    """Where the importer's conversation with the board stands (``Status.state``)."""

    STARTING = "starting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    FAILED = "failed"  #: a BoardError ended the worker; ``last_error`` says why


@dataclass
class Status:
    """Connection state and counters, written to ``RUN_DIR/status/<worker>.json``."""

    worker: str
    host: str
    port: int
    state: SessionState = SessionState.STARTING
    reconnects: int = 0
    events: int = 0
    round_trips: int = 0
    forced_triggers: int = 0
    os_generation: str | None = None  #: what the board speaks (see :class:`BoardDialect`)
    board: str | None = None  #: ``SYST:BRD:Name?`` answer (OS 2.00-18 and later)
    data_query: str | None = None  #: the positional data query the board answers
    byte_order: str = "big"
    fill_query: bool = True  #: the board knows ACQ:TRig:FILL? (OS 1.04-28 and later)
    last_error: str | None = None
    pid: int = field(default_factory=os.getpid)
    updated: float = 0.0


class _StatusFile:
    """Writes :class:`Status` atomically (temp file + rename) when told to."""

    def __init__(self, path: Path | None, status: Status) -> None:
        self.path = path
        self.status = status

    def write(self) -> None:
        if self.path is None:
            return
        self.status.updated = time.time()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(self.status), indent=1) + "\n")
            os.replace(tmp, self.path)  # readers see the old or the new file, never half
        except OSError:
            pass  # status is informative; never let it stop acquisition


# ----------------------------------------------------------------------------- dialect
#: ``OsGeneration`` texts, as logged and written to the status file.
OLDER_OS = "before 2.00-18 (1.04-18 to 2.00-15)"
CURRENT_OS = "2.00-18 or later"


@dataclass(frozen=True)
class BoardDialect:
    """What the connected board's SCPI server speaks, found out at every connect.

    ``SYST:BRD:Name?`` exists exactly from OS 2.00-18 on. Older servers spell the data
    query ``ACQ:SOUR<n>:DATA:STA:N?``, send blocks without ``\\r\\n`` (the client accepts
    both) and crash on a read past the end of the 16384-sample buffer.
    """

    older: bool
    board: str | None = None
    spelling: str = "STArt"  #: the middle word of the positional data query

    @property
    def generation(self) -> str:
        """The OS generation as people read it."""
        return OLDER_OS if self.older else CURRENT_OS

    @property
    def split_wrapping_reads(self) -> bool:
        """Invariant: on older servers no read ever has ``start + n > 16384``."""
        return self.older

    def data_query(self, channel: int) -> str:
        """The positional data query for ``channel`` (without its arguments)."""
        return f"ACQ:SOUR{channel}:DATA:{self.spelling}:N?"


def read_pieces(start: int, n: int, split: bool) -> list[tuple[int, int]]:
    """``(start, count)`` reads covering ``n`` samples from ``start`` in the circular buffer.

    With ``split`` a read that would wrap past the buffer end becomes two, so that
    ``start + count <= MAXIMUM_SAMPLES`` holds for every piece.
    """
    if split and start + n > MAXIMUM_SAMPLES:
        head = MAXIMUM_SAMPLES - start
        return [(start, head), (0, n - head)]
    return [(start, n)]


# ----------------------------------------------------------------------------- session
class RedPitayaSession:
    """One importer's conversation with a board: configure, acquire, reconnect.

    Use from a coroutine: ``event = await session.next_event()`` returns one structured
    array of ``dtype`` (fields ``IN1``/``IN2`` filled, the trigger at index
    ``number_of_samples_before_trigger``). Connection problems are absorbed: the
    session logs them, reconnects with exponential backoff, re-sends the
    configuration and carries on. Only :class:`BoardError` escapes (configuration
    refused, no data query the board answers, or the same refusal again right after a
    fresh configuration); the status file then says ``failed`` with the board's error.
    While waiting for a trigger or a reconnect, ``should_stop()`` is asked regularly;
    when it says True, :meth:`next_event` returns ``None``.
    """

    def __init__(
        self,
        cfg: WaveformConfig,
        dtype: np.dtype,
        *,
        logger: logging.Logger | None = None,
        status_path: Path | None = None,
        worker: str = "redpitaya",
        should_stop: Callable[[], bool] | None = None,
        heartbeat: Callable[[], None] = _heartbeat.beat,
    ) -> None:
        self.cfg = cfg
        self.should_stop = should_stop or (lambda: False)
        # Waiting for triggers or for the board is being alive: the supervisor's
        # stall detection must not kill the importer for it.
        self.heartbeat = heartbeat
        self.dtype = np.dtype(dtype)
        self.log = logger or logging.getLogger("mimocorb2.importers.redpitaya")
        # block_terminator=None: blocks with or without "\r\n" (the OS decides).
        self.client = ScpiClient(cfg.ip, cfg.port, timeout=cfg.timeout, logger=self.log)
        self.status = Status(worker=worker, host=cfg.ip, port=cfg.port)
        self._status_file = _StatusFile(status_path, self.status)
        self.byte_order: str = "big"
        self.has_fill = True  # ACQ:TRig:FILL? known (OS 1.04-28 and later)
        self.dialect = BoardDialect(older=False)
        self._armed_start: float | None = None  # wall time of the ACQ:START in flight
        self._backoff = 0.0
        self._events_at_set = 0
        self._set_started = time.monotonic()
        # Invariant: _fresh is True from a (re)configuration until the next event is
        # delivered; _last_refusal is the last query refusal seen while fresh.
        self._fresh = True
        self._last_refusal: tuple[str, tuple[tuple[int, str], ...]] | None = None

    @property
    def where(self) -> str:
        """The board as named in messages."""
        return f"Red Pitaya {self.cfg.ip}:{self.cfg.port}"

    # -- state -------------------------------------------------------------------
    def _set_state(self, state: SessionState, error: str | None = None) -> None:
        changed = state != self.status.state or (error is not None and error != self.status.last_error)
        self.status.state = state
        if error is not None:
            self.status.last_error = error
        self.status.round_trips = self.client.round_trips
        if changed:
            self._status_file.write()

    def _fail(self, exc: BoardError) -> BoardError:
        """Record a fatal board error in the status file and the log; return it to raise."""
        self.log.error("%s", exc)
        self._set_state(SessionState.FAILED, f"BoardError: {exc}")
        return exc

    @property
    def round_trips(self) -> int:
        """SCPI round trips so far (including configuration and reconnects)."""
        return self.client.round_trips

    # -- connection ----------------------------------------------------------------
    async def connect(self) -> None:
        """Connect and configure; retry with backoff until it works (BoardError aside)."""
        first = self.status.state in (SessionState.STARTING, SessionState.STOPPED)
        while True:
            self._set_state(SessionState.CONNECTING if first else SessionState.RECONNECTING)
            self._fresh = True
            try:
                await self.client.connect()
                await self._configure()
            except ScpiError as exc:
                await self.client.close()
                if isinstance(exc, ScpiQueryError):
                    self._check_repeated_refusal(exc)
                await self._wait_backoff(exc)
                if self.should_stop():
                    return
                continue
            self._set_state(SessionState.CONNECTED)
            self.log.info(
                "connected to %s: OS %s%s; data query %s, %s-endian blocks, ACQ:TRig:FILL? %s%s",
                self.where, self.dialect.generation,
                f" (board {self.dialect.board!r})" if self.dialect.board else "",
                self.dialect.data_query(1), self.byte_order,
                "known" if self.has_fill else "unknown (the post-trigger time is waited out)",
                "; reads past the buffer end are split in two" if self.dialect.split_wrapping_reads else "",
            )
            return

    async def _wait_backoff(self, exc: BaseException) -> None:
        self._backoff = min(self.cfg.reconnect_max_delay, max(0.05, self._backoff * 2))
        self.log.warning("%s: %s; retrying in %.2f s", self.where, exc, self._backoff)
        self._set_state(self.status.state, f"{type(exc).__name__}: {exc}")
        deadline = time.monotonic() + self._backoff
        # sleep in short steps so that a stop request is seen within 0.1 s
        while (left := deadline - time.monotonic()) > 0 and not self.should_stop():
            self.heartbeat()
            await asyncio.sleep(min(left, 0.1))

    def _check_repeated_refusal(self, exc: ScpiQueryError) -> None:
        """The same refusal again right after a fresh configuration is a BoardError."""
        signature = (exc.command.split(" ")[0], tuple(exc.errors))
        if self._fresh and signature == self._last_refusal:
            errors = "; ".join(f"{code},{msg}" for code, msg in exc.errors) or "no error text"
            raise self._fail(BoardError(
                f"{self.where} (OS {self.dialect.generation}) refused {exc.command!r} again "
                f"right after a fresh configuration: {errors}; reconnecting will not help"
            ))
        self._last_refusal = signature if self._fresh else None

    async def _detect_dialect(self) -> BoardDialect:
        """Find out the OS generation: ``SYST:BRD:Name?`` exists exactly from 2.00-18."""
        name = await self.client.probe("SYST:BRD:Name?")
        if name is None:
            return BoardDialect(older=True, spelling="STA")
        return BoardDialect(older=False, board=str(name).strip(), spelling="STArt")

    async def _check_data_query(self, dialect: BoardDialect) -> BoardDialect:
        """A one-sample read with the generation's spelling (then the other one).

        Raises :class:`BoardError` when the board answers neither: the importer cannot
        read waveforms from it.
        """
        refused: list[str] = []
        for spelling in dict.fromkeys((dialect.spelling, "STA", "STArt")):
            candidate = BoardDialect(dialect.older, dialect.board, spelling)
            if await self.client.probe(f"{candidate.data_query(1)} 0,1", "block") is not None:
                if spelling != dialect.spelling:
                    self.log.warning("%s: OS %s answers %s, not the expected spelling",
                                     self.where, dialect.generation, candidate.data_query(1))
                return candidate
            refused.append(f"{candidate.data_query(1)} -> {self.client.last_probe_errors}")
        raise BoardError(
            f"{self.where} (OS {dialect.generation}) answers no positional data query "
            f"({'; '.join(refused)}); the importer needs ACQ:SOUR<n>:DATA:STA:N? (OS 1.04-18 "
            "to 2.00-15) or ACQ:SOUR<n>:DATA:STArt:N? (OS 2.00-18 and later) on a STEMlab 125-14"
        )

    async def _configure(self) -> None:
        """Find out what the board speaks, send the configuration, probe optional queries."""
        client = self.client
        dialect = await self._detect_dialect()
        self.dialect = dialect
        await client.write("*CLS", *self.cfg.setup_commands())
        errors = await client.check_errors()
        if errors:
            raise BoardError(
                f"{self.where} (OS {dialect.generation}) refused the configuration "
                f"{self.cfg.setup_commands()}: {errors}"
            )
        # Newer OS versions know little-endian blocks (no byte swap needed); older ones
        # queue "Undefined header" and keep sending big-endian blocks.
        await client.write("ACQ:DATA:BYTE:ORDER LEND")
        self.byte_order = "big" if await client.check_errors() else "little"
        self.dialect = await self._check_data_query(dialect)
        # ACQ:TRig:FILL? exists from OS 1.04-28; without it the importer waits out the
        # post-trigger samples after TD instead.
        self.has_fill = await client.probe("ACQ:TRig:FILL?") is not None
        self.status.os_generation = self.dialect.generation
        self.status.board = self.dialect.board
        self.status.data_query = self.dialect.data_query(1).replace("SOUR1", "SOUR<n>")
        self.status.byte_order = self.byte_order
        self.status.fill_query = self.has_fill
        self._armed_start = None

    async def close(self) -> None:
        """Stop the acquisition (best effort) and close the connection."""
        if self.client.connected:
            try:
                await self.client.write("ACQ:STOP")
            except ScpiError:
                pass
        await self.client.close()
        if self.status.state is not SessionState.FAILED:
            self._set_state(SessionState.STOPPED)

    # -- acquisition ---------------------------------------------------------------
    async def _start(self) -> None:
        """``ACQ:START``: the board begins to fill its buffer (pre-trigger part)."""
        await self.client.write("ACQ:START")
        self._armed_start = time.monotonic()

    async def _wait_for_trigger(self) -> str | None:
        """Arm the trigger once the pre-trigger part is written; poll until the event is complete.

        Returns the ``ACQ:TPOS?`` answer, or None when told to stop.
        """
        cfg, client = self.cfg, self.client
        if self._armed_start is None:
            await self._start()
        assert self._armed_start is not None
        # Invariant: the trigger is armed only once `pre` samples were written after
        # ACQ:START, else the pre-trigger part would hold the previous event's samples.
        fill = (cfg.number_of_samples_before_trigger + 1) * cfg.sample_period
        wait = self._armed_start + fill - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        armed = time.monotonic()
        forced = False
        delay = 0.0
        post_time = cfg.post_trigger_samples * cfg.sample_period
        # Arm and first poll in one write: STAT? then reads TD only for this trigger,
        # whether it means "disabled" (up to OS 2.04-35) or "received" (2.05-37 on).
        preamble: tuple[str, ...] = (cfg.trigger_command,)
        polls = ["ACQ:TRig:STAT?", "ACQ:TRig:FILL?", "ACQ:TPOS?"]
        if not self.has_fill:
            polls.remove("ACQ:TRig:FILL?")
        while True:
            answers = await client.query_many(polls, preamble=preamble)
            state, tpos_text = answers[0], answers[-1]
            filled = answers[1] if self.has_fill else "1"
            preamble = ()
            self.heartbeat()
            if state == "TD" and filled == "1":
                if not self.has_fill:
                    # Invariant: the post-trigger part is complete post_time after
                    # the trigger, which came before this answer.
                    await asyncio.sleep(post_time)
                return str(tpos_text)
            if state == "TD":
                # triggered, post-trigger part still being written: at most post_time
                delay = min(post_time, cfg.poll_interval) if post_time > 1e-3 else 0.0
            else:
                if (cfg.trigger_mode == "auto" and not forced
                        and time.monotonic() - armed >= cfg.auto_trigger_timeout):
                    preamble = ("ACQ:TRig NOW",)
                    forced = True
                    self.status.forced_triggers += 1
                    continue
                if self.should_stop():
                    return None
                # Back off gently while no trigger comes: 0, then up to poll_interval.
                delay = min(cfg.poll_interval, delay * 2 + cfg.poll_interval / 8)
            if delay > 0:
                await asyncio.sleep(delay)

    async def _read_event(self, tpos_text: str) -> np.ndarray:
        """Read both channels around the trigger into one event (split reads on older OS)."""
        cfg = self.cfg
        try:
            tpos = int(tpos_text)
        except ValueError:
            raise ScpiConnectionError(f"unexpected ACQ:TPOS? answer {tpos_text!r}") from None
        if not 0 <= tpos < MAXIMUM_SAMPLES:
            raise ScpiConnectionError(f"ACQ:TPOS? answer {tpos} outside the buffer")
        n = cfg.data_length
        start = (tpos - cfg.number_of_samples_before_trigger) % MAXIMUM_SAMPLES
        pieces = read_pieces(start, n, self.dialect.split_wrapping_reads)
        queries = [f"{self.dialect.data_query(ch)} {first},{count}"
                   for ch in (1, 2) for first, count in pieces]
        answers = await self.client.query_many(queries, ["block"] * len(queries))
        event = np.zeros(n, dtype=self.dtype)
        for i, (name, negate) in enumerate((("IN1", cfg.negator_IN1), ("IN2", cfg.negator_IN2))):
            payload = b"".join(bytes(a) for a in answers[i * len(pieces) : (i + 1) * len(pieces)])  # type: ignore[arg-type]
            samples = decode_block_payload(payload, "int16", self.byte_order)  # type: ignore[arg-type]
            if samples.size != n:
                raise ScpiConnectionError(f"{name}: expected {n} samples, got {samples.size}")
            column = event[name]
            column[:] = samples
            if negate:
                np.negative(column, out=column)  # int16 holds -(-8192) = 8192
        return event

    async def _acquire(self) -> np.ndarray | None:
        tpos_text = await self._wait_for_trigger()
        if tpos_text is None:
            return None
        event = await self._read_event(tpos_text)
        self._armed_start = None
        # Start the next acquisition now, so the board fills its pre-trigger part
        # while the template stores this event.
        try:
            await self._start()
        except ScpiConnectionError:
            self._armed_start = None  # noticed again (and handled) by the next call
        return event

    async def next_event(self) -> np.ndarray | None:
        """Acquire one event, reconnecting as often as needed (None: told to stop)."""
        try:
            return await self._next_event()
        except BoardError as exc:
            if self.status.state is not SessionState.FAILED:
                self._fail(exc)
            raise

    async def _next_event(self) -> np.ndarray | None:
        while True:
            if self.should_stop():
                return None
            if not self.client.connected:
                self.status.reconnects += self.status.state not in (
                    SessionState.STARTING, SessionState.STOPPED)
                await self.connect()
                if not self.client.connected:
                    return None  # told to stop while reconnecting
            try:
                event = await self._acquire()
            except ScpiError as exc:
                # Dropped, stalled, refused or out of step: start over on a fresh connection
                # (a refusal that comes back right after it is a BoardError).
                self._armed_start = None
                await self.client.close()
                if isinstance(exc, ScpiQueryError):
                    self._check_repeated_refusal(exc)
                self._set_state(SessionState.RECONNECTING, f"{type(exc).__name__}: {exc}")
                await self._wait_backoff(exc)
                continue
            if event is None:
                return None
            self._backoff = 0.0
            self._fresh, self._last_refusal = False, None
            self.status.events += 1
            if self.status.events - self._events_at_set >= self.cfg.set_size:
                await self._end_of_set()
            return event

    async def _end_of_set(self) -> None:
        """Every ``set_size`` events: log the rate, check the error queue, write status."""
        now = time.monotonic()
        count = self.status.events - self._events_at_set
        rate = count / max(now - self._set_started, 1e-9)
        self._events_at_set, self._set_started = self.status.events, now
        try:
            errors = await self.client.check_errors()
        except ScpiError as exc:
            errors = [(0, f"error check failed: {exc}")]
            await self.client.close()
        if errors:
            self.log.warning("%s queued errors: %s", self.where, errors)
        self.log.debug("%d events, %.1f events/s", self.status.events, rate)
        self.status.round_trips = self.client.round_trips
        self._status_file.write()


# ----------------------------------------------------------------------------- the function
def _check_buffers(check: ConfigChecker, buffer_io: Any) -> None:
    """Record the problems of the worker's buffers: none in, one int16 IN1/IN2 sink out."""
    check.buffer_count("sources", list(buffer_io.buffer_names_in), 0)
    check.buffer_count("observes", list(buffer_io.buffer_names_observe), 0)
    check.buffer_count("sinks", list(buffer_io.buffer_names_out), 1)
    if len(buffer_io.write) == 1:
        dtype = buffer_io.data_out_examples[0].dtype
        for name in INPUTS:
            if dtype.names is None or name not in dtype.names:
                check.buffer_problem(
                    "sinks", f"sink '{buffer_io.buffer_names_out[0]}' needs field '{name}' "
                    f"(data_dtype {{'IN1': int16, 'IN2': int16}})"
                )
            elif dtype[name] != np.dtype("int16"):
                check.buffer_problem("sinks", f"sink field '{name}' has dtype {dtype[name]}, must be int16")
    single_process(check, buffer_io, "one board, one connection")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()


def waveform(buffer_io: Any) -> None:
    """mimoCoRB2 Function: Use RedPitaya to acquire waveform data.

    Reads both inputs of a Red Pitaya STEMlab 125-14 over its SCPI server (TCP port
    5000) and writes one event per trigger; the trigger sits at index
    number_of_samples_before_trigger of each event. Works with Red Pitaya OS 1.04-18
    and later: at every connect it detects the OS generation and speaks its dialect.
    Connection drops and a board that stops answering are survived: the importer
    reconnects with backoff, re-sends the configuration and goes on; a board error
    that reconnecting cannot cure ends the worker with the board's error text. The
    board must not be used by another SCPI client during a run. Its connection state and reconnect
    count are written to RUN_DIR/status/<worker>.json. The SCPI mapping of every
    key is documented in docs/redpitaya.md.

    Type
    ----
    Importer

    Buffers
    -------
    sources
        0
    sinks
        1 with data_dtype: {'IN1': int16, 'IN2': int16} data_length decides the total number of samples (must be larger than number_of_samples_before_trigger and at most MAXIMUM_SAMPLES)
    observes
        0

    Configs
    -------
    ip : str
        IP address of the RedPitaya device.
    port : int, optional (default=5000)
        TCP port of the board's SCPI server.
    sample_rate : int
        Number of samples (125MHz) averaged into one. Must be one of the values in SAMPLE_RATES.
    negator_IN1 : bool, optional (default=False)
        If True, the IN1 input is negated.
    negator_IN2 : bool, optional (default=False)
        If True, the IN2 input is negated.
    trigger_slope : str, optional (default='rising')
        Slope of the trigger. Must be one of the values in TRIGGER_SLOPES.
    trigger_mode : str, optional (default='normal')
        Mode of the trigger. Must be one of the values in TRIGGER_MODES.
    trigger_level : int
        Level of the trigger in ADC units (of the input, before negation). Must be between MIN_ADC_VALUE and MAX_ADC_VALUE. Sent to the board in volts (nominal full scale of gain), so approximate by the board's calibration.
    trigger_source : str, optional (default='IN1')
        Source of the trigger. Must be one of the values in INPUTS (or 'EXT').
    number_of_samples_before_trigger : int
        Number of samples to acquire before the trigger. Must be an integer between 0 and the total number of samples.
    set_size : int, optional (default=100)
        Number of events in one set; after each set the rate is logged, the board's error queue checked and the status file updated.
    timeout : float, optional (default=2.0)
        Seconds to wait for any SCPI answer before the board counts as stalled.
    gain : str, optional (default='LV')
        Input jumper setting, LV (1 V full scale) or HV (20 V); converts trigger_level to volts.
    auto_trigger_timeout : float, optional (default=0.1)
        In trigger_mode 'auto', seconds without a trigger before one is forced.
    poll_interval : float, optional (default=0.0005)
        Longest pause in seconds between two polls of the trigger state.
    reconnect_max_delay : float, optional (default=30.0)
        Cap in seconds of the exponential backoff between reconnect attempts.
    max_events : int, optional (default=None)
        End the run after this many events (None: run until stopped).

    Examples
    --------
    >>> # Workers:
    >>> #   input:
    >>> #     function: importers.redpitaya.waveform
    >>> #     config: {ip: 192.168.1.100, sample_rate: 1, trigger_level: 500,
    >>> #              number_of_samples_before_trigger: 100}
    >>> #     sinks: [raw_waveforms]
    """
    from mimocorb2.worker_templates import Importer

    check = ConfigChecker(buffer_io, _FUNCTION)
    _check_buffers(check, buffer_io)
    data_length = buffer_io.data_out_examples[0].size if len(buffer_io.write) == 1 else MAXIMUM_SAMPLES
    cfg = _parse(check, data_length)  # raises SetupError listing every problem

    importer = Importer(buffer_io)
    dtype = importer.data_example.dtype
    status_path = Path(buffer_io.run_dir) / "status" / f"{buffer_io.name}.json"

    def events() -> Generator[np.ndarray | None, None, None]:
        loop = _new_loop()
        sink = buffer_io.write[0]
        session = RedPitayaSession(
            cfg, dtype, logger=buffer_io.logger, status_path=status_path, worker=buffer_io.name,
            should_stop=lambda: bool(sink.is_shutdown.value),
        )
        try:
            count = 0
            while cfg.max_events is None or count < cfg.max_events:
                # Each next() runs the loop until the next event is complete.
                event = loop.run_until_complete(session.next_event())
                if event is None:
                    break
                count += 1
                yield event
        finally:
            loop.run_until_complete(session.close())
            loop.close()
        yield None

    importer(events)
