"""Worker functions of the muon example: detector simulation, double-pulse filter, decay times."""

from __future__ import annotations

import numpy as np

from mimocorb2.mimo_worker import BufferIO
from mimocorb2.sim.pulses import MuonDetector, paced
from mimocorb2.worker_templates import Filter, Importer, Processor


def simulate_detector(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Simulated 4-channel cosmic-muon detector.

    Every event is a muon crossing all four channels; a fraction of the muons
    stop and decay, giving a second pulse after an exponentially distributed time.
    Ends after ``n_events`` events.

    Type
    ----
    Importer

    Buffers
    -------
    sources
        0
    sinks
        1 with fields ch1..ch4 (float32)
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
    sample_time_ns, trigger_position, lifetime_us, double_pulse_fraction, accidental_probability, noise : optional
        Passed to mimocorb2.sim.pulses.MuonDetector.
    """
    importer = Importer(buffer_io)
    n_events = int(buffer_io["n_events"])
    rate = float(buffer_io.get("rate", 0) or 0)
    detector = MuonDetector(
        len(importer.data_example),
        sample_time_ns=float(buffer_io.get("sample_time_ns", 4.0)),
        trigger_position=int(buffer_io.get("trigger_position", 250)),
        lifetime_us=float(buffer_io.get("lifetime_us", 2.2)),
        double_pulse_fraction=float(buffer_io.get("double_pulse_fraction", 0.1)),
        accidental_probability=float(buffer_io.get("accidental_probability", 0.02)),
        noise=float(buffer_io.get("noise", 0.01)),
        seed=buffer_io.get("seed"),
    )

    def ufunc():
        yield from paced(detector.events(n_events), rate)
        yield None

    importer(ufunc)


def find_pulses(data: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Per channel, the sample indices where the signal rises above ``threshold``."""
    out = []
    for name in data.dtype.names:
        above = data[name] > threshold
        out.append(np.flatnonzero(~above[:-1] & above[1:]) + 1)
    return out


def decay_pulse(data: np.ndarray, threshold: float, trigger: int, min_gap: int) -> tuple[int, int] | None:
    """``(sample, channel index)`` of the first pulse at least ``min_gap`` samples after the
    muon pulse (the first crossing near the trigger), or None."""
    best: tuple[int, int] | None = None
    muon = None
    crossings = find_pulses(data, threshold)
    for pulses in crossings:
        near = pulses[np.abs(pulses - trigger) <= 10]
        if near.size:
            muon = int(near[0]) if muon is None else min(muon, int(near[0]))
    if muon is None:
        return None
    for channel, pulses in enumerate(crossings):
        later = pulses[pulses >= muon + min_gap]
        if later.size and (best is None or later[0] < best[0]):
            best = (int(later[0]), channel)
    return None if best is None else (best[0] - muon, best[1])


def _analysis_parameters(buffer_io: BufferIO) -> tuple[float, int, int, float]:
    sample_us = float(buffer_io.get("sample_time_ns", 4.0)) / 1000.0
    threshold = float(buffer_io["threshold"])
    trigger = int(buffer_io.get("trigger_position", 250))
    min_gap = max(1, int(round(float(buffer_io.get("min_separation_us", 0.15)) / sample_us)))
    return threshold, trigger, min_gap, sample_us


def double_pulse_filter(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Keep events with a second pulse after the muon pulse.

    Type
    ----
    Filter

    Buffers
    -------
    sources
        1 with fields ch1..ch4
    sinks
        1 with the source's layout
    observes
        0

    Configs
    -------
    threshold : float
        Pulse threshold.
    min_separation_us : float, optional (default=0.15)
        Smallest accepted time between the muon and the decay pulse.
    sample_time_ns : float, optional (default=4.0)
        Time per sample.
    trigger_position : int, optional (default=250)
        Sample of the muon pulse.
    """
    filt = Filter(buffer_io)
    threshold, trigger, min_gap, _ = _analysis_parameters(buffer_io)
    filt(lambda data: decay_pulse(data, threshold, trigger, min_gap) is not None)


def decay_time(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Time between the muon pulse and the decay pulse.

    Type
    ----
    Processor

    Buffers
    -------
    sources
        1 with fields ch1..ch4 (double pulses)
    sinks
        1 with data_length 1 and fields decay_time (us), channel (1..4)
    observes
        0

    Configs
    -------
    threshold : float
        Pulse threshold.
    min_separation_us : float, optional (default=0.15)
        Smallest accepted time between the muon and the decay pulse.
    sample_time_ns : float, optional (default=4.0)
        Time per sample.
    trigger_position : int, optional (default=250)
        Sample of the muon pulse.
    """
    processor = Processor(buffer_io)
    threshold, trigger, min_gap, sample_us = _analysis_parameters(buffer_io)
    out_dtype = buffer_io.data_out_examples[0].dtype

    def ufunc(data: np.ndarray) -> list[np.ndarray] | None:
        found = decay_pulse(data, threshold, trigger, min_gap)
        if found is None:
            return None
        out = np.zeros(1, dtype=out_dtype)
        out["decay_time"] = found[0] * sample_us
        out["channel"] = found[1] + 1
        return [out]

    processor(ufunc)
