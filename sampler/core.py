"""The Sampler: every ``interval`` seconds, read every source and append one batch of rows to ``samples.csv``.

Ticks keep their cadence without drift (scheduled on a monotonic clock; a late tick skips the slots it missed
instead of bunching up). Each source reads in a thread of its own and is time-boxed: a source still busy at the
tick's deadline is left out of that tick (its late answer is dropped) and is not asked again until it answers, so
a hung Redis or a slow exporter never delays the others. A failing source is logged once, and once more when it
recovers; it never stops the tick.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from runspec import folder
from sampler.netstat import Snapshot, TcpTable
from sampler.registry import make_source
from sampler.sources import Source, Tick
from sampler.spec import SourceSpecError, parse_services
from sampler.writer import Row, SampleWriter, append_event

log = logging.getLogger("sampler")

TICK_BUDGET = 0.8  # share of the interval a tick may spend waiting for its sources
MAX_SOURCE_WAIT = 5.0  # seconds, whatever the interval
STALE_TICKS = 3  # latest(): a value older than this many intervals (of its own cadence) is dropped
SPARSE_METRICS = ("mem_uss_bytes", "mem_pss_bytes", "tcp_established")  # not written on every tick
SPARSE_STALE = 30.0  # seconds latest() keeps those at least


def next_slot(previous: float, now: float, interval: float) -> float:
    """The next tick time after ``previous``: always on the grid previous + k * interval (no drift), and in the
    future (a tick that overran skips the slots it missed instead of running them back to back)."""
    slot = previous + interval
    if slot <= now:
        slot += math.ceil((now - slot) / interval + 1e-9) * interval
    return slot


class _Worker:
    """One source's thread: reads on request, one read at a time; a read still running is never asked again."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.busy = False
        self.failing = False
        self.slow_logged = False
        self.result: dict[str, float] | BaseException | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[Tick | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"sampler {source}", daemon=True)
        self._thread.start()

    def submit(self, tick: Tick) -> None:
        with self._lock:  # busy and done change together, so a tick never sees one without the other
            self.busy = True
            self.done.clear()
        self._requests.put(tick)

    def _run(self) -> None:
        while True:
            tick = self._requests.get()
            if tick is None:
                return
            try:
                result: dict[str, float] | BaseException = self.source.read(tick)
            except BaseException as exc:  # noqa: BLE001 - reported by the tick, never kills the thread
                result = exc
            with self._lock:
                self.result = result
                self.busy = False
                self.done.set()

    def stop(self) -> None:
        self._requests.put(None)


