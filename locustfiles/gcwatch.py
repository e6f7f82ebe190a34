"""The load generator's own garbage collector: kept out of the measured latencies, and recorded when it is not.

With thousands of users a full collection walks every object the users hold and stops every greenlet for hundreds
of milliseconds, which reads as server latency. After spawning, live objects are moved out of the collector's sight
(``gc.freeze``); the pauses that remain are timed with ``gc.callbacks`` and written to ``samples.csv`` as service
``locust`` (``gc_pause_max_ms``, ``gc_pause_total_ms``, ``gc_collections`` per 10 s interval), so a report can show
the tool was not the one pausing. ``sleep`` is the users' sleep between tasks (the plugin installs it), made so it
leaves the collector less to walk. This module does not import Locust.
"""

from __future__ import annotations

import gc
import time

import gevent
from gevent import getcurrent
from gevent.exceptions import InvalidSwitchError
from gevent.hub import get_hub

from locustfiles.intervals import IntervalRows
from runspec.units import LOAD_GENERATOR

# Objects frozen at one spawn stay out of collection; re-freezing (unfreeze, collect, freeze) lets garbage left by
# users stopped since be collected, at the price of one full collection: do it at most this often.
REFREEZE_EVERY = 300.0
SERVICE = LOAD_GENERATOR  # the load generator's rows in samples.csv


class GcPauses(IntervalRows):
    """Per-interval maximum pause, total pause and number of collections of this process."""

    def __init__(self) -> None:
        super().__init__()
        self._started: float | None = None
        self._last_freeze = -REFREEZE_EVERY
        self.installed = False

    def empty(self) -> list:
        return [0.0, 0.0, 0]

    def combine(self, entry: list, values: list) -> None:
        """The maximum of maxima, sums of totals and counts."""
        max_ms, total_ms, collections = values
        entry[0] = max(entry[0], float(max_ms))
        entry[1] += float(total_ms)
        entry[2] += int(collections)

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
        self.combine(self.entry(now), [pause_ms, pause_ms, collections])

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


def sample_rows(rows: list[list]) -> list[list]:
    """``samples.csv`` rows (ts, service, metric, value) for rows taken from GcPauses."""
    out = []
    for ts, max_ms, total_ms, collections in rows:
        out.append([float(ts), SERVICE, "gc_pause_max_ms", round(float(max_ms), 3)])
        out.append([float(ts), SERVICE, "gc_pause_total_ms", round(float(total_ms), 3)])
        out.append([float(ts), SERVICE, "gc_collections", float(collections)])
    return out


def sleep(seconds: float) -> None:
    """gevent.sleep, keeping two objects the collector tracks alive while it sleeps (a timer and the greenlet's bound
    switch) instead of five (also a Waiter, its bound switch's argument tuple and the timer's bound ``__exit__``).
    A user sleeps between its tasks for seconds, so these outlive young collections: at 5,000 idle users they were
    most of what every older collection walked (bench/bench_ws.py's GC pause)."""
    if seconds <= 0:
        gevent.sleep(0)
        return
    hub = get_hub()
    loop = hub.loop
    timer = loop.timer(seconds)
    loop.update_now()  # as gevent.sleep: from now, not from the loop's last iteration
    timer.start(getcurrent().switch)
    try:
        woken_with = hub.switch()
    finally:
        timer.close()
    if woken_with != ():  # what gevent's Waiter would refuse: a switch that is not the timer's
        raise InvalidSwitchError(f"sleep woken by an unexpected switch: {woken_with!r}")
