"""The run's phases on one clock: ``load_start`` -> ``warmup_end`` -> ``load_stop`` -> ``drain_end``.

The one owner of the phase events in ``events.csv``. The runner (threads, ``time.sleep``) and the Locust sampling
plugin (greenlets) both drive it: they say when load starts and stops, and call ``advance()`` from their own timers;
this class decides which event is due and writes each once, in order. No gevent, no Locust: it never sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from runspec import folder
from sampler.writer import append_event

IDLE, LOADING, DRAINING, DONE = "idle", "loading", "draining", "done"


class Phases:
    def __init__(
        self, run_dir: str | Path, warmup: float, drain: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.run_dir = Path(run_dir)
        self.warmup = warmup
        self.drain = drain
        self.clock = clock
        self.state = IDLE
        self.load_started: float | None = None
        self.load_stopped: float | None = None
        self.warmup_written = False

    def _write(self, event: str, detail: str = "", ts: float | None = None) -> None:
        append_event(self.run_dir, event, detail, ts=ts)

    def start_load(self, detail: str = "") -> None:
        """Load begins. A new test started during a drain (the web UI) goes on as load: no drain_end for the old one."""
        if self.state == LOADING:
            return
        now = self.clock()
        if self.state in (IDLE, DONE) or self.load_started is None:
            self.load_started = now
            self.warmup_written = False
        self.state = LOADING
        self.load_stopped = None
        self._write(folder.LOAD_START, detail, ts=now)

    def stop_load(self, detail: str = "") -> None:
        """Load ends; the drain begins (``drain_end`` is written by ``advance`` once it is over)."""
        if self.state != LOADING:
            return
        self.advance()
        self.load_stopped = self.clock()
        self.state = DRAINING if self.drain > 0 else DONE
        self._write(folder.LOAD_STOP, detail, ts=self.load_stopped)
        if self.state == DONE:
            self._write(folder.DRAIN_END, ts=self.load_stopped)

    def advance(self) -> list[str]:
        """Write whatever timed event is due now (``warmup_end``, ``drain_end``); returns what it wrote."""
        now, written = self.clock(), []
        if self.state == LOADING and not self.warmup_written and self.load_started is not None:
            if now >= self.load_started + self.warmup:
                self._write(folder.WARMUP_END, ts=now)
                self.warmup_written = True
                written.append(folder.WARMUP_END)
        if self.state == DRAINING and self.load_stopped is not None and now >= self.load_stopped + self.drain:
            self._write(folder.DRAIN_END, ts=now)
            self.state = DONE
            written.append(folder.DRAIN_END)
        return written

    def seconds_to_next(self) -> float | None:
        """How long until ``advance`` has something to write; None when nothing timed is pending."""
        now = self.clock()
        if self.state == LOADING and not self.warmup_written and self.load_started is not None:
            return max(0.0, self.load_started + self.warmup - now)
        if self.state == DRAINING and self.load_stopped is not None:
            return max(0.0, self.load_stopped + self.drain - now)
        return None

    @property
    def draining(self) -> bool:
        return self.state == DRAINING

    @property
    def done(self) -> bool:
        return self.state == DONE
