"""How the WebSocket checks speak to Locust: timings of type WS (Reporter), and a cheap one-shot flag.

Split out of exchange.py (which re-exports both). Successes skip Locust's request event: a request event and the two
StatsEntry.log calls behind it (the name's and the total's) cost more than the rest of a ping round trip's client
work (measured with bench/bench_ws.py). Their times are kept per name for the current second and, every FLUSH_EVERY
seconds (or at a new second, or when the runner stops), made into a StatsEntry merged into Locust's stats with
StatsEntry.extend, as a master merges its workers' reports, and handed to the exact timing record (timings.SINK)
grouped by value. Failures and counts still fire a request event each (rare, and seen at once).
Importing this module does not import Locust.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter
from typing import Any

import gevent
from gevent.hub import Waiter, get_hub

from locustfiles import timings
from locustfiles.timings import record_timing, round_ms

REQUEST_TYPE = "WS"
# Seconds between merges into Locust's stats: its web UI polls every 2 s, a worker reports every 3 s, its stats
# history is written every second. Locust's own per-second counts keep the second each success was logged in.
FLUSH_EVERY = 0.5


class Flag:
    """A one-shot event with at most one waiter: gevent.event.Event's link machinery and Timeout object cost more
    than the rest of a round trip's bookkeeping (measured with bench/bench_ws.py)."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: Waiter | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            get_hub().loop.run_callback(waiter.switch, True)

    def wait(self, timeout: float) -> bool:
        """True once set; False after ``timeout`` seconds."""
        if self._is_set:
            return True
        if timeout <= 0:
            return False
        hub = get_hub()
        waiter = self._waiter = Waiter(hub)
        timer = hub.loop.timer(timeout)
        timer.start(waiter.switch, False)
        try:
            return waiter.get()
        finally:
            timer.close()
            self._waiter = None


class EventCheckFailed(Exception):
    """A server event that broke the contract (the message says which check, never which id)."""


class StatsBatch:
    """WS successes of one Locust environment, per name and per second, until merged into its stats and the record."""

    __slots__ = ("stats", "pending", "second", "flusher", "__weakref__")

    def __init__(self, environment: Any) -> None:
        self.stats = environment.stats
        self.pending: dict[str, list[float]] = {}  # name -> the times logged in self.second
        self.second = 0  # the unix second everything pending was logged in
        self.flusher: gevent.Greenlet | None = None
        events = environment.events
        # Before Locust's final figures: a stopping runner fires test_stop once its users have stopped, then a
        # worker sends its last report and a headless run prints and writes its stats.
        events.test_stop.add_listener(lambda **_kw: self.flush())
        events.quitting.add_listener(lambda **_kw: self.flush())
        events.reset_stats.add_listener(lambda **_kw: self.drop())

    @classmethod
    def of(cls, environment: Any) -> StatsBatch | None:
        """The environment's batch; None where it keeps no Locust stats (a test's stand-in), then events are fired."""
        if not hasattr(getattr(environment, "stats", None), "total"):
            return None
        batch = _batches.get(environment)
        if batch is None:
            batch = _batches[environment] = cls(environment)
        return batch

    def log(self, name: str, ms: float, now: float) -> None:
        if int(now) != self.second:
            self.flush()
            self.second = int(now)
        times = self.pending.get(name)
        if times is None:
            times = self.pending[name] = []
            if self.flusher is None:
                self.flusher = gevent.spawn_later(FLUSH_EVERY, self._flush_later)
        times.append(ms)

    def _flush_later(self) -> None:
        self.flusher = None
        self.flush()

    def flush(self) -> None:
        """Merge what is pending into Locust's stats (the name's entry and the total) and the exact record, now."""
        flusher, self.flusher = self.flusher, None
        if flusher is not None and flusher is not gevent.getcurrent():
            flusher.kill(block=False)
        pending, self.pending = self.pending, {}
        if not pending:
            return
        from locust.stats import StatsEntry, bucket_response_time  # here: importing Locust monkey-patches

        stats, second, sink = self.stats, self.second, timings.SINK
        at = second + 0.5  # a time inside the second they were logged in: the record's intervals are whole seconds
        for name, times in pending.items():
            entry = StatsEntry(stats, name, REQUEST_TYPE)  # what its log() would have made of the same times
            entry.start_time = entry.last_request_timestamp = at
            entry.num_requests = len(times)
            entry.num_reqs_per_sec[second] = len(times)
            entry.total_response_time = sum(times)
            entry.min_response_time, entry.max_response_time = min(times), max(times)
            buckets = entry.response_times
            for ms in times:
                buckets[bucket_response_time(ms)] += 1
            stats.get(name, REQUEST_TYPE).extend(entry)
            stats.total.extend(entry)
            if sink is not None:  # what a request event's listener (plugin._on_request) would have recorded
                for ms, count in Counter(map(round_ms, times)).items():
                    sink(REQUEST_TYPE, name, ms, at, count)

    def drop(self) -> None:
        """Locust's stats were reset: what was logged before goes with them."""
        self.pending = {}


_batches: weakref.WeakKeyDictionary[Any, StatsBatch] = weakref.WeakKeyDictionary()


class Reporter:
    """WS timings into Locust's stats (successes batched, see StatsBatch) and into the exact timing record."""

    __slots__ = ("_batch", "_fire", "_timing")

    def __init__(self, environment: Any) -> None:
        self._fire = environment.events.request.fire
        self._timing = getattr(environment, "record_timing", None) or record_timing
        self._batch = StatsBatch.of(environment)

    def timing(self, name: str, ms: float) -> None:
        """A timing for the exact record (latency.csv) only: many per reply, so never a Locust request."""
        self._timing(REQUEST_TYPE, name, ms)

    def success(self, name: str, ms: float) -> None:
        batch = self._batch
        if batch is None:
            self._fire(
                request_type=REQUEST_TYPE, name=name, response_time=ms, response_length=0, exception=None, context={}
            )
        else:
            batch.log(name, ms, time.time())

    def count(self, name: str) -> None:
        """Counted, untimed and not a failure (Locust leaves a None time out of its percentiles)."""
        self._fire(
            request_type=REQUEST_TYPE, name=name, response_time=None, response_length=0, exception=None, context={}
        )

    def failure(self, name: str, message: str, ms: float | None = None) -> None:
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=ms,
            response_length=0,
            exception=EventCheckFailed(message),
            context={},
        )