class Sampler:
    """Samples ``services`` (name -> source spec or list of specs) into ``out_dir/samples.csv``.

    Raises SourceSpecError (one-line message) on a bad spec or service name. ``uss_interval`` 0 = no USS.
    """

    def __init__(
        self,
        services: Mapping[str, str | Sequence[str]],
        out_dir: str | Path,
        interval: float = 1.0,
        uss_interval: float = 0.0,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be above 0, got {interval!r}")
        self.specs = parse_services(dict(services))
        self.sources: list[Source] = []
        for service, specs in self.specs.items():
            for spec in specs:
                try:  # no I/O here: connections are made on the first read
                    self.sources.append(make_source(service, spec))
                except (ValueError, TypeError) as exc:
                    raise SourceSpecError(f"service {service!r}: source spec {spec.text!r}: {exc}") from None
        self.out_dir = Path(out_dir)
        self.interval = float(interval)
        self.uss_interval = float(uss_interval)
        self.ticks = 0
        self.writer: SampleWriter | None = None
        self._workers: list[_Worker] = []
        self._table: TcpTable | None = None
        self._net_failing = False
        self._latest: dict[tuple[str, str], tuple[float, float]] = {}
        self._latest_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_uss = 0.0
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Start the sources' threads and open samples.csv (start() and tick() do it when needed)."""
        if self.writer is not None:
            return
        if self._closed:
            raise RuntimeError("Sampler stopped; make a new one")
        self._workers = [_Worker(source) for source in self.sources]
        if any(spec.kind in ("pid", "port", "cmd") for specs in self.specs.values() for spec in specs):
            self._table = TcpTable()
            log.debug("sampler: TCP connections counted by %s", self._table.method)
        self.writer = SampleWriter(self.out_dir / folder.SAMPLES)

    def start(self) -> None:
        """Sample in a background thread until stop()."""
        if self._thread is not None:
            raise RuntimeError("Sampler already started")
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current tick; files flushed and closed, connections released. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout if timeout is not None else self.interval + MAX_SOURCE_WAIT + 5)
        self._thread = None
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        for source in self.sources:
            try:
                source.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing left to do with it
                pass
        if self._table is not None:
            self._table.close()
        if self.writer is not None:
            self.writer.close()
        self._workers, self._table, self.writer = [], None, None
        self._closed = True

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a bug in one tick must not end a 24-hour soak's sampling
                log.exception("sampler: tick failed")
            now = time.monotonic()
            next_at = next_slot(next_at, now, self.interval)
            self._stop.wait(next_at - now)

    # -- one tick ---------------------------------------------------------------------------------------------
    def tick(self) -> list[Row]:
        """Read every source once, append the rows (one write), return them."""
        self.open()
        mono = time.monotonic()
        uss_due = self.uss_interval > 0 and mono >= self._next_uss
        if uss_due:
            self._next_uss = mono + self.uss_interval - self.interval / 2
        deadline = mono + min(self.interval * TICK_BUDGET, MAX_SOURCE_WAIT)
        tick = Tick(ts=time.time(), mono=mono, net=self._net_snapshot(mono), uss_due=uss_due, deadline=deadline)
        asked = [worker for worker in self._workers if not worker.busy]
        for worker in self._workers:
            if worker.busy and not worker.slow_logged:
                worker.slow_logged = True
                log.warning(
                    "sampler: %s: still reading, slower than its %.1f s share of a tick; skipped until it answers "
                    "(logged once)",
                    worker.source,
                    deadline - mono,
                )
        for worker in asked:
            worker.submit(tick)
        rows: list[Row] = []
        events: list[tuple[str, str] | tuple[str, str, float]] = []
        for worker in asked:
            if not worker.done.wait(max(deadline - time.monotonic(), 0.0)):
                continue
            result, source = worker.result, worker.source
            events.extend(source.events)
            source.events.clear()
            if isinstance(result, BaseException):
                if not worker.failing:
                    worker.failing = True
                    log.warning(
                        "sampler: %s: %s: %s (logged once; retried every tick)", source, type(result).__name__, result
                    )
                continue
            if worker.failing:
                worker.failing = False
                log.info("sampler: %s: reading again", source)
            worker.slow_logged = False
            rows.extend((tick.ts, source.service, metric, float(value)) for metric, value in (result or {}).items())
        assert self.writer is not None
        self.writer.write(rows)
        for event, detail, *when in events:  # a source may date an event itself (an OOM kill between two ticks)
            append_event(self.out_dir, event, detail, ts=when[0] if when else tick.ts)
            if event == folder.SERVICE_DOWN:
                self._forget(detail.split(":", 1)[0])
        self._remember(rows)
        self.ticks += 1
        return rows

    def _net_snapshot(self, mono: float) -> Snapshot | None:
        if self._table is None:
            return None
        try:
            snapshot = self._table.snapshot(mono)
            snapshot.prefetch({port for source in self.sources for port in source.wanted_ports()})
        except OSError as exc:
            if not self._net_failing:
                self._net_failing = True
                log.warning("sampler: cannot read TCP sockets: %s (logged once)", exc)
            return None
        self._net_failing = False
        return snapshot

    # -- live values for a UI and for the runner's health watch --------------------------------------------------
    def down_since(self) -> dict[str, float]:
        """{service: unix time it was first found down} for each health-checked service that is down now."""
        return {source.service: source.down_since for source in self.sources if source.down_since is not None}

    def _remember(self, rows: list[Row]) -> None:
        with self._latest_lock:
            for ts, service, metric, value in rows:
                self._latest[(service, metric)] = (ts, value)

    def _forget(self, service: str) -> None:
        with self._latest_lock:
            for key in [key for key in self._latest if key[0] == service]:
                del self._latest[key]

    def latest(self) -> dict[tuple[str, str], tuple[float, float]]:
        """{(service, metric): (ts, value)}: the newest value of each series still being written."""
        now = time.time()
        with self._latest_lock:
            fresh = {}
            for key, (ts, value) in self._latest.items():
                limit = STALE_TICKS * self.interval
                if key[1] in SPARSE_METRICS:
                    limit = max(limit, STALE_TICKS * self.uss_interval, SPARSE_STALE)
                if now - ts <= limit:
                    fresh[key] = (ts, value)
            return fresh
