"""Rates over time: a bounded, downsampled history of one run.

Tiers of averaged points, each a ring of fixed length::

    1 s  x 600    the last 10 minutes
    10 s x 720    the last 2 hours
    60 s x 10080  the last 7 days (a whole night, a whole week)

A query for a window takes the finest tier that reaches back far enough, so a
page opened in the morning still draws the whole night. Memory is bounded by
the tier lengths times the number of buffers.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

TIERS: tuple[tuple[float, int], ...] = ((1.0, 600), (10.0, 720), (60.0, 10080))


@dataclass
class _Tier:
    """Points of ``resolution`` seconds; ``acc`` sums the samples of the bucket being filled."""

    resolution: float
    points: collections.deque[tuple[float, list[float]]]
    bucket: int | None = None
    acc: list[float] = field(default_factory=list)
    count: int = 0

    def add(self, t: float, values: list[float]) -> None:
        bucket = int(t // self.resolution)
        if self.bucket is not None and bucket != self.bucket:
            self._close()
        if self.bucket != bucket or not self.acc:
            self.bucket, self.acc, self.count = bucket, [0.0] * len(values), 0
        if len(self.acc) != len(values):
            self.acc = [0.0] * len(values)
            self.count = 0
        self.acc = [a + v for a, v in zip(self.acc, values)]
        self.count += 1

    def _close(self) -> None:
        if self.bucket is not None and self.count:
            t = (self.bucket + 1) * self.resolution
            self.points.append((t, [a / self.count for a in self.acc]))
        self.acc, self.count = [], 0

    def series(self, since: float) -> list[tuple[float, list[float]]]:
        out = [p for p in self.points if p[0] >= since]
        if self.count:  # the bucket being filled, as its average so far
            out.append(((self.bucket or 0) * self.resolution + self.resolution, [a / self.count for a in self.acc]))
        return out

    @property
    def oldest(self) -> float:
        return self.points[0][0] if self.points else math.inf


class RateHistory:
    """Per-buffer event rates of one run, sampled about once a second."""

    def __init__(self, names: list[str], started: float) -> None:
        self.names = list(names)
        self.started = started
        self._tiers = [_Tier(res, collections.deque(maxlen=length)) for res, length in TIERS]

    def add(self, t: float, rates: dict[str, float]) -> None:
        """One sample: ``rates[name]`` events/s for each buffer (missing ones count 0)."""
        values = [max(0.0, float(rates.get(n, 0.0) or 0.0)) for n in self.names]
        for tier in self._tiers:
            tier.add(t, values)

    def query(self, window: float | None, now: float) -> dict[str, object]:
        """``{"names", "resolution", "t": [...], "rates": {name: [...]}}`` for the last ``window`` s (None: all)."""
        since = self.started if window is None else max(self.started, now - window)
        chosen = self._tiers[-1]
        for tier in self._tiers:
            if tier.oldest <= since + tier.resolution or (tier.points.maxlen or 0) > len(tier.points):
                chosen = tier
                break
        points = chosen.series(since)
        return {
            "names": self.names,
            "resolution": chosen.resolution,
            "t": [round(p[0], 3) for p in points],
            "rates": {n: [round(p[1][i], 3) for p in points] for i, n in enumerate(self.names)},
        }
