"""The load generator's own garbage collector: kept out of the measured latencies, and recorded when it is not.

With thousands of users a full collection walks every object the users hold and stops every greenlet for hundreds
of milliseconds, which reads as server latency. After spawning, live objects are moved out of the collector's sight
(``gc.freeze``); the pauses that remain are timed with ``gc.callbacks`` and written to ``samples.csv`` as service
``locust`` (``gc_pause_max_ms``, ``gc_pause_total_ms``, ``gc_collections`` per 10 s interval), so a report can show
the tool was not the one pausing. This module does not import Locust.
"""

from __future__ import annotations

import gc
import time

from locustfiles.timings import INTERVAL

# Objects frozen at one spawn stay out of collection; re-freezing (unfreeze, collect, freeze) lets garbage left by
# users stopped since be collected, at the price of one full collection: do it at most this often.
REFREEZE_EVERY = 300.0
SERVICE = "locust"


class GcPauses:
    """Per-interval maximum pause, total pause and number of collections of this process."""

    def __init__(self) -> None:
        self.intervals: dict[int, list[float]] = {}  # ts -> [max_ms, total_ms, collections]
        self._started: float | None = None
        self._last_freeze = -REFREEZE_EVERY
        self.installed = False
        self.written_through = -1  # start of the last interval handed out by take_*: later counts go after it

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._callback)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._callback)
            self.installed = False

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.add(time.time(), (time.perf_counter() - self._started) * 1000.0)
            self._started = None

    def add(self, now: float, pause_ms: float, collections: int = 1) -> None:
        start = self._open_interval(now)
        entry = self.intervals.get(start)
        if entry is None:
            self.intervals[start] = [pause_ms, pause_ms, collections]
        else:
            entry[0] = max(entry[0], pause_ms)
            entry[1] += pause_ms
            entry[2] += collections

    def _open_interval(self, ts: float) -> int:
        """The interval of ``ts``, or the first one not handed out yet: samples.csv gets one row per interval."""
        return max(int(ts // INTERVAL) * INTERVAL, self.written_through + INTERVAL)

    def touch(self, now: float) -> None:
        """Make the interval of ``now`` exist, so an interval without collections is written as zeros."""
        self.intervals.setdefault(self._open_interval(now), [0.0, 0.0, 0])

    def freeze(self, now: float | None = None) -> bool:
        """Move what lives now out of the collector's sight; at most once per REFREEZE_EVERY. True if done."""
        now = time.monotonic() if now is None else now
        if now - self._last_freeze < REFREEZE_EVERY:
            return False
        self._last_freeze = now
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        return True

    def take_report(self) -> list[list]:
        """Everything held, for a worker's report to the master (which decides the rows), and forget it."""
        rows = [[ts, *values] for ts, values in sorted(self.intervals.items())]
        self.intervals = {}
        return rows

    def take_all(self) -> list[list]:
        rows = [[ts, *values] for ts, values in sorted(self.intervals.items())]
        self.intervals = {}
        if rows:
            self.written_through = max(self.written_through, rows[-1][0])
        return rows

    def take_closed(self, now: float, grace: float) -> list[list]:
        closed = sorted(ts for ts in self.intervals if ts + INTERVAL + grace <= now)
        rows = [[ts, *self.intervals.pop(ts)] for ts in closed]
        if rows:
            self.written_through = max(self.written_through, rows[-1][0])
        return rows

    def merge(self, rows: list[list]) -> None:
        """Add rows from another process: the maximum of maxima, sums of totals and counts."""
        for ts, max_ms, total_ms, collections in rows:
            start = self._open_interval(ts)
            entry = self.intervals.get(start)
            if entry is None:
                self.intervals[start] = [float(max_ms), float(total_ms), int(collections)]
            else:
                entry[0] = max(entry[0], float(max_ms))
                entry[1] += float(total_ms)
                entry[2] += int(collections)


def sample_rows(rows: list[list]) -> list[list]:
    """``samples.csv`` rows (ts, service, metric, value) for rows taken from GcPauses."""
    out = []
    for ts, max_ms, total_ms, collections in rows:
        out.append([float(ts), SERVICE, "gc_pause_max_ms", round(float(max_ms), 3)])
        out.append([float(ts), SERVICE, "gc_pause_total_ms", round(float(total_ms), 3)])
        out.append([float(ts), SERVICE, "gc_collections", float(collections)])
    return out
