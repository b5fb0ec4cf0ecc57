"""Worker functions of the simple example: simulated pulses, a filter, pulse heights."""

from __future__ import annotations


import numpy as np

from mimocorb2.mimo_worker import BufferIO
from mimocorb2.sim.pulses import PulseSimulator, paced
from mimocorb2.worker_templates import Filter, Importer, Processor


def simulate_source(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Simulated pulses from a generic detector.

    Writes ``n_events`` waveforms, each with one triggered pulse of exponentially
    distributed height and sometimes a second (pile-up) pulse, then ends.

    Type
    ----
    Importer

    Buffers
    -------
    sources
        0
    sinks
        1 with data_dtype {ch1: float32}
    observes
        0

    Configs
    -------
    n_events : int
        Number of events before the importer ends.
    rate : float, optional (default=0)
        Events per second (0: as fast as the buffer accepts them).
    seed : int, optional (default=None)
        Random seed.
    trigger_position, amplitude, min_amplitude, extra_pulse_probability, noise : optional
        Passed to mimocorb2.sim.pulses.PulseSimulator.
    """
    importer = Importer(buffer_io)
    n_events = int(buffer_io["n_events"])
    rate = float(buffer_io.get("rate", 0) or 0)
    example = importer.data_example
    sim = PulseSimulator(
        example.dtype.names,
        len(example),
        trigger_position=buffer_io.get("trigger_position"),
        amplitude=buffer_io.get("amplitude", 0.3),
        min_amplitude=buffer_io.get("min_amplitude", 0.05),
        extra_pulse_probability=buffer_io.get("extra_pulse_probability", 0.1),
        noise=buffer_io.get("noise", 0.005),
        seed=buffer_io.get("seed"),
    )

    def ufunc():
        yield from paced(sim.events(n_events), rate)
        yield None

    importer(ufunc)


def _crossings(wave: np.ndarray, threshold: float) -> np.ndarray:
    """Sample indices where ``wave`` rises above ``threshold``."""
    above = wave > threshold
    return np.flatnonzero(~above[:-1] & above[1:]) + 1


def threshold_filter(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Accept events with one pulse above a threshold.

    An event passes when its signal crosses ``min_height`` exactly once, and that
    crossing belongs to the triggered pulse (pile-up and small pulses are dropped).

    Type
    ----
    Filter

    Buffers
    -------
    sources
        1
    sinks
        1 with the source's layout
    observes
        0

    Configs
    -------
    min_height : float
        Threshold of the accepted pulses.
    trigger_position : int, optional (default=data_length // 5)
        Sample of the triggered pulse's maximum.
    """
    filt = Filter(buffer_io)
    min_height = float(buffer_io["min_height"])
    trigger = int(buffer_io.get("trigger_position") or len(filt.data_example) // 5)

    def ufunc(data: np.ndarray) -> bool:
        crossings = _crossings(data["ch1"], min_height)
        return len(crossings) == 1 and abs(int(crossings[0]) - trigger) < 10

    filt(ufunc)


def pulse_height(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Height and position of the pulse above the baseline.

    The baseline is the mean of the samples before the trigger; the height is the
    maximum minus the baseline.

    Type
    ----
    Processor

    Buffers
    -------
    sources
        1
    sinks
        1 with data_length 1 and fields height, position, baseline
    observes
        0

    Configs
    -------
    trigger_position : int, optional (default=data_length // 5)
        Sample of the triggered pulse's maximum.
    """
    processor = Processor(buffer_io)
    out_dtype = buffer_io.data_out_examples[0].dtype
    trigger = int(buffer_io.get("trigger_position") or len(processor.data_example) // 5)
    pre = max(1, trigger - 10)

    def ufunc(data: np.ndarray) -> list[np.ndarray]:
        wave = data["ch1"]
        baseline = float(wave[:pre].mean())
        position = int(np.argmax(wave))
        out = np.zeros(1, dtype=out_dtype)
        out["height"] = wave[position] - baseline
        out["position"] = position
        out["baseline"] = baseline
        return [out]

    processor(ufunc)
