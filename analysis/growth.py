"""Is one series growing? The statistics behind a leak verdict, not fooled by a warm-up plateau, a GC sawtooth,
a one-off step or a wave.

The recipe, for memory (and any gauge given a per-hour threshold):
1. judge the load period only: from ``warmup_end`` (or load start) to ``load_stop``, split at restarts and gaps;
2. reduce to the lower envelope (the minimum of each window): what is still held after the collector ran;
   coarser windows are taken when they smooth the envelope a lot (a sawtooth longer than the finer window; the
   coarsest is an eighth of the span, so a sawtooth needs about 8 periods in the judged stretch to be seen through);
3. cut a warm-up detected in the envelope (the early part that rises clearly faster than what follows);
4. fit Theil-Sen (median of pairwise slopes, pairs within a segment) with Sen's 95% confidence interval;
5. call it a leak only when the slope is above the threshold and above zero with confidence, growth goes on after
   the largest jump at the threshold's rate or more (a one-off step then flat is not a leak; stairs to the end
   are), and the level at the end is really higher than at the start (a daily wave comes back down).
Count gauges (connections, pool slots, tasks) are judged in counts.py; a leak that begins late in changepoint.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.formatting import fmt_duration, fmt_rate, unit
from runspec.units import HOUR

ENVELOPE_WINDOWS = (48, 24, 12, 8)  # windows over the judged span; a coarser one is taken when it is much smoother
ROUGHNESS_DROP = 0.5  # a coarser envelope is taken when its point-to-point roughness is below this share
MIN_SAMPLES_PER_WINDOW = 5
MIN_ENVELOPE_POINTS = 8
MIN_SAMPLES = MIN_SAMPLES_PER_WINDOW * MIN_ENVELOPE_POINTS
CONFIDENCE_Z = 1.96  # 95%
GAP_FACTOR = 20.0  # a pause longer than this many sampling intervals (and GAP_MIN_S) splits the series
GAP_MIN_S = 60.0
WARMUP_CUTS = np.linspace(0.0, 0.5, 11)  # candidate warm-up ends, as a share of the judged span
TAIL_MIN_SHARE = 0.2  # the stretch after the largest jump must hold at least this share of the envelope
TAIL_SLOPE_SHARE = 1.0  # growth goes on: after the largest jump the slope is still >= this share of the threshold
TAIL_CI_POINTS = 6  # below this many points after the jump, its CI is not asked to exclude zero
NET_GROWTH_SHARE = 0.5  # the end level must be up by at least this share of what the slope predicts
EDGE_SHARE = 0.2  # start and end levels: medians of the first and last fifth of the envelope


@dataclass
class Fit:
    """A slope fit with what the report draws: the envelope, the fitted line, the warm-up cut."""

    slope: float = math.nan  # per hour
    ci_low: float = math.nan
    ci_high: float = math.nan
    intercept: float = math.nan  # value at t0
    t0: float = math.nan
    env_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    env_v: np.ndarray = field(default_factory=lambda: np.empty(0))
    warmup_cut: float | None = None  # unix seconds: envelope before this was taken as warm-up
    judged_from: float = math.nan
    judged_to: float = math.nan


def _sorted_finite(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ts = np.asarray(ts, dtype="float64")
    values = np.asarray(values, dtype="float64")
    keep = np.isfinite(ts) & np.isfinite(values)
    ts, values = ts[keep], values[keep]
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
    return ts, values


def segment_starts(ts: np.ndarray, breaks: list[float] | None = None) -> np.ndarray:
    """Indices where a new segment begins: at 0, after a gap (the service was down), at each restart time."""
    if ts.size == 0:
        return np.zeros(0, dtype=int)
    steps = np.diff(ts)
    interval = float(np.median(steps)) if steps.size else 1.0
    gap = max(GAP_FACTOR * interval, GAP_MIN_S)
    starts = set((np.flatnonzero(steps > gap) + 1).tolist())
    for moment in breaks or []:
        i = int(np.searchsorted(ts, moment))
        if 0 < i < ts.size:
            starts.add(i)
    starts.add(0)
    return np.array(sorted(starts), dtype=int)


def _window_minima(ts: np.ndarray, values: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the minimum and the time it was seen. Windows holding few samples (edges, gaps) are left out."""
    window = np.floor((ts - ts[0]) / width).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, window[1:] != window[:-1]])
    counts = np.diff(np.r_[starts, ts.size])
    minima = np.minimum.reduceat(values, starts)
    at_min = values == np.repeat(minima, counts)
    first = np.flatnonzero(at_min)
    owner = np.searchsorted(starts, first, side="right") - 1
    _, pick = np.unique(owner, return_index=True)
    times = ts[first[pick]]
    full = counts >= max(2, 0.5 * float(np.median(counts)))
    return times[full], minima[full]


