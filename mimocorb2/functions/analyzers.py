"""Prebuilt analyzers: pulse height analysis with scipy.signal.find_peaks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as _np

from ._common import ConfigChecker as _ConfigChecker
from ._common import is_number as _is_number

if TYPE_CHECKING:
    from ..mimo_worker import BufferIO

__all__ = ["pha"]

#: sink field -> config keys of which at least one must be set for scipy to return it
PHA_FIELDS: dict[str, tuple[str, ...]] = {
    "position": (),
    "peak_heights": ("height",),
    "left_thresholds": ("threshold",),
    "right_thresholds": ("threshold",),
    "prominences": ("prominence", "width"),
    "left_bases": ("prominence", "width"),
    "right_bases": ("prominence", "width"),
    "widths": ("width",),
    "width_heights": ("width",),
    "left_ips": ("width",),
    "right_ips": ("width",),
    "plateau_sizes": ("plateau_size",),
    "left_edges": ("plateau_size",),
    "right_edges": ("plateau_size",),
}

_RANGE_KEYS = ("height", "threshold", "prominence", "width", "plateau_size")


def _range_value(check: _ConfigChecker, key: str) -> Any:
    """A find_peaks condition: a number, or [min, max] (either may be null)."""
    value = check.raw(key, None)
    if value is None:
        return None
    if _is_number(value):
        return float(value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(v is None or _is_number(v) for v in value)
        and any(v is not None for v in value)
    ):
        return tuple(None if v is None else float(v) for v in value)
    check.problem(key, f"expected a number or [min, max], got {value!r}")
    return None


def pha(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Pulse Height Analysis using scipy.signal.find_peaks

    Analyzes pulse heights in a given channel of the input data using
    scipy.signal.find_peaks. This function processes the input data to find peaks
    and their properties based on the provided configuration parameters. Depending
    on the configuration, it can return various peak properties such as heights,
    thresholds, prominences, widths, and plateau sizes (see scipy documentation).
    Every peak found becomes one event in the sink, carrying the metadata of the
    input event it was found in (events without peaks produce nothing).

    Type
    ----
    Processor

    Buffers
    -------
    sources
        1 source buffer containing the input data with multiple channels
    sinks
        1 with data_length = 1; possible field names: position (sample index of
        the peak); peak_heights (needs height); left_thresholds, right_thresholds
        (need threshold); prominences, left_bases, right_bases (need prominence or
        width); widths, width_heights, left_ips, right_ips (need width);
        plateau_sizes, left_edges, right_edges (need plateau_size)
    observes
        0

    Configs
    -------
    channel : str, optional (default='first channel')
        Channel name to analyze. If not specified, the first channel in the input data will be used.
    height : float, optional (default=None)
        Minimum height of peaks to be detected (or [min, max]). If None, peak heights will not be calculated.
    threshold : float, optional (default=None)
        Minimum vertical distance to its neighboring samples for a peak to be
        considered. If None, left and right thresholds will not be calculated.
    distance : int, optional (default=None)
        Minimum horizontal distance (in samples) between neighboring peaks. If None, no distance constraint is applied.
    prominence : float, optional (default=None)
        Minimum prominence of peaks. If None, prominences will not be calculated.
    width : float, optional (default=None)
        Minimum width of peaks. If None, widths will not be calculated.
    wlen : int, optional (default=None)
        Window length for peak width calculation. If None, the entire signal is used.
    rel_height : float, optional (default=0.5)
        Relative height at which to calculate the width of the peaks. Default is 0.5,
        meaning the width is calculated at half the peak height.
    plateau_size : float, optional (default=None)
        Minimum size of the plateau at the peak. If None, plateau sizes will not be calculated.

    Examples
    --------
    >>> # Buffers: {heights: {slot_count: 64, data_length: 1, data_dtype: {position: int32, peak_heights: float32}}}
    >>> # Workers: {pha: {function: analyzers.pha, sources: [waveforms], sinks: [heights], config: {height: 0.05}}}
    """
    check = _ConfigChecker(buffer_io, "analyzers.pha")
    check.buffer_count("sources", list(buffer_io.buffer_names_in), 1)
    check.buffer_count("sinks", list(buffer_io.buffer_names_out), 1)
    check.buffer_count("observes", list(buffer_io.buffer_names_observe), 0)
    fields_in: tuple[str, ...] = ()
    if buffer_io.data_in_examples:
        fields_in = buffer_io.data_in_examples[0].dtype.names or ()
    channel = check.string("channel", None)
    if channel is None and fields_in:
        channel = fields_in[0]
    elif channel is not None and fields_in and channel not in fields_in:
        check.problem("channel", f"channel '{channel}' is not a field of the source buffer (fields: {list(fields_in)})")
    kwargs: dict[str, Any] = {}
    for key in _RANGE_KEYS:
        value = _range_value(check, key)
        if value is not None:
            kwargs[key] = value
    distance = check.number("distance", None, allow_none=True)
    if distance is not None:
        if distance < 1:
            check.problem("distance", f"expected a number >= 1, got {distance!r}")
        kwargs["distance"] = distance
    wlen = check.number("wlen", None, integer=True, allow_none=True)
    if wlen is not None:
        if wlen < 1:
            check.problem("wlen", f"expected a positive integer, got {wlen!r}")
        kwargs["wlen"] = wlen
    rel_height = check.number("rel_height", 0.5, non_negative=True)
    if "width" in kwargs:
        kwargs["rel_height"] = rel_height
    out_fields: tuple[str, ...] = ()
    if buffer_io.data_out_examples:
        out_example = buffer_io.data_out_examples[0]
        out_fields = out_example.dtype.names or ()
        if len(out_example) != 1:
            check.buffer_problem(
                "sinks", f"analyzers.pha needs a sink with data_length = 1, "
                f"'{buffer_io.buffer_names_out[0]}' has data_length = {len(out_example)}"
            )
        for f in out_fields:
            if f not in PHA_FIELDS:
                check.buffer_problem(
                    "sinks", f"field '{f}' of sink '{buffer_io.buffer_names_out[0]}' is not a peak "
                    f"property; possible fields: {list(PHA_FIELDS)}"
                )
            elif PHA_FIELDS[f] and not any(k in kwargs for k in PHA_FIELDS[f]):
                need = " or ".join(PHA_FIELDS[f])
                check.problem(need.split(" or ")[0], f"sink field '{f}' needs config key {need} to be set")
    check.done()
    from scipy.signal import find_peaks

    from ..worker_templates import Processor

    processor = Processor(buffer_io)
    out_dtype = buffer_io.data_out_examples[0].dtype
    property_fields = [f for f in out_fields if f != "position"]
    has_position = "position" in out_fields

    def ufunc(data: _np.ndarray) -> list[list[_np.ndarray]] | None:
        peaks, properties = find_peaks(data[channel], **kwargs)
        n = len(peaks)
        if n == 0:
            return None
        events = _np.zeros(n, dtype=out_dtype)
        if has_position:
            events["position"] = peaks
        for f in property_fields:
            events[f] = properties[f]
        return [[events[i : i + 1] for i in range(n)]]

    processor(ufunc)
