"""Worker functions of the two-hosts example: a simulated digitizer and an arrival ledger."""

from __future__ import annotations

import numpy as np

from mimocorb2.mimo_worker import BufferIO
from mimocorb2.sim.pulses import PulseSimulator, paced
from mimocorb2.worker_templates import Exporter, Importer


def pulses(buffer_io: BufferIO) -> None:
    """Write ``n_events`` simulated detector pulses at ``rate`` per second, then end."""
    importer = Importer(buffer_io)
    example = importer.data_example
    sim = PulseSimulator(example.dtype.names, len(example), seed=buffer_io.get("seed"))
    importer(lambda: paced(sim.events(int(buffer_io["n_events"])), float(buffer_io.get("rate", 0) or 0)))


def ledger(buffer_io: BufferIO) -> None:
    """Record counter, timestamp and deadtime of every arriving event in ledger.npy (at the end)."""
    exporter = Exporter(buffer_io)
    records = [metadata.copy() for _data, metadata in exporter]
    table = np.concatenate(records) if records else np.zeros(0, exporter.metadata_example.dtype)
    np.save(buffer_io.run_dir / "ledger.npy", table)
