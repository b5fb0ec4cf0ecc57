"""Plot output for the prebuilt plotting functions: a window, or a PNG file when headless.

With a display (``$DISPLAY`` or ``$WAYLAND_DISPLAY`` set, and ``MIMOCORB2_HEADLESS``
not set to a true value) a matplotlib window is opened through pyplot. Without one
(under the daemon, systemd or CI) the figure is drawn with the Agg canvas, without
importing pyplot, and saved to ``RUN_DIR/plots/<worker>.png``: written to a temporary
file in the same directory and renamed over the old one, so a reader never sees a
half-written image.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .. import diskfull as _diskfull
from ..datapath import heartbeat as _heartbeat

__all__ = ["PlotOutput", "display_available"]

_TRUE = {"1", "true", "yes", "on"}


def display_available() -> bool:
    """Whether a window can be opened (a display exists and headless mode is not forced)."""
    if os.environ.get("MIMOCORB2_HEADLESS", "").strip().lower() in _TRUE:
        return False
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _lower_priority(target: int = 5) -> None:
    """Run this process at niceness ``target`` (if it is lower), so plotting never competes with the data path."""
    try:
        current = os.nice(0)
        if current < target:
            os.nice(target - current)
    except (AttributeError, OSError):
        pass


class PlotOutput:
    """A figure shown in a window or rendered to ``<plot_dir>/<name>.png``.

    Creating one lowers the process's CPU priority (``nice`` +5): plots are
    made by observer processes that must never slow the data path.

    Args:
        name: worker name (the PNG's stem and the window title).
        plot_dir: directory for the PNG (created when headless).
        figsize: figure size in inches.
        headless: force (True) or forbid (False) headless mode; None: decide by
            :func:`display_available`.
        low_priority: lower the process's CPU priority (for worker processes).
    """

    def __init__(
        self,
        name: str,
        plot_dir: Path | str,
        figsize: tuple[float, float] = (8.0, 5.0),
        headless: bool | None = None,
        low_priority: bool = True,
    ) -> None:
        self.name = name
        self.plot_dir = Path(plot_dir)
        self.path = self.plot_dir / f"{name}.png"
        self.headless = (not display_available()) if headless is None else headless
        self.renders = 0
        self._plt: Any = None
        if low_priority:
            _lower_priority()
        if not self.headless:
            try:
                import matplotlib.pyplot as plt

                if plt.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
                    raise RuntimeError("non-interactive backend")
                self._plt = plt
                self.figure = plt.figure(figsize=figsize)
                try:
                    self.figure.canvas.manager.set_window_title(name)
                except Exception:  # noqa: BLE001 - cosmetic only
                    pass
                plt.ion()
                plt.show(block=False)
            except Exception:  # noqa: BLE001 - no usable GUI backend: fall back to a file
                self.headless = True
                self._plt = None
        if self.headless:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            self.figure = Figure(figsize=figsize)
            FigureCanvasAgg(self.figure)
            self.plot_dir.mkdir(parents=True, exist_ok=True)

    def update(self) -> None:
        """Show the current state of the figure (redraw the window or rewrite the PNG)."""
        self.renders += 1
        with _heartbeat.working():  # rendering is bounded work: the process stays alive meanwhile
            if self.headless:
                tmp = self.plot_dir / f".{self.name}.png.{os.getpid()}.tmp"
                try:
                    with _diskfull.writing(self.path):
                        self.figure.savefig(tmp, format="png")
                        os.replace(tmp, self.path)
                finally:
                    if tmp.exists():
                        tmp.unlink()
            else:
                self.figure.canvas.draw_idle()
                self.figure.canvas.flush_events()

    def window_open(self) -> bool:
        """False once the user closed the window (always True when headless)."""
        if self.headless or self._plt is None:
            return True
        return bool(self._plt.fignum_exists(self.figure.number))

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` while keeping a window responsive."""
        with _heartbeat.working():  # a pause is bounded: alive while it lasts
            if self.headless or self._plt is None:
                import time

                time.sleep(max(0.0, seconds))
            else:
                self._plt.pause(max(seconds, 0.001))

    def close(self) -> None:
        """Close the window (headless: nothing to do)."""
        if self._plt is not None:
            self._plt.close(self.figure)
            self._plt = None
