"""Worker templates and the foreground runner, end to end with real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mimocorb2 import BufferIO, Exporter, Filter, Importer, IsAlive, Observer, Processor, SetupError, UfuncError
from mimocorb2.mimo_buffer import BufferObserver, BufferReader, BufferWriter, mimoBuffer
from mimocorb2.runtime import Runner
from mimocorb2.setup import load_setup

FUNCTIONS = '''
import numpy as np
import time
from mimocorb2 import Importer, Filter, Processor, Exporter

def source(io):
    importer = Importer(io)
    n = io.get("n_events", None)
    def gen():
        i = 0
        while n is None or i < n:
            event = np.zeros_like(importer.data_example)
            event["index"] = i
            event["value"] = i % 7
            yield event
            i += 1
        yield None
    importer(gen)

def keep_odd(io):
    Filter(io)(lambda data: bool(data["index"][0] % 2))

def square(io):
    sink = io.data_out_examples[0]
    def work(data):
        out = np.zeros_like(sink)
        out["index"] = data["index"][0]
        out["square"] = float(data["value"][0]) ** 2
        return [out]
    Processor(io)(work)

def collect(io):
    seen = []
    for data, metadata in Exporter(io):
        seen.append(int(data["index"][0]))
    (io.run_dir / f"{io.name}-{io.process_index}.txt").write_text(" ".join(map(str, seen)))

def explode(io):
    def work(data):
        if data["index"][0] == 11:
            raise ZeroDivisionError("bad event 11")
        return True
    Filter(io)(work)

def wrong_shape(io):
    Importer(io)(lambda: iter([None]))
'''

SETUP = """
Buffers:
  raw: {{slot_count: 16, data_length: 4, data_dtype: {{index: int64, value: float64}}}}
  odd: {{slot_count: 8, data_length: 4, data_dtype: {{index: int64, value: float64}}}}
  squares: {{slot_count: 8, data_length: 1, data_dtype: {{index: int64, square: float64}}}}
Workers:
  source:
    file: functions.py
    function: source
    config: {{n_events: {n_events}}}
    sinks: [raw]
  odd_filter:
    file: functions.py
    function: {filter_function}
    number_of_processes: 2
    sources: [raw]
    sinks: [odd]
  all_raw:
    file: functions.py
    function: collect
    sources: [raw]
  squarer:
    file: functions.py
    function: square
    number_of_processes: 3
    sources: [odd]
    sinks: [squares]
  result:
    file: functions.py
    function: collect
    number_of_processes: 2
    sources: [squares]
