"""Leak verdicts per service and metric: not fooled by a warm-up plateau, a GC sawtooth, a one-off step or a wave.

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
Connection and pool gauges are judged by a drain check: their level after the drain minus the level before load;
for pooled counts (fds, TCP, server connections) what is left over must also have piled up under load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HOUR = 3600.0
MIB = 1024.0 * 1024.0
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
PRE_LOAD_S = 300.0  # drain check: the level before load is the median of this long before load_start
DRAIN_START_GRACE_S = 5.0  # ... or the first sample at most this long after load_start

COUNT_METRICS = {
    "open_fds",
    "tcp_established",
    "ws_connections_active",
    "db_pool_checked_out",
    "db_pool_overflow",
    "redis_connected_clients",
    "pg_connections",
    "agent_tasks_inflight",
}
COUNT_HINTS = ("connection", "_fds", "pool_checked", "pool_overflow", "clients", "established", "inflight", "pubsub")
# Counts that pools keep up while idle: what is left after the drain must also have piled up under load ...
POOLED_COUNTS = {"open_fds", "tcp_established", "pg_connections", "pg_connections_other", "redis_connected_clients"}
POOL_EDGE_SAMPLES = 3  # ... compared as medians of the first and last fifth of the load (at least this many)
POOL_PILE_SHARE = 0.5  # ... a leak when at least this share of what was left over piled up under load
# Gauges that are not leak signals: a configured size, idle pooled connections, a limit, cumulative traffic.
NOT_JUDGED = {"db_pool_size", "pg_connections_idle", "mem_limit_bytes", "threads", "processes"}
LOAD_GENERATOR = "locust"


def metric_kind(metric: str) -> str | None:
    """'memory' (bytes, judged by slope in MB/h), 'count' (judged by the drain check), or None (shown only)."""
    if metric in NOT_JUDGED or metric.startswith("net_") or metric.endswith("_total"):
        return None
    if metric.startswith("mem_") or (metric.endswith("_bytes") and ("memory" in metric or "buffer" in metric)):
        return "memory"
    if metric in COUNT_METRICS or any(hint in metric for hint in COUNT_HINTS):
        return "count"
    return None


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
    ts: np.ndarray, values: np.ndarray, starts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, minima, segment id) of the lower envelope; coarser windows when they smooth a sawtooth away."""
    if starts is None:
        starts = np.zeros(1, dtype=int)
    bounds = np.r_[starts, ts.size]
    span = float(ts[-1] - ts[0]) if ts.size else 0.0
    interval = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    best_rough = math.inf
    for count in ENVELOPE_WINDOWS:
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
        if best is None or rough < ROUGHNESS_DROP * best_rough:
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
    t: np.ndarray, v: np.ndarray, seg: np.ndarray | None = None, with_ci: bool = True
) -> tuple[float, float, float, float]:
    """(slope per hour, ci_low, ci_high, intercept at t[0]): median of pairwise slopes within segments, Sen's CI."""
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
    reach = CONFIDENCE_Z * math.sqrt(variance)
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


def fmt_rate(value: float, kind: str) -> str:
    if math.isnan(value):
        return "n/a"
    if kind == "memory":
        return f"{value / MIB:.1f}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def unit(kind: str) -> str:
    return " MB" if kind == "memory" else ""


