"""importers.redpitaya.waveform against the simulator: in a real worker process.

The simulator runs on a thread of the test process; the importer runs in a spawned
process writing into a real mimoBuffer; the test reads the events back.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mimocorb2.errors import SetupError
from mimocorb2.functions.importers import redpitaya as rp
from mimocorb2.mimo_buffer import BufferReader, BufferWriter, mimoBuffer
from mimocorb2.mimo_worker import BufferIO
from mimocorb2.sim.redpitaya import Faults, PulseConfig, SimulatorThread

CTX = multiprocessing.get_context("spawn")
DTYPE = {"IN1": "int16", "IN2": "int16"}
#: The key tests run against both generations of the board's SCPI server.
GENERATIONS = pytest.mark.parametrize("os_version", ["1.04-28", "2.00-30"], ids=["older-os", "current-os"])


def _config(port: int, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ip": "127.0.0.1",
        "port": port,
        "sample_rate": 1,
        "trigger_level": 1000,
        "number_of_samples_before_trigger": 100,
        "timeout": 0.5,
        "max_events": 20,
    }
    config.update(extra)
    return config


def _run(
    tmp_path: Path,
    config: dict[str, Any],
    data_length: int = 600,
    slot_count: int = 16,
    name: str = "rp",
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any], int | None]:
    """Run the importer in a spawned process; return (data, metadata, stats, exitcode)."""
    buf = mimoBuffer("rp", slot_count=slot_count, data_length=data_length, data_dtype=DTYPE)
    try:
        io = BufferIO(name=name, sources=[], sinks=[BufferWriter(buf)], observes=[],
                      config=config, setup_dir=tmp_path, run_dir=tmp_path)
        proc = CTX.Process(target=rp.waveform, args=(io,), name="rp-importer")
        proc.start()
        data, meta = [], []
        try:
            reader = BufferReader(buf)
            while True:
                with reader as (metadata, event):
                    if event is None:
                        break
                    data.append(event.copy())
                    meta.append(metadata.copy())
        finally:
            proc.join(30)
            if proc.is_alive():  # pragma: no cover - only on failure
                proc.kill()
                proc.join()
        stats = buf.get_stats()
        return data, meta, stats, proc.exitcode
    finally:
        buf.close()


def _counters(meta: list[np.ndarray]) -> list[int]:
    return [int(np.asarray(m)["counter"].ravel()[0]) for m in meta]


def _status(tmp_path: Path, name: str = "rp") -> dict[str, Any]:
    return json.loads((tmp_path / "status" / f"{name}.json").read_text())


@pytest.mark.timeout(40)
@GENERATIONS
def test_channel_order_sign_alignment_amplitude(tmp_path, os_version):
    pulses = PulseConfig(rate=2e4, spectrum="fixed", amplitude=0.5, noise=0.001,
                         scale_IN1=1.0, scale_IN2=-0.5)
    with SimulatorThread(pulses=pulses, seed=11, os=os_version) as sim:
        data, meta, stats, code = _run(tmp_path, _config(sim.port, negator_IN2=True, max_events=30))
        crashes = sim.simulator.stats["crashes"]
    assert code == 0 and crashes == 0
    assert len(data) == 30 and _counters(meta) == list(range(30))
    pre = 100
    for event in data:
        in1, in2 = event["IN1"].astype(int), event["IN2"].astype(int)
        # trigger: first sample at/above the level sits exactly at index pre
        assert in1[pre - 1] < 1000 <= in1[pre]
        # amplitude: 0.5 V on the LV range is 4096 ADC units (noise ~8 units)
        assert abs(in1.max() - 4096) < 60
        # IN2 carries the same pulse at -0.5 scale; negated it is positive, half height
        assert abs(in2.max() - 2048) < 60 and in2.min() > -60
        assert abs(int(np.argmax(in1)) - int(np.argmax(in2))) <= 2
        assert abs(in1[:pre - 5].mean()) < 10  # baseline before the pulse is fresh
    status = _status(tmp_path)
    assert status["state"] == "stopped" and status["reconnects"] == 0
    assert status["events"] == 30
    older = os_version.startswith("1.")
    assert status["os_generation"] == (rp.OLDER_OS if older else rp.CURRENT_OS)
    assert status["data_query"] == ("ACQ:SOUR<n>:DATA:STA:N?" if older else "ACQ:SOUR<n>:DATA:STArt:N?")


@pytest.mark.timeout(40)
def test_falling_slope_negated_input_hv_and_decimation(tmp_path):
    # negative pulses on IN2 (the trigger source), HV range, decimation 8
    pulses = PulseConfig(rate=2e4, spectrum="fixed", amplitude=5.0, amplitude_max=10.0,
                         noise=0.01, scale_IN1=0.5, scale_IN2=-1.0)
    cfg = _config(0, trigger_source="IN2", trigger_slope="falling", trigger_level=-1000,
                  gain="HV", sample_rate=8, negator_IN2=True, number_of_samples_before_trigger=50)
    with SimulatorThread(pulses=pulses, seed=5) as sim:
        cfg["port"] = sim.port
        data, meta, stats, code = _run(tmp_path, cfg, data_length=400)
    assert code == 0 and len(data) == 20
    for event in data:
        raw_in2 = -event["IN2"].astype(int)  # undo the negator: what the board saw
        assert raw_in2[49] > -1000 >= raw_in2[50]
        # 5 V on the 20 V range: 2048 units; IN1 gets +2.5 V = 1024 units
        assert abs(event["IN2"].max() - 2048) < 40
        assert abs(event["IN1"].max() - 1024) < 40
    assert _status(tmp_path)["byte_order"] == "little"


@pytest.mark.timeout(40)
def test_old_os_big_endian_and_auto_trigger(tmp_path):
    # pulses never reach the level: only the auto mode's forced triggers give events
    pulses = PulseConfig(rate=1e3, spectrum="fixed", amplitude=0.05, noise=0.001)
    with SimulatorThread(pulses=pulses, seed=2, supports_little_endian=False) as sim:
        data, meta, stats, code = _run(
            tmp_path,
            _config(sim.port, trigger_mode="auto", trigger_level=8000, auto_trigger_timeout=0.01,
                    max_events=10),
        )
    assert code == 0 and len(data) == 10
    status = _status(tmp_path)
    assert status["byte_order"] == "big" and status["forced_triggers"] >= 10
    for event in data:
        assert np.abs(event["IN1"]).max() < 500  # no pulse crossed 8000: noise + small pulses


@pytest.mark.timeout(40)
@GENERATIONS
def test_dropped_connections_survived(tmp_path, os_version):
    pulses = PulseConfig(rate=5e4, spectrum="fixed", amplitude=0.5, noise=0.001)
    with SimulatorThread(pulses=pulses, seed=3, faults=Faults(drop_every=7), os=os_version) as sim:
        data, meta, stats, code = _run(tmp_path, _config(sim.port, max_events=40))
        drops = sim.simulator.stats["drops"]
    assert code == 0
    assert _counters(meta) == list(range(40))
    assert all(e["IN1"][99] < 1000 <= e["IN1"][100] for e in data)
    status = _status(tmp_path)
    assert drops >= 5 and status["reconnects"] >= 5
    assert "Scpi" in (status["last_error"] or "")


@pytest.mark.timeout(40)
@GENERATIONS
def test_stalled_board_survived(tmp_path, os_version):
    pulses = PulseConfig(rate=5e4, spectrum="fixed", amplitude=0.5, noise=0.001)
    faults = Faults(stall_at=frozenset({4, 12}), stall_seconds=0.6)
    with SimulatorThread(pulses=pulses, seed=4, faults=faults, os=os_version) as sim:
        data, meta, stats, code = _run(tmp_path, _config(sim.port, timeout=0.15, max_events=20))
        stalls = sim.simulator.stats["stalls"]
    assert code == 0 and stalls == 2
    assert _counters(meta) == list(range(20))
    status = _status(tmp_path)
    assert status["reconnects"] >= 2
    assert "ScpiTimeout" in (status["last_error"] or "")


@pytest.mark.timeout(50)
@GENERATIONS
def test_thousands_of_events_at_top_rate_none_lost(tmp_path, os_version):
    n = 3000
    pulses = PulseConfig(rate=1e7, spectrum="uniform", amplitude_min=0.2, amplitude_max=0.9,
                         noise=0.001)
    with SimulatorThread(pulses=pulses, seed=6, os=os_version) as sim:
        data, meta, stats, code = _run(tmp_path, _config(sim.port, max_events=n, set_size=500),
                                       data_length=1000)
        crashes, drops = sim.simulator.stats["crashes"], sim.simulator.stats["drops"]
    assert code == 0
    # about one read in 16 wraps past the buffer end; an older server would have crashed
    assert crashes == 0 and drops == 0 and _status(tmp_path)["reconnects"] == 0
    assert _counters(meta) == list(range(n))
    assert stats.get("lost", 0) == 0
    peaks = np.array([int(e["IN1"].max()) for e in data])
    # a uniform amplitude spectrum from 0.2 V to 0.9 V: 1638 to 7373 ADC units
    assert peaks.min() > 1500 and peaks.max() < 7500 and np.std(peaks) > 1000


# ------------------------------------------------------------------ configuration errors
class _FakeWriter:
    def __init__(self, dtype: Any, length: int) -> None:
        from mimocorb2.mimo_buffer import make_dtype

        self.data_example = np.zeros(length, dtype=make_dtype(dtype))
        self.metadata_example = np.zeros(1)
        self.name = "sink"


def _io(config: dict[str, Any], tmp_path: Path, dtype: Any = DTYPE, length: int = 600,
        sinks: int = 1) -> BufferIO:
    return BufferIO(name="rp", sources=[], sinks=[_FakeWriter(dtype, length)] * sinks,  # type: ignore[list-item]
                    observes=[], config=config, setup_dir=tmp_path, run_dir=tmp_path)


BAD_VALUES = [
    ("ip", "", "non-empty"),
    ("ip", 17, "non-empty"),
    ("port", 0, "1 to 65535"),
    ("port", "5000", "1 to 65535"),
    ("sample_rate", 3, "SAMPLE_RATES"),
    ("sample_rate", 131072, "SAMPLE_RATES"),
    ("negator_IN1", "yes", "true or false"),
    ("negator_IN2", 1, "true or false"),
    ("trigger_slope", "up", "TRIGGER_SLOPES"),
    ("trigger_mode", "single", "TRIGGER_MODES"),
    ("trigger_source", "IN3", "INPUTS"),
    ("trigger_level", 8192, "MAX_ADC_VALUE=8191"),
    ("trigger_level", -8193, "MIN_ADC_VALUE=-8192"),
    ("trigger_level", 1.5, "an integer from MIN_ADC_VALUE"),
    ("number_of_samples_before_trigger", 600, "data_length - 1 = 599"),
    ("number_of_samples_before_trigger", -1, "data_length - 1"),
    ("set_size", 0, ">= 1"),
    ("timeout", 0, "> 0"),
    ("timeout", "fast", "> 0"),
    ("gain", "MV", "GAINS"),
    ("max_events", 0, ">= 1"),
    ("auto_trigger_timeout", -1, "> 0"),
    ("poll_interval", -0.1, ">= 0"),
    ("trigger_levle", 10, "unknown key"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_VALUES)
def test_every_config_error_names_key_value_and_allowed(tmp_path, key, value, allowed):
    config = _config(1)  # port 1: nothing listens there; we must fail before connecting
    config[key] = value
    with pytest.raises(SetupError) as info:
        rp.waveform(_io(config, tmp_path))
    text = str(info.value)
    assert f"Workers.rp.config.{key}: " in text and repr(value) in text and allowed in text
    assert len(info.value.problems) == 1
    assert not (tmp_path / "status").exists()  # never got as far as connecting


@pytest.mark.parametrize("key", ["ip", "sample_rate", "trigger_level", "number_of_samples_before_trigger"])
def test_missing_required_key(tmp_path, key):
    config = _config(1)
    del config[key]
    with pytest.raises(SetupError, match=f"config.{key}: required key is missing"):
        rp.waveform(_io(config, tmp_path))


def test_buffer_errors_all_reported(tmp_path):
    with pytest.raises(SetupError) as info:
        rp.waveform(_io(_config(1), tmp_path, dtype={"IN1": "float32", "X": "int16"}, length=20000))
    text = str(info.value)
    assert "MAXIMUM_SAMPLES=16384" in text and "must be int16" in text and "'IN2'" in text
    with pytest.raises(SetupError, match="needs exactly 1 buffer"):
        rp.waveform(_io(_config(1), tmp_path, sinks=2))


def test_scpi_mapping():
    cfg = rp.parse_config(_config(5000, trigger_level=-4096, gain="HV", sample_rate=64,
                                  trigger_source="EXT", trigger_slope="falling"), 1000)
    assert cfg.trigger_command == "ACQ:TRig EXT_NE"
    assert cfg.trigger_level_volts == pytest.approx(-10.0)
    assert cfg.trigger_delay == 900 - 8192
    commands = cfg.setup_commands()
    assert "ACQ:DEC 64" in commands and "ACQ:TRig:LEV -10.000000" in commands
    assert "ACQ:SOUR1:GAIN HV" in commands and "ACQ:DATA:FORMAT BIN" in commands
    assert rp.SAMPLE_RATES[0] == 1 and rp.SAMPLE_RATES[-1] == 65536


@pytest.mark.timeout(40)
def test_stop_while_waiting_for_a_trigger_and_status_file_while_running(tmp_path):
    # the level is never reached in normal mode: the importer waits until stopped
    pulses = PulseConfig(rate=1e3, spectrum="fixed", amplitude=0.05, noise=0.001)
    with SimulatorThread(pulses=pulses, seed=8) as sim:
        buf = mimoBuffer("rp", slot_count=4, data_length=200, data_dtype=DTYPE)
        try:
            io = BufferIO(name="idle", sources=[], sinks=[BufferWriter(buf)], observes=[],
                          config=_config(sim.port, trigger_level=8000, max_events=None),
                          setup_dir=tmp_path, run_dir=tmp_path)
            armed = threading.Event()
            sim.simulator.on_command = lambda line: line.startswith("ACQ:TRig CH") and armed.set()
            proc = CTX.Process(target=rp.waveform, args=(io,))
            proc.start()
            assert armed.wait(20), "the importer never armed the trigger"
            assert _status(tmp_path, "idle")["state"] == "connected"
            buf.shutdown()  # what the supervisor does to stop a run
            proc.join(10)
            assert proc.exitcode == 0
            with BufferReader(buf) as (metadata, data):
                assert data is None  # no event was ever made
            assert _status(tmp_path, "idle")["state"] == "stopped"
        finally:
            buf.close()


# ------------------------------------------------------------------ session level (one loop)
EVENT_DTYPE = np.dtype([("IN1", "i2"), ("IN2", "i2")])


@GENERATIONS
async def test_pre_trigger_part_is_fresh_at_high_decimation(os_version):
    # decimation 65536: 100 pre-trigger samples take 52 ms to be written. Pulses come
    # at once, so arming early would show the buffer's initial zeros before the
    # trigger; the baseline offset (0.05 V = 410 units) proves the samples are fresh.
    from mimocorb2.sim.redpitaya import RedPitayaSimulator

    pulses = PulseConfig(rate=1e6, spectrum="fixed", amplitude=0.5, noise=0.0, offset=0.05)
    sim = RedPitayaSimulator("127.0.0.1", 0, pulses=pulses, seed=1, os=os_version)
    await sim.start()
    try:
        cfg = rp.parse_config(_config(sim.port, sample_rate=65536, trigger_level=2000), 150)
        session = rp.RedPitayaSession(cfg, EVENT_DTYPE)
        for _ in range(2):
            event = await session.next_event()
            assert event is not None
            assert (event["IN1"][:100] == 410).all()
            assert event["IN1"][100] >= 2000
        await session.close()
    finally:
        await sim.stop()


async def test_board_refusing_configuration_is_fatal():
    from mimocorb2.sim import redpitaya as sim_mod

    sim = sim_mod.RedPitayaSimulator("127.0.0.1", 0, seed=1)
    # a board that knows only these decimations
    sim.board.decimations = (1, 8, 64, 1024, 8192, 65536)
    await sim.start()
    try:
        cfg = rp.parse_config(_config(sim.port, sample_rate=2), 400)
        session = rp.RedPitayaSession(cfg, EVENT_DTYPE)
        with pytest.raises(rp.BoardError, match="ACQ:DEC 2.*Data out of range"):
            await session.next_event()
        await session.close()
    finally:
        await sim.stop()


async def test_ret_on_error_board_and_ext_trigger_and_round_trips():
    from mimocorb2.sim.redpitaya import RedPitayaSimulator

    pulses = PulseConfig(rate=1e6, spectrum="fixed", amplitude=0.3, noise=0.0)
    sim = RedPitayaSimulator("127.0.0.1", 0, pulses=pulses, seed=1, ret_on_error=True,
                             os="2.07-43", supports_little_endian=False)
    await sim.start()
    try:
        cfg = rp.parse_config(_config(sim.port, trigger_source="EXT"), 300)
        session = rp.RedPitayaSession(cfg, EVENT_DTYPE)
        first = await session.next_event()
        assert session.byte_order == "big"  # LEND refused, seen through the bare answer too
        setup_trips = session.round_trips
        for _ in range(20):
            event = await session.next_event()
            assert event is not None
            # EXT trigger: the pulse starts at the trigger sample
            assert (event["IN1"][:101] == 0).all() and event["IN1"][101] > 0
        # quick triggers: one poll and one data read per event
        assert (session.round_trips - setup_trips) / 20 == pytest.approx(2.0, abs=0.2)
        assert first is not None and session.status.reconnects == 0
        await session.close()
    finally:
        await sim.stop()


async def test_board_without_fill_query():
    # OS 1.04-18: no ACQ:TRig:FILL? (from 1.04-28 on); the importer waits out the
    # post-trigger part
    from mimocorb2.sim.redpitaya import RedPitayaSimulator

    pulses = PulseConfig(rate=1e5, spectrum="fixed", amplitude=0.5, noise=0.0, offset=0.05)
    sim = RedPitayaSimulator("127.0.0.1", 0, pulses=pulses, seed=1, os="1.04-18")
    await sim.start()
    try:
        # decimation 64: 900 post-trigger samples take 0.46 ms to be written
        cfg = rp.parse_config(_config(sim.port, sample_rate=64, trigger_level=2000), 1000)
        session = rp.RedPitayaSession(cfg, EVENT_DTYPE)
        for _ in range(5):
            event = await session.next_event()
            assert event is not None
            assert event["IN1"][99] < 2000 <= event["IN1"][100]
            # the baseline offset (410 units) up to the last sample: the post-trigger
            # part was complete when read (unwritten samples would be stale zeros)
            assert (event["IN1"][:99] == 410).all() and (event["IN1"][110:] == 410).all()
        assert session.has_fill is False and session.status.reconnects == 0
        await session.close()
    finally:
        await sim.stop()


# ------------------------------------------------------------------ older OS generation
def test_read_pieces_never_cross_the_buffer_end():
    assert rp.read_pieces(100, 600, split=True) == [(100, 600)]
    assert rp.read_pieces(16000, 600, split=False) == [(16000, 600)]
    assert rp.read_pieces(16000, 600, split=True) == [(16000, 384), (0, 216)]
    assert rp.read_pieces(0, 16384, split=True) == [(0, 16384)]
    assert rp.read_pieces(1, 16384, split=True) == [(1, 16383), (0, 1)]
    older, current = rp.BoardDialect(older=True, spelling="STA"), rp.BoardDialect(older=False)
    assert older.data_query(2) == "ACQ:SOUR2:DATA:STA:N?" and older.split_wrapping_reads
    assert current.data_query(1) == "ACQ:SOUR1:DATA:STArt:N?" and not current.split_wrapping_reads
    assert older.generation == rp.OLDER_OS and current.generation == rp.CURRENT_OS


@GENERATIONS
async def test_full_buffer_events_never_read_past_the_end_on_older_os(os_version, caplog):
    """data_length 16384: nearly every read wraps; an older server gets two reads instead."""
    from mimocorb2.sim.redpitaya import BUFFER_SAMPLES, RedPitayaSimulator

    pulses = PulseConfig(rate=1e5, spectrum="fixed", amplitude=0.5, noise=0.001)
    sim = RedPitayaSimulator("127.0.0.1", 0, pulses=pulses, seed=7, os=os_version)
    reads: list[tuple[int, int]] = []

    def note(line: str) -> None:
        if ":DATA:" in line.upper() and ":N?" in line.upper():
            start, count = line.split(" ", 1)[1].split(",")
            reads.append((int(start), int(count)))

    sim.on_command = note
    await sim.start()
    older = os_version.startswith("1.")
    try:
        cfg = rp.parse_config(_config(sim.port, number_of_samples_before_trigger=8000), BUFFER_SAMPLES)
        session = rp.RedPitayaSession(cfg, EVENT_DTYPE)
        with caplog.at_level("INFO", logger="mimocorb2.importers.redpitaya"):
            for _ in range(6):
                event = await session.next_event()
                assert event is not None
                assert event["IN1"][7999] < 1000 <= event["IN1"][8000]
                assert abs(int(event["IN1"].max()) - 4096) < 60
        assert session.dialect.older is older and session.status.reconnects == 0
        assert sim.stats["crashes"] == 0
        event_reads = reads[1:]  # the first is the one-sample probe at connect
        wrapping = [r for r in event_reads if r[0] + r[1] > BUFFER_SAMPLES]
        assert bool(wrapping) is not older
        assert sum(n for _, n in event_reads) == 6 * 2 * BUFFER_SAMPLES
        generation = rp.OLDER_OS if older else rp.CURRENT_OS
        assert f"OS {generation}" in caplog.text
        await session.close()
    finally:
        await sim.stop()


@pytest.mark.timeout(40)
def test_same_refusal_after_fresh_configure_fails_the_worker(tmp_path):
    """A board that never answers ACQ:TPOS?: no endless reconnecting, a clear failure."""
    faults = Faults(unknown_headers=frozenset({"ACQ:TPOS?"}))
    pulses = PulseConfig(rate=5e4, spectrum="fixed", amplitude=0.5)
    with SimulatorThread(pulses=pulses, seed=3, faults=faults, os="1.04-28") as sim:
        data, meta, stats, code = _run(tmp_path, _config(sim.port, timeout=0.5))
        connections = sim.simulator.stats["connections"]
    assert code not in (0, None) and data == []
    # the first refusal reconnects once, the second is final (a timeout under heavy
    # load may add a reconnect, never a loop)
    assert 2 <= connections <= 3
    status = _status(tmp_path)
    assert status["state"] == "failed" and status["reconnects"] == connections - 1
    error = status["last_error"]
    assert error.startswith("BoardError:") and "ACQ:TPOS?" in error
    assert "-113,Undefined header" in error and "again right after a fresh configuration" in error
    assert rp.OLDER_OS in error


async def test_board_without_a_known_data_query_refused_at_start(tmp_path):
    from mimocorb2.sim.redpitaya import RedPitayaSimulator

    faults = Faults(unknown_headers=frozenset({"ACQ:SOUR1:DATA:STA:N?", "ACQ:SOUR1:DATA:STArt:N?"}))
    sim = RedPitayaSimulator("127.0.0.1", 0, seed=1, faults=faults, os="2.00-15")
    await sim.start()
    try:
        cfg = rp.parse_config(_config(sim.port), 400)
        session = rp.RedPitayaSession(cfg, EVENT_DTYPE, status_path=tmp_path / "rp.json")
        with pytest.raises(rp.BoardError, match=r"OS before 2\.00-18.*answers no positional data query"):
            await session.next_event()
        await session.close()
        status = json.loads((tmp_path / "rp.json").read_text())
        assert status["state"] == "failed" and "Undefined header" in status["last_error"]
    finally:
        await sim.stop()
