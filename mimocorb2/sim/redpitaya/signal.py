"""What arrives at the simulated inputs: Poisson pulses of a chosen shape and spectrum, plus noise.

Pure numpy, no I/O: :class:`PulseSource` draws amplitudes and arrival times and
finds the pulse that crosses a trigger level; the board writes the result into its
buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .hardware import BUFFER_SAMPLES, sample_period

__all__ = ["PulseConfig", "PulseSource", "Trigger"]

_NOISE_TABLE = 1 << 20


@dataclass
class PulseConfig:
    """What arrives at the inputs: pulses (volts at the input) plus noise.

    Every pulse appears on both inputs, scaled by ``scale_IN1`` / ``scale_IN2`` (the
    sign is the polarity) and shifted by ``delay_IN2`` seconds on IN2.
    """

    rate: float = 1000.0  #: mean pulse rate, Hz (Poisson)
    shape: str = "exponential"  #: exponential | gaussian | rectangular
    rise_time: float = 16e-9  #: s, exponential rise constant
    decay_time: float = 240e-9  #: s, exponential decay constant
    width: float = 80e-9  #: s, gaussian sigma / rectangular width
    spectrum: str = "uniform"  #: fixed | uniform | exponential | gaussian | lines
    amplitude: float = 0.5  #: V: fixed value, gaussian mean, exponential mean
    amplitude_min: float = 0.05  #: V, uniform lower bound
    amplitude_max: float = 0.9  #: V, uniform upper bound (also the cap for others)
    amplitude_sigma: float = 0.05  #: V, gaussian width
    lines: tuple[tuple[float, float], ...] = ((0.3, 1.0), (0.6, 0.5))  #: (V, weight)
    noise: float = 0.002  #: V rms at the input, per sample at decimation 1
    offset: float = 0.0  #: V baseline
    scale_IN1: float = 1.0
    scale_IN2: float = -0.5
    delay_IN2: float = 0.0  #: s

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work."""
        if self.shape not in ("exponential", "gaussian", "rectangular"):
            raise ValueError(f"shape {self.shape!r}: allowed exponential, gaussian, rectangular")
        if self.spectrum not in ("fixed", "uniform", "exponential", "gaussian", "lines"):
            raise ValueError(
                f"spectrum {self.spectrum!r}: allowed fixed, uniform, exponential, gaussian, lines"
            )
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.shape == "exponential" and not 0 < self.rise_time < self.decay_time:
            raise ValueError("exponential pulses need 0 < rise_time < decay_time")
        if self.shape != "exponential" and not self.width > 0:
            raise ValueError("width must be > 0")
        if self.noise < 0:
            raise ValueError("noise must be >= 0")
        if self.spectrum == "lines" and not self.lines:
            raise ValueError("spectrum 'lines' needs at least one line")

    def scale(self, channel: int) -> float:
        """The factor (and polarity) of a pulse on input ``channel`` (1 or 2)."""
        return self.scale_IN1 if channel == 1 else self.scale_IN2


@dataclass
class Trigger:
    """The pulse that triggered (drawn when the trigger is armed)."""

    time: float  #: wall-clock trigger time (math.inf: never)
    amplitude: float  #: V at the input before the channel scale; 0 for NOW
    crossing: int  #: samples from the pulse start to the trigger sample (noise-free)
    pulse: bool  #: False for a NOW/forced trigger without a pulse

    @property
    def never(self) -> bool:
        """True when no pulse will ever fire this trigger."""
        return math.isinf(self.time)


