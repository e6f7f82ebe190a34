"""Per-interval figures of the load generator itself, kept where users run and written once per interval.

A worker hands what it holds to the master with each report (``take_report``) and forgets it; the master merges the
workers' rows (``merge``: each subclass says how, a maximum of maxima, a sum of totals) and writes an interval once
it is closed (``take_closed``), or everything at the end (``take_all``). An interval already handed out is never
opened again: a late row joins the first interval not written yet, so ``samples.csv`` gets one row per interval.
This module does not import Locust.
"""

from __future__ import annotations

from locustfiles.timings import INTERVAL


class IntervalRows:
    """{interval start: [values]}; subclasses say what an empty interval holds and how two rows combine."""

    def __init__(self) -> None:
        self.intervals: dict[int, list] = {}
        self.written_through = -1  # start of the last interval handed out by take_*: later values go after it

    def empty(self) -> list:
        raise NotImplementedError

    def combine(self, entry: list, values: list) -> None:
        """Fold ``values`` (a row from another process, or this one's) into ``entry`` in place."""
        raise NotImplementedError

    def _open_interval(self, ts: float) -> int:
        """The interval of ``ts``, or the first one not handed out yet: samples.csv gets one row per interval."""
        return max(int(ts // INTERVAL) * INTERVAL, self.written_through + INTERVAL)

    def entry(self, ts: float) -> list:
        """The row of ``ts``'s interval, made empty when new."""
        start = self._open_interval(ts)
        entry = self.intervals.get(start)
        if entry is None:
            entry = self.intervals[start] = self.empty()
        return entry

    def touch(self, now: float) -> None:
        """Make the interval of ``now`` exist, so a quiet interval is written too (as zeros)."""
        self.entry(now)

    def take_report(self) -> list[list]:
        """Everything held, for a worker's report to the master (which decides the rows), and forget it."""
        rows = [[ts, *values] for ts, values in sorted(self.intervals.items())]
        self.intervals = {}
        return rows

    def take_all(self) -> list[list]:
        rows = self.take_report()
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
        """Add rows from another process."""
        for ts, *values in rows:
            self.combine(self.entry(ts), values)
