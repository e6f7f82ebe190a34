"""Count gauges (connections, file descriptors, pool slots, WebSockets, in-flight tasks): is one leaking?

Three rules, the first that has the data judges, and the entry says which (``rule``):
1. ``drain`` (a baseline exists: samples in the five minutes before ``load_start``): the level after the drain minus
   the level before load; for pooled counts (fds, TCP, server connections) what is left over must also have piled
   up under load, or it is a pool opened while warming up and kept idle.
2. ``zero after drain`` (no baseline; pool slots checked out, WebSockets active, in-flight tasks): once the load is
   gone these must be back at zero, whatever the level before load was. A slot checked out while no request is in
   flight is leaked.
3. ``count trend`` (no baseline and no drain to read, or a gauge with no zero to return to): the floor of the gauge
   under load (window minima, so idle jitter and request bursts fall away) must not climb. Counts move in integer
   steps with little noise: a few steps up that never come back down are a signal, where memory would need a rate.
   After a restart, a floor that climbs back to no more than what the previous life held under load is clients
   re-opening what the restart dropped, not a leak.
The first sample under load is never taken as "the level before load": under load it already holds the load.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.formatting import fmt_duration
from analysis.growth import (
    EDGE_SHARE,
    MIN_ENVELOPE_POINTS,
    MIN_SAMPLES,
    Judgement,
    _largest_jump_tail,
    _sorted_finite,
    detect_warmup,
    lower_envelope,
    segment_starts,
    theil_sen,
)
from analysis.metrics import RULE_DRAIN, RULE_TREND, RULE_ZERO, STRICT_ZERO
from runspec.units import HOUR

PRE_LOAD_S = 300.0  # drain check: the level before load is the median of this long before load_start
# Pooled counts (metrics.POOLED_COUNTS): what is left after the drain must also have piled up under load,
POOL_EDGE_SAMPLES = 3  # ... compared as medians of the first and last fifth of the load (at least this many)
POOL_PILE_SHARE = 0.5  # ... a leak when at least this share of what was left over piled up under load
COUNT_STEPS = 3.0  # count trend: a floor up by this many steps (scenario: leaks.count_steps) ...
BACK_SHARE = 0.2  # ... that came back down by no more than this share of its rise (or one step) ...
TAIL_STEPS = 1.0  # ... and still rose by at least one step after its largest jump (a pool that filled and stays
# full rose once and then held: not a leak).
REFILL_MIN_SAMPLES = 3  # a restarted service's floor may climb back to what its previous life held under load
# (the median of at least this many samples): clients re-open what the restart dropped, one by one.


def has_baseline(ts: np.ndarray, load_start: float | None) -> bool:
    """Samples in the PRE_LOAD_S before load started: a level to drain back to."""
    if load_start is None:
        return False
    ts = np.asarray(ts, dtype="float64")
    return bool(np.any((ts < load_start) & (ts >= load_start - PRE_LOAD_S)))


def _drained(ts: np.ndarray, values: np.ndarray, load_stop: float, drain_end: float | None) -> tuple[np.ndarray, float]:
    """The samples of the second half of the drain (the gauge has had half the drain to settle), and its end."""
    end = drain_end if drain_end is not None else (float(np.max(ts)) if ts.size else load_stop)
    middle = load_stop + (end - load_stop) / 2.0
    return values[(ts >= middle) & (ts <= end) & (ts > load_stop)], end


def judge_count(
    ts: np.ndarray,
    values: np.ndarray,
    metric: str,
    *,
    load_start: float | None,
    load_stop: float | None,
    drain_end: float | None,
    start: float,
    end: float,
    origin: float,
    breaks: list[float],
    tolerance: float,
    steps: float = COUNT_STEPS,
    warm_from: float | None = None,
) -> Judgement:
    """One count gauge, by the first rule that has the data (the module's docstring); ``details["rule"]`` names it.
    ``start``..``end``: the judged load period (after warm-up), as for memory."""
    why_not: list[str] = []  # each rule sorts and cleans the series itself
    # A service restarted after load began drains a process that never saw the level before load: no baseline.
    restarted = load_start is not None and any(b >= load_start for b in breaks)
    if restarted:
        why_not.append("restarted during the run, so the level before load was another process's")
    elif has_baseline(ts, load_start):
        verdict = judge_drain(ts, values, load_start, load_stop, drain_end, tolerance, warm_from)
        if verdict.leaking is not None:
            verdict.details["rule"] = RULE_DRAIN
            return verdict
        why_not.append(verdict.reason.removeprefix("no data: "))
    else:
        why_not.append("no sample before load, so no drain check")
    if metric in STRICT_ZERO:
        verdict = judge_zero(ts, values, load_stop, drain_end, tolerance)
        if verdict.leaking is not None:
            verdict.details["rule"] = RULE_ZERO
            return verdict
        why_not.append(verdict.reason.removeprefix("no data: "))
    verdict = judge_trend(ts, values, start, end, breaks, origin, tolerance, steps)
    verdict.details["rule"] = RULE_TREND
    if verdict.leaking is None:
        verdict.reason = "no data: " + "; ".join([*why_not, verdict.reason.removeprefix("no data: ")])
    return verdict


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
    before = values[(ts < load_start) & (ts >= load_start - PRE_LOAD_S)]
    if before.size == 0:
        return Judgement(None, "no data: no sample before load started, so no drain check")
    after, end = _drained(ts, values, load_stop, drain_end)
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
    said = f"{level_before:.6g} before load, {level_after:.6g} after a {fmt_duration(end - load_stop)} drain"
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


def judge_zero(
    ts: np.ndarray, values: np.ndarray, load_stop: float | None, drain_end: float | None, tolerance: float
) -> Judgement:
    """Slots checked out, WebSockets open, tasks in flight once the load is gone: must be back at zero."""
    if load_stop is None:
        return Judgement(None, "no data: events.csv has no load_stop, so no level after the load")
    ts, values = _sorted_finite(ts, values)
    after, end = _drained(ts, values, load_stop, drain_end)
    if after.size == 0:
        return Judgement(None, "no data: no sample in the second half of the drain, so no level after the load")
    level = float(np.min(after))
    details: dict[str, Any] = {
        "level_before": 0.0,  # what it must return to, whatever it was: the baseline comparison reads this
        "level_after": level,
        "drain_s": float(end - load_stop),
        "tolerance": tolerance,
    }
    said = f"{level:.6g} after a {fmt_duration(end - load_stop)} drain (no sample before load: must return to 0)"
    if level <= tolerance:
        return Judgement(False, f"returns to zero: {said}, tolerance {tolerance:g}", details=details)
    return Judgement(True, f"still held after the load: {said}, tolerance {tolerance:g}", details=details)


def judge_trend(
    ts: np.ndarray,
    values: np.ndarray,
    start: float,
    end: float,
    breaks: list[float],
    origin: float,
    tolerance: float = 0.0,
    steps: float = COUNT_STEPS,
) -> Judgement:
    """The floor of a count under load: a leak when it climbs by ``steps`` or more, above zero with confidence,
    never comes back down, and still climbs after its largest jump."""
    ts, values = _sorted_finite(ts, values)
    pick = (ts >= start) & (ts <= end)
    ts, values = ts[pick], values[pick]
    held = _held_before_restart(ts, values, breaks)
    if ts.size < MIN_SAMPLES:
        return Judgement(None, f"no data: {ts.size} samples under load after warm-up, need {MIN_SAMPLES} for a trend")
    env_t, env_v, seg = lower_envelope(ts, values, segment_starts(ts, breaks))
    if env_t.size < MIN_ENVELOPE_POINTS:
        return Judgement(None, f"no data: {env_t.size} envelope points, need {MIN_ENVELOPE_POINTS} for a trend")
    need = max(steps, tolerance + 1.0)
    span_h = max(float(ts[-1] - ts[0]) / HOUR, 1e-9)
    cut = detect_warmup(env_t, env_v, seg, need / span_h)  # a fill faster than the steps asked for is warm-up
    t, v, s = env_t[cut:], env_v[cut:], seg[cut:]
    slope, low, high, _ = theil_sen(t, v, s)
    edge = max(1, int(round(EDGE_SHARE * v.size)))
    first, last = float(np.median(v[:edge])), float(np.median(v[-edge:]))
    rise, back = last - first, float(np.max(v)) - last
    tail = _largest_jump_tail(t, v)
    tail_edge = max(1, int(round(EDGE_SHARE * (v.size - tail))))
    tail_rise = float(np.median(v[-tail_edge:]) - np.median(v[tail : tail + tail_edge]))
    details: dict[str, Any] = {
        "envelope_points": int(t.size),
        "judged_hours": span_h,
        "floor_first": first,
        "floor_last": last,
        "floor_rise": rise,
        "came_back": back,
        "tail_rise": tail_rise,
        "steps_needed": need,
    }
    warm = "" if cut == 0 else f" after a warm-up detected until +{fmt_duration(float(t[0]) - origin)}"
    rate = f"{slope:.3g}/h (95% CI {low:.3g} to {high:.3g})"
    said = f"floor {first:.6g} -> {last:.6g} ({rise:+.6g}, {rate}) under load{warm}, {need:g} steps make a leak"

    def verdict(leaking: bool, reason: str) -> Judgement:
        return Judgement(leaking, reason, slope, low, high, details)

    if rise < need:
        return verdict(False, f"steady: {said}")
    if back > max(1.0, BACK_SHARE * rise):
        return verdict(False, f"comes back down by {back:.6g} after its peak: {said}")
    if not low > 0:
        return verdict(False, f"no leak shown: the rise is not clearly above zero: {said}")
    if tail_rise < TAIL_STEPS:
        return verdict(
            False, f"rose near +{fmt_duration(float(t[tail]) - origin)}, then held (a pool filled to its size): {said}"
        )
    if held is not None and last <= held[1] + tolerance:
        details["held_before_restart"] = held[1]
        when = f"+{fmt_duration(held[0] - origin)}"
        return verdict(
            False, f"refilled after the restart at {when} to no more than the {held[1]:.6g} held before it: {said}"
        )
    return verdict(True, f"climbs and never comes back: {said} (no baseline needed)")


def _held_before_restart(ts: np.ndarray, values: np.ndarray, breaks: list[float]) -> tuple[float, float] | None:
    """(the last restart inside the judged samples, the median level of the life before it), or None."""
    inside = [b for b in breaks if ts.size and ts[0] < b <= ts[-1]]
    if not inside:
        return None
    last = max(inside)
    before = [b for b in inside if b < last]
    life = values[(ts >= (max(before) if before else ts[0])) & (ts < last)]
    if life.size < REFILL_MIN_SAMPLES:
        return None
    return last, float(np.median(life))
