"""Prebuilt observers: the oscilloscope."""

from __future__ import annotations

import time as _time
from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

import numpy as _np

from ._common import ConfigChecker as _ConfigChecker
from ._plotting import PlotOutput as _PlotOutput

if TYPE_CHECKING:
    from ..mimo_worker import BufferIO

__all__ = ["oscilloscope"]


class _Scope:
    """The oscilloscope figure: one line per channel, labels, scaling and trigger line."""

    def __init__(
        self,
        figure: Any,
        title: str,
        channels: list[str],
        data_length: int,
        t_scaling: tuple[float, float, str],
        y_scaling: tuple[float, float, str],
        ylim: list[float] | None,
        trigger_level: float | None,
    ) -> None:
        self.figure = figure
        self.title = title
        self.channels = channels
        self.y_scale, self.y_offset, y_unit = y_scaling
        t_scale, t_offset, t_unit = t_scaling
        self.x = _np.arange(data_length) * t_scale + t_offset
        self.ax = figure.add_subplot(1, 1, 1)
        self.lines = {ch: self.ax.plot(self.x, _np.zeros(data_length), label=ch, lw=1)[0] for ch in channels}
        self.ax.set_xlabel(t_unit)
        self.ax.set_ylabel(y_unit)
        self.ax.set_xlim(self.x[0], self.x[-1] if data_length > 1 else self.x[0] + 1)
        self.ylim = ylim
        if ylim is not None:
            self.ax.set_ylim(*ylim)
        if trigger_level is not None:
            level = trigger_level * self.y_scale + self.y_offset
            self.ax.axhline(level, color="grey", linestyle="--", lw=1, label=f"trigger {level:g}")
        self.ax.grid(True, alpha=0.3)
        self.ax.legend(loc="upper right", fontsize="small")
        self.ax.set_title(f"{title}: waiting for data")

    def show(self, data: _np.ndarray, metadata: _np.ndarray | None) -> None:
        for ch, line in self.lines.items():
            line.set_ydata(data[ch].astype(_np.float64) * self.y_scale + self.y_offset)
        if self.ylim is None:
            self.ax.relim()
            self.ax.autoscale_view(scalex=False, scaley=True)
        if metadata is not None and len(metadata):
            self.ax.set_title(f"{self.title}: event {int(metadata['counter'][0])}")


def oscilloscope(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Show an oscilloscope plot of the buffer.

    Observes data from a buffer and shows it as an oscilloscope plot. With a display
    a window is opened; without one (daemon, CI) the plot is rendered to
    RUN_DIR/plots/<worker>.png, rewritten atomically every update_interval. Being an
    observer it never slows the pipeline: it looks at the newest event once per
    update_interval.

    Type
    ----
    Observer

    Buffers
    -------
    sources
        0
    sinks
        0
    observes
        1

    Configs
    -------
    ylim : tuple of float, optional (default=None)
        (min, max) of the y-axis (in scaled units). If None, the y-axis will be autoscaled upon each update.
    t_scaling : tuple of float, optional (default=(1, 0, 'Samples'))
        (scaling, offset, unit) for the x-axis. The x-axis will be scaled accordingly.
    y_scaling : tuple of float, optional (default=(1, 0, 'Value'))
        (scaling, offset, unit) for the y-axis. The y-axis will be scaled accordingly.
    channels : list of str, optional (default=None)
        List of channel names to be plotted. If None, all available channels will be plotted.
    trigger_level : float, optional (default=None)
        If specified, a horizontal line will be drawn at this level (in raw units,
        scaled with y_scaling) to indicate the trigger level.
    update_interval : float, optional (default=1)
        Interval to update the plot in seconds. Default is 1 second.

    Examples
    --------
    >>> # config: {t_scaling: [0.004, -1.0, 'Time (us)'], y_scaling: [1, 0, 'Voltage (V)'], trigger_level: 0.05}
    """
    check = _ConfigChecker(buffer_io, "observers.oscilloscope")
    check.buffer_count("sources", list(buffer_io.buffer_names_in), 0)
    check.buffer_count("sinks", list(buffer_io.buffer_names_out), 0)
    check.buffer_count("observes", list(buffer_io.buffer_names_observe), 1)
    ylim = check.number_list("ylim", None, length=2)
    if ylim is not None and not ylim[0] < ylim[1]:
        check.problem("ylim", f"expected [min, max] with min < max, got {ylim!r}")
        ylim = None
    t_scaling = check.scaling("t_scaling", (1.0, 0.0, "Samples"))
    y_scaling = check.scaling("y_scaling", (1.0, 0.0, "Value"))
    trigger_level = check.number("trigger_level", None, allow_none=True)
    interval = check.number("update_interval", 1, positive=True)
    fields: tuple[str, ...] = ()
    data_length = 1
    if buffer_io.data_observe_examples:
        example = buffer_io.data_observe_examples[0]
        fields = example.dtype.names or ()
        data_length = len(example)
    channels_cfg = check.raw("channels", None)
    channels = list(fields)
    if channels_cfg is not None:
        if not isinstance(channels_cfg, list | tuple) or not channels_cfg or not all(
            isinstance(c, str) for c in channels_cfg
        ):
            check.problem("channels", f"expected a list of channel names, got {channels_cfg!r}")
        else:
            unknown = [c for c in channels_cfg if fields and c not in fields]
            if unknown:
                check.problem("channels", f"channels {unknown} are not fields of the observed buffer "
                              f"(fields: {list(fields)})")
            channels = [c for c in channels_cfg if c in fields]
    check.done()
    from ..worker_templates import Observer

    observer = Observer(buffer_io)
    name = buffer_io.buffer_names_observe[0]
    output = _PlotOutput(buffer_io.name, _Path(buffer_io.run_dir) / "plots", figsize=(9.0, 5.0))
    scope = _Scope(output.figure, name, channels, data_length, t_scaling, y_scaling, ylim, trigger_level)
    try:
        output.update()
        for data, metadata in observer():
            if data is None or not output.window_open():
                break
            started = _time.monotonic()
            scope.show(data, metadata)
            output.update()
            output.pause(interval - (_time.monotonic() - started))
    finally:
        output.close()
