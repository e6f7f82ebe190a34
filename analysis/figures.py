"""The report's figures: one per run, or this run beside its baseline, each an embedded PNG."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np

from analysis import plots
from analysis.verdict import Analysis


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{b64}">'


class Figures:
    """Draws each figure for the run and, with a baseline, for the baseline beside it."""

    def __init__(self, current: Analysis, base: Analysis | None) -> None:
        self.runs = [current] + ([base] if base is not None else [])
        self.half = base is not None
        self.ctx = [self._context(a) for a in self.runs]

    @staticmethod
    def _context(analysis: Analysis) -> dict[str, Any]:
        run = analysis.run
        ts = run.samples["ts"]
        origin = run.first_event("load_start") or float(ts.min())
        events = {
            "load_start": run.first_event("load_start"),
            "warmup_end": run.first_event("warmup_end"),
            "load_stop": run.last_event("load_stop"),
            "restarts": run.event_times("service_restart"),
        }
        frame = run.samples
        groups = frame.groupby(["service", "metric"], observed=True, sort=True).indices
        return {"clock": plots.Clock(origin, float(ts.max()) - origin), "events": events, "groups": groups}

    def series(self, i: int, service: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        idx = self.ctx[i]["groups"].get((service, metric))
        if idx is None:
            return None
        frame = self.runs[i].run.samples
        ts, values = frame["ts"].to_numpy()[idx], frame["value"].to_numpy()[idx]
        order = np.argsort(ts, kind="stable")
        return ts[order], values[order]

    def row(self, draw: Callable[[int], str], alt: str) -> str:
        """One figure per run: full width alone, side by side (this run | baseline) with a baseline."""
        images = []
        for i in range(len(self.runs)):
            b64 = draw(i)
            images.append(_img(b64, alt) if b64 else '<p class="muted">no data in this run</p>')
        if len(images) == 1:
            return images[0]
        return (
            '<div class="pair"><div><p>this run</p>'
            + images[0]
            + "</div><div><p>baseline</p>"
            + images[1]
            + "</div></div>"
        )
