"""The prebuilt functions, each run for real in worker processes on real buffers."""

from __future__ import annotations

import csv
import importlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mimocorb2.errors import SetupError
from mimocorb2.mimo_buffer import BufferObserver, BufferReader, BufferWriter, mimoBuffer
from mimocorb2.mimo_worker import BufferIO
from mimocorb2.mimofile import read_mimo_file, read_mimo_header

CTX = mp.get_context("spawn")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ helpers
@pytest.fixture
def make_buffer() -> Iterator[Callable[..., mimoBuffer]]:
    """Create buffers that are closed (and unlinked) after the test."""
    made: list[mimoBuffer] = []

    def make(*args: Any, **kwargs: Any) -> mimoBuffer:
        buf = mimoBuffer(*args, **kwargs)
        made.append(buf)
        return buf

    yield make
    for buf in made:
        buf.close()


def _function(name: str) -> Callable[[BufferIO], None]:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(f"mimocorb2.functions.{module}"), attr)


def _make_io(
    name: str,
    sources: list[tuple[mimoBuffer, str]],
    sinks: list[mimoBuffer],
    observes: list[mimoBuffer],
    config: dict[str, Any],
    setup_dir: Path,
    run_dir: Path,
) -> BufferIO:
    return BufferIO(
        name,
        [BufferReader(b, g) for b, g in sources],
        [BufferWriter(b) for b in sinks],
        [BufferObserver(b) for b in observes],
        config,
        setup_dir,
        run_dir,
    )


def _child(function: str, name: str, sources, sinks, observes, config, setup_dir, run_dir) -> None:
    """Body of a worker process (module level, so that spawn can find it)."""
    os.environ["MIMOCORB2_HEADLESS"] = "1"
    io = _make_io(name, sources, sinks, observes, config, Path(setup_dir), Path(run_dir))
    _function(function)(io)


class Workers:
    """Start prebuilt functions in spawned processes and join them."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.processes: list[mp.process.BaseProcess] = []

    def start(
        self,
        function: str,
        name: str,
        *,
        sources: list[tuple[mimoBuffer, str]] = (),  # type: ignore[assignment]
        sinks: list[mimoBuffer] = (),  # type: ignore[assignment]
        observes: list[mimoBuffer] = (),  # type: ignore[assignment]
        config: dict[str, Any] | None = None,
        processes: int = 1,
    ) -> None:
        for i in range(processes):
            p = CTX.Process(
                target=_child,
                name=f"{name}-{i}",
                args=(function, name, list(sources), list(sinks), list(observes), config or {},
                      str(self.run_dir), str(self.run_dir)),
                daemon=True,
            )
            p.start()
            self.processes.append(p)

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for p in self.processes:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.processes:
            if p.is_alive():
                p.kill()
                p.join()
        codes = {p.name: p.exitcode for p in self.processes}
        assert all(c == 0 for c in codes.values()), f"worker exit codes: {codes}"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    for p in w.processes:
        if p.is_alive():
            p.kill()
            p.join()


def _write(buf: mimoBuffer, rows: list[dict[str, Any]], timestamps: list[float] | None = None) -> None:
    """Write one event per dict (field -> value(s)) and end the stream."""
    writer = BufferWriter(buf)
    for i, row in enumerate(rows):
        with writer as (metadata, data):
            data[:] = 0
            for key, value in row.items():
                data[key] = value
            metadata["counter"] = i
            metadata["timestamp"] = timestamps[i] if timestamps is not None else 1000.0 + i
            metadata["deadtime"] = 0.0
    writer.send_flush_event()


def _read_all(buf: mimoBuffer, group: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Every event of ``buf`` for reader group ``group`` until end of stream."""
    reader = BufferReader(buf, group)
    metas, datas = [], []
    while True:
        with reader as (metadata, data):
            if data is None:
                break
            metas.append(metadata.copy())
            datas.append(data.copy())
    if not metas:
        return np.zeros(0, buf.metadata_dtype), np.zeros((0, buf.data_length), buf.data_dtype)
    return np.concatenate(metas), np.stack(datas)


# ------------------------------------------------------------------ exporters
def test_drain_consumes_everything(make_buffer, workers) -> None:
    buf = make_buffer("drain_src", 8, 10, {"x": "f4"}, reader_groups=["drain"])
    workers.start("exporters.drain", "drain", sources=[(buf, "drain")], processes=2)
    _write(buf, [{"x": i} for i in range(300)])
    workers.join()
    stats = buf.get_stats()
    assert stats["event_count"] == 300
    assert stats["ended"] and stats["pending"] == 0


