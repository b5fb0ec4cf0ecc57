"""Prebuilt visualizers: the live view of the histogram exporter's files."""

from __future__ import annotations

import csv as _csv
import math as _math
import time as _time
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

import numpy as _np

from ._common import ConfigChecker as _ConfigChecker
from ._plotting import PlotOutput as _PlotOutput

if TYPE_CHECKING:
    from ..mimo_worker import BufferIO

__all__ = ["histogram", "read_histograms", "load_histogram"]

_MARKER = ".complete"  # written by exporters.histogram after its final update
_FINAL_WAIT = 15.0  # seconds to wait for the exporter's final files at end of stream


def read_histograms(directory: _Path) -> list[dict[str, Any]]:
    """Read ``info.csv`` and the ``<channel>.npy`` files of a histogram directory.

    Returns one dict per channel with ``channel``, ``min``, ``max``, ``bins``,
    ``underflow``, ``overflow`` and ``counts`` (None if the npy file is missing).
    """
    info = directory / "info.csv"
    if not info.exists():
        return []
    out: list[dict[str, Any]] = []
    with open(info, newline="") as fh:
        for row in _csv.DictReader(fh):
            entry: dict[str, Any] = {
                "channel": row["channel"],
                "min": float(row["min"]),
                "max": float(row["max"]),
                "bins": int(row["bins"]),
                "underflow": int(row.get("underflow") or 0),
                "overflow": int(row.get("overflow") or 0),
            }
            npy = directory / f"{row['channel']}.npy"
            try:
                entry["counts"] = _np.load(npy)
            except (OSError, ValueError):
                entry["counts"] = None
            out.append(entry)
    return out


def load_histogram(run_dir: _Path | str, buffer: str, channel: str) -> tuple[_np.ndarray, _np.ndarray]:
    """``(bin edges, counts)`` of one channel saved by exporters.histogram in ``run_dir``.

    Raises KeyError naming the channel when the run has no histogram of it.
    """
    directory = _Path(run_dir) / f"Histograms_{buffer}"
    for entry in read_histograms(directory):
        if entry["channel"] == channel and entry["counts"] is not None:
            edges = _np.linspace(entry["min"], entry["max"], entry["bins"] + 1)
            return edges, entry["counts"]
    raise KeyError(f"no histogram of channel '{channel}' in {directory}")


class _HistogramView:
    """Draws every channel's histogram into one figure, one axes per channel.

    Axes and artists are made once (and again only when the channels change);
    a refresh only replaces the counts, so an update costs little besides the
    rendering itself.
    """

    def __init__(self, figure: Any, directory: _Path, plot_type: str, title: str) -> None:
        self.figure = figure
        self.directory = directory
        self.plot_type = plot_type
        self.title = title
        self.axes: dict[str, Any] = {}
        self.artists: dict[str, Any] = {}
        self.layout_key: list[tuple[str, float, float, int]] = []

    def _layout(self, hists: list[dict[str, Any]]) -> None:
        self.figure.clear()
        self.axes, self.artists = {}, {}
        n = max(1, len(hists))
        cols = min(n, 2 if n <= 4 else 3)
        rows = _math.ceil(n / cols)
        for i, h in enumerate(hists):
            ax = self.figure.add_subplot(rows, cols, i + 1)
            edges = _np.linspace(h["min"], h["max"], h["bins"] + 1)
            centers = 0.5 * (edges[1:] + edges[:-1])
            zeros = _np.zeros(h["bins"])
            if self.plot_type == "bar":
                artist = ax.bar(centers, zeros, width=edges[1] - edges[0], align="center")
            elif self.plot_type == "step":
                artist = ax.stairs(zeros, edges)
            else:
                (artist,) = ax.plot(centers, zeros)
            ax.set_xlabel(h["channel"])
            ax.set_ylabel("counts")
            ax.set_xlim(h["min"], h["max"])
            self.axes[h["channel"]] = ax
            self.artists[h["channel"]] = artist
        if self.title:
            self.figure.suptitle(self.title)
        if hists:
            self.figure.tight_layout()

    def refresh(self) -> int:
        """Redraw from the files; returns the number of channels drawn."""
        hists = read_histograms(self.directory)
        key = [(h["channel"], h["min"], h["max"], h["bins"]) for h in hists]
        if key != self.layout_key:
            self._layout(hists)
            self.layout_key = key
        for h in hists:
            counts = h["counts"]
            if counts is None or len(counts) != h["bins"]:
                continue
            ax, artist = self.axes[h["channel"]], self.artists[h["channel"]]
            if self.plot_type == "bar":
                for rect, c in zip(artist.patches, counts, strict=False):
                    rect.set_height(c)
            elif self.plot_type == "step":
                artist.set_data(counts)
            else:
                artist.set_ydata(counts)
            top = float(counts.max()) if len(counts) else 0.0
            ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
            ax.set_title(f"{h['channel']}  (entries {int(counts.sum())}, under {h['underflow']}, "
                         f"over {h['overflow']})", fontsize="small")
        return len(hists)


def histogram(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Visualize histograms from the histogram exporter.

    Visualizes histograms of the data in the source buffer using matplotlib. The
    histograms are read from the npy files saved by the histogram exporter
    (RUN_DIR/Histograms_<observed buffer>/). With a display a window is opened;
    without one (daemon, CI) the plot is rendered to RUN_DIR/plots/<worker>.png,
    rewritten atomically every update_interval and once more after the exporter's
    final update. Also available as exporters.visualize_histogram.

    Type
    ----
    IsAlive

    Buffers
    -------
    sources
        0
    sinks
        0
    observes
        1 the same as the source buffer of the exporter

    Configs
    -------
    update_interval : int, optional (default=1)
        Interval in seconds to update the histograms.
    plot_type : str, optional (default='line')
        Type of plot to use for the histograms. Options are 'line', 'bar', or 'step'.

    Examples
    --------
    >>> # Workers: {hist_view: {function: visualizers.histogram, observes: [pulse_heights]}}
    """
    check = _ConfigChecker(buffer_io, "visualizers.histogram")
    check.buffer_count("sources", list(buffer_io.buffer_names_in), 0)
    check.buffer_count("sinks", list(buffer_io.buffer_names_out), 0)
    check.buffer_count("observes", list(buffer_io.buffer_names_observe), 1)
    interval = check.number("update_interval", 1, positive=True)
    plot_type = check.string("plot_type", "line", choices=("line", "bar", "step"))
    check.done()
    from ..worker_templates import IsAlive

    is_alive = IsAlive(buffer_io)
    run_dir = _Path(buffer_io.run_dir)
    directory = run_dir / f"Histograms_{buffer_io.buffer_names_observe[0]}"
    output = _PlotOutput(buffer_io.name, run_dir / "plots")
    view = _HistogramView(output.figure, directory, plot_type, f"Histograms of {buffer_io.buffer_names_observe[0]}")
    try:
        next_update = 0.0
        while is_alive() and output.window_open():
            now = _time.monotonic()
            if now >= next_update:
                view.refresh()
                output.update()
                next_update = now + interval
            output.pause(min(0.1, interval))
        # The observed buffer has ended; the exporter writes its final files after
        # reading the last events. Wait (bounded) for its marker, then draw once more.
        deadline = _time.monotonic() + _FINAL_WAIT
        while directory.exists() and not (directory / _MARKER).exists() and _time.monotonic() < deadline:
            output.pause(0.05)
        view.refresh()
        output.update()
    finally:
        output.close()
