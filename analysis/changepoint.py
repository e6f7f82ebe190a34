"""A leak that begins late in a long run: the slope over the whole load period stays under the threshold while the
end of the run grows at many times it. Judge the latest stretch as well as the whole.

The recipe, on the last segment of the judged period (after the last restart or gap: a leak still growing at the end):
1. a finer lower envelope than the whole-run fit uses (LATE_WINDOWS), so a stretch of a twentieth of the run has
   points enough; coarser windows are still taken when they smooth a sawtooth away (growth.lower_envelope);
2. where growth begins: the knot of the best continuous two-piece line (a hinge: any slope before, any after),
   least squares over every knot that leaves MIN_LATE_POINTS after it;
3. the slope rule of the whole run (growth.judge_envelope) on the stretch from the knot to the end, with a wider
   confidence interval (LATE_Z), because the knot was chosen to fit a rise: the slope above the threshold and above
   zero, still growing after its largest jump (a late one-off step, a batch job holding memory at the end, are not
   leaks), and the level at the end up (a wave's rising flank that turns is not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.formatting import fmt_clock, fmt_duration, fmt_rate, unit
from analysis.growth import (
    MIN_SAMPLES,
    Fit,
    Judgement,
    _sorted_finite,
    _window_minima,
    judge_envelope,
    lower_envelope,
    segment_starts,
    theil_sen,
)
from runspec.units import HOUR

LATE_WINDOWS = (192, 96, 48, 24, 12, 8)  # finer than the whole-run fit's: a late stretch needs points of its own
# Minima of fewer samples scatter more: noise alone makes a coarser envelope up to about half as rough, where a
# sawtooth seen through makes it many times smoother. Only the latter may cost the late stretch its points.
LATE_ROUGHNESS_DROP = 0.25
PRE_REDUCE = 8 * LATE_WINDOWS[0]  # windows of the reduction of a long series before its late envelopes
MIN_LATE_POINTS = 12  # envelope points after the knot (at 192 windows: the last 6% of the run or more)
MIN_BEFORE_POINTS = 2  # ... and before it: a knot at the start is the whole-run fit's business
LATE_Z = 3.29  # 99.9%: the knot is picked where a rise fits best, so its stretch is judged more strictly
LATE_PREFER = 1.1  # a late stretch is reported instead of a whole-run leak when it grows this much faster ...
# ... and faster than the high end of the whole-run slope's confidence interval (a steady leak keeps its rule).
STEADY_SHARE = 0.5  # the low end of the late slope's interval must be at least this share of the slope: a steady
# climb, not a jump or two that a line happens to fit
END_SHARE = 1 / 3  # still growing at the end: the last third of the stretch (at least END_POINTS) grows too,
END_POINTS = 6  # above the threshold and above zero with 95% confidence (a cache that filled and is full is not)


@dataclass
class Late:
    """A late stretch that grows: the judgement on it and where it began (unix seconds)."""

    judgement: Judgement
    since: float


def hinge_knot(t: np.ndarray, v: np.ndarray) -> int:
    """Index of the knot of the best continuous two-piece line through (t, v), least squares; -1: too few points.

    The line before and after a knot at x_k spans {1, x, max(x - x_k, 0)}: with 1 and x projected out once, each
    knot's fit is one dot product, all knots at once."""
    n = t.size
    lo, hi = MIN_BEFORE_POINTS, n - MIN_LATE_POINTS
    if hi < lo:
        return -1
    x = (t - t[0]) / HOUR
    base = np.column_stack((np.ones(n), x))
    q, _ = np.linalg.qr(base)
    hinges = np.maximum(x[:, None] - x[None, lo : hi + 1], 0.0)  # one column per candidate knot
    rv = v - q @ (q.T @ v)
    rh = hinges - q @ (q.T @ hinges)
    norms = np.einsum("ij,ij->j", rh, rh)
    gain = np.divide((rh.T @ rv) ** 2, norms, out=np.zeros_like(norms), where=norms > 0)
    return lo + int(np.argmax(gain))  # the largest drop of the squared error


def late_growth(
    ts: np.ndarray,
    values: np.ndarray,
    threshold: float,
    kind: str,
    start: float,
    end: float,
    breaks: list[float],
    origin: float,
) -> Late | None:
    """The stretch since growth began, judged as a leak still growing at the end; None when there is no such
    stretch to judge (too few samples or envelope points in the last segment)."""
    ts, values = _sorted_finite(ts, values)
    pick = (ts >= start) & (ts <= end)
    ts, values = ts[pick], values[pick]
    starts = segment_starts(ts, breaks)
    last = int(starts[-1]) if starts.size else 0
    ts, values = ts[last:], values[last:]
    if ts.size < MIN_SAMPLES:
        return None
    if ts.size > 4 * PRE_REDUCE:
        # Minima of minima are minima: reduce a long series once (a day at 1 Hz: 86,400 -> 1,536 points), so the six
        # envelopes below cost next to nothing; each late window still holds 8 reduced points.
        ts, values = _window_minima(ts, values, float(ts[-1] - ts[0]) / PRE_REDUCE)
    env_t, env_v, _ = lower_envelope(ts, values, None, LATE_WINDOWS, LATE_ROUGHNESS_DROP)
    knot = hinge_knot(env_t, env_v) if env_t.size else -1
    if knot < 0:
        return None
    t, v = env_t[knot:], env_v[knot:]
    since = float(t[0])
    fit = Fit(judged_from=float(ts[0]), judged_to=float(ts[-1]))
    details = {"judged_hours": float((ts[-1] - ts[0]) / HOUR), "growth_since": since}
    seg = np.zeros(t.size, dtype=int)
    text = f"since +{fmt_clock(since - origin)}"
    judgement = judge_envelope(t, v, seg, threshold, kind, text, origin, fit, details, z=LATE_Z, strict=True)
    if judgement.leaking:
        _still_growing(judgement, t, v, threshold, kind, text)
    return Late(judgement, since)


def _still_growing(judgement: Judgement, t: np.ndarray, v: np.ndarray, threshold: float, kind: str, text: str) -> None:
    """Turn a late leak down when its slope is not steady or its growth has stopped before the end."""
    u = unit(kind)
    if judgement.ci_low < STEADY_SHARE * judgement.slope:
        judgement.leaking = False
        judgement.reason = (
            f"no steady growth {text}: {fmt_rate(judgement.slope, kind)}{u}/h but its interval reaches down to "
            f"{fmt_rate(judgement.ci_low, kind)}{u}/h, threshold {fmt_rate(threshold, kind)}{u}/h"
        )
        return
    m = max(END_POINTS, int(round(END_SHARE * t.size)))
    end_slope, end_low, _, _ = theil_sen(t[-m:], v[-m:])
    judgement.details["end_slope_per_hour"] = end_slope
    if not (end_slope > threshold and end_low > 0):
        judgement.leaking = False
        judgement.reason = (
            f"grew {text} ({fmt_rate(judgement.slope, kind)}{u}/h), then stopped: {fmt_rate(end_slope, kind)}{u}/h "
            f"over the last {fmt_duration(float(t[-1] - t[-m]))}, threshold {fmt_rate(threshold, kind)}{u}/h"
        )


def prefer_late(whole: Judgement, late: Late | None) -> bool:
    """Report the late stretch instead of the whole-run fit: it leaks where the whole run does not, or it leaks
    much faster than the whole-run slope says (a leak that began midway: the whole slope understates it)."""
    if late is None or not late.judgement.leaking:
        return False
    if not whole.leaking:
        return True
    return late.judgement.slope > max(LATE_PREFER * whole.slope, whole.ci_high)