def test_histogram_accounts_for_every_event(make_buffer, workers, tmp_path) -> None:
    src = make_buffer("heights", 16, 1, {"x": "f8", "y": "f4", "z": "i4"}, reader_groups=["hist"])
    passthrough = make_buffer("heights_copy", 2048, 1, {"x": "f8", "y": "f4", "z": "i4"}, reader_groups=["test"])
    bins = {"x": [0.0, 10.0, 10], "y": [-1, 1, 4]}
    workers.start("exporters.histogram", "hist", sources=[(src, "hist")], sinks=[passthrough],
                  config={"bins": bins, "update_interval": 0.05})
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-2, 12, 1500), [0.0, 10.0, np.nan]])
    y = rng.normal(0, 0.6, len(x)).astype(np.float32)
    _write(src, [{"x": a, "y": b, "z": i} for i, (a, b) in enumerate(zip(x, y))])
    meta, data = _read_all(passthrough)
    workers.join()
    assert len(meta) == len(x)
    np.testing.assert_array_equal(data["z"][:, 0], np.arange(len(x)))

    directory = tmp_path / "Histograms_heights"
    assert (directory / ".complete").exists()
    with open(directory / "info.csv", newline="") as fh:
        info = {row["channel"]: row for row in csv.DictReader(fh)}
    assert set(info) == {"x", "y"}
    for channel, (lo, hi, n) in bins.items():
        row = info[channel]
        assert (float(row["min"]), float(row["max"]), int(row["bins"])) == (lo, hi, n)
        counts = np.load(directory / f"{channel}.npy")
        values = x if channel == "x" else y.astype(np.float64)
        expected, _ = np.histogram(values[np.isfinite(values)], bins=n, range=(lo, hi))
        np.testing.assert_array_equal(counts, expected)
        total = counts.sum() + int(row["underflow"]) + int(row["overflow"])
        assert total == len(x), f"{channel}: {total} of {len(x)} events accounted for"
    assert not list(directory.glob("*.tmp"))


