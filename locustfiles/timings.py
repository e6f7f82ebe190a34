"""The exact timing record behind the pass/fail percentiles: ``latency.csv``.

Locust keeps response times in buckets of about two significant digits (10 ms steps between 100 ms and 1 s), too
coarse to judge a 50 ms target. Here every successful request is counted per 10 s interval under its value rounded
to three significant digits (0.1% resolution), so memory is bounded by the number of distinct values, not requests.
Workers hand their counts to the master every report (and forget them); the master, or a local runner, writes each
interval once it is closed. Counts that arrive after their interval was written are appended as more rows with the
same ``ts``: a reader sums ``count`` over equal keys. The few timings whose moment matters (a user's recovery from
an outage, judged against the fault's end: ``FINE_NAMES``) are kept per second instead, so their ``ts`` is the
second they completed in. This module does not import Locust.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from pathlib import Path

from runspec import folder

INTERVAL = 10  # seconds per row group; ts in latency.csv is the start of the interval
FINE_NAMES = frozenset({folder.WS_RECOVERY})  # rare timings kept per second: ts is the second they completed in
MAX_KEYS_PER_INTERVAL = 100_000  # distinct (type, name, ms) per interval before the interval is written early
HEADER = folder.LATENCY_COLUMNS  # ts, type, name, ms, count

Key = tuple[str, str, float]


# Where timings that are not requests go (plugin.py sets it where the record is kept): a token gap per token would
# swamp Locust's requests per second and the error rate's denominator, so those go to the record only.
Sink = Callable[[str, str, float, float, int], None]  # (request type, name, ms, unix time, how many of that ms)
SINK: Sink | None = None


def record_timing(request_type: str, name: str, ms: float) -> None:
    """Into latency.csv only, never into Locust's stats; a no-op where this process keeps no record."""
    sink = SINK
    if sink is not None:
        sink(request_type, name, ms, time.time(), 1)


def round_ms(ms: float) -> float:
    """``ms`` rounded to three significant digits: 41.237 -> 41.2, 1234.5 -> 1230.0, 0.01234 -> 0.0123."""
    # The common ranges without formatting: round() and "%.3g" both round the exact binary value correctly.
    if 100.0 <= ms < 1000.0:
        return float(round(ms))
    if 10.0 <= ms < 100.0:
        return round(ms, 1)
    if 1.0 <= ms < 10.0:
        return round(ms, 2)
    if ms <= 0 or not math.isfinite(ms):
        return 0.0
    return float(f"{ms:.3g}")


def interval_start(ts: float) -> int:
    return int(ts // INTERVAL) * INTERVAL


class TimingRecord:
    """Counts of rounded response times per (interval, request type, name)."""

    def __init__(self) -> None:
        self.intervals: dict[int, dict[Key, int]] = {}
        self.full = False  # an interval passed MAX_KEYS_PER_INTERVAL: write everything at the next flush
        # add() is called for every request: the current interval's bounds and counts, while it is held
        self._start = self._end = 0.0
        self._counts: dict[Key, int] = {}

    def add(self, request_type: str, name: str, ms: float, now: float, count: int = 1) -> None:
        if name in FINE_NAMES:
            # a group of its own per second (closed with the interval it falls in): at most one per second per name
            counts = self.intervals.setdefault(int(now), {})
            key = (request_type, name, round_ms(ms))
            counts[key] = counts.get(key, 0) + count
            return
        if self._start <= now < self._end:
            counts = self._counts
        else:
            start = int(now // INTERVAL) * INTERVAL
            counts = self.intervals.get(start)
            if counts is None:
                counts = self.intervals[start] = {}
            self._start, self._end, self._counts = start, start + INTERVAL, counts
        key = (request_type, name, round_ms(ms))
        counts[key] = counts.get(key, 0) + count
        if len(counts) > MAX_KEYS_PER_INTERVAL:
            self.full = True

    def _forget_current(self) -> None:
        self._start = self._end = 0.0
        self._counts = {}

    def take_all(self) -> list[list]:
        """Every row held, as ``[ts, type, name, ms, count]`` lists (msgpack-friendly), and forget them."""
        rows = _rows(self.intervals)
        self.intervals = {}
        self.full = False
        self._forget_current()
        return rows

    def take_closed(self, now: float, grace: float) -> list[list]:
        """Rows of the intervals that ended at least ``grace`` seconds before ``now``, and forget them."""
        if self.full:
            return self.take_all()
        closed = {ts: c for ts, c in self.intervals.items() if ts + INTERVAL + grace <= now}
        for ts in closed:
            del self.intervals[ts]
        if self._start in closed:
            self._forget_current()
        return _rows(closed)

    def merge(self, rows: list[list]) -> None:
        """Add rows taken from another record (a worker's report)."""
        for ts, request_type, name, ms, count in rows:
            counts = self.intervals.setdefault(int(ts), {})
            key = (request_type, name, float(ms))
            counts[key] = counts.get(key, 0) + int(count)
            if len(counts) > MAX_KEYS_PER_INTERVAL:
                self.full = True


def _rows(intervals: dict[int, dict[Key, int]]) -> list[list]:
    return [
        [ts, request_type, name, ms, count]
        for ts in sorted(intervals)
        for (request_type, name, ms), count in sorted(intervals[ts].items())
    ]


def format_ms(ms: float) -> str:
    return f"{ms:.15g}"


def append_rows(path: Path, header: tuple[str, ...], rows: list[list]) -> None:
    """Append rows to a CSV in one write() (other processes may append too); header only if the file is new."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    with open(path, "a", encoding="utf-8", newline="") as file:
        if file.tell() == 0:
            writer.writerow(header)
        writer.writerows([format_ms(v) if isinstance(v, float) else v for v in row] for row in rows)
        file.write(buffer.getvalue())
        file.flush()
