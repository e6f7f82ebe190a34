"""The report's figures: one per run, or this run beside its baseline, each an embedded PNG.

Figures are drawn after the page is laid out: ``row`` leaves a mark, ``fill`` draws every figure and puts it in
place. A large run's figures are drawn by two forked processes (drawing is most of a 24-hour report's time, and
matplotlib holds the GIL); a small one's in this process, as forking would cost more than it saves.
"""

from __future__ import annotations

import html
import multiprocessing
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from analysis import plots
from analysis.faultevents import fault_spans
from analysis.verdict import Analysis
from runspec import folder

PARALLEL_MIN_SAMPLES = 500_000  # sample rows from which figures are drawn in forked processes
PROCESSES = 2
MARK = re.compile(r"\x00figure (\d+)\x00([^\x00]*)\x00")  # where a figure goes, and its alt text
_JOBS: list[tuple[Callable[[int], str], int]] = []  # what the forked processes draw, inherited at fork


def _draw_job(index: int) -> str:
    draw, i = _JOBS[index]
    return draw(i)


class Figures:
    """Draws each figure for the run and, with a baseline, for the baseline beside it."""

    def __init__(self, current: Analysis, base: Analysis | None) -> None:
        self.runs = [current] + ([base] if base is not None else [])
        self.half = base is not None
        self.ctx = [self._context(a) for a in self.runs]
        self.jobs: list[tuple[Callable[[int], str], int]] = []

    @staticmethod
    def _context(analysis: Analysis) -> dict[str, Any]:
        run = analysis.run
        ts = run.samples["ts"]
        origin = run.first_event(folder.LOAD_START) or float(ts.min())
        events = {
            folder.LOAD_START: run.first_event(folder.LOAD_START),
            folder.WARMUP_END: run.first_event(folder.WARMUP_END),
            folder.LOAD_STOP: run.last_event(folder.LOAD_STOP),
            "restarts": run.event_times(folder.SERVICE_RESTART),
            "oom_kills": run.event_times(folder.OOM_KILLED),
            "faults": fault_spans(run),
        }
        return {"clock": plots.Clock(origin, float(ts.max()) - origin), "events": events, "groups": analysis.series}

    def series(self, i: int, service: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        idx = self.ctx[i]["groups"].get((service, metric))
        if idx is None:
            return None
        frame = self.runs[i].run.samples
        ts, values = frame["ts"].to_numpy()[idx], frame["value"].to_numpy()[idx]
        if ts.size > 1 and np.any(ts[1:] < ts[:-1]):  # a sampler writes in time order; a merged file may not
            order = np.argsort(ts, kind="stable")
            ts, values = ts[order], values[order]
        return ts, values

    def row(self, draw: Callable[[int], str], alt: str) -> str:
        """One figure per run: full width alone, side by side (this run | baseline) with a baseline."""
        images = []
        for i in range(len(self.runs)):
            self.jobs.append((draw, i))
            images.append(f"\x00figure {len(self.jobs) - 1}\x00{html.escape(alt, quote=True)}\x00")
        if len(images) == 1:
            return images[0]
        return (
            '<div class="pair"><div><p>this run</p>'
            + images[0]
            + "</div><div><p>baseline</p>"
            + images[1]
            + "</div></div>"
        )

    def fill(self, page: str) -> str:
        """Draw every figure ``row`` asked for and put each in its place."""
        images = self._draw_all()

        def image(match: re.Match[str]) -> str:
            b64, alt = images[int(match.group(1))], match.group(2)
            return (
                f'<img alt="{alt}" src="data:image/png;base64,{b64}">'
                if b64
                else '<p class="muted">no data in this run</p>'
            )

        return MARK.sub(image, page)

    def _draw_all(self) -> list[str]:
        rows = sum(len(a.run.samples) for a in self.runs)
        forkable = "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1
        if rows < PARALLEL_MIN_SAMPLES or len(self.jobs) < 2 * PROCESSES or not forkable:
            return [draw(i) for draw, i in self.jobs]
        _JOBS[:] = self.jobs
        try:
            with multiprocessing.get_context("fork").Pool(PROCESSES) as pool:
                return pool.map(_draw_job, range(len(self.jobs)), chunksize=1)
        finally:
            _JOBS.clear()
