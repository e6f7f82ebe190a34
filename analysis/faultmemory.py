"""A fault's memory step: did memory settle back after recovery (the median over a stretch before the fault against
one after recovery, per service)? Split out of faults.py."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.faultevents import Fault, check
from analysis.formatting import fmt_duration
from analysis.metrics import MEMORY_FIRST, metric_kind
from analysis.runfolder import Run
from runspec import folder
from runspec.units import LOAD_GENERATOR, MB

# Memory: the median over a stretch before the fault against one after recovery. Five minutes spans a GC sawtooth.
MEMORY_STRETCH_S = 300.0
MEMORY_STEP_MIN_BYTES = 20 * MB  # flagged above max(20 MB, 10% of the level before)
MEMORY_STEP_SHARE = 0.10
MEMORY_MIN_SAMPLES = 5


def memory_step(
    memory: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    phases: dict[str, float | None],
    limits: tuple[float, float],
    fault: Fault,
    bounds: tuple[float, float, float],
) -> dict[str, Any]:
    """Per service, the median memory before the fault against after recovery (time_max after its end).
    ``memory``: memory_series(); ``limits``: (recovery.time_max, the data's end); ``bounds``: (the fault's end, the
    next fault's start, the previous fault's window end)."""
    tmax, data_end = limits
    end, next_start, previous = bounds
    settled = next(
        (t for t in (phases[folder.WARMUP_END], phases[folder.LOAD_START]) if t is not None and t <= fault.start),
        -math.inf,
    )
    before = (max(fault.start - MEMORY_STRETCH_S, previous, settled), fault.start)
    stop, after_from = phases[folder.LOAD_STOP], end + tmax
    last = min(next_start, stop if stop is not None and stop > after_from else data_end)
    after = (after_from, min(after_from + MEMORY_STRETCH_S, last))
    steps = []
    for (service, metric), (ts, values) in memory.items():
        a = values[np.searchsorted(ts, before[0]) : np.searchsorted(ts, before[1])]
        b = values[np.searchsorted(ts, after[0]) : np.searchsorted(ts, after[1], side="right")]
        if a.size < MEMORY_MIN_SAMPLES or b.size < MEMORY_MIN_SAMPLES:
            continue
        level, now = float(np.median(a)), float(np.median(b))
        limit = max(MEMORY_STEP_MIN_BYTES, MEMORY_STEP_SHARE * level)
        step = {"service": service, "metric": metric, "before": level, "after": now, "step": now - level}
        steps.append({**step, "limit": limit, "flagged": now - level > limit})
    figures = {"steps": steps, "before": list(before), "after": list(after)}
    if not steps:
        why = f"fewer than {MEMORY_MIN_SAMPLES} memory samples in the {fmt_duration(MEMORY_STRETCH_S)} before the fault"
        why += " or after recovery" + (
            " (the next fault or the load's end came first)" if after[1] < after[0] + 60 else ""
        )
        return check("no data", f"no data: {why}", **figures)
    flagged = [s for s in steps if s["flagged"]]
    if flagged:
        reason = "; ".join(
            f"{s['service']} {s['metric']} {s['before'] / MB:.0f} -> {s['after'] / MB:.0f} MB after recovery "
            f"(+{s['step'] / MB:.0f} MB, limit {s['limit'] / MB:.0f} MB)"
            for s in flagged
        )
        return check("failed", reason, **figures)
    top = max(steps, key=lambda s: abs(s["step"]))
    reason = (
        f"memory settled back: the largest change {top['service']} {round(top['step'] / MB, 1) + 0.0:+.1f} MB "
        f"(limit {top['limit'] / MB:.0f} MB), medians over {fmt_duration(MEMORY_STRETCH_S)} before and after"
    )
    return check("passed", reason, **figures)


def memory_series(
    run: Run, series: dict[tuple[str, str], np.ndarray]
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """One memory metric per service (RSS first), in time order; not the load generator's, nor what leaks.ignore
    leaves out."""
    by_service: dict[str, list[str]] = {}
    for service, metric in series:
        if metric_kind(metric) == "memory" and service != LOAD_GENERATOR and not run.settings.ignored(service, metric):
            by_service.setdefault(service, []).append(metric)
    rank = {m: i for i, m in enumerate(MEMORY_FIRST)}
    ts_all, values_all = run.samples["ts"].to_numpy(), run.samples["value"].to_numpy()
    out = {}
    for service, metrics in sorted(by_service.items()):
        metric = min(metrics, key=lambda m: (rank.get(m, len(rank)), m))
        idx = series[(service, metric)]
        order = np.argsort(ts_all[idx], kind="stable")
        out[(service, metric)] = (ts_all[idx][order], values_all[idx][order])
    return out
