"""Simulated detector waveforms (pure numpy, seedable).

Three sources, each producing events as NumPy structured arrays of shape
``(data_length,)`` with one float32 field per channel, ready to be yielded by a
mimocorb2 Importer:

- :class:`PulseSimulator`: a generic source of pulses with exponentially
  distributed heights, optional extra (pile-up) pulses and Gaussian noise.
- :class:`MuonDetector`: a 4-channel cosmic-muon detector. Most events are a single
  coincident pulse; a fraction of the muons stop and decay, giving a second pulse
  after an exponentially distributed time with the muon lifetime (2.2 us).
- :class:`GammaSource`: a scintillation detector looking at Cs-137 (662 keV) and
  Co-60 (1173 and 1332 keV): photopeaks with a sqrt(E) resolution, a Klein-Nishina
  Compton continuum, a low-energy background and noise.

All pulses share one shape: ``exp(-t/decay) - exp(-t/rise)`` for ``t >= 0``,
normalised so that its largest *sample* is 1, so a pulse of amplitude ``A`` placed
at an integer sample position has a sampled maximum of exactly ``A`` (plus noise).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import time

import numpy as np

__all__ = [
    "ELECTRON_MASS_KEV",
    "GammaSource",
    "MuonDetector",
    "PulseSimulator",
    "compton_energies",
    "pulse_template",
    "waveform_dtype",
]

ELECTRON_MASS_KEV = 510.998950


def waveform_dtype(channels: Sequence[str], sample_dtype: str = "float32") -> np.dtype:
    """Structured dtype with one field per channel."""
    return np.dtype([(str(c), sample_dtype) for c in channels])


def pulse_template(data_length: int, rise: float, decay: float) -> tuple[np.ndarray, int]:
    """A pulse shape array of length ``2 * data_length`` and the index of its start.

    ``template[start + k]`` is the shape ``k`` samples after the pulse starts; a pulse
    starting at sample ``p`` of a window is ``template[start - p : start - p + data_length]``.
    The shape is normalised so that its largest sample is 1. ``rise`` and ``decay``
    are time constants in samples (``rise < decay``).
    """
    if rise <= 0 or decay <= 0 or rise >= decay:
        raise ValueError(f"need 0 < rise < decay, got rise={rise}, decay={decay}")
    t = np.arange(data_length, dtype=np.float64)
    shape = np.exp(-t / decay) - np.exp(-t / rise)
    shape /= shape.max()
    template = np.zeros(2 * data_length, dtype=np.float64)
    template[data_length:] = shape
    return template.astype(np.float32), data_length


def peak_offset(rise: float, decay: float, data_length: int = 1000) -> int:
    """Number of samples from a pulse's start to its (sampled) maximum."""
    template, start = pulse_template(data_length, rise, decay)
    return int(np.argmax(template)) - start


def paced(events: Iterable[np.ndarray], rate: float) -> Iterator[np.ndarray]:
    """Yield ``events`` at ``rate`` per second on a steady clock (as fast as possible if rate <= 0).

    Lateness is not carried over as a burst beyond catching up to the schedule.
    """
    start = time.monotonic()
    for i, event in enumerate(events):
        if rate > 0:
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield event


