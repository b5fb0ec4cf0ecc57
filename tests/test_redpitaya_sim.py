"""The Red Pitaya SCPI simulator: protocol quirks, acquisition model, fault hooks, CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from mimocorb2.scpi import ScpiClient, ScpiConnectionError, decode_ascii_list
from mimocorb2.sim import redpitaya as sim_mod
from mimocorb2.sim.redpitaya import (
    BUFFER_SAMPLES,
    Faults,
    PulseConfig,
    RedPitayaSimulator,
    SimulatorThread,
)

pytestmark = pytest.mark.timeout(20)


class FakeClock:
    """A clock the test moves by hand (the simulator's acquisition runs on it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


@pytest.fixture
async def board():
    s = RedPitayaSimulator("127.0.0.1", 0, seed=1,
                           pulses=PulseConfig(rate=1e5, spectrum="fixed", amplitude=0.5, noise=0.0))
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def clocked():
    clock = FakeClock()
    s = RedPitayaSimulator("127.0.0.1", 0, seed=1, clock=clock,
                           pulses=PulseConfig(rate=1e3, spectrum="fixed", amplitude=0.5,
                                              noise=0.0, offset=0.1))
    await s.start()
    s.fake_clock = clock  # type: ignore[attr-defined]
    yield s
    await s.stop()


# ----------------------------------------------------------------------- framing
async def test_commands_run_only_on_crlf_and_several_per_write(board):
    reader, writer = await _raw(board.port)
    async with ScpiClient("127.0.0.1", board.port, timeout=1) as other:
        writer.write(b"ACQ:DE")
        await writer.drain()
        writer.write(b"C 8")
        await writer.drain()
        # the simulator has received "ACQ:DEC 8" but no "\r\n": nothing ran yet. The
        # second connection's answer comes after the server handled those bytes
        # (one event loop, data handled in arrival order).
        assert await other.query("ACQ:DEC?") == "1"
        writer.write(b"\r\nACQ:DEC 16\r\nACQ:DEC?\r\n*IDN?\r\n")
        await writer.drain()
        # set commands gave no answer: the first line is the DEC? query's
        assert await reader.readuntil(b"\r\n") == b"16\r\n"
        assert (await reader.readuntil(b"\r\n")).startswith(b"REDPITAYA")
        assert await other.query("ACQ:DEC?") == "16"
    writer.close()
    assert board.stats["errors"] == 0


async def test_unknown_command_answers_nothing_and_queues_error(board):
    reader, writer = await _raw(board.port)
    writer.write(b"FOO:BAR 1\r\nACQ:BOGUS?\r\n*STB?\r\n")
    assert await reader.readuntil(b"\r\n") == b"4\r\n"
    writer.write(b"SYST:ERR:COUN?\r\nSYST:ERR:NEXT?\r\nSYSTem:ERRor:NEXT?\r\nSYST:ERR:NEXT?\r\n*STB?\r\n")
    lines = [await reader.readuntil(b"\r\n") for _ in range(5)]
    assert lines == [b"2\r\n", b'-113,"Undefined header"\r\n', b'-113,"Undefined header"\r\n',
                     b'0,"No error"\r\n', b"0\r\n"]
    # RP:RET_ON_ERROR exists only from OS 2.07-43: here it is unknown itself
    writer.write(b"RP:RET_ON_ERROR ON\r\nACQ:SOUR3:GAIN?\r\n*STB?\r\n")
    assert await reader.readuntil(b"\r\n") == b"4\r\n"
    writer.close()


async def test_ret_on_error_is_board_wide_and_leaves_unknown_commands_silent():
    s = RedPitayaSimulator("127.0.0.1", 0, seed=1, os="2.07-43")
    await s.start()
    try:
        reader, writer = await _raw(s.port)
        other_reader, other = await _raw(s.port)
        writer.write(b"RP:RET_ON_ERROR ON\r\n*IDN?\r\n")
        await reader.readuntil(b"\r\n")
        # the other connection never asked for it, but the flag is the board's
        other.write(b"ACQ:SOUR3:GAIN?\r\nACQ:BOGUS?\r\n*CLS\r\n*STB?\r\n")
        assert await other_reader.readuntil(b"\r\n") == b"\r\n"  # known query, failed
        assert await other_reader.readuntil(b"\r\n") == b"0\r\n"  # BOGUS? said nothing
        writer.close()
        other.close()
    finally:
        await s.stop()


async def test_short_long_forms_and_case(board):
    async with ScpiClient("127.0.0.1", board.port, timeout=1) as c:
        await c.write("acq:trig:lev 0.25", "ACQ:TR:DLY 100", "ACQ:SOUR2:GAIN hv")
        assert await c.query_many(["ACQ:TRIG:LEV?", "acq:tr:dly?", "ACQ:SOUR2:GAIN?"]) == [
            "0.25", "100", "HV"]
        assert await c.check_errors() == []
        await c.write("ACQ:TRig:DLY 9000", "ACQ:SOUR3:GAIN LV", "ACQ:DATA:UNITS MV")
        codes = [code for code, _ in await c.check_errors()]
        assert codes == [-222, -114, -224]


# ----------------------------------------------------------------------- acquisition
async def test_trigger_state_quirk_fill_and_decimation(clocked):
    clock = clocked.fake_clock
    async with ScpiClient("127.0.0.1", clocked.port, timeout=1) as c:
        await c.write("ACQ:RST", "ACQ:DEC 8", "ACQ:TRig:LEV 5", "ACQ:TRig:DLY 0")
        await c.write("ACQ:START")
        # trigger source still disabled: the board says TD (that is why FILL? exists)
        assert await c.query_many(["ACQ:TRig:STAT?", "ACQ:TRig:FILL?"]) == ["TD", "0"]
        clock.t += 1000 * 8 / 125e6  # 1000 samples at decimation 8
        assert await c.query("ACQ:WPOS?") == "1000"
        await c.write("ACQ:TRig CH1_PE")  # level 5 V: no pulse will ever reach it
        await c.query("*IDN?")
        clock.t += 1.0
        assert await c.query_many(["ACQ:TRig:STAT?", "ACQ:TRig:FILL?"]) == ["WAIT", "0"]
        await c.write("ACQ:TRig NOW")  # forced trigger replaces the waiting one
        await c.query("*IDN?")
        tpos = int(await c.query("ACQ:TPOS?"))
        assert await c.query_many(["ACQ:TRig:STAT?", "ACQ:TRig:FILL?"]) == ["TD", "0"]
        clock.t += 8192 * 8 / 125e6 + 1e-9
        assert await c.query_many(["ACQ:TRig:STAT?", "ACQ:TRig:FILL?"]) == ["TD", "1"]
        assert (tpos + 8192) % BUFFER_SAMPLES == int(await c.query("ACQ:WPOS?"))


async def test_stale_pre_trigger_data_when_armed_too_early(clocked):
    clock = clocked.fake_clock
    async with ScpiClient("127.0.0.1", clocked.port, timeout=1) as c:
        await c.write("ACQ:RST", "ACQ:DATA:FORMAT BIN", "ACQ:DATA:UNITS RAW", "ACQ:TRig:DLY 0")
        # a query after each write: its answer proves the write was handled before
        # the clock moves
        await c.write("ACQ:START")
        await c.query("*IDN?")
        clock.t += 100 / 125e6  # only 100 samples written before the trigger
        await c.write("ACQ:TRig NOW")
        await c.query("*IDN?")
        clock.t += 1e-3
        tpos = int(await c.query("ACQ:TPOS?"))
        data = await c.query_samples(f"ACQ:SOUR1:DATA:STArt:N? {(tpos - 300) % 16384},600")
        # offset 0.1 V = 819 ADC units in fresh samples; the buffer held zeros before
        assert (data[:200] == 0).all() and (data[200:] == 819).all()


async def test_formats_units_byte_order_and_wraparound(board):
    async with ScpiClient("127.0.0.1", board.port, timeout=1) as c:
        await c.write("ACQ:RST", "ACQ:TRig:LEV 0.1", "ACQ:START")
        await c.write("ACQ:TRig CH1_PE")
        while await c.query_many(["ACQ:TRig:STAT?", "ACQ:TRig:FILL?"]) != ["TD", "1"]:
            pass
        tpos = int(await c.query("ACQ:TPOS?"))
        start = (tpos - 10) % 16384
        # defaults after ACQ:RST: ASCII, VOLTS
        volts_ascii = decode_ascii_list(await c.query(f"ACQ:SOUR1:DATA:STArt:N? {start},40"))
        await c.write("ACQ:DATA:UNITS RAW")
        raw_ascii = decode_ascii_list(await c.query(f"ACQ:SOUR1:DATA:STArt:N? {start},40"), int)
        await c.write("ACQ:DATA:FORMAT BIN")
        raw_big = await c.query_samples(f"ACQ:SOUR1:DATA:STArt:N? {start},40", "int16", "big")
        await c.write("ACQ:DATA:BYTE:ORDER LEND")
        raw_little = await c.query_samples(f"ACQ:SOUR1:DATA:STArt:N? {start},40", "int16", "little")
        await c.write("ACQ:DATA:UNITS VOLTS")
        volts_bin = await c.query_samples(f"ACQ:SOUR1:DATA:STArt:N? {start},40", "float32", "little")
        np.testing.assert_array_equal(raw_ascii, raw_big)
        np.testing.assert_array_equal(raw_big, raw_little)
        np.testing.assert_allclose(volts_ascii, raw_big / 8192, atol=1e-6)
        np.testing.assert_allclose(volts_bin, raw_big / 8192, rtol=1e-6)
        assert raw_big[9] < 819 <= raw_big[10]  # the trigger sample is at TPOS
        # wrap-around: reading across the end of the circular buffer
        await c.write("ACQ:DATA:UNITS RAW")
        whole = await c.query_samples("ACQ:SOUR1:DATA?", "int16", "little")
        wpos = int(await c.query("ACQ:WPOS?"))
        assert whole.size == BUFFER_SAMPLES
        wrapped = await c.query_samples("ACQ:SOUR1:DATA:STArt:N? 16380,10", "int16", "little")
        ring = np.roll(whole, wpos)  # ring[i] is buffer position i
        np.testing.assert_array_equal(wrapped, np.concatenate([ring[16380:], ring[:6]]))
        end = await c.query_samples("ACQ:SOUR1:DATA:STArt:End? 16380,5", "int16", "little")
        np.testing.assert_array_equal(end, wrapped)


@pytest.mark.parametrize("shape", ["exponential", "gaussian", "rectangular"])
async def test_pulse_shapes_and_line_spectrum(shape):
    pulses = PulseConfig(rate=1e5, shape=shape, spectrum="lines", lines=((0.3, 1.0), (0.6, 1.0)),
                         amplitude_max=1.0, noise=0.0, width=40e-9)
    s = RedPitayaSimulator("127.0.0.1", 0, seed=9, pulses=pulses)
    await s.start()
    try:
        async with ScpiClient("127.0.0.1", s.port, timeout=1) as c:
            await c.write("ACQ:RST", "ACQ:DATA:FORMAT BIN", "ACQ:DATA:UNITS RAW",
                          "ACQ:TRig:LEV 0.1", "ACQ:TRig:DLY -8000")
            peaks = []
            for _ in range(40):
                await c.write("ACQ:START", "ACQ:TRig CH1_PE")
                while (await c.query_many(["ACQ:TRig:STAT?", "ACQ:TRig:FILL?"])) != ["TD", "1"]:
                    pass
                tpos = int(await c.query("ACQ:TPOS?"))
                data = await c.query_samples(f"ACQ:SOUR1:DATA:STArt:N? {(tpos - 20) % 16384},150")
                assert data[19] < 819 <= data[20]
                peaks.append(int(data.max()))
        assert set(peaks) == {2458, 4915}  # 0.3 V and 0.6 V
    finally:
        await s.stop()


def test_pulse_config_validation():
    for bad in (dict(shape="square"), dict(spectrum="flat"), dict(rate=0),
                dict(rise_time=1e-6, decay_time=1e-7), dict(noise=-1), dict(spectrum="lines", lines=())):
        with pytest.raises(ValueError):
            PulseConfig(**bad).validate()  # type: ignore[arg-type]
    assert Faults(drop_every=3).action(6) == "drop"
    assert Faults(stall_at=frozenset({2})).action(2) == "stall"
    assert Faults().action(5) is None


# ----------------------------------------------------------------------- older OS
async def test_older_os_spelling_framing_and_crash_on_wrapping_read():
    s = RedPitayaSimulator("127.0.0.1", 0, seed=1, os="1.04-18",
                           pulses=PulseConfig(rate=1e5, spectrum="fixed", amplitude=0.5, noise=0.0))
    await s.start()
    try:
        reader, writer = await _raw(s.port)
        writer.write(b"ACQ:DATA:FORMAT BIN\r\nACQ:DATA:UNITS RAW\r\n"
                     b"ACQ:SOUR1:DATA:STA:N? 0,2\r\nACQ:SOUR2:DATA:STA:N? 16382,2\r\n"
                     b"ACQ:SOUR1:DATA:STArt:N? 0,2\r\nACQ:TRig:FILL?\r\nSYST:BRD:Name?\r\n*STB?\r\n")
        # two blocks back to back, no \r\n after either; the unknown queries say nothing
        assert await reader.readexactly(14) == b"#14\x00\x00\x00\x00#14\x00\x00\x00\x00"
        assert await reader.readuntil(b"\r\n") == b"4\r\n"
        writer.write(b"SYST:ERR:COUN?\r\n")
        assert await reader.readuntil(b"\r\n") == b"3\r\n"
        # a read past the buffer end: the older server crashes, every connection drops
        writer.write(b"ACQ:SOUR1:DATA:STA:N? 16380,10\r\n")
        assert await reader.read() == b""
        assert s.stats["crashes"] == 1
        writer.close()
    finally:
        await s.stop()


def test_os_profiles():
    assert [p for p in sim_mod.OS_PROFILES if sim_mod.OS_PROFILES[p].older] == ["1.04-18", "1.04-28", "2.00-15"]
    assert not sim_mod.os_profile("1.04-18").fill_query and sim_mod.os_profile("1.04-28").fill_query
    with pytest.raises(ValueError, match="unknown OS version '9.9'"):
        RedPitayaSimulator(os="9.9")
    with pytest.raises(ValueError, match="RP:RET_ON_ERROR needs OS 2.07-43"):
        RedPitayaSimulator(ret_on_error=True)


async def test_trigger_state_means_received_from_2_05_37():
    s = RedPitayaSimulator("127.0.0.1", 0, seed=1, os="2.05-37")
    await s.start()
    try:
        async with ScpiClient("127.0.0.1", s.port, timeout=1) as c:
            await c.write("ACQ:RST", "ACQ:START")
            # not armed yet: no trigger received (older OS said TD = disabled here)
            assert await c.query("ACQ:TRig:STAT?") == "WAIT"
            await c.write("ACQ:TRig NOW")
            assert await c.query("ACQ:TRig:STAT?") == "TD"
    finally:
        await s.stop()


# ----------------------------------------------------------------------- hooks
def test_drop_and_stall_hooks_from_another_thread():
    async def scenario(port: int, sim: SimulatorThread) -> None:
        c = ScpiClient("127.0.0.1", port, timeout=0.2)
        await c.connect()
        assert (await c.query("*IDN?")).startswith("REDPITAYA")
        await asyncio.to_thread(sim.drop_connections)
        with pytest.raises(ScpiConnectionError):
            await c.query("*IDN?")
        await c.connect()
        await asyncio.to_thread(sim.stall)
        with pytest.raises(ScpiConnectionError):  # ScpiTimeout: *STB? unanswered too
            await c.query("*IDN?")
        await asyncio.to_thread(sim.resume)
        await c.connect()
        assert (await c.query("*IDN?")).startswith("REDPITAYA")
        await c.close()

    with SimulatorThread(seed=1) as sim:
        asyncio.run(scenario(sim.port, sim))
        assert sim.simulator.stats["drops"] == 1 and sim.simulator.stats["stalls"] == 1


# ----------------------------------------------------------------------- CLI
def test_cli_serves_and_rejects_bad_arguments(capsys):
    assert sim_mod.main(["--rate", "-5", "--port", "0"]) == 2
    assert "rate must be > 0" in capsys.readouterr().err
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimocorb2.sim.redpitaya", "--port", "0", "--seed", "1", "--no-lend",
         "--older-os"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])

        async def talk() -> tuple[list[tuple[int, str]], object]:
            async with ScpiClient("127.0.0.1", port, timeout=1) as c:
                await c.write("ACQ:DATA:BYTE:ORDER LEND")
                errors = await c.check_errors()
                return errors, await c.probe("SYST:BRD:Name?")  # --older-os: unknown

        assert asyncio.run(talk()) == ([(-113, "Undefined header")], None)
    finally:
        proc.terminate()
        proc.wait(10)
