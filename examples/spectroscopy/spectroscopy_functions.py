"""Worker function of the spectroscopy example: a simulated gamma source."""

from __future__ import annotations


from mimocorb2.mimo_worker import BufferIO
from mimocorb2.sim.pulses import DEFAULT_LINES, GammaSource, paced
from mimocorb2.worker_templates import Importer


def gamma_source(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Simulated scintillation detector looking at gamma sources.

    Each event is one waveform with one pulse whose height is the deposited energy
    times ``gain``: photopeaks of the configured lines, their Compton continua, a
    low-energy background and noise. Ends after ``n_events`` events.

    Type
    ----
    Importer

    Buffers
    -------
    sources
        0
    sinks
        1 with one channel (float32)
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
    lines : list, optional (default=Cs-137 and Co-60)
        [energy keV, relative intensity] pairs.
    gain, resolution, photo_fraction, background_fraction, noise, trigger_position : optional
        Passed to mimocorb2.sim.pulses.GammaSource.
    """
    importer = Importer(buffer_io)
    example = importer.data_example
    n_events = int(buffer_io["n_events"])
    rate = float(buffer_io.get("rate", 0) or 0)
    lines = buffer_io.get("lines") or [(line.energy, line.intensity) for line in DEFAULT_LINES]
    source = GammaSource(
        lines=[(float(e), float(i)) for e, i in lines],
        channel=example.dtype.names[0],
        data_length=len(example),
        trigger_position=int(buffer_io.get("trigger_position", len(example) // 4)),
        gain=float(buffer_io.get("gain", 0.001)),
        resolution=float(buffer_io.get("resolution", 0.07)),
        photo_fraction=float(buffer_io.get("photo_fraction", 0.35)),
        background_fraction=float(buffer_io.get("background_fraction", 0.1)),
        noise=float(buffer_io.get("noise", 0.002)),
        seed=buffer_io.get("seed"),
    )

    def ufunc():
        yield from paced(source.events(n_events), rate)
        yield None

    importer(ufunc)
