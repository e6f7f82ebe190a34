"""The report's figures, drawn with matplotlib (Agg) and returned as base64 PNG for embedding.

Long series are reduced to a min/max band per pixel column before drawing: a day at 1 Hz draws as fast as a minute
and a GC sawtooth still shows its full height. Figures have fixed margins rather than ``bbox_inches="tight"``, which
draws every figure twice (a 24-hour report has some 25 figures).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.growth import Fit  # noqa: E402
from runspec.units import HOUR, MB  # noqa: E402

BAND_BINS = 700  # pixel columns of a wide figure
WIDE = (13.6, 3.3)
HALF = (6.8, 3.0)
DPI = 80
# left, right, bottom, top in inches: room for tick labels and axis labels, and the title above
MARGINS = (0.75, 0.2, 0.5, 0.32)
TWIN_RIGHT = 0.6  # a second y axis on the right (users in the load plot)
PNG_COMPRESSION = 3  # zlib level: the default 6 takes 70% longer for images 4% smaller
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
WARMUP_COLOR = "#f2c14e"
FAIL_COLOR = "#c62828"
PASS_COLOR = "#2e7d32"
FAULT_COLOR = "#7b1fa2"
FAULT_ALPHA = 0.35  # the fault itself ...
WINDOW_ALPHA = 0.10  # ... and its window, until recovery.time_max after it (errors there are counted apart)
FAULT_MIN_COLUMNS = 4  # a kill lasts milliseconds: its band is at least this many pixel columns wide
FAULT_LABELS_MAX = 12  # more faults than this (a chaos soak) are bands without a label each: the table names them


class Clock:
    """X axis: time since the load started, in hours (minutes under 3 h, seconds under 10 min)."""

    def __init__(self, origin: float, span_s: float) -> None:
        self.origin = origin
        self.span_s = span_s
        if span_s >= 3 * HOUR:
            self.scale, self.label = HOUR, "hours since load start"
        elif span_s >= 600:
            self.scale, self.label = 60.0, "minutes since load start"
        else:
            self.scale, self.label = 1.0, "seconds since load start"

    def __call__(self, ts: Any) -> Any:
        return (np.asarray(ts, dtype="float64") - self.origin) / self.scale


def figure(
    half: bool = False, right: float = MARGINS[1], height: float | None = None, left: float = MARGINS[0]
) -> tuple[Figure, plt.Axes]:
    """A figure of the report's width (half of it beside a baseline) with one axes inside fixed margins (inches).
    Not through pyplot: nothing to register, nothing to close."""
    width, default_height = HALF if half else WIDE
    height = height or default_height
    fig = Figure(figsize=(width, height))
    fig.fixed_margins = True  # _png: no second drawing to crop it
    ax = fig.subplots()
    _, _, bottom, top = MARGINS
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return fig, ax


def _png(fig: Figure) -> str:
    """Base64 PNG. A figure from elsewhere (plain pyplot) is cropped to its content, which costs a second drawing."""
    buffer = io.BytesIO()
    tight = not getattr(fig, "fixed_margins", False)
    fig.savefig(
        buffer,
        format="png",
        dpi=DPI,
        bbox_inches="tight" if tight else None,
        pil_kwargs={"compress_level": PNG_COMPRESSION},
    )
    plt.close(fig)  # a no-op for figure()'s figures
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _band(ts: np.ndarray, values: np.ndarray, bins: int = BAND_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, low, high) per bin; bins without samples become NaN so gaps (a service that was down) stay gaps."""
    if ts.size <= 2 * bins:
        return ts, values, values
    edges = np.linspace(ts[0], ts[-1], bins + 1)
    which = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, bins - 1)
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
    low = np.full(bins, np.nan)
    high = np.full(bins, np.nan)
    low[which[starts]] = np.minimum.reduceat(values, starts)
    high[which[starts]] = np.maximum.reduceat(values, starts)
    return (edges[:-1] + edges[1:]) / 2, low, high


