"""The health timeline: one row per service, green while its health check answered, red while it did not.

Drawn from the ``health_up`` samples on the time axis of the report's other figures (time since load start, the
load start and stop lines, restarts), and returned as base64 PNG for embedding, as analysis/plots.py does.
A stretch without samples (the sampler was stopped, a gap in the file) is left blank: unknown, not up.
"""

from __future__ import annotations

import numpy as np

from analysis import plots
from analysis.faultevents import fault_spans
from analysis.metrics import HEALTH_UP
from analysis.runfolder import Run
from analysis.status import UP_AT_LEAST
from runspec import folder

UP_COLOR = plots.PASS_COLOR
DOWN_COLOR = plots.FAIL_COLOR
ROW_INCHES = 0.38  # height per service
FRAME_INCHES = 1.5  # title, axis and legend
GAP_STEPS = 10  # a pause this many sample intervals long is a gap, as the line plots break their lines
BAR_HEIGHT = 0.6


def plot_health(run: Run, half: bool = False) -> str | None:
    """Up/down bands per service from the health_up samples; None when the run has none."""
    frame = run.samples
    rows = frame[(frame["metric"] == HEALTH_UP).to_numpy()]
    if rows.empty:
        return None
    groups = rows.groupby("service", observed=True, sort=True).indices
    ts_all = frame["ts"]
    origin = run.first_event(folder.LOAD_START) or float(ts_all.min())
    clock = plots.Clock(origin, float(ts_all.max()) - origin)
    events = {
        folder.LOAD_START: run.first_event(folder.LOAD_START),
        folder.LOAD_STOP: run.last_event(folder.LOAD_STOP),
        "restarts": run.event_times(folder.SERVICE_RESTART),
        "faults": fault_spans(run),
    }
    span = max(float(rows["ts"].max()) - float(rows["ts"].min()), 1.0)
    # An outage of one second in a day is far below a pixel: every red bar is at least one pixel column wide.
    min_down = span / plots.BAND_BINS
    services = sorted(str(s) for s in groups)[::-1]  # the first name on top
    width = (plots.HALF if half else plots.WIDE)[0]
    fig, ax = plots.plt.subplots(figsize=(width, FRAME_INCHES + ROW_INCHES * len(services)))
    any_down = False
    for y, service in enumerate(services):
        idx = groups[service]
        ts = rows["ts"].to_numpy()[idx]
        order = np.argsort(ts, kind="stable")
        ts, up = ts[order], rows["value"].to_numpy()[idx][order] >= UP_AT_LEAST
        for state, color in ((True, UP_COLOR), (False, DOWN_COLOR)):
            bars = [
                (start, max(length, min_down) if not state else length)
                for start, length, is_up in _runs(ts, up)
                if is_up == state
            ]
            if bars:
                any_down |= not state
                ax.broken_barh(
                    [(clock(start), length / clock.scale) for start, length in bars],
                    (y - BAR_HEIGHT / 2, BAR_HEIGHT),
                    facecolors=color,
                    label="up" if state else "down",
                )
    plots._phases(ax, clock, events, None)
    ax.set_ylim(-0.7, len(services) + 0.4)  # room above the top row for the legend
    plots._finish(ax, clock, "Service health: up and down", "", any_down)
    ax.set_yticks(range(len(services)), services, fontsize=8)
    ax.grid(axis="y", visible=False)
    return plots._png(fig)


def _runs(ts: np.ndarray, up: np.ndarray) -> list[tuple[float, float, bool]]:
    """(start, length, up) per run of equal states; each sample holds until the next, unless a gap comes first."""
    steps = np.diff(ts)
    step = float(np.median(steps)) if steps.size else 1.0
    step = step if step > 0 else 1.0
    gap = steps > GAP_STEPS * step
    holds = np.append(np.where(gap, step, steps), step)
    new_run = np.r_[True, (up[1:] != up[:-1]) | gap]
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], ts.size) - 1
    return [(float(ts[s]), float(ts[e] + holds[e] - ts[s]), bool(up[s])) for s, e in zip(starts, ends, strict=True)]
