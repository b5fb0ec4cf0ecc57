"""Prebuilt data functions: export to a mimo file and replay mimo files as importers."""

from __future__ import annotations

import time as _time
from typing import TYPE_CHECKING, Any

import numpy as _np

from ..mimofile import MimoFileError as _MimoFileError
from ..mimofile import MimoFileWriter as _MimoFileWriter
from ..mimofile import read_mimo_file as _read_mimo_file
from ..mimofile import read_mimo_header as _read_mimo_header
from ._common import ConfigChecker as _ConfigChecker
from ._common import output_path as _output_path
from ._common import resolve_path as _resolve_path
from ._common import single_process as _single_process

if TYPE_CHECKING:
    from ..mimo_worker import BufferIO

__all__ = ["clocked_importer", "export", "simulate_importer"]

_FLUSH_INTERVAL = 1.0  # seconds between flushes of the mimo file


def export(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Export data to a mimo file.

    Exports data from a source buffer to a mimo file (see docs/mimofile.md) in the
    run_directory. This function is useful for saving data streams within the
    mimoCoRB2 framework. The file is append-only and flushed every second, so a run
    that is killed leaves a file readable up to its last complete record; read it
    with mimocorb2.read_mimo_file. Run it with a single process.

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
    filename : str, optional (default='exporter_name')
        Name of the mimo file (".mimo" is appended when missing), relative to the run_directory.

    Examples
    --------
    >>> import mimocorb2
    >>> metadata, data = mimocorb2.read_mimo_file('run_directory/export.mimo')
    """
    check = _ConfigChecker(buffer_io, "data.export")
    check.buffer_count("sources", list(buffer_io.buffer_names_in), 1)
    check.buffer_count("observes", list(buffer_io.buffer_names_observe), 0)
    filename = check.string("filename", buffer_io.name)
    if isinstance(filename, str) and not filename.strip():
        check.problem("filename", "expected a non-empty file name")
    _single_process(check, buffer_io, "every process would write the same mimo file")
    check.done()
    from ..worker_templates import Exporter

    exporter = Exporter(buffer_io)
    path = _output_path(buffer_io, filename, ".mimo")
    example = exporter.data_example
    with _MimoFileWriter(path, example.dtype, len(example), buffer_io.buffer_names_in[0]) as writer:
        last = _time.monotonic()
        for data, metadata in exporter:
            if data is None:
                break
            writer.write(metadata, data)
            now = _time.monotonic()
            if now - last >= _FLUSH_INTERVAL:
                writer.flush()
                last = now


def _open_replay(check: _ConfigChecker, io: Any) -> tuple[_np.ndarray, _np.ndarray] | None:
    """Check the sink against the mimo file named by ``filename`` and map the file."""
    check.buffer_count("sources", list(io.buffer_names_in), 0)
    check.buffer_count("sinks", list(io.buffer_names_out), 1)
    check.buffer_count("observes", list(io.buffer_names_observe), 0)
    filename = check.string("filename")
    if filename is None:
        return None
    path = _resolve_path(io, filename)
    try:
        header = _read_mimo_header(path)
    except FileNotFoundError:
        check.problem("filename", f"mimo file not found: {path}")
        return None
    except (_MimoFileError, OSError) as exc:
        check.problem("filename", f"cannot read mimo file: {exc}")
        return None
    if io.data_out_examples:
        example = io.data_out_examples[0]
        if example.dtype != header.data_dtype or len(example) != header.data_length:
            check.buffer_problem(
                "sinks",
                f"sink '{io.buffer_names_out[0]}' (data_length {len(example)}, dtype {example.dtype}) must match "
                f"the mimo file {path} (data_length {header.data_length}, dtype {header.data_dtype})",
            )
            return None
    return _read_mimo_file(path)


def simulate_importer(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Simulate an Importer by inputting data according to the timestamps in a mimo file.

    Imports data from a mimo file and simulates the Importer behavior by yielding
    data according to the timestamps in the file: the first event is sent at once,
    every later one when as much time has passed since the start as between its
    timestamp and the first one. This may lead to bunches of data if the timestamps
    are not ordered correctly. The importer ends after the last event of the file.

    Type
    ----
    Importer

    Buffers
    -------
    sources
        0
    sinks
        1 with the same dtype as the data in the mimo file
    observes
        0

    Configs
    -------
    filename : str
        Path to the mimo file to be imported (relative to the setup file).

    Examples
    --------
    >>> # Workers: {replay: {function: data.simulate_importer, sinks: [waveforms], config: {filename: run/export.mimo}}}
    """
    check = _ConfigChecker(buffer_io, "data.simulate_importer")
    mapped = _open_replay(check, buffer_io)
    _single_process(check, buffer_io, "every process would replay the whole file")
    check.done()
    assert mapped is not None
    metadata, data = mapped
    from ..worker_templates import Importer

    importer = Importer(buffer_io)
    timestamps = _np.asarray(metadata["timestamp"], dtype=_np.float64)

    def replay() -> Any:
        if len(timestamps):
            t0 = float(timestamps[0])
            start = _time.time()
            for i in range(len(timestamps)):
                wait = start + (float(timestamps[i]) - t0) - _time.time()
                if wait > 0:
                    _time.sleep(wait)
                yield data[i]
        yield None

    importer(replay)


def clocked_importer(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Simulate an Importer by inputting data at a fixed rate.

    Imports data from a mimo file and simulates the Importer behavior by yielding
    data at a fixed rate. This is useful for testing and simulating data streams in
    a controlled manner. Can be used to input uniform or poisson distributed data:
    'uniform' spaces the events by exactly 1/rate, 'poisson' by exponentially
    distributed intervals of mean 1/rate. The importer ends after the last event of
    the file.

    Type
    ----
    Importer

    Buffers
    -------
    sources
        0
    sinks
        1 with the same dtype as the data in the mimo file
    observes
        0

    Configs
    -------
    rate : float
        Rate at which to yield data in Hz
    distribution : str, optional (default='uniform')
        Distribution to use for generating timestamps. Can be 'uniform' or 'poisson'.
    filename : str
        Path to the mimo file to be imported (relative to the setup file).

    Examples
    --------
    >>> # config: {filename: run/export.mimo, rate: 100, distribution: poisson}
    """
    check = _ConfigChecker(buffer_io, "data.clocked_importer")
    rate = check.number("rate", positive=True)
    distribution = check.string("distribution", "uniform", choices=("uniform", "poisson"))
    mapped = _open_replay(check, buffer_io)
    _single_process(check, buffer_io, "every process would replay the whole file")
    check.done()
    assert mapped is not None and rate is not None
    _metadata, data = mapped
    from ..worker_templates import Importer

    importer = Importer(buffer_io)
    rng = _np.random.default_rng()
    period = 1.0 / rate

    def replay() -> Any:
        next_time = _time.time()
        for i in range(len(data)):
            wait = next_time - _time.time()
            if wait > 0:
                _time.sleep(wait)
            yield data[i]
            next_time += rng.exponential(period) if distribution == "poisson" else period
        yield None

    importer(replay)