def fmt_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / HOUR:.1f} h"


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
    u = unit(kind)
    if ts.size < MIN_SAMPLES:
        return Judgement(None, f"no data: {ts.size} samples after warm-up, need {MIN_SAMPLES} for a slope")
    env_t, env_v, seg = lower_envelope(ts, values, segment_starts(ts, breaks))
    if env_t.size < MIN_ENVELOPE_POINTS:
        return Judgement(None, f"no data: {env_t.size} envelope points, need {MIN_ENVELOPE_POINTS} for a slope")
    cut = detect_warmup(env_t, env_v, seg, threshold)
    fit = Fit(judged_from=float(ts[0]), judged_to=float(ts[-1]))
    if cut > 0:
        fit.warmup_cut = float(env_t[cut])
    env_t, env_v, seg = env_t[cut:], env_v[cut:], seg[cut:]
    slope, low, high, intercept = theil_sen(env_t, env_v, seg)
    fit.slope, fit.ci_low, fit.ci_high, fit.intercept, fit.t0 = slope, low, high, intercept, float(env_t[0])
    fit.env_t, fit.env_v = env_t, env_v
    rate = f"{fmt_rate(slope, kind)}{u}/h (95% CI {fmt_rate(low, kind)} to {fmt_rate(high, kind)})"
    limit = f"threshold {fmt_rate(threshold, kind)}{u}/h"
    since = (
        "after warm-up"
        if fit.warmup_cut is None
        else f"after a warm-up detected until +{fmt_duration(fit.warmup_cut - origin)}"
    )
    details: dict[str, Any] = {"envelope_points": int(env_t.size), "judged_hours": float((ts[-1] - ts[0]) / HOUR)}

    # Continuation and net growth are read on the longest segment (restarts reset the level).
    ids, sizes = np.unique(seg, return_counts=True)
    longest = seg == ids[np.argmax(sizes)]
    lt, lv = env_t[longest], env_v[longest]
    tail = _largest_jump_tail(lt, lv)
    tail_slope, tail_low, _, _ = theil_sen(lt[tail:], lv[tail:]) if lt.size - tail >= 3 else (math.nan,) * 4
    edge = max(1, int(round(EDGE_SHARE * lv.size)))
    net = float(np.median(lv[-edge:]) - np.median(lv[:edge]))
    expected = slope * float(np.median(lt[-edge:]) - np.median(lt[:edge])) / HOUR
    details.update(tail_slope_per_hour=tail_slope, net_growth=net, tail_from=float(lt[tail]) if lt.size else None)

    if not slope > threshold:
        return Judgement(False, f"no leak: {rate} {since}, {limit}", slope, low, high, details, fit)
    if not low > 0:
        return Judgement(
            False, f"no leak shown: {rate} {since} is not clearly above zero, {limit}", slope, low, high, details, fit
        )
    sure = tail_low > 0 or lt.size - tail < TAIL_CI_POINTS  # too few points for a CI: the slope alone decides
    if not (tail_slope > TAIL_SLOPE_SHARE * threshold and sure):
        jump = float(np.median(lv[tail:]) - np.median(lv[:tail]))
        after = f"{fmt_rate(tail_slope, kind)}{u}/h over the last {fmt_duration(lt[-1] - lt[tail])}"
        still = "not clearly above zero" if tail_slope > TAIL_SLOPE_SHARE * threshold else "growth does not go on"
        return Judgement(
            False,
            f"no leak: a rise of {fmt_rate(jump, kind)}{u} near +{fmt_duration(lt[tail] - origin)}, then {after} "
            f"({still}), {limit}",
            slope,
            low,
            high,
            details,
            fit,
        )
    if expected > 0 and net < NET_GROWTH_SHARE * expected:
        return Judgement(
            False,
            f"no leak: rises and falls back (net {fmt_rate(net, kind)}{u} over the run where {rate} would give "
            f"{fmt_rate(expected, kind)}{u}), {limit}",
            slope,
            low,
            high,
            details,
            fit,
        )
    return Judgement(True, f"grows {rate} {since}, {limit}", slope, low, high, details, fit)


def judge_drain(
    ts: np.ndarray,
    values: np.ndarray,
    load_start: float | None,
    load_stop: float | None,
    drain_end: float | None,
    tolerance: float,
    warm_from: float | None = None,
) -> Judgement:
    """Net growth of a count gauge: the level after the drain minus the level before load started.

    With ``warm_from`` (pooled counts: fds, TCP, server connections) what is left over must also have piled up
    under load (the level late in the load above the level early in it, after ``warm_from``): connections a pool
    opened while warming up and keeps idle are not a leak, connections that accumulate while the load runs are.
    """
    if load_start is None or load_stop is None:
        return Judgement(None, "no data: events.csv has no load_start/load_stop, so no drain check")
    ts, values = _sorted_finite(ts, values)
    before = values[(ts <= load_start) & (ts >= load_start - PRE_LOAD_S)]
    source = "before load"
    if before.size == 0:
        before = values[(ts > load_start) & (ts <= load_start + DRAIN_START_GRACE_S)][:1]
        source = "at load start"
    if before.size == 0:
        return Judgement(None, "no data: no sample before load started")
    end = drain_end if drain_end is not None else (float(ts[-1]) if ts.size else load_stop)
    middle = load_stop + (end - load_stop) / 2.0
    after = values[(ts >= middle) & (ts <= end) & (ts > load_stop)]
    if after.size == 0:
        return Judgement(None, "no data: no sample in the second half of the drain after load stopped")
    level_before, level_after = float(np.median(before)), float(np.min(after))
    growth = level_after - level_before
    details: dict[str, Any] = {
        "level_before": level_before,
        "level_after": level_after,
        "drain_s": float(end - load_stop),
        "tolerance": tolerance,
    }
    said = f"{level_before:.6g} {source}, {level_after:.6g} after a {fmt_duration(end - load_stop)} drain"
    if growth <= tolerance:
        return Judgement(False, f"drains: {growth:+.6g} ({said}), tolerance {tolerance:g}", details=details)
    if warm_from is not None:
        loaded = (ts >= warm_from) & (ts <= load_stop)
        if np.count_nonzero(loaded) >= 2 * POOL_EDGE_SAMPLES:
            under_load = values[loaded]
            edge = max(POOL_EDGE_SAMPLES, int(EDGE_SHARE * under_load.size))
            piled = float(np.median(under_load[-edge:]) - np.median(under_load[:edge]))
            details["growth_under_load"] = piled
            if piled < max(tolerance, POOL_PILE_SHARE * growth):
                return Judgement(
                    False,
                    f"held open, not leaking: {growth:+.6g} ({said}) but {piled:+.6g} under load after warm-up: "
                    f"kept by pools opened while warming up, tolerance {tolerance:g}",
                    details=details,
                )
            said += f", {piled:+.6g} piled up under load"
    return Judgement(True, f"does not drain: {growth:+.6g} ({said}), tolerance {tolerance:g}", details=details)
