"""A bounded in-memory history of the sampler's latest readings, for live views (progress line, web UI tab).

Memory stays fixed however long the run: when a series is full, every other point is dropped and only every
second new reading is kept from then on, so the series always spans the whole run at an even spacing.
"""

from __future__ import annotations

from collections import deque

MAX_POINTS = 720
TRACKED_METRICS = ("mem_rss_bytes",)


class Trend:
    def __init__(self, max_points: int = MAX_POINTS, metrics: tuple[str, ...] = TRACKED_METRICS) -> None:
        self.max_points = max_points
        self.metrics = metrics
        self.series: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self._stride: dict[tuple[str, str], int] = {}
        self._seen: dict[tuple[str, str], int] = {}

    def add(self, latest: dict[tuple[str, str], tuple[float, float]]) -> None:
        """Take a sampler's ``latest()``; a reading already seen (same timestamp) is ignored."""
        for key, (ts, value) in latest.items():
            if key[1] not in self.metrics:
                continue
            points = self.series.setdefault(key, deque())
            if points and points[-1][0] >= ts:
                continue
            self._seen[key] = self._seen.get(key, 0) + 1
            stride = self._stride.setdefault(key, 1)
            if self._seen[key] % stride:
                continue
            points.append((ts, value))
            if len(points) >= self.max_points:
                self.series[key] = deque(list(points)[::2])
                self._stride[key] = stride * 2

    def points(self, service: str, metric: str) -> list[tuple[float, float]]:
        return list(self.series.get((service, metric), ()))
