"""Fit the muon lifetime to the decay-time histogram of a run of the muon example.

Usage::

    python fit_lifetime.py [RUN_DIR] [--t-min 0.5] [--t-max 15] [--plot lifetime.png]

Without RUN_DIR the newest run under ``target/`` is used. The histogram written by
``exporters.histogram`` (``Histograms_decay_times/``) is fitted with
``N(t) = A exp(-t / tau) + B`` (B: flat background of accidental pulses) by a
binned Poisson maximum-likelihood fit over ``[t_min, t_max]``. Starting above the
double-pulse resolution (t_min) does not bias tau: the exponential has no memory.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from mimocorb2.functions.visualizers import load_histogram as _load_histogram

HERE = Path(__file__).resolve().parent


@dataclass
class LifetimeFit:
    """Result of the fit: lifetime and its error in microseconds, amplitude, background."""

    tau: float
    tau_error: float
    amplitude: float
    background: float
    entries: int
    t_min: float
    t_max: float

    def __str__(self) -> str:
        return (
            f"muon lifetime tau = {self.tau:.3f} +- {self.tau_error:.3f} us "
            f"(fit {self.t_min:g}..{self.t_max:g} us, {self.entries} decays, "
            f"background {self.background:.2f} per bin)"
        )


def load_histogram(run_dir: Path, buffer: str = "decay_times", channel: str = "decay_time") -> tuple[np.ndarray, np.ndarray]:
    """``(bin edges, counts)`` of ``channel`` from a run directory."""
    return _load_histogram(run_dir, buffer, channel)


def _hessian(f, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    n = len(x)
    h = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            ei = np.eye(n)[i] * steps[i]
            ej = np.eye(n)[j] * steps[j]
            h[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * steps[i] * steps[j])
    return h


def fit_lifetime(edges: np.ndarray, counts: np.ndarray, t_min: float = 0.5, t_max: float = 15.0) -> LifetimeFit:
    """Binned Poisson maximum-likelihood fit of ``A exp(-t/tau) + B`` to a histogram."""
    lo, hi = edges[:-1], edges[1:]
    use = (lo >= t_min - 1e-9) & (hi <= t_max + 1e-9)
    lo, hi, n = lo[use], hi[use], counts[use].astype(float)
    if n.sum() < 10:
        raise ValueError(f"too few entries to fit ({int(n.sum())})")
    width = hi - lo

    def expected(p: np.ndarray) -> np.ndarray:
        a, tau, b = p
        # integral of A exp(-t/tau) over each bin (A: counts per us at t = 0)
        return a * tau * (np.exp(-lo / tau) - np.exp(-hi / tau)) + b * width / width[0]

    def nll(p: np.ndarray) -> float:
        if p[0] <= 0 or p[1] <= 0.01 or p[2] < 0:
            return 1e30
        mu = np.maximum(expected(p), 1e-300)
        return float(np.sum(mu - n * np.log(mu)))

    tau0 = 2.0
    b0 = max(float(np.median(n[-5:])), 0.1)
    a0 = max(float(n[0] - b0), 1.0) / (tau0 * (np.exp(-lo[0] / tau0) - np.exp(-hi[0] / tau0)))
    result = minimize(nll, np.array([a0, tau0, b0]), method="Nelder-Mead",
                      options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 20000, "maxfev": 40000})
    p = result.x
    steps = np.maximum(np.abs(p) * 1e-3, 1e-4)
    try:
        cov = np.linalg.inv(_hessian(nll, p, steps))
        tau_error = float(np.sqrt(max(cov[1, 1], 0.0)))
    except np.linalg.LinAlgError:
        tau_error = float("nan")
    return LifetimeFit(float(p[1]), tau_error, float(p[0]), float(p[2]), int(n.sum()), t_min, t_max)


def latest_run(target: Path = HERE / "target") -> Path:
    """The newest ``run_*`` directory under ``target``."""
    runs = sorted(p for p in Path(target).glob("run_*") if p.is_dir())
    if not runs:
        raise FileNotFoundError(f"no run directories under {target}")
    return runs[-1]


def plot(edges: np.ndarray, counts: np.ndarray, fit: LifetimeFit, path: Path) -> None:
    """Save the histogram with the fitted curve (Agg, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.stairs(counts, edges, label="decay times")
    t = np.linspace(fit.t_min, fit.t_max, 300)
    w = edges[1] - edges[0]
    ax.plot(t, fit.amplitude * w * np.exp(-t / fit.tau) + fit.background, label=f"fit: tau = {fit.tau:.2f} us")
    ax.set_xlabel("decay time (us)")
    ax.set_ylabel("counts per bin")
    ax.set_yscale("log")
    ax.legend()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="run directory (default: newest under target/)")
    parser.add_argument("--t-min", type=float, default=0.5)
    parser.add_argument("--t-max", type=float, default=15.0)
    parser.add_argument("--plot", type=Path, help="save the histogram with the fit to this PNG")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or latest_run()
    edges, counts = load_histogram(run_dir)
    fit = fit_lifetime(edges, counts, args.t_min, args.t_max)
    print(f"{run_dir}: {fit}")
    if args.plot:
        plot(edges, counts, fit, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