def test_csv_holds_every_event(make_buffer, workers, tmp_path) -> None:
    src = make_buffer("params", 16, 1, {"height": "f4", "position": "i4", "tag": "S3"},
                      reader_groups=["csv", "drain"])
    workers.start("exporters.csv", "csv", sources=[(src, "csv")],
                  config={"filename": "pulses", "save_interval": 0.02})
    workers.start("exporters.drain", "drain", sources=[(src, "drain")])
    n = 700
    _write(src, [{"height": i * 0.5, "position": i % 17, "tag": b"ab"} for i in range(n)])
    workers.join()
    with open(tmp_path / "pulses.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["counter", "timestamp", "deadtime", "height", "position", "tag"]
    body = rows[1:]
    assert len(body) == n
    assert [int(r[0]) for r in body] == list(range(n))
    assert [float(r[1]) for r in body] == [1000.0 + i for i in range(n)]
    assert [float(r[3]) for r in body] == [i * 0.5 for i in range(n)]
    assert [int(r[4]) for r in body] == [i % 17 for i in range(n)]
    assert {r[5] for r in body} == {"ab"}


def _poll(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Wait (bounded) until ``condition()`` holds; polls a file, not a sleep standing in for sync."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_histogram_and_csv_update_during_the_run(make_buffer, workers, tmp_path) -> None:
    """Files are rewritten every interval while the stream runs, not only at its end."""
    src = make_buffer("live", 64, 1, {"v": "f8"}, reader_groups=["hist", "csv"])
    workers.start("exporters.histogram", "hist", sources=[(src, "hist")],
                  config={"bins": {"v": [0, 10, 10]}, "update_interval": 0.05})
    workers.start("exporters.csv", "csv", sources=[(src, "csv")], config={"save_interval": 0.05})
    writer = BufferWriter(src)

    def write(n: int, start: int) -> None:
        for i in range(start, start + n):
            with writer as (metadata, data):
                data["v"] = 5.0
                metadata["counter"] = i

    def hist_sum() -> int:
        try:
            return int(np.load(tmp_path / "Histograms_live" / "v.npy").sum())
        except (OSError, ValueError):
            return -1

    def csv_rows() -> int:
        path = tmp_path / "csv.csv"
        return len(path.read_text().splitlines()) - 1 if path.exists() else -1

    write(20, 0)
    # the exporters only look at the clock when an event arrives: keep a trickle going
    i = 20
    deadline = time.monotonic() + 30
    while (hist_sum() < 20 or csv_rows() < 20) and time.monotonic() < deadline:
        write(1, i)
        i += 1
        _poll(lambda: hist_sum() >= 20 and csv_rows() >= 20, timeout=0.1)
    assert hist_sum() >= 20 and csv_rows() >= 20, "no intermediate update"
    assert not (tmp_path / "Histograms_live" / ".complete").exists()
    writer.send_flush_event()
    workers.join()
    assert hist_sum() == i and csv_rows() == i
    assert (tmp_path / "Histograms_live" / ".complete").exists()


def test_export_killed_mid_run_leaves_readable_file(make_buffer, workers, tmp_path) -> None:
    import signal

    src = make_buffer("crash_src", 64, 100, {"a": "f4"}, reader_groups=["export"])
    workers.start("data.export", "export", sources=[(src, "export")])
    path = tmp_path / "export.mimo"
    writer = BufferWriter(src)
    for i in range(40):
        with writer as (metadata, data):
            data["a"] = i
            metadata["counter"] = i

    def records() -> int:
        try:
            return len(read_mimo_file(path)[0])
        except (OSError, ValueError):
            return -1

    # data.export flushes every second: wait (bounded) until all 40 records are on disk
    i = 40
    deadline = time.monotonic() + 30
    while records() < 40 and time.monotonic() < deadline:
        with writer as (metadata, data):  # a trickle of events lets the exporter check its clock
            data["a"] = i
            metadata["counter"] = i
        i += 1
        _poll(lambda: records() >= 40, timeout=0.2)
    assert records() >= 40
    proc = workers.processes[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    meta, data = read_mimo_file(path)
    n = len(meta)
    assert n >= 40
    assert list(meta["counter"]) == list(range(n))
    np.testing.assert_array_equal(data["a"], np.repeat(np.arange(n, dtype=np.float32)[:, None], 100, axis=1))
    workers.processes.clear()


# ------------------------------------------------------------------ analyzers
def _pulse_events(n: int, length: int, seed: int) -> tuple[list[dict[str, Any]], list[list[tuple[int, float]]]]:
    from mimocorb2.sim.pulses import pulse_template

    template, start = pulse_template(length, 2.0, 10.0)
    offset = int(np.argmax(template)) - start
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for i in range(n):
        wave = np.zeros(length, np.float32)
        peaks = []
        k = i % 3  # 0, 1 or 2 pulses
        positions = sorted(rng.choice(np.arange(20, length - 40, 120), size=k, replace=False)) if k else []
        for pos in positions:
            h = float(rng.uniform(0.2, 1.0))
            s = start - (pos - offset)
            wave += np.float32(h) * template[s : s + length]
            peaks.append((int(pos), h))
        rows.append({"ch1": wave, "ch2": -wave})
        truth.append(peaks)
    return rows, truth


def test_pha_one_event_per_peak(make_buffer, workers) -> None:
    length = 400
    src = make_buffer("waves", 8, length, {"ch1": "f4", "ch2": "f4"}, reader_groups=["pha"])
    sink = make_buffer("peaks", 4096, 1, {"position": "i4", "peak_heights": "f4", "widths": "f4",
                                           "prominences": "f4"}, reader_groups=["test"], writers=2)
    workers.start("analyzers.pha", "pha", sources=[(src, "pha")], sinks=[sink], processes=2,
                  config={"channel": "ch1", "height": 0.1, "distance": 10, "width": 1.0})
    rows, truth = _pulse_events(300, length, seed=3)
    _write(src, rows)
    meta, data = _read_all(sink)
    workers.join()
    assert len(meta) == sum(len(t) for t in truth)
    found: dict[int, list[tuple[int, float]]] = {}
    for m, d in zip(meta, data[:, 0]):
        found.setdefault(int(m["counter"]), []).append((int(d["position"]), float(d["peak_heights"])))
        assert d["widths"] > 1.0 and d["prominences"] > 0
    for counter, peaks in enumerate(truth):
        got = sorted(found.get(counter, []))
        assert [p for p, _ in got] == [p for p, _ in peaks]
        np.testing.assert_allclose([h for _, h in got], [h for _, h in peaks], rtol=1e-4)


# ------------------------------------------------------------------ data
def test_export_then_replay(make_buffer, workers, tmp_path) -> None:
    length = 5
    dtype = {"a": "f4", "b": "i2"}
    src = make_buffer("raw", 8, length, dtype, reader_groups=["export"])
    n = 120
    rows = [{"a": np.arange(length) + i, "b": i} for i in range(n)]
    stamps = [50.0 + 0.001 * i for i in range(n)]
    workers.start("data.export", "export", sources=[(src, "export")])
    _write(src, rows, timestamps=stamps)
    workers.join()
    path = tmp_path / "export.mimo"
    header = read_mimo_header(path)
    assert header.buffer_name == "raw" and header.data_length == length
    meta, data = read_mimo_file(path)
    assert list(meta["counter"]) == list(range(n))
    np.testing.assert_array_equal(meta["timestamp"], stamps)
    np.testing.assert_array_equal(data["a"], [np.arange(length) + i for i in range(n)])

    # replay honoring the file's timestamps (0.119 s from first to last event)
    replayed = make_buffer("replayed", 256, length, dtype, reader_groups=["test"])
    workers.processes.clear()
    workers.start("data.simulate_importer", "replay", sinks=[replayed], config={"filename": str(path)})
    m2, d2 = _read_all(replayed)
    workers.join()
    np.testing.assert_array_equal(d2, data)
    span = m2["timestamp"][-1] - m2["timestamp"][0]
    assert span >= 0.119 * 0.98

    # replay at a fixed rate: uniform spacing of 1/rate
    clocked = make_buffer("clocked", 256, length, dtype, reader_groups=["test"])
    workers.processes.clear()
    workers.start("data.clocked_importer", "clock", sinks=[clocked],
                  config={"filename": "export.mimo", "rate": 1000.0, "distribution": "uniform"})
    m3, d3 = _read_all(clocked)
    workers.join()
    np.testing.assert_array_equal(d3, data)
    assert m3["timestamp"][-1] - m3["timestamp"][0] >= (n - 1) / 1000.0 * 0.98
    assert list(m3["counter"]) == list(range(n))


def test_clocked_importer_poisson(make_buffer, workers, tmp_path) -> None:
    from mimocorb2.mimofile import METADATA_DTYPE, MimoFileWriter

    dtype = np.dtype([("x", "<f8")])
    n = 200
    with MimoFileWriter(tmp_path / "in.mimo", dtype, 3, "src") as f:
        for i in range(n):
            f.write(np.zeros(1, METADATA_DTYPE), np.full(3, i, dtype))
    sink = make_buffer("poisson", 512, 3, {"x": "f8"}, reader_groups=["test"])
    workers.start("data.clocked_importer", "clock", sinks=[sink],
                  config={"filename": str(tmp_path / "in.mimo"), "rate": 2000, "distribution": "poisson"})
    meta, data = _read_all(sink)
    workers.join()
    np.testing.assert_array_equal(data["x"][:, 0], np.arange(n))
    gaps = np.diff(meta["timestamp"])
    assert gaps.min() >= 0
    # exponential spacing: many gaps far below the mean (uniform spacing would have none)
    assert np.mean(gaps < 0.25 / 2000) > 0.1


# ------------------------------------------------------------------ misc
def test_copy_to_sinks_of_other_layouts(make_buffer, workers) -> None:
    dtype = {"a": "f4", "b": "i4"}
    src = make_buffer("orig", 8, 6, dtype, reader_groups=["copy"])
    same = make_buffer("same", 512, 6, dtype, reader_groups=["test"], writers=2)
    short = make_buffer("short", 512, 4, {"a": "f8"}, reader_groups=["test"], writers=2)
    longer = make_buffer("longer", 512, 8, {"b": "i8", "a": "f4"}, reader_groups=["test"], writers=2)
    workers.start("misc.copy", "copy", sources=[(src, "copy")], sinks=[same, short, longer], processes=2)
    n = 200
    _write(src, [{"a": np.arange(6) * 0.5 + i, "b": np.arange(6) + 10 * i} for i in range(n)])
    results = {buf.name: _read_all(buf) for buf in (same, short, longer)}
    workers.join()
    for name, (meta, data) in results.items():
        order = np.argsort(meta["counter"])
        meta, data = meta[order], data[order]
        assert list(meta["counter"]) == list(range(n)), name
        np.testing.assert_array_equal(meta["timestamp"], 1000.0 + np.arange(n))
        k = min(6, data.shape[1])
        np.testing.assert_array_equal(data["a"][:, :k], [np.arange(k) * 0.5 + i for i in range(n)])
        if "b" in data.dtype.names:
            np.testing.assert_array_equal(data["b"][:, :k], [np.arange(k) + 10 * i for i in range(n)])
        if data.shape[1] > 6:
            assert not data["a"][:, 6:].any() and not data["b"][:, 6:].any()


# ------------------------------------------------------------------ plots
def _png_ok(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC


def test_oscilloscope_headless_png(make_buffer, workers, tmp_path) -> None:
    length = 300
    buf = make_buffer("scope_src", 16, length, {"ch1": "f4", "ch2": "f4"}, reader_groups=["test"])
    workers.start("observers.oscilloscope", "scope", observes=[buf],
                  config={"update_interval": 0.02, "trigger_level": 0.5, "channels": ["ch1"],
                          "t_scaling": [0.004, -0.2, "Time (us)"], "y_scaling": [1000, 0, "Signal (mV)"]})
    png = tmp_path / "plots" / "scope.png"
    writer = BufferWriter(buf)
    reader = BufferReader(buf, "test")
    # one event at a time: wait (bounded) until the scope has drawn it, then the next one
    seen: list[int] = []
    deadline = time.monotonic() + 60
    for i in range(3):
        with writer as (metadata, data):
            data["ch1"] = np.sin(np.arange(length) / 10.0 + i)
            data["ch2"] = 0
            metadata["counter"] = i
        with reader as (_m, _d):
            pass
        while time.monotonic() < deadline:  # poll the file, bounded
            mtime = png.stat().st_mtime_ns if png.exists() else None
            if mtime is not None and mtime not in seen:
                seen.append(mtime)
                break
            time.sleep(0.01)
    writer.send_flush_event()
    with reader as (m, d):
        assert d is None
    workers.join()
    assert len(seen) >= 3, "oscilloscope did not keep rewriting its PNG"
    assert _png_ok(png)
    assert not list(png.parent.glob("*.tmp"))


def test_oscilloscope_labels_scaling_trigger_line(tmp_path) -> None:
    """The figure content: axis labels from the scalings, scaled data and trigger line."""
    from mimocorb2.functions._plotting import PlotOutput
    from mimocorb2.functions.observers import _Scope

    out = PlotOutput("scope", tmp_path / "plots", headless=True, low_priority=False)
    scope = _Scope(out.figure, "buf", ["ch1"], 100, (0.01, -0.2, "Time (us)"), (1000, 5, "U (mV)"), None, 0.3)
    data = np.zeros(100, [("ch1", "f4")])
    data["ch1"] = np.linspace(0, 1, 100)
    meta = np.zeros(1, [("counter", "i8"), ("timestamp", "f8"), ("deadtime", "f8")])
    meta["counter"] = 42
    scope.show(data, meta)
    out.update()
    ax = scope.ax
    assert ax.get_xlabel() == "Time (us)" and ax.get_ylabel() == "U (mV)"
    line = scope.lines["ch1"]
    np.testing.assert_allclose(line.get_xdata()[[0, -1]], [-0.2, -0.2 + 0.99])
    np.testing.assert_allclose(line.get_ydata()[[0, -1]], [5, 1005], rtol=1e-5)
    trigger = [l for l in ax.get_lines() if l is not line]
    assert trigger and trigger[0].get_ydata()[0] == pytest.approx(305)
    assert "event 42" in ax.get_title()
    assert _png_ok(tmp_path / "plots" / "scope.png")


def test_histogram_visualizer_headless(make_buffer, workers, tmp_path) -> None:
    src = make_buffer("energies", 16, 1, {"e": "f4"}, reader_groups=["hist"])
    workers.start("exporters.histogram", "hist", sources=[(src, "hist")],
                  config={"bins": {"e": [0, 100, 50]}, "update_interval": 0.05})
    workers.start("exporters.visualize_histogram", "hist_view", observes=[src],
                  config={"update_interval": 0.05, "plot_type": "step"})
    rng = np.random.default_rng(0)
    _write(src, [{"e": v} for v in rng.normal(50, 10, 2000)])
    workers.join()
    assert _png_ok(tmp_path / "plots" / "hist_view.png")
    assert np.load(tmp_path / "Histograms_energies" / "e.npy").sum() == 2000 - 0  # all within range


def test_histogram_view_reads_exporter_files(tmp_path) -> None:
    from mimocorb2.functions._plotting import PlotOutput
    from mimocorb2.functions.visualizers import _HistogramView

    d = tmp_path / "Histograms_b"
    d.mkdir()
    (d / "info.csv").write_text("channel,min,max,bins,underflow,overflow\nx,0,10,5,1,2\n")
    np.save(d / "x.npy", np.array([1, 2, 3, 4, 5]))
    for plot_type in ("line", "bar", "step"):
        out = PlotOutput(f"v_{plot_type}", tmp_path / "plots", headless=True, low_priority=False)
        view = _HistogramView(out.figure, d, plot_type, "t")
        assert view.refresh() == 1
        out.update()
        ax = view.axes["x"]
        assert ax.get_xlabel() == "x" and ax.get_ylabel() == "counts"
        assert "entries 15" in ax.get_title()
        assert _png_ok(tmp_path / "plots" / f"v_{plot_type}.png")


# ------------------------------------------------------------------ config errors
@pytest.fixture
def io_factory(make_buffer, tmp_path):
    """Build a BufferIO in this process (config checks run before anything starts)."""

    def make(config: dict[str, Any], *, src_len: int = 1, src_dtype=None, sink=None, observe=False,
             sources: bool = True, name: str = "w") -> BufferIO:
        dtype = src_dtype or {"x": "f4", "y": "f4"}
        buf = make_buffer(f"cfg_{len(config)}_{src_len}", 4, src_len, dtype)
        sinks = [make_buffer("cfg_sink", 4, sink[0], sink[1])] if sink else []
        return _make_io(name, [(buf, "default")] if sources and not observe else [], sinks,
                        [buf] if observe else [], config, tmp_path, tmp_path)

    return make


@pytest.mark.parametrize(
    "function, kwargs, config, expected",
    [
        ("exporters.histogram", {}, {}, ["Workers.w.config.bins", "missing"]),
        ("exporters.histogram", {}, {"bins": {"nope": [0, 1, 2]}}, ["bins.nope", "not a field"]),
        ("exporters.histogram", {}, {"bins": {"x": [1, 0, 2]}}, ["bins.x", "min < max"]),
        ("exporters.histogram", {}, {"bins": {"x": [0, 1, 2.5]}}, ["bins.x", "number_of_bins"]),
        ("exporters.histogram", {}, {"bins": {"x": [0, 1, 2]}, "update_interval": "fast"},
         ["update_interval", "expected a number"]),
        ("exporters.histogram", {"src_len": 4}, {"bins": {"x": [0, 1, 2]}}, ["sources", "data_length = 1"]),
        ("exporters.csv", {"src_len": 3}, {}, ["Workers.w.sources", "data_length = 1"]),
        ("exporters.csv", {}, {"save_interval": -1}, ["save_interval", ">= 0"]),
        ("analyzers.pha", {"src_len": 50, "sink": (1, {"position": "i4", "peak_heights": "f4"})}, {},
         ["config.height", "peak_heights"]),
        ("analyzers.pha", {"src_len": 50, "sink": (1, {"bogus": "f4"})}, {"height": 1},
         ["sinks", "bogus"]),
        ("analyzers.pha", {"src_len": 50, "sink": (1, {"position": "i4"})}, {"channel": "z"},
         ["config.channel", "'z'"]),
        ("analyzers.pha", {"src_len": 50, "sink": (1, {"position": "i4"})}, {"distance": "far"},
         ["config.distance", "expected a number"]),
        ("analyzers.pha", {"src_len": 50, "sink": (2, {"position": "i4"})}, {}, ["sinks", "data_length = 1"]),
        ("data.clocked_importer", {"sources": False, "sink": (1, {"x": "f4"})}, {"filename": "x.mimo"},
         ["config.rate", "missing"]),
        ("data.clocked_importer", {"sources": False, "sink": (1, {"x": "f4"})},
         {"filename": "nope.mimo", "rate": 1, "distribution": "gauss"}, ["distribution", "uniform"]),
        ("data.simulate_importer", {"sources": False, "sink": (1, {"x": "f4"})}, {"filename": "nope.mimo"},
         ["config.filename", "not found"]),
        ("data.simulate_importer", {"sources": False, "sink": (1, {"x": "f4"})}, {}, ["config.filename", "missing"]),
        ("observers.oscilloscope", {"observe": True}, {"channels": ["q"]}, ["config.channels", "'q'"]),
        ("observers.oscilloscope", {"observe": True}, {"ylim": [1, 0]}, ["config.ylim", "min < max"]),
        ("observers.oscilloscope", {"observe": True}, {"t_scaling": [1, "x"]}, ["config.t_scaling", "scaling"]),
        ("observers.oscilloscope", {}, {}, ["Workers.w.observes", "exactly 1"]),
        ("visualizers.histogram", {"observe": True}, {"plot_type": "pie"}, ["plot_type", "'line'"]),
        ("misc.copy", {"sink": (1, {"other": "f4"})}, {}, ["sinks", "'other'"]),
        ("misc.copy", {}, {}, ["Workers.w.sinks", "at least 1"]),
    ],
)
def test_config_errors_name_worker_key_and_expectation(io_factory, function, kwargs, config, expected) -> None:
    io = io_factory(config, **kwargs)
    with pytest.raises(SetupError) as info:
        _function(function)(io)
    text = str(info.value)
    assert "worker 'w'" in text
    for part in expected:
        assert part in text, f"{part!r} not in {text!r}"


@pytest.mark.parametrize("function, config", [
    ("exporters.histogram", {"bins": {"x": [0, 1, 2]}}),
    ("exporters.csv", {}),
    ("data.export", {}),
])
def test_file_writers_need_a_single_process(make_buffer, tmp_path, function, config) -> None:
    buf = make_buffer("multi", 4, 1, {"x": "f4"})
    io = BufferIO("w", [BufferReader(buf)], [], [], config, tmp_path, tmp_path, number_of_processes=2)
    with pytest.raises(SetupError, match=r"Workers\.w\.number_of_processes: .* exactly 1 process"):
        _function(function)(io)


def test_display_detection(monkeypatch, tmp_path) -> None:
    from mimocorb2.functions._plotting import PlotOutput, display_available

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("MIMOCORB2_HEADLESS", raising=False)
    if os.sys.platform.startswith("linux"):
        assert not display_available()
        monkeypatch.setenv("DISPLAY", ":99")
        assert display_available()
    monkeypatch.setenv("MIMOCORB2_HEADLESS", "1")
    assert not display_available()
    monkeypatch.delenv("MIMOCORB2_HEADLESS")
    monkeypatch.setenv("DISPLAY", ":99")  # a display that does not exist: fall back to a file
    monkeypatch.setenv("MPLBACKEND", "agg")
    out = PlotOutput("p", tmp_path / "plots", low_priority=False)
    assert out.headless
    out.close()


def test_replay_rejects_mismatched_sink(io_factory, tmp_path) -> None:
    from mimocorb2.mimofile import MimoFileWriter

    MimoFileWriter(tmp_path / "f.mimo", np.dtype([("x", "f8")]), 3).close()
    io = io_factory({"filename": "f.mimo"}, sources=False, sink=(1, {"x": "f4"}))
    with pytest.raises(SetupError, match="must match the mimo file"):
        _function("data.simulate_importer")(io)


# ------------------------------------------------------------------ listing
def test_describe_all_lists_every_function_with_config_keys() -> None:
    from mimocorb2.functions import describe_all, iter_functions

    text = describe_all()
    names = {name for name, _f, _doc in iter_functions()}
    for name in ("exporters.drain", "exporters.histogram", "exporters.csv", "visualizers.histogram",
                 "analyzers.pha", "data.export", "data.simulate_importer", "data.clocked_importer",
                 "misc.copy", "observers.oscilloscope"):
        assert name in names
        assert name in text
    assert "exporters.visualize_histogram" in text
    docs = {name: doc for name, _f, doc in iter_functions()}
    assert [k.name for k in docs["analyzers.pha"].configs] == [
        "channel", "height", "threshold", "distance", "prominence", "width", "wlen", "rel_height", "plateau_size"]
    assert docs["exporters.histogram"].type == "Exporter"
    assert docs["exporters.histogram"].buffers["sources"] == "1 with data_length = 1"
    assert {k.name for k in docs["data.clocked_importer"].configs} == {"rate", "distribution", "filename"}
    assert not docs["data.clocked_importer"].configs[0].optional
    assert docs["observers.oscilloscope"].type == "Observer"
    assert "update_interval : float, optional (default=1)" in text