def lower_envelope(
    ts: np.ndarray,
    values: np.ndarray,
    starts: np.ndarray | None = None,
    windows: tuple[int, ...] = ENVELOPE_WINDOWS,
    drop: float = ROUGHNESS_DROP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, minima, segment id) of the lower envelope; coarser windows when they smooth a sawtooth away.
    ``windows``: the window counts over the span to try, finest first; a coarser one is taken when its roughness is
    below ``drop`` times the best so far."""
    if starts is None:
        starts = np.zeros(1, dtype=int)
    bounds = np.r_[starts, ts.size]
    span = float(ts[-1] - ts[0]) if ts.size else 0.0
    interval = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    best_rough = math.inf
    for count in windows:
        width = max(span / count, MIN_SAMPLES_PER_WINDOW * interval)
        parts_t, parts_v, parts_s = [], [], []
        for seg, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if hi - lo >= 2:
                t, v = _window_minima(ts[lo:hi], values[lo:hi], width)
                parts_t.append(t)
                parts_v.append(v)
                parts_s.append(np.full(t.size, seg))
        if not parts_t:
            break
        env = (np.concatenate(parts_t), np.concatenate(parts_v), np.concatenate(parts_s))
        if env[0].size < MIN_ENVELOPE_POINTS:
            break
        rough = _roughness(*env)
        if best is None or rough < drop * best_rough:
            best, best_rough = env, rough
    if best is None:
        return np.empty(0), np.empty(0), np.empty(0, dtype=int)
    return best


def _roughness(t: np.ndarray, v: np.ndarray, seg: np.ndarray) -> float:
    slope, _, _, intercept = theil_sen(t, v, seg, with_ci=False)
    residual = v - (intercept + slope * (t - t[0]) / HOUR)
    same = seg[1:] == seg[:-1]
    steps = np.abs(np.diff(residual))[same]
    return float(np.median(steps)) if steps.size else 0.0


def theil_sen(
    t: np.ndarray, v: np.ndarray, seg: np.ndarray | None = None, with_ci: bool = True, z: float = CONFIDENCE_Z
) -> tuple[float, float, float, float]:
    """(slope per hour, ci_low, ci_high, intercept at t[0]): median of pairwise slopes within segments, Sen's CI
    (``z``: its width in standard errors, 1.96 for 95%)."""
    if seg is None:
        seg = np.zeros(t.size, dtype=int)
    hours = (t - t[0]) / HOUR
    i, j = np.triu_indices(t.size, k=1)
    keep = (seg[i] == seg[j]) & (hours[j] > hours[i])
    i, j = i[keep], j[keep]
    if i.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    slopes = np.sort((v[j] - v[i]) / (hours[j] - hours[i]))
    slope = float(np.median(slopes))
    intercept = float(np.median(v - slope * hours))
    if not with_ci:
        return slope, math.nan, math.nan, intercept
    _, sizes = np.unique(seg, return_counts=True)
    variance = float(np.sum(sizes * (sizes - 1) * (2 * sizes + 5)) / 18.0)
    reach = z * math.sqrt(variance)
    n = slopes.size
    lo = int(np.clip(math.floor((n - reach) / 2.0), 0, n - 1))
    hi = int(np.clip(math.ceil((n + reach) / 2.0), 0, n - 1))
    return slope, float(slopes[lo]), float(slopes[hi]), intercept


def leak_slope(ts_seconds: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Growth per hour of the lower envelope (Theil-Sen) with its 95% CI; NaNs when there are too few points.

    Cheap enough for a live view on partial data (O(n) reduction, then a fit on at most 48 points per segment).
    Fits what it is given: drop the warm-up before calling it.
    """
    ts, values = _sorted_finite(ts_seconds, values)
    if ts.size < MIN_SAMPLES:
        return math.nan, math.nan, math.nan
    env_t, env_v, seg = lower_envelope(ts, values, segment_starts(ts))
    if env_t.size < MIN_ENVELOPE_POINTS:
        return math.nan, math.nan, math.nan
    slope, low, high, _ = theil_sen(env_t, env_v, seg)
    return slope, low, high


