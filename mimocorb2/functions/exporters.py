"""Prebuilt exporters: drain, histogram, csv (and the histogram visualizer under its manual name)."""

from __future__ import annotations

import csv as _csv
import os as _os
import time as _time
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

import numpy as _np

from .. import diskfull as _diskfull
from ..datapath import heartbeat as _heartbeat
from ._common import ConfigChecker as _ConfigChecker
from ._common import atomic_save_npy as _atomic_save_npy
from ._common import atomic_write_bytes as _atomic_write_bytes
from ._common import output_path as _output_path
from ._common import is_int as _is_int
from ._common import is_number as _is_number
from ._common import single_process as _single_process
from ._common import with_nats_connection_configs as _with_nats_connection_configs
from .visualizers import histogram as visualize_histogram

if TYPE_CHECKING:
    from ..mimo_worker import BufferIO

__all__ = ["csv", "drain", "histogram", "nats", "visualize_histogram"]

#: Name of the marker file the histogram exporter writes after its final update.
HISTOGRAM_COMPLETE_MARKER = ".complete"


def _source_checks(check: _ConfigChecker, io: Any, *, length_one: bool) -> None:
    check.buffer_count("sources", list(io.buffer_names_in), 1)
    check.buffer_count("observes", list(io.buffer_names_observe), 0)
    if length_one and io.data_in_examples:
        n = len(io.data_in_examples[0])
        if n != 1:
            check.buffer_problem(
                "sources", f"{check.function} needs a source buffer with data_length = 1, "
                f"'{io.buffer_names_in[0]}' has data_length = {n}"
            )