def _draw(ax: plt.Axes, clock: Clock, ts: np.ndarray, values: np.ndarray, scale: float, color: str, label: str) -> None:
    """A line for short series, a min/max band with its edges for long ones (thin bands stay visible)."""
    x, low, high = _band(ts, values)
    if x is ts:
        t, v = _gaps_to_nan(ts, values)
        ax.plot(clock(t), v / scale, "-", lw=1.2, color=color, label=label)
        return
    ax.fill_between(clock(x), low / scale, high / scale, color=color, alpha=0.35, lw=0, step="mid", label=label)
    ax.plot(clock(x), high / scale, "-", lw=0.6, color=color, drawstyle="steps-mid")
    ax.plot(clock(x), low / scale, "-", lw=0.6, color=color, drawstyle="steps-mid")


def _gaps_to_nan(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Break the line where samples stop for a while: a gap is drawn as a gap, never interpolated."""
    if ts.size < 3:
        return ts, values
    steps = np.diff(ts)
    gap = 10 * float(np.median(steps))
    cut = np.flatnonzero(steps > gap) + 1
    if cut.size == 0:
        return ts, values
    return np.insert(ts, cut, np.nan), np.insert(values.astype("float64"), cut, np.nan)


def _phases(ax: plt.Axes, clock: Clock, events: dict[str, float | None], warmup_to: float | None) -> None:
    start = events.get("load_start")
    if warmup_to is not None:
        ax.axvspan(
            clock(start if start is not None else clock.origin),
            clock(warmup_to),
            color=WARMUP_COLOR,
            alpha=0.25,
            lw=0,
            label="warm-up",
        )
    for name, style in (("load_start", ":"), ("load_stop", "--")):
        if events.get(name) is not None:
            ax.axvline(clock(events[name]), color="#444", ls=style, lw=1, label=name.replace("_", " "))
    for moment in events.get("restarts") or []:
        ax.axvline(clock(moment), color=FAIL_COLOR, ls="-.", lw=1, label="restart")
    for moment in events.get("oom_kills") or []:
        ax.axvline(clock(moment), color=FAIL_COLOR, ls="-", lw=2.5, alpha=0.8, label="OOM kill")
    fault_bands(ax, clock, events.get("faults") or [])


def fault_bands(ax: plt.Axes, clock: Clock, faults: list[tuple[float, float, float, str]]) -> None:
    """Each fault as a band from its start to its end, its window (to recovery.time_max after the end) lighter
    beside it, and its kind and service along its left edge. ``faults``: (start, end, window end, label), what
    analysis.faultevents.fault_spans gives; every plot with a time axis gets them through _phases from
    ``events["faults"]``, and a figure drawn elsewhere calls this with the same list."""
    min_width = max(clock.span_s, 1.0) * FAULT_MIN_COLUMNS / BAND_BINS / clock.scale
    labelled = len(faults) <= FAULT_LABELS_MAX
    for start, end, window_end, label in faults:
        left = float(clock(start))
        right = max(float(clock(end)), left + min_width)
        ax.axvspan(left, right, color=FAULT_COLOR, alpha=FAULT_ALPHA, lw=0, label="fault")
        if float(clock(window_end)) > right:
            ax.axvspan(right, float(clock(window_end)), color=FAULT_COLOR, alpha=WINDOW_ALPHA, lw=0, label="its window")
        if labelled:
            ax.text(
                left,
                0.97,
                f" {label} ",
                transform=ax.get_xaxis_transform(),
                rotation=90,
                ha="right",
                va="top",
                fontsize=7,
                color=FAULT_COLOR,
                clip_on=True,
            )


def _finish(ax: plt.Axes, clock: Clock, title: str, ylabel: str, failed: bool | None = None) -> None:
    color = FAIL_COLOR if failed else ("#222" if failed is None else PASS_COLOR)
    # y given: no search for tick labels above the axes to dodge (there are none), a sixth of each drawing
    ax.set_title(title, fontsize=10, loc="left", color=color, y=1.0)
    ax.set_xlabel(clock.label, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(
            unique.values(), unique.keys(), fontsize=7, loc="upper left", ncols=min(len(unique), 4), framealpha=0.7
        )


def memory_plot(
    ts: np.ndarray,
    values: np.ndarray,
    fit: Fit | None,
    clock: Clock,
    events: dict[str, Any],
    title: str,
    failed: bool | None,
    half: bool = False,
) -> str:
    """Raw range per pixel, the lower envelope, the fitted trend over the judged stretch, the warm-up shaded."""
    fig, ax = figure(half)
    _draw(ax, clock, ts, values, MB, "#6baed6", "samples")
    warmup_to = events.get("warmup_end")
    if fit is not None:
        if fit.warmup_cut is not None:
            warmup_to = fit.warmup_cut
        ax.plot(clock(fit.env_t), fit.env_v / MB, "o", ms=3, color="#08519c", label="lower envelope")
        if not math.isnan(fit.slope):
            line_t = np.array([fit.env_t[0], fit.env_t[-1]])
            line_v = fit.intercept + fit.slope * (line_t - fit.t0) / HOUR
            ax.plot(
                clock(line_t),
                line_v / MB,
                "-",
                lw=2,
                color=FAIL_COLOR if failed else PASS_COLOR,
                label=f"trend {fit.slope / MB:+.2f} MB/h",
            )
    _phases(ax, clock, events, warmup_to)
    _finish(ax, clock, title, "MB", failed)
    return _png(fig)


def gauges_plot(
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    clock: Clock,
    events: dict[str, Any],
    title: str,
    failed: bool | None,
    half: bool = False,
) -> str:
    """Connection and pool gauges of one service, with the load start and stop lines (the drain check)."""
    fig, ax = figure(half)
    for i, (metric, (ts, values)) in enumerate(sorted(series.items())):
        _draw(ax, clock, ts, values, 1.0, COLORS[i % len(COLORS)], metric)
    _phases(ax, clock, events, None)
    _finish(ax, clock, title, "count", failed)
    return _png(fig)


def latency_plot(
    series: dict[str, np.ndarray],
    clock: Clock,
    events: dict[str, Any],
    target: dict[str, Any],
    title: str,
    failed: bool | None,
    half: bool = False,
) -> str:
    """p50/p95/p99 over time with the target line."""
    fig, ax = figure(half)
    if series:
        x = clock(series["t"])
        for key, color in (("p50", COLORS[2]), ("p95", COLORS[0]), ("p99", COLORS[4])):
            ax.plot(x, series[key], "-", lw=1.3, color=color, label=key)
    ax.axhline(
        target["max_ms"],
        color=FAIL_COLOR,
        ls="--",
        lw=1.2,
        label=f"target p{target['percentile']:g} {target['max_ms']:g} ms",
    )
    _phases(ax, clock, events, events.get("warmup_end"))
    ax.set_ylim(bottom=0)
    _finish(ax, clock, title, "ms", failed)
    return _png(fig)


def load_plot(history: Any, clock: Clock, events: dict[str, Any], half: bool = False) -> str:
    """Users and requests (and failures) per second from Locust's history."""
    fig, ax = figure(half, right=TWIN_RIGHT)
    ts = history["Timestamp"].to_numpy()
    _draw(ax, clock, ts, history["Requests/s"].to_numpy(), 1.0, COLORS[0], "requests/s")
    _draw(ax, clock, ts, history["Failures/s"].to_numpy(), 1.0, FAIL_COLOR, "failures/s")
    users = ax.twinx()
    x, _, high = _band(ts, history["User Count"].to_numpy())
    users.plot(clock(x), high, "-", color="#333", lw=1.3, label="users")
    users.set_ylabel("users", fontsize=8)
    users.tick_params(labelsize=8)
    users.set_ylim(bottom=0)
    _phases(ax, clock, events, events.get("warmup_end"))
    ax.set_ylim(bottom=0)
    _finish(ax, clock, "Users and requests per second", "per second")
    ax.legend(*_merged_legend(ax, users), fontsize=7, loc="lower center", ncols=6, framealpha=0.8)
    return _png(fig)


def _merged_legend(*axes: plt.Axes) -> tuple[list, list]:
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    unique = dict(zip(labels, handles, strict=True))
    return list(unique.values()), list(unique.keys())


def simple_plot(
    ts: np.ndarray,
    values: np.ndarray,
    clock: Clock,
    events: dict[str, Any],
    title: str,
    ylabel: str,
    scale: float = 1.0,
    half: bool = False,
) -> str:
    """One gauge as a min/max band (the load generator's own memory and GC pauses)."""
    fig, ax = figure(half)
    _draw(ax, clock, ts, values, scale, COLORS[1], title)
    _phases(ax, clock, events, None)
    _finish(ax, clock, title, ylabel)
    return _png(fig)