def detect_warmup(t: np.ndarray, v: np.ndarray, seg: np.ndarray, threshold: float) -> int:
    """Index of the first envelope point after the warm-up: the earliest cut after which the first half of what
    remains does not rise clearly faster than the second half (a fill that plateaus, however fast it filled)."""
    span = t[-1] - t[0]
    for share in WARMUP_CUTS:
        start = int(np.searchsorted(t, t[0] + share * span))
        rest_t, rest_v, rest_s = t[start:], v[start:], seg[start:]
        if rest_t.size < MIN_ENVELOPE_POINTS:
            return start
        middle = int(np.searchsorted(rest_t, rest_t[0] + (rest_t[-1] - rest_t[0]) / 2))
        early = theil_sen(rest_t[:middle], rest_v[:middle], rest_s[:middle])
        late = theil_sen(rest_t[middle:], rest_v[middle:], rest_s[middle:])
        if any(math.isnan(x) for x in (*early[:3], *late[:3])):
            return start
        allowance = max(threshold, 0.25 * abs(late[0]))
        settled = early[0] <= late[0] + allowance
        if settled or late[2] < 0:  # what follows falls clearly: a wave, not a fill that plateaus
            return start
    return int(np.searchsorted(t, t[0] + WARMUP_CUTS[-1] * span))


def _largest_jump_tail(t: np.ndarray, v: np.ndarray) -> int:
    """Start of the stretch after the best single break (two levels, least squares), each side >= TAIL_MIN_SHARE."""
    n = v.size
    low = max(1, int(math.ceil(TAIL_MIN_SHARE * n)))
    if n - low <= low:
        return n // 2
    cum = np.cumsum(v)
    cum2 = np.cumsum(v * v)
    k = np.arange(low, n - low + 1)
    left = cum2[k - 1] - cum[k - 1] ** 2 / k
    right = (cum2[-1] - cum2[k - 1]) - (cum[-1] - cum[k - 1]) ** 2 / (n - k)
    return int(k[np.argmin(left + right)])


@dataclass
class Judgement:
    leaking: bool | None  # None: no data
    reason: str
    slope: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    details: dict[str, Any] = field(default_factory=dict)
    fit: Fit | None = None


def judge_slope(
    ts: np.ndarray,
    values: np.ndarray,
    threshold: float,
    kind: str,
    start: float,
    end: float,
    breaks: list[float],
    origin: float,
) -> Judgement:
    """Is this series leaking at more than ``threshold`` per hour between ``start`` and ``end``?"""
    ts, values = _sorted_finite(ts, values)
    pick = (ts >= start) & (ts <= end)
    ts, values = ts[pick], values[pick]
    if ts.size < MIN_SAMPLES:
        return Judgement(None, f"no data: {ts.size} samples after warm-up, need {MIN_SAMPLES} for a slope")
    env_t, env_v, seg = lower_envelope(ts, values, segment_starts(ts, breaks))
    if env_t.size < MIN_ENVELOPE_POINTS:
        return Judgement(None, f"no data: {env_t.size} envelope points, need {MIN_ENVELOPE_POINTS} for a slope")
    cut = detect_warmup(env_t, env_v, seg, threshold)
    fit = Fit(judged_from=float(ts[0]), judged_to=float(ts[-1]))
    if cut > 0:
        fit.warmup_cut = float(env_t[cut])
    since = (
        "after warm-up"
        if fit.warmup_cut is None
        else f"after a warm-up detected until +{fmt_duration(fit.warmup_cut - origin)}"
    )
    details: dict[str, Any] = {"judged_hours": float((ts[-1] - ts[0]) / HOUR)}
    return judge_envelope(env_t[cut:], env_v[cut:], seg[cut:], threshold, kind, since, origin, fit, details)


