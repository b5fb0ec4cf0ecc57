"""Find the gamma lines in the pulse-height spectrum of a run of the spectroscopy example.

Usage::

    python analyze_spectrum.py [RUN_DIR] [--gain 0.001] [--plot spectrum.png]

Without RUN_DIR the newest run under ``target/`` is used. The histogram written by
``exporters.histogram`` (``Histograms_pulse_heights/peak_heights.npy``) is
converted to keV with ``gain`` (waveform units per keV), and every expected line
is fitted with a Gaussian on a linear background (the Compton continuum) in a
window of +-2.5 expected standard deviations around the highest bin near it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from mimocorb2.functions.visualizers import load_histogram as _load_histogram

HERE = Path(__file__).resolve().parent
LINES_KEV = {"Cs-137": 661.657, "Co-60 (1173)": 1173.228, "Co-60 (1332)": 1332.492}


@dataclass
class LineFit:
    """One fitted line: expected and measured energy (keV), width and peak counts."""

    label: str
    expected: float
    energy: float
    energy_error: float
    sigma: float
    counts: float

    @property
    def deviation(self) -> float:
        """Relative deviation of the measured from the expected energy."""
        return (self.energy - self.expected) / self.expected

    def __str__(self) -> str:
        return (
            f"{self.label:>14}: {self.energy:8.1f} +- {self.energy_error:4.1f} keV "
            f"(expected {self.expected:.1f}, {100 * self.deviation:+.2f} %), "
            f"sigma {self.sigma:.1f} keV, {self.counts:.0f} counts"
        )


def load_histogram(run_dir: Path, buffer: str = "pulse_heights", channel: str = "peak_heights") -> tuple[np.ndarray, np.ndarray]:
    """``(bin edges, counts)`` of ``channel`` from a run directory."""
    return _load_histogram(run_dir, buffer, channel)


def _model(x: np.ndarray, n: float, mu: float, sigma: float, a: float, b: float) -> np.ndarray:
    return n * np.exp(-0.5 * ((x - mu) / sigma) ** 2) + a + b * (x - mu)


def fit_line(centers: np.ndarray, counts: np.ndarray, expected: float, label: str = "",
             resolution: float = 0.07) -> LineFit:
    """Fit one line near ``expected`` keV (``resolution``: relative FWHM at 662 keV).

    The peak is searched in the histogram smoothed with a Gaussian of the expected
    width (within +-2 expected sigma of the line), then a Gaussian on a linear
    background is fitted in +-2.5 sigma around it, twice, re-centring the window on
    the fitted position.
    """
    sigma0 = resolution / 2.3548 * np.sqrt(661.657 * expected)
    width = centers[1] - centers[0]
    k = np.arange(-int(3 * sigma0 / width), int(3 * sigma0 / width) + 1) * width
    kernel = np.exp(-0.5 * (k / sigma0) ** 2)
    smooth = np.convolve(counts.astype(float), kernel / kernel.sum(), mode="same")
    near = np.abs(centers - expected) < 2 * sigma0
    if not near.any():
        raise ValueError(f"no bins near {expected} keV")
    mu, sigma = float(centers[near][np.argmax(smooth[near])]), sigma0
    popt = pcov = None
    for _ in range(2):
        window = np.abs(centers - mu) < 2.5 * sigma
        x, y = centers[window], counts[window].astype(float)
        p0 = [max(y.max() - y.min(), 1.0), mu, sigma, max(float(y.min()), 0.0), 0.0]
        popt, pcov = curve_fit(_model, x, y, p0=p0, sigma=np.sqrt(np.maximum(y, 1.0)), maxfev=20000)
        mu, sigma = float(popt[1]), float(np.clip(abs(popt[2]), 0.5 * sigma0, 2 * sigma0))
    err = float(np.sqrt(max(pcov[1, 1], 0.0)))
    area = popt[0] * abs(popt[2]) * np.sqrt(2 * np.pi) / width
    return LineFit(label, expected, float(popt[1]), err, abs(float(popt[2])), float(area))


def analyze(edges: np.ndarray, counts: np.ndarray, gain: float = 0.001,
            lines: dict[str, float] | None = None) -> list[LineFit]:
    """Fit every line of ``lines`` (label -> keV) in a histogram of pulse heights."""
    centers = 0.5 * (edges[1:] + edges[:-1]) / gain
    return [fit_line(centers, counts, energy, label) for label, energy in (lines or LINES_KEV).items()]


def latest_run(target: Path = HERE / "target") -> Path:
    """The newest ``run_*`` directory under ``target``."""
    runs = sorted(p for p in Path(target).glob("run_*") if p.is_dir())
    if not runs:
        raise FileNotFoundError(f"no run directories under {target}")
    return runs[-1]


def plot(edges: np.ndarray, counts: np.ndarray, gain: float, fits: list[LineFit], path: Path) -> None:
    """Save the spectrum with the fitted line positions (Agg, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.stairs(counts, edges / gain)
    for f in fits:
        ax.axvline(f.energy, color="red", lw=0.8, ls="--")
        ax.text(f.energy, counts.max() * 0.9, f"{f.energy:.0f} keV", rotation=90, va="top", fontsize="small")
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("counts per bin")
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="run directory (default: newest under target/)")
    parser.add_argument("--gain", type=float, default=0.001, help="waveform units per keV")
    parser.add_argument("--plot", type=Path, help="save the spectrum with the fitted lines to this PNG")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or latest_run()
    edges, counts = load_histogram(run_dir)
    fits = analyze(edges, counts, args.gain)
    print(f"{run_dir}: {int(counts.sum())} pulses")
    for f in fits:
        print(f)
    if args.plot:
        plot(edges, counts, args.gain, fits, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
