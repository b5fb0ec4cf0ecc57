"""Worker functions for test setups: a counting source and two sinks.

A test's functions file imports them under the names its setup uses, beside its own
special workers::

    from mimocorb2.testing.workers import counting_source, draining_sink as sink

    def source(io):
        counting_source(io, pace=0.001)  # the setup's config still overrides pace
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from mimocorb2.worker_templates import Exporter, Importer

__all__ = ["counting_source", "draining_sink", "recording_sink"]


def counting_source(io: Any, *, n_events: int = 0, rate: float = 0, pace: float = 0) -> None:
    """Import events 0, 1, 2, ...: every value of event i is i.

    The keywords are defaults; the worker's config keys of the same names override them.
    ``n_events``: how many, then end of stream (0: until the run stops); ``rate``: events per
    second at most (0: as fast as the buffer takes them); ``pace``: seconds slept after each event.
    """
    importer = Importer(io)
    n_events = io.get("n_events", n_events)
    rate = io.get("rate", rate)
    pace = io.get("pace", pace)
    example = importer.data_example

    def events() -> Iterator[np.ndarray | None]:
        start = time.monotonic()
        i = 0
        while n_events <= 0 or i < n_events:
            yield np.full(example.shape, i, example.dtype)
            i += 1
            if rate:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if pace:
                time.sleep(pace)
        yield None

    importer(events)


def draining_sink(io: Any) -> None:
    """Read every event of the source and do nothing with it."""
    for _data, _metadata in Exporter(io):
        pass


def recording_sink(io: Any) -> None:
    """Write the counter of every event read, one a line, to ``RUN_DIR/sink-<process>-<pid>.txt``."""
    path = io.run_dir / f"sink-{io.process_index}-{os.getpid()}.txt"
    with open(path, "a", buffering=1) as fh:
        for _data, metadata in Exporter(io):
            fh.write(f"{int(metadata['counter'][0])}\n")