class PulseSource:
    """Draws pulses from a :class:`PulseConfig` with one random generator (seedable)."""

    def __init__(self, config: PulseConfig, rng: np.random.Generator) -> None:
        config.validate()
        self.config = config
        self.rng = rng
        self._noise = rng.standard_normal(_NOISE_TABLE).astype(np.float32)
        self._templates: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    def template(self, decimation: int) -> tuple[np.ndarray, int]:
        """Pulse shape sampled at the decimated rate, peak 1, and its peak index."""
        key = (self.config.shape, decimation)
        if key not in self._templates:
            self._templates[key] = self._make_template(sample_period(decimation))
        return self._templates[key]

    def _make_template(self, dt: float) -> tuple[np.ndarray, int]:
        cfg = self.config
        if cfg.shape == "exponential":
            length = cfg.decay_time * 8 + cfg.rise_time * 8
        elif cfg.shape == "gaussian":
            length = cfg.width * 8
        else:
            length = cfg.width
        n = int(min(BUFFER_SAMPLES // 4, max(1, math.ceil(length / dt))))
        t = np.arange(n) * dt
        if cfg.shape == "exponential":
            shape = np.exp(-t / cfg.decay_time) - np.exp(-t / cfg.rise_time)
        elif cfg.shape == "gaussian":
            shape = np.exp(-0.5 * ((t - 4 * cfg.width) / cfg.width) ** 2)
        else:
            shape = np.ones(n)
        if shape.max() <= 0:
            shape = np.ones(n)
        shape = (shape / shape.max()).astype(np.float64)
        return shape, int(np.argmax(shape))

    def amplitudes(self, n: int) -> np.ndarray:
        """``n`` pulse amplitudes (V) drawn from the spectrum."""
        cfg, rng = self.config, self.rng
        if cfg.spectrum == "fixed":
            amp = np.full(n, cfg.amplitude)
        elif cfg.spectrum == "uniform":
            amp = rng.uniform(cfg.amplitude_min, cfg.amplitude_max, n)
        elif cfg.spectrum == "exponential":
            amp = rng.exponential(cfg.amplitude, n)
        elif cfg.spectrum == "gaussian":
            amp = rng.normal(cfg.amplitude, cfg.amplitude_sigma, n)
        else:
            values = np.array([v for v, _ in cfg.lines])
            weights = np.array([w for _, w in cfg.lines], dtype=float)
            amp = rng.choice(values, size=n, p=weights / weights.sum())
        return np.minimum(amp, cfg.amplitude_max if cfg.spectrum != "fixed" else np.inf)

    def noise(self, n: int) -> np.ndarray:
        """``n`` samples of unit-rms noise (a random slice of a precomputed table)."""
        start = int(self.rng.integers(0, _NOISE_TABLE - n))
        return self._noise[start : start + n]

    def draw_trigger(
        self, armed: float, source: str, decimation: int, level: float, full_scale: float
    ) -> Trigger:
        """Walk the Poisson pulse train from ``armed`` until a pulse fires the trigger.

        ``source`` is the board's trigger source (``CH1_PE`` ...), ``level`` the trigger
        level in volts, ``full_scale`` the input range of the source channel.
        """
        cfg = self.config
        t = armed
        if source.startswith(("EXT", "AWG")):
            t += float(self.rng.exponential(1.0 / cfg.rate))
            return Trigger(t, float(self.amplitudes(1)[0]), 0, True)
        shape, peak = self.template(decimation)
        dt = sample_period(decimation)
        scale = cfg.scale(1 if source.startswith("CH1") else 2)
        rising = source.endswith("PE")
        base = cfg.offset
        # Invariant: a pulse fires if its noise-free height crosses the level with
        # the right slope from the baseline side; the crossing sample is computed.
        for _ in range(100):  # at most 100 * 1024 pulses, then "never"
            gaps = self.rng.exponential(1.0 / cfg.rate, 1024)
            amps = self.amplitudes(1024)
            heights = np.clip(base + amps * scale, -full_scale, full_scale)
            if rising:
                ok = (base < level) & (heights >= level)
            else:
                ok = (base > level) & (heights <= level)
            hits = np.flatnonzero(ok)
            if hits.size:
                i = int(hits[0])
                t += float(gaps[: i + 1].sum())
                pulse = base + amps[i] * scale * shape[: peak + 1]
                cross = pulse >= level if rising else pulse <= level
                k = int(np.argmax(cross))
                return Trigger(t + k * dt, float(amps[i]), k, True)
            t += float(gaps.sum())
        return Trigger(math.inf, 0.0, 0, False)