"""


def write_setup(tmp_path: Path, n_events: int | None = 3000, filter_function: str = "keep_odd") -> Path:
    (tmp_path / "functions.py").write_text(FUNCTIONS)
    setup = tmp_path / "setup.yaml"
    setup.write_text(SETUP.format(n_events="null" if n_events is None else n_events, filter_function=filter_function))
    return setup


def collected(run_dir: Path, worker: str) -> list[int]:
    values = []
    for path in sorted(run_dir.glob(f"{worker}-*.txt")):
        values += [int(v) for v in path.read_text().split()]
    return values


def test_three_stage_pipeline_loses_nothing_and_fans_out(tmp_path):
    report = Runner(load_setup(write_setup(tmp_path, 3000))).run()
    assert report.ok, report.failed_workers
    assert sorted(collected(report.run_dir, "all_raw")) == list(range(3000))
    assert sorted(collected(report.run_dir, "result")) == list(range(1, 3000, 2))
    assert report.event_counts == {"raw": 3000, "odd": 1500, "squares": 1500}
    assert all(s["lost"] == 0 and s["ended"] for s in report.stats.values())


def test_failing_ufunc_names_worker_and_downstream_still_ends(tmp_path):
    report = Runner(load_setup(write_setup(tmp_path, 200, "explode"))).run()
    assert set(report.failed_workers) == {"odd_filter"}
    log = (report.run_dir / "logs" / "odd_filter.log").read_text()
    assert "worker 'odd_filter': ufunc raised: ZeroDivisionError: bad event 11" in log
    assert "Traceback" in log
    # the other reader group still got every event, and the graph ended
    assert sorted(collected(report.run_dir, "all_raw")) == list(range(200))
    assert all(s["ended"] for s in report.stats.values())


def test_cli_quiet_summary_says_why_a_worker_failed(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mimocorb2", "run", str(write_setup(tmp_path, 200, "explode")), "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("worker 'odd_filter' failed"))
    assert lines[failed + 1].startswith("  its last error: "), done.stderr
    assert "ufunc raised: ZeroDivisionError: bad event 11" in lines[failed + 1]


def test_cli_run_max_events_on_endless_source(tmp_path):
    setup = write_setup(tmp_path, None)
    done = subprocess.run(
        [sys.executable, "-m", "mimocorb2", "run", str(setup), "--max-events", "500", "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "stopped: max_events=500" in done.stdout
    run_dir = Path(done.stdout.split("run directory: ")[1].split()[0])
    assert sorted(collected(run_dir, "all_raw")) == list(range(500))  # exactly the limit
    assert sorted(collected(run_dir, "result")) == list(range(1, 500, 2))


def test_cli_ctrl_c_stops_gracefully(tmp_path):
    setup = write_setup(tmp_path, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimocorb2", "run", str(setup)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        started = 0
        for line in proc.stdout:
            started += line.startswith("started ")
            if started == 9:  # every process is up
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped: interrupted" in out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    produced = len(collected(run_dir, "all_raw"))
    assert sorted(collected(run_dir, "result")) == list(range(1, produced, 2))


def test_cli_reports_setup_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("Buffers: {}\nWorkers:\n  w: {function: nosuch.thing, sinks: [missing]}\n")
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "missing" in done.stderr and "bad.yaml" in done.stderr
    checked = subprocess.run([sys.executable, "-m", "mimocorb2", "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1 and "problem" in checked.stdout


# ---------------------------------------------------------------- templates in one process
@pytest.fixture
def buffers():
    made = {
        "a": mimoBuffer("a", 8, 3, {"x": "f8", "n": "i4"}),
        "b": mimoBuffer("b", 8, 3, {"x": "f8", "n": "i4"}),
        "c": mimoBuffer("c", 8, 5, {"y": "f4"}),
    }
    yield made
    for buf in made.values():
        buf.close()


def io_for(buffers, sources=(), sinks=(), observes=(), config=None, tmp="/tmp") -> BufferIO:
    return BufferIO(
        "tpl",
        [BufferReader(buffers[n]) for n in sources],
        [BufferWriter(buffers[n]) for n in sinks],
        [BufferObserver(buffers[n]) for n in observes],
        config or {},
        tmp,
        tmp,
    )


@pytest.mark.parametrize(
    "template, kwargs, message",
    [
        (Importer, dict(sources=["a"], sinks=["b"]), "Importer must have no buffer in sources, got 1 ['a']"),
        (Importer, dict(), "Importer must have exactly 1 buffer in sinks, got 0"),
        (Filter, dict(sources=["a"], sinks=["c"]), "Filter sink 'c' must have the same data_dtype and data_length as source 'a'"),
        (Filter, dict(sources=["a"]), "Filter must have at least 1 buffer in sinks"),
        (Exporter, dict(sources=["a", "b"]), "Exporter must have exactly 1 buffer in sources"),
        (Processor, dict(sources=["a"], observes=["b"], sinks=["c"]), "Processor must have no buffer in observes"),
        (Observer, dict(sources=["a"]), "Observer must have no buffer in sources"),
        (IsAlive, dict(), "IsAlive must have exactly 1 buffer in observes"),
    ],
)
def test_template_setup_errors_name_worker_and_rule(buffers, template, kwargs, message):
    with pytest.raises(SetupError) as info:
        template(io_for(buffers, **kwargs))
    assert f"worker 'tpl': {message}" in str(info.value)


def test_importer_metadata_and_end(buffers):
    io = io_for(buffers, sinks=["a"])
    importer = Importer(io)

    def gen():
        for i in range(3):
            event = np.zeros_like(importer.data_example)
            event["n"] = i
            yield event
        yield None

    importer(gen)
    reader = BufferReader(buffers["a"])
    for i in range(3):
        with reader as (metadata, data):
            assert data["n"][0] == i and metadata["counter"][0] == i
            assert metadata["timestamp"][0] > 1.6e9 and 0 <= metadata["deadtime"][0] <= 1
    with reader as (metadata, data):
        assert data is None


def test_importer_accepts_a_plain_iterable(buffers):
    importer = Importer(io_for(buffers, sinks=["b"]))
    events = [np.full(3, i, importer.data_example.dtype) for i in range(2)]
    importer(lambda: events)  # a list: no None at the end, no close()
    stats = buffers["b"].get_stats()
    assert stats["event_count"] == 2 and stats["ended"]


@pytest.mark.parametrize("event, got", [
    (np.zeros(2), "an array of shape (2,) and dtype float64"),
    ({"x": [1.0, 2.0, 3.0]}, "a dict"),
])
def test_importer_names_buffer_and_layout_when_an_event_does_not_fit(buffers, event, got):
    importer = Importer(io_for(buffers, sinks=["a"]))
    with pytest.raises(UfuncError) as info:
        importer(lambda: iter([event]))
    assert (f"worker 'tpl': yielded data that does not fit buffer 'a' (data_length 3, "
            f"data_dtype {{x: float64, n: int32}}): got {got}") in str(info.value)
    stats = buffers["a"].get_stats()
    assert stats["event_count"] == 0 and stats["pending"] == 0  # the slot was given back


def test_processor_names_sink_and_layout_when_a_result_does_not_fit(buffers):
    with BufferWriter(buffers["a"]) as (metadata, data):
        data["x"] = 2.5
    buffers["a"].send_flush_event()
    with pytest.raises(UfuncError, match=r"result for sink 'c' does not fit buffer 'c' \(data_length 5, "
                                         r"data_dtype \{y: float32\}\): got an array of shape \(3,\)"):
        Processor(io_for(buffers, sources=["a"], sinks=["c"]))(lambda data: [np.zeros(3)])


def test_filter_on_a_whole_structured_event_gets_a_hint(buffers):
    """The manual's Filter example, `np.max(data) > min_height`, on a structured event."""
    with BufferWriter(buffers["a"]) as (metadata, data):
        data["x"] = 2.5
    buffers["a"].send_flush_event()
    with pytest.raises(UfuncError) as info:
        Filter(io_for(buffers, sources=["a"], sinks=["b"]))(lambda data: np.max(data) > 1)
    assert ("ufunc raised (hint: data is a structured array with the fields x, n; "
            "compute on one of them, e.g. data['x'])") in str(info.value)