class _Base:
    """Common machinery: rng, template, event buffers."""

    def __init__(
        self,
        channels: Sequence[str],
        data_length: int,
        rise: float,
        decay: float,
        noise: float,
        seed: int | None,
    ) -> None:
        if data_length < 2:
            raise ValueError(f"data_length must be >= 2, got {data_length}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.channels = [str(c) for c in channels]
        if not self.channels:
            raise ValueError("need at least one channel")
        self.data_length = int(data_length)
        self.rise = float(rise)
        self.decay = float(decay)
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self.dtype = waveform_dtype(self.channels)
        self._template, self._start = pulse_template(self.data_length, self.rise, self.decay)
        self.peak_offset = int(np.argmax(self._template)) - self._start

    def _pulse(self, position: int) -> np.ndarray:
        """Unit pulse starting at ``position`` (may be outside the window)."""
        n = self.data_length
        lo = self._start - int(position)
        if lo <= 0:
            lo = 0
        if lo >= n:
            lo = n
        return self._template[lo : lo + n]

    def _new_event(self) -> np.ndarray:
        out = np.empty(self.data_length, dtype=self.dtype)
        for ch in self.channels:
            if self.noise > 0:
                out[ch] = self.rng.standard_normal(self.data_length, dtype=np.float32) * np.float32(self.noise)
            else:
                out[ch] = 0.0
        return out

    def events(self, n: int | None = None) -> Iterator[np.ndarray]:
        """Yield ``n`` events (forever when ``n`` is None)."""
        i = 0
        while n is None or i < n:
            yield self.event()
            i += 1

    def event(self) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class PulseSimulator(_Base):
    """Generic pulse source: one triggered pulse per event plus random extra pulses.

    Args:
        channels: channel (field) names; every channel sees the triggered pulse
            with an independent height.
        data_length: samples per event.
        trigger_position: sample at which the triggered pulse peaks
            (default ``data_length // 5``).
        amplitude: mean pulse height above ``min_amplitude`` (exponential spectrum).
        min_amplitude: smallest triggered pulse height (the trigger threshold).
        extra_pulse_probability: probability of one additional pulse at a random
            position (pile-up / accidental), height from the same spectrum.
        rise, decay: pulse time constants in samples.
        noise: standard deviation of the Gaussian noise.
        seed: random seed (None: fresh entropy).
    """

    def __init__(
        self,
        channels: Sequence[str] = ("ch1",),
        data_length: int = 500,
        *,
        trigger_position: int | None = None,
        amplitude: float = 0.3,
        min_amplitude: float = 0.05,
        extra_pulse_probability: float = 0.1,
        rise: float = 2.0,
        decay: float = 15.0,
        noise: float = 0.005,
        seed: int | None = None,
    ) -> None:
        super().__init__(channels, data_length, rise, decay, noise, seed)
        if amplitude <= 0 or min_amplitude < 0:
            raise ValueError("amplitude must be > 0 and min_amplitude >= 0")
        if not 0 <= extra_pulse_probability <= 1:
            raise ValueError("extra_pulse_probability must be within [0, 1]")
        self.trigger_position = self.data_length // 5 if trigger_position is None else int(trigger_position)
        self.amplitude = float(amplitude)
        self.min_amplitude = float(min_amplitude)
        self.extra_pulse_probability = float(extra_pulse_probability)
        self.last_truth: dict[str, object] = {}

    def _height(self) -> float:
        return self.min_amplitude + self.rng.exponential(self.amplitude)

    def event(self) -> np.ndarray:
        """One event; its true pulse heights are in :attr:`last_truth`."""
        out = self._new_event()
        start = self.trigger_position - self.peak_offset
        heights = {}
        for ch in self.channels:
            h = self._height()
            heights[ch] = h
            out[ch] += np.float32(h) * self._pulse(start)
        extra = None
        if self.rng.random() < self.extra_pulse_probability:
            pos = int(self.rng.integers(0, self.data_length))
            ch = self.channels[int(self.rng.integers(0, len(self.channels)))]
            h = self._height()
            out[ch] += np.float32(h) * self._pulse(pos - self.peak_offset)
            extra = (ch, pos, h)
        self.last_truth = {"heights": heights, "extra": extra}
        return out


class MuonDetector(_Base):
    """A 4-channel cosmic-muon detector with stopping muons that decay.

    Every event is triggered by a muon crossing the detector: a coincident pulse in
    every channel at ``trigger_position`` with a Landau-like (gamma-distributed)
    height. With probability ``double_pulse_fraction`` the muon stops in one of the
    ``stop_channels`` and decays after an exponentially distributed time of mean
    ``lifetime_us``; the decay electron gives a second pulse in the stopping channel
    and, with probability ``neighbour_probability``, in its neighbours. Decays
    after the end of the window are not seen. With probability
    ``accidental_probability`` an uncorrelated pulse lands at a uniformly random
    time in a random channel, giving the flat background of a real measurement.

    Args:
        data_length: samples per event (default 4250).
        sample_time_ns: time per sample in ns (default 4).
        trigger_position: sample of the muon's pulse maximum (default 250).
        lifetime_us: mean decay time in microseconds (default 2.2).
        double_pulse_fraction: fraction of events with a (possibly unseen) decay.
        amplitude: mean muon pulse height; decay electrons have ``electron_amplitude``.
        noise: standard deviation of the Gaussian noise.
        negative: PMT-like negative pulses (default False: positive pulses).
        seed: random seed.
    """

    CHANNELS = ("ch1", "ch2", "ch3", "ch4")

    def __init__(
        self,
        data_length: int = 4250,
        *,
        sample_time_ns: float = 4.0,
        trigger_position: int = 250,
        lifetime_us: float = 2.2,
        double_pulse_fraction: float = 0.1,
        stop_channels: Sequence[int] = (1, 2),
        neighbour_probability: float = 0.3,
        amplitude: float = 0.5,
        electron_amplitude: float = 0.3,
        accidental_probability: float = 0.02,
        rise: float = 1.5,
        decay: float = 8.0,
        noise: float = 0.01,
        negative: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(self.CHANNELS, data_length, rise, decay, noise, seed)
        if sample_time_ns <= 0 or lifetime_us <= 0:
            raise ValueError("sample_time_ns and lifetime_us must be > 0")
        for name, p in (
            ("double_pulse_fraction", double_pulse_fraction),
            ("neighbour_probability", neighbour_probability),
            ("accidental_probability", accidental_probability),
        ):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be within [0, 1], got {p}")
        if not 0 <= trigger_position < data_length:
            raise ValueError(f"trigger_position must be within [0, {data_length}), got {trigger_position}")
        self.sample_time_ns = float(sample_time_ns)
        self.trigger_position = int(trigger_position)
        self.lifetime_us = float(lifetime_us)
        self.double_pulse_fraction = float(double_pulse_fraction)
        self.stop_channels = [int(c) for c in stop_channels]
        self.neighbour_probability = float(neighbour_probability)
        self.amplitude = float(amplitude)
        self.electron_amplitude = float(electron_amplitude)
        self.accidental_probability = float(accidental_probability)
        self.sign = np.float32(-1.0 if negative else 1.0)
        self.last_truth: dict[str, object] = {}

    @property
    def window_us(self) -> float:
        """Time from the trigger to the end of the window in microseconds."""
        return (self.data_length - self.trigger_position) * self.sample_time_ns / 1000.0

    def _landau_like(self, mean: float) -> float:
        return float(self.rng.gamma(4.0, mean / 4.0))

    def event(self) -> np.ndarray:
        """One event; the true decay time (us, or None) is in :attr:`last_truth`."""
        out = self._new_event()
        start = self.trigger_position - self.peak_offset
        pulse = self._pulse(start)
        for ch in self.channels:
            out[ch] += self.sign * np.float32(self._landau_like(self.amplitude)) * pulse
        decay_time: float | None = None
        if self.rng.random() < self.double_pulse_fraction:
            decay_time = float(self.rng.exponential(self.lifetime_us))
            pos = self.trigger_position + int(round(decay_time * 1000.0 / self.sample_time_ns))
            if pos < self.data_length:
                stop = self.stop_channels[int(self.rng.integers(0, len(self.stop_channels)))]
                hit = [stop]
                for nb in (stop - 1, stop + 1):
                    if 0 <= nb < len(self.channels) and self.rng.random() < self.neighbour_probability:
                        hit.append(nb)
                epulse = self._pulse(pos - self.peak_offset)
                for idx in hit:
                    h = max(self._landau_like(self.electron_amplitude), 0.2 * self.electron_amplitude)
                    out[self.channels[idx]] += self.sign * np.float32(h) * epulse
        accidental = None
        if self.rng.random() < self.accidental_probability:
            pos = int(self.rng.integers(0, self.data_length))
            ch = self.channels[int(self.rng.integers(0, len(self.channels)))]
            out[ch] += self.sign * np.float32(self._landau_like(self.amplitude)) * self._pulse(pos - self.peak_offset)
            accidental = (ch, pos)
        self.last_truth = {"decay_time_us": decay_time, "accidental": accidental}
        return out


def compton_energies(gamma_kev: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Electron recoil energies (keV) of ``n`` Compton scatters of a ``gamma_kev`` photon.

    Sampled by rejection from the Klein-Nishina cross section differential in the
    electron's kinetic energy, between 0 and the Compton edge.
    """
    a = gamma_kev / ELECTRON_MASS_KEV
    t_max = gamma_kev * 2 * a / (1 + 2 * a)

    def density(t: np.ndarray) -> np.ndarray:
        s = t / gamma_kev
        return 2 + s**2 / (a**2 * (1 - s) ** 2) + s / (1 - s) * (s - 2 / a)

    grid = np.linspace(0, t_max, 512)
    fmax = float(density(grid).max()) * 1.05
    out = np.empty(0)
    while out.size < n:
        m = 2 * (n - out.size) + 16
        t = rng.uniform(0, t_max, m)
        keep = rng.uniform(0, fmax, m) < density(t)
        out = np.concatenate([out, t[keep]])
    return out[:n]


@dataclass
class GammaLine:
    """One gamma line: energy in keV and relative intensity."""

    energy: float
    intensity: float = 1.0
    label: str = ""


DEFAULT_LINES = (
    GammaLine(661.657, 0.851, "Cs-137"),
    GammaLine(1173.228, 0.9985, "Co-60"),
    GammaLine(1332.492, 0.9998, "Co-60"),
)


@dataclass
class GammaSource(_Base):
    """Gamma spectroscopy source: one pulse per event whose height is the deposited energy.

    Each event picks a gamma line by intensity (or, with probability
    ``background_fraction``, a low-energy background photon with an exponential
    spectrum of mean ``background_mean_kev``). The photon deposits its full energy
    with probability ``photo_fraction`` (photopeak), otherwise a Klein-Nishina
    Compton recoil energy. The deposit is smeared with a Gaussian of relative FWHM
    ``resolution`` at 662 keV, scaling as ``1/sqrt(E)``, and becomes a pulse of height
    ``energy * gain`` at ``trigger_position`` plus Gaussian noise ``noise``.

    Args:
        lines: sequence of ``(energy_keV, intensity)`` pairs or :class:`GammaLine`
            (default Cs-137 662 keV, Co-60 1173 and 1332 keV).
        channel: name of the single channel (default ``"ch1"``).
        data_length, trigger_position: samples per event and pulse-maximum sample.
        gain: waveform units per keV (default 0.001, i.e. 1 V = 1000 keV).
        resolution: relative FWHM at 662 keV (default 0.07).
        photo_fraction: probability of a full-energy deposit (default 0.35).
        background_fraction, background_mean_kev: low-energy background.
        noise: Gaussian noise in waveform units.
        seed: random seed.
    """

    lines: Sequence[GammaLine | tuple[float, float]] = DEFAULT_LINES
    channel: str = "ch1"
    data_length: int = 256
    trigger_position: int = 64
    gain: float = 0.001
    resolution: float = 0.07
    photo_fraction: float = 0.35
    background_fraction: float = 0.1
    background_mean_kev: float = 80.0
    rise: float = 2.0
    decay: float = 12.0
    noise: float = 0.002
    seed: int | None = None
    last_truth: dict[str, object] = field(default_factory=dict)
    _pending: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        parsed = []
        for line in self.lines:
            if isinstance(line, GammaLine):
                parsed.append(line)
            else:
                e, i = line
                parsed.append(GammaLine(float(e), float(i)))
        if not parsed:
            raise ValueError("need at least one gamma line")
        if any(l.energy <= 0 or l.intensity <= 0 for l in parsed):
            raise ValueError("gamma line energies and intensities must be > 0")
        for name in ("photo_fraction", "background_fraction"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be within [0, 1], got {v}")
        if self.gain <= 0 or self.resolution < 0:
            raise ValueError("gain must be > 0 and resolution >= 0")
        self.lines = parsed
        self._energies = np.array([l.energy for l in parsed])
        p = np.array([l.intensity for l in parsed])
        self._probabilities = p / p.sum()
        _Base.__init__(self, (self.channel,), self.data_length, self.rise, self.decay, self.noise, self.seed)
        if not 0 <= self.trigger_position < self.data_length:
            raise ValueError("trigger_position must lie inside the window")

    def sigma(self, energy: np.ndarray | float) -> np.ndarray | float:
        """Gaussian standard deviation (keV) of a deposit of ``energy`` keV."""
        e = np.maximum(energy, 1e-9)
        return self.resolution / 2.3548 * np.sqrt(661.657 * e)

    def deposits(self, n: int) -> np.ndarray:
        """``n`` deposited energies in keV (after resolution smearing), vectorised."""
        rng = self.rng
        out = np.empty(n)
        background = rng.random(n) < self.background_fraction
        nb = int(background.sum())
        out[background] = rng.exponential(self.background_mean_kev, nb)
        idx = np.flatnonzero(~background)
        line = rng.choice(len(self._energies), size=idx.size, p=self._probabilities)
        photo = rng.random(idx.size) < self.photo_fraction
        out[idx[photo]] = self._energies[line[photo]]
        for k, e in enumerate(self._energies):
            sel = idx[(~photo) & (line == k)]
            out[sel] = compton_energies(float(e), sel.size, rng)
        out = out + rng.standard_normal(n) * self.sigma(out)
        return np.maximum(out, 0.0)

    def event(self) -> np.ndarray:
        """One event; the deposited energy (keV) is in :attr:`last_truth`."""
        if not self._pending:
            self._pending = self.deposits(512).tolist()[::-1]
        energy = self._pending.pop()
        out = self._new_event()
        start = self.trigger_position - self.peak_offset
        out[self.channel] += np.float32(energy * self.gain) * self._pulse(start)
        self.last_truth = {"energy_kev": energy}
        return out
