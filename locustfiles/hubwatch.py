"""The load generator's hub and core: how late it woke a sleeping greenlet, and how busy its process was.

A tail the client made reads as server latency. One greenlet per Locust process sleeps PROBE_EVERY in a loop and
measures how far past its due time it woke: every greenlet waited that long then, whether the hub was held by a
long callback, a C call or a GC pause, or the core was simply saturated. Per 10 s interval it keeps the worst lag
(``hub_lag_max_ms``: it labels a slow window), the lags summed (``hub_blocked_ms``: how long the hub was blocked, the
validity figure, since one late wake-up in 10 s spoils a few samples while a hub blocked for seconds spoils the run)
and the process's CPU time over the interval in % of one core (``worker_cpu_max_percent``). The master keeps the
busiest worker's, so a run over several workers is judged by its weakest one (analysis/generator.py).

Not gevent's monitor thread: when it fires it formats every greenlet's stack (costly with thousands of users), and
it says only that the hub was blocked over ``max_blocking_time``, not how late a wake-up was. This module does not
import Locust.
"""

from __future__ import annotations

import time

import gevent

from locustfiles.intervals import IntervalRows
from locustfiles.timings import INTERVAL
from runspec.units import LOAD_GENERATOR

PROBE_EVERY = 0.05  # seconds between wake-ups: 20 a second costs nothing and catches a 20 ms stall within 50 ms
BLOCK_FLOOR_MS = 10.0  # a wake-up later than this counts as blocked time; below it a busy machine's timer slack
SERVICE = LOAD_GENERATOR


class HubWatch(IntervalRows):
    """[lag_max_ms, blocked_ms, cpu_percent] per interval of this process (merged at the master: the maximum of
    each, the busiest worker's)."""

    def __init__(self) -> None:
        super().__init__()
        self.probe: gevent.Greenlet | None = None
        self._cpu_mark: tuple[int, float, float] | None = None  # (interval, wall, process time) at its start

    def empty(self) -> list:
        return [0.0, 0.0, 0.0]

    def combine(self, entry: list, values: list) -> None:
        for i, value in enumerate(values):
            entry[i] = max(entry[i], float(value))

    def start(self) -> None:
        if self.probe is None:
            self.probe = gevent.spawn(self._probe)

    def stop(self) -> None:
        probe, self.probe = self.probe, None
        if probe is not None:
            probe.kill(block=False)

    def add_lag(self, now: float, lag_ms: float) -> None:
        entry = self.entry(now)
        entry[0] = max(entry[0], lag_ms)
        if lag_ms > BLOCK_FLOOR_MS:
            entry[1] += lag_ms

    def add_cpu(self, now: float) -> None:
        """Close the CPU measure of the interval that ``now`` left (called at each wake-up; cheap when nothing
        changed)."""
        interval, cpu = int(now // INTERVAL), time.process_time()
        mark = self._cpu_mark
        if mark is None:
            self._cpu_mark = (interval, now, cpu)
            return
        if interval == mark[0]:
            return
        wall = now - mark[1]
        if wall > 0:
            percent = (cpu - mark[2]) / wall * 100.0
            entry = self.entry(mark[1])
            entry[2] = max(entry[2], percent)
        self._cpu_mark = (interval, now, cpu)

    def _probe(self) -> None:
        while True:
            due = time.perf_counter() + PROBE_EVERY
            gevent.sleep(PROBE_EVERY)
            lag_ms = max(0.0, time.perf_counter() - due) * 1000.0
            now = time.time()
            self.add_lag(now, lag_ms)
            self.add_cpu(now)


def sample_rows(rows: list[list]) -> list[list]:
    """``samples.csv`` rows (ts, service, metric, value) for rows taken from HubWatch."""
    out = []
    for ts, lag_ms, blocked_ms, cpu in rows:
        out.append([float(ts), SERVICE, "hub_lag_max_ms", round(float(lag_ms), 3)])
        out.append([float(ts), SERVICE, "hub_blocked_ms", round(float(blocked_ms), 3)])
        out.append([float(ts), SERVICE, "worker_cpu_max_percent", round(float(cpu), 1)])
    return out