def test_processor_rejects_wrong_result_and_exporter_copies(buffers):
    with BufferWriter(buffers["a"]) as (metadata, data):
        data["x"] = 2.5
        metadata["counter"] = 77
    with pytest.raises(UfuncError, match="must return None or a list of 1 results"):
        Processor(io_for(buffers, sources=["a"], sinks=["c"]))(lambda data: data)
    for i in range(2):
        with BufferWriter(buffers["a"]) as (metadata, data):
            data["x"] = i
            metadata["counter"] = i
    buffers["a"].send_flush_event()
    got = [(float(d["x"][0]), int(m["counter"][0])) for d, m in Exporter(io_for(buffers, sources=["a"], sinks=["b"]))]
    assert got == [(0.0, 0), (1.0, 1)]
    copies = []
    reader = BufferReader(buffers["b"])
    while True:
        with reader as (metadata, data):
            if data is None:
                break
            copies.append((float(data["x"][0]), int(metadata["counter"][0])))
    assert copies == got


def test_observer_and_is_alive(buffers):
    io = io_for(buffers, observes=["a"])
    alive = IsAlive(io)
    assert alive()
    with BufferWriter(buffers["a"]) as (metadata, data):
        data["n"] = 5
    generator = Observer(io)()
    data, metadata = next(generator)
    assert data["n"][0] == 5
    buffers["a"].send_flush_event()
    assert next(generator) == (None, None)
    assert not alive()


def test_buffer_io_config_access(buffers):
    io = io_for(buffers, config={"threshold": 3})
    assert io["threshold"] == 3 and io.get("missing", 9) == 9
    with pytest.raises(KeyError) as info:
        io["thresold"]
    assert "worker 'tpl': config key 'thresold' is missing (keys given: threshold)" in str(info.value)
    assert isinstance(info.value, SetupError)


def test_user_names_importable_from_package():
    import mimocorb2 as mi2

    for name in ("Importer", "Exporter", "Filter", "Processor", "Observer", "IsAlive", "BufferIO", "mimoBuffer"):
        assert hasattr(mi2, name)
    assert textwrap  # keep import used