def judge_envelope(
    env_t: np.ndarray,
    env_v: np.ndarray,
    seg: np.ndarray,
    threshold: float,
    kind: str,
    since: str,
    origin: float,
    fit: Fit,
    details: dict[str, Any],
    z: float = CONFIDENCE_Z,
    strict: bool = False,
) -> Judgement:
    """The slope rule on an envelope (already cut to what is judged): above the threshold, above zero with
    confidence (``z``), still growing after its largest jump, and up at the end. ``since`` says from when.
    ``strict``: growth after the largest jump must be shown with confidence however few points it holds."""
    u = unit(kind)
    slope, low, high, intercept = theil_sen(env_t, env_v, seg, z=z)
    fit.slope, fit.ci_low, fit.ci_high, fit.intercept, fit.t0 = slope, low, high, intercept, float(env_t[0])
    fit.env_t, fit.env_v = env_t, env_v
    rate = f"{fmt_rate(slope, kind)}{u}/h (95% CI {fmt_rate(low, kind)} to {fmt_rate(high, kind)})"
    if z != CONFIDENCE_Z:
        rate = rate.replace("95% CI", f"{math.erf(z / math.sqrt(2)):.1%} CI")
    limit = f"threshold {fmt_rate(threshold, kind)}{u}/h"
    details["envelope_points"] = int(env_t.size)

    # Continuation and net growth are read on the longest segment (restarts reset the level).
    ids, sizes = np.unique(seg, return_counts=True)
    longest = seg == ids[np.argmax(sizes)]
    lt, lv = env_t[longest], env_v[longest]
    tail = _largest_jump_tail(lt, lv)
    tail_slope, tail_low, _, _ = theil_sen(lt[tail:], lv[tail:], z=z) if lt.size - tail >= 3 else (math.nan,) * 4
    edge = max(1, int(round(EDGE_SHARE * lv.size)))
    net = float(np.median(lv[-edge:]) - np.median(lv[:edge]))
    expected = slope * float(np.median(lt[-edge:]) - np.median(lt[:edge])) / HOUR
    details.update(tail_slope_per_hour=tail_slope, net_growth=net, tail_from=float(lt[tail]) if lt.size else None)

    def said(leaking: bool, reason: str) -> Judgement:
        return Judgement(leaking, reason, slope, low, high, details, fit)

    # Too short (or too noisy) for the threshold: no leak is shown, but one at the threshold is not ruled out.
    details["resolved"] = bool(high <= threshold)
    short = "" if high <= threshold else f"; too short to rule out the threshold (CI up to {fmt_rate(high, kind)}{u}/h)"
    if not slope > threshold:
        return said(False, f"no leak: {rate} {since}, {limit}{short}")
    if not low > 0:
        return said(False, f"no leak shown: {rate} {since} is not clearly above zero, {limit}{short}")
    sure = tail_low > 0 or (lt.size - tail < TAIL_CI_POINTS and not strict)  # too few for a CI: the slope decides
    if not (tail_slope > TAIL_SLOPE_SHARE * threshold and sure):
        jump = float(np.median(lv[tail:]) - np.median(lv[:tail]))
        after = f"{fmt_rate(tail_slope, kind)}{u}/h over the last {fmt_duration(lt[-1] - lt[tail])}"
        still = "not clearly above zero" if tail_slope > TAIL_SLOPE_SHARE * threshold else "growth does not go on"
        return said(
            False,
            f"no leak: a rise of {fmt_rate(jump, kind)}{u} near +{fmt_duration(lt[tail] - origin)}, then {after} "
            f"({still}), {limit}",
        )
    if expected > 0 and net < NET_GROWTH_SHARE * expected:
        return said(
            False,
            f"no leak: rises and falls back (net {fmt_rate(net, kind)}{u} over the run where {rate} would give "
            f"{fmt_rate(expected, kind)}{u}), {limit}",
        )
    return said(True, f"grows {rate} {since}, {limit}")