def drain(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Drain buffer

    Drains all data from the source buffer and does nothing with it.

    Type
    ----
    Exporter

    Buffers
    -------
    sources
        1
    sinks
        0
    observes
        0

    Configs
    -------
    (none)

    Examples
    --------
    >>> # Workers: {drain: {function: exporters.drain, sources: [waveforms]}}
    """
    check = _ConfigChecker(buffer_io, "exporters.drain")
    _source_checks(check, buffer_io, length_one=False)
    check.buffer_count("sinks", list(buffer_io.buffer_names_out), 0)
    check.done()
    from ..worker_templates import Exporter

    exporter = Exporter(buffer_io)
    for data, _metadata in exporter:
        if data is None:
            break


class _HistogramSpec:
    """One channel's binning and counts (bins include the upper edge, like np.histogram)."""

    def __init__(self, channel: str, lo: float, hi: float, nbins: int) -> None:
        self.channel = channel
        self.lo = lo
        self.hi = hi
        self.nbins = nbins
        self.scale = nbins / (hi - lo)
        self.counts = _np.zeros(nbins, dtype=_np.int64)
        self.underflow = 0
        self.overflow = 0

    def fill(self, value: float) -> None:
        if self.lo <= value <= self.hi:
            idx = int((value - self.lo) * self.scale)
            self.counts[idx if idx < self.nbins else self.nbins - 1] += 1
        elif value < self.lo:
            self.underflow += 1
        else:  # above the range or NaN
            self.overflow += 1


def _parse_bins(check: _ConfigChecker, fields: tuple[str, ...]) -> list[_HistogramSpec]:
    raw = check.raw("bins")
    specs: list[_HistogramSpec] = []
    if raw is None:
        return specs
    if not isinstance(raw, dict) or not raw:
        check.problem("bins", f"expected a mapping channel -> [min, max, number_of_bins], got {raw!r}")
        return specs
    for channel, value in raw.items():
        key = f"bins.{channel}"
        if fields and channel not in fields:
            check.problem(key, f"channel '{channel}' is not a field of the source buffer (fields: {list(fields)})")
            continue
        if not isinstance(value, list | tuple) or len(value) != 3:
            check.problem(key, f"expected [min, max, number_of_bins], got {value!r}")
            continue
        lo, hi, n = value
        if not (_is_number(lo) and _is_number(hi)) or not lo < hi:
            check.problem(key, f"expected numbers min < max, got min={lo!r}, max={hi!r}")
            continue
        if not _is_int(n) or n < 1:
            check.problem(key, f"expected a positive integer number_of_bins, got {n!r}")
            continue
        specs.append(_HistogramSpec(str(channel), float(lo), float(hi), int(n)))
    return specs


def _write_histograms(directory: _Path, specs: list[_HistogramSpec]) -> None:
    with _heartbeat.working():  # rewriting the files is bounded work: stay alive meanwhile
        _write_histogram_files(directory, specs)


def _write_histogram_files(directory: _Path, specs: list[_HistogramSpec]) -> None:
    for spec in specs:
        path = directory / f"{spec.channel}.npy"
        with _diskfull.writing(path):
            _atomic_save_npy(path, spec.counts)

    def write_info(fh: Any) -> None:
        writer = _csv.writer(fh)
        writer.writerow(["channel", "min", "max", "bins", "underflow", "overflow"])
        for spec in specs:
            writer.writerow([spec.channel, spec.lo, spec.hi, spec.nbins, spec.underflow, spec.overflow])

    with _diskfull.writing(directory / "info.csv"):
        _atomic_write_bytes(directory / "info.csv", write_info, mode="w")


def histogram(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Export data as a histogram.

    Saves histograms of the data in the source buffer to npy files in the
    run_directory for each channel given in ``bins``. The histograms are saved in a
    directory named "Histograms_<source_buffer_name>". It contains a file "info.csv"
    (one row per channel: channel, min, max, bins, underflow, overflow) and one
    "<channel>.npy" per channel holding the 1-D array of bin counts. The files are
    rewritten atomically every update_interval and once more at the end of the
    stream (followed by an empty marker file ".complete"), so the final files hold
    every event: each value lands in a bin (the upper edge belongs to the last bin,
    as with numpy.histogram), in underflow or in overflow (NaN counts as overflow).
    The histograms can be shown with visualizers.histogram
    (exporters.visualize_histogram). Run it with a single process.

    Type
    ----
    Exporter

    Buffers
    -------
    sources
        1 with data_length = 1
    sinks
        Pass through data without modification to all sinks. Must share same dtype as source buffer.
    observes
        0

    Configs
    -------
    update_interval : int, optional (default=1)
        Interval in seconds to save the histogram data to files.
    bins : dict
        Dictionary where keys are channel names and values are tuples of (min, max,
        number_of_bins). Channels must be present in the source buffer data.

    Examples
    --------
    >>> import numpy as np
    >>> counts = np.load('run_directory/Histograms_pulse_heights/ch1.npy')
    """
    check = _ConfigChecker(buffer_io, "exporters.histogram")
    _source_checks(check, buffer_io, length_one=True)
    interval = check.number("update_interval", 1, positive=True)
    fields: tuple[str, ...] = ()
    if buffer_io.data_in_examples:
        fields = buffer_io.data_in_examples[0].dtype.names or ()
    specs = _parse_bins(check, fields)
    _single_process(check, buffer_io, "every process would rewrite the same histogram files")
    check.done()
    from ..worker_templates import Exporter

    exporter = Exporter(buffer_io)
    directory = _Path(buffer_io.run_dir) / f"Histograms_{buffer_io.buffer_names_in[0]}"
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / HISTOGRAM_COMPLETE_MARKER
    if marker.exists():
        marker.unlink()
    _write_histograms(directory, specs)
    fills = [(spec.channel, spec.fill) for spec in specs]
    last = _time.monotonic()
    for data, _metadata in exporter:
        if data is None:
            break
        row = data[0]
        for channel, fill in fills:
            fill(float(row[channel]))
        now = _time.monotonic()
        if now - last >= interval:
            _write_histograms(directory, specs)
            last = now
    _write_histograms(directory, specs)
    marker.touch()


def _csv_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, _np.ndarray):
        return " ".join(str(v) for v in value.ravel().tolist())
    return value


def csv(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Save data from the source buffer to a CSV file.

    Saves data from the source buffer to a CSV file in the run_directory, one row
    per event. The columns are the metadata (counter, timestamp, deadtime) followed
    by one column per field of the source buffer. Rows are written and flushed every
    save_interval; at the end of the stream the file holds every event. Run it with
    a single process.

    Type
    ----
    Exporter

    Buffers
    -------
    sources
        1 with data_length = 1
    sinks
        Pass through data without modification to all sinks. Must share same dtype as source buffer.
    observes
        0

    Configs
    -------
    save_interval : int, optional (default=1)
        Interval in seconds to save the CSV file.
    filename : str, optional (default='exporter_name')
        Name of the CSV file to save the data to (".csv" is appended when missing).
        The file will be saved in the run_directory.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> print(pd.read_csv('run_directory/exporter_name.csv'))
    """
    check = _ConfigChecker(buffer_io, "exporters.csv")
    _source_checks(check, buffer_io, length_one=True)
    interval = check.number("save_interval", 1, non_negative=True)
    filename = check.string("filename", buffer_io.name)
    if isinstance(filename, str) and (not filename.strip() or filename.endswith(("/", _os.sep))):
        check.problem("filename", f"expected a file name, got {filename!r}")
    _single_process(check, buffer_io, "every process would write the same CSV file")
    check.done()
    from ..worker_templates import Exporter

    exporter = Exporter(buffer_io)
    path = _output_path(buffer_io, filename, ".csv")
    fields = exporter.data_example.dtype.names or ()
    needs_conversion = any(
        exporter.data_example.dtype[f].kind in "SUV" or exporter.data_example.dtype[f].shape for f in fields
    )
    rows: list[tuple[Any, ...]] = []
    with _diskfull.writing(path), open(path, "w", newline="") as fh:
        writer = _csv.writer(fh)
        writer.writerow(["counter", "timestamp", "deadtime", *fields])
        fh.flush()
        last = _time.monotonic()
        for data, metadata in exporter:
            if data is None:
                break
            values = data[0].tolist()
            if needs_conversion:
                values = tuple(_csv_value(v) for v in values)
            rows.append(metadata[0].tolist() + tuple(values))
            now = _time.monotonic()
            if now - last >= interval:
                writer.writerows(rows)
                rows.clear()
                fh.flush()
                last = now
        writer.writerows(rows)
        fh.flush()


def nats(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Publish the events of the source buffer to a NATS JetStream stream.

    Sends every event of the source buffer, with its metadata (counter, timestamp,
    deadtime), to a JetStream stream, where importers.nats on this or another host
    reads it. Events travel in blocks of many events, sent when a block reaches
    block_size bytes or its first event is latency seconds old. A block's slots are
    freed only after the server stored it, so a slow or unreachable server fills the
    source buffer and dead time is counted upstream; nothing is dropped. Failed
    publishes (server restarted, link dropped, stream full) are retried with backoff
    under the same message id, which the server stores once; a killed and restarted
    exporter process sends the blocks it had in flight again as the same blocks (its
    journal in RUN_DIR/nats/<worker>/), so they are stored once too. Each run is a session
    (a random id in RUN_DIR/nats/<worker>/session): each process sends a start marker
    before its first block and, when the source ends, an end marker of its session. The state ("waiting for NATS at URL",
    "stream full", ...) is in RUN_DIR/status/<worker>.json. Needs nats-py
    (pip install 'mimocorb2[nats]'). Wire format, server setup and faults: docs/network.md.

    Type
    ----
    Exporter

    Buffers
    -------
    sources
        1
    sinks
        Pass through data without modification to all sinks. Must share same dtype as source buffer.
    observes
        0

    Configs
    -------
    stream : str, optional (default=source buffer name)
        Name of the JetStream stream (letters, digits, '-', '_'); subjects mimocorb2.<stream>.events and .end.
    retention : str, optional (default='interest')
        'interest': the server keeps a block until every importing group acknowledged it and refuses new ones when max_bytes is reached (the exporter waits). 'archive': keeps blocks by max_age and max_bytes, dropping the oldest; groups may replay.
    groups : list, optional (default=[])
        Importing groups that must get every event (with retention 'interest' their consumers are created before the first publish). Without it the exporter waits until some group exists.
    max_bytes : int, optional (default=1073741824)
        Size limit of the stream in bytes (used only when the stream is created).
    max_age : float, optional (default=0)
        With retention 'archive': seconds a block is kept (0: no age limit).
    block_size : int, optional (default=None)
        Largest block in bytes; None: the server's max_payload (1 MiB unless configured; daemon/nats-server.conf sets 8 MiB), at most 4 MiB, less 64 KiB.
    latency : float, optional (default=0.02)
        Longest time in seconds an event waits in an open block.
    in_flight : int, optional (default=4)
        Blocks published but not yet acknowledged, per process.
    duplicate_window : float, optional (default=120)
        Seconds the server remembers message ids to drop re-sent blocks.
    publish_timeout : float, optional (default=5.0)
        Seconds to wait for the server's acknowledgement before sending again.

    Examples
    --------
    >>> # Workers:
    >>> #   to_network:
    >>> #     function: exporters.nats
    >>> #     config: {url: nats://analysis-pc:4222, stream: waveforms, groups: [analysis]}
    >>> #     sources: [waveforms]
    """
    from ..net import run_exporter

    run_exporter(buffer_io)


# url and the login/TLS keys, the same for both NATS functions, come from functions._common
nats.__doc__ = _with_nats_connection_configs(nats.__doc__)
