"""An early leak verdict on the samples so far, for the progress line and the web UI: per series "confirmed leak",
"clean so far" or "undecided", with the rule and a one-line reason.

Pure: no files are written and nothing is kept between calls, so it can run every minute on a growing frame.
It is stricter than the final verdict in both directions, because a run that is still going can still change:
- memory: "confirmed leak" when the slope rule (whole load or since growth began) calls a leak and even the low end
  of its confidence interval is above the threshold; "clean so far" when the high end is below the threshold and no
  late stretch grows; else "undecided";
- counts: the count trend under load ("confirmed leak" when it climbs by the steps asked for and stays; "clean so
  far" when its floor has not risen at all over at least EARLY_MIN_HOURS); the drain and zero rules need the load
  to be over and are left to the final verdict.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import counts, metrics
from analysis.formatting import fmt_duration
from analysis.groups import group_indices
from analysis.leaks import judge_growth, judged, threshold_for
from analysis.settings import Settings
from runspec import folder
from runspec.units import LOAD_GENERATOR

CONFIRMED = "confirmed leak"
CLEAN_SO_FAR = "clean so far"
UNDECIDED = "undecided"
EARLY_MIN_HOURS = 0.25  # "clean so far" is not said of less than this much judged load


def early_verdicts(
    samples: pd.DataFrame,
    settings: Settings,
    load_start: float | None = None,
    warmup_end: float | None = None,
    restarts: dict[str, list[float]] | None = None,
) -> list[dict[str, Any]]:
    """One dict per judged (service, metric) of ``samples`` (columns ts, service, metric, value: samples.csv as read
    so far): service, metric, kind, state (CONFIRMED, CLEAN_SO_FAR or UNDECIDED), rule, slope_per_hour, ci_low,
    ci_high, threshold_per_hour, reason; plus growth_since (unix s) for a late leak. Judged from ``warmup_end``
    (else ``load_start``, else the first sample) to the last sample; ``restarts``: service -> restart times."""
    out: list[dict[str, Any]] = []
    if samples.empty:
        return out
    ts_all, values_all = samples["ts"].to_numpy(dtype="float64"), samples["value"].to_numpy(dtype="float64")
    first, last = float(np.nanmin(ts_all)), float(np.nanmax(ts_all))
    origin = load_start if load_start is not None else first
    start = warmup_end if warmup_end is not None else origin
    for (service, metric), idx in group_indices(samples, "service", "metric").items():
        service, metric = str(service), str(metric)
        kind = judged(settings, service, metric)
        if service == LOAD_GENERATOR or kind is None or settings.ignored(service, metric):
            continue
        ts, values = ts_all[idx], values_all[idx]
        breaks = (restarts or {}).get(service, [])
        threshold = threshold_for(settings, service, metric, kind)
        if threshold is not None:
            out.append(
                _slope_state(service, metric, kind, ts, values, threshold, (start, last, origin), breaks, settings)
            )
        if kind == "count":
            verdict = counts.judge_trend(
                ts, values, start, last, breaks, origin, settings.drain_tolerance, settings.count_steps
            )
            out.append(_count_state(service, metric, verdict, (last - start) / 3600.0))
    return out


def _slope_state(
    service: str,
    metric: str,
    kind: str,
    ts: np.ndarray,
    values: np.ndarray,
    threshold: float,
    window: tuple[float, float, float],
    breaks: list[float],
    settings: Settings,
) -> dict[str, Any]:
    verdict = judge_growth(ts, values, threshold, kind, window, breaks, settings.late)
    details = verdict.details
    late = details.get("late_slope_per_hour")
    hours = details.get("judged_hours", 0.0)
    if verdict.leaking is None:
        state = UNDECIDED
    elif verdict.leaking and verdict.ci_low > threshold:
        state = CONFIRMED
    elif (
        not verdict.leaking
        and verdict.ci_high < threshold
        and hours >= EARLY_MIN_HOURS
        and not (late is not None and late > threshold)
    ):
        state = CLEAN_SO_FAR
    else:
        state = UNDECIDED
    entry = _entry(service, metric, kind, state, details.get("rule", metrics.RULE_SLOPE), verdict.reason)
    entry.update(
        slope_per_hour=_num(verdict.slope),
        ci_low=_num(verdict.ci_low),
        ci_high=_num(verdict.ci_high),
        threshold_per_hour=threshold,
    )
    if "growth_since" in details:
        entry["growth_since"] = details["growth_since"]
    return entry


def _count_state(service: str, metric: str, verdict: Any, hours: float) -> dict[str, Any]:
    if verdict.leaking:
        state = CONFIRMED
    elif verdict.leaking is False and verdict.details.get("floor_rise", 1.0) <= 0 and hours >= EARLY_MIN_HOURS:
        state = CLEAN_SO_FAR
    else:
        state = UNDECIDED
    entry = _entry(service, metric, "count", state, metrics.RULE_TREND, verdict.reason)
    entry.update(slope_per_hour=_num(verdict.slope), ci_low=_num(verdict.ci_low), ci_high=_num(verdict.ci_high))
    entry["threshold_per_hour"] = None
    if state == UNDECIDED and verdict.leaking is False:
        entry["reason"] += f" (after {fmt_duration(hours * 3600.0)} of load: the floor has moved, not yet a leak)"
    return entry


def _entry(service: str, metric: str, kind: str, state: str, rule: str, reason: str) -> dict[str, Any]:
    return {"service": service, "metric": metric, "kind": kind, "state": state, "rule": rule, "reason": reason}


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def early_verdicts_for_folder(run_dir: str | Path) -> list[dict[str, Any]]:
    """early_verdicts on a run folder as it stands (samples.csv, events.csv, scenario.toml), while it is written."""
    from analysis.runfolder import read_events, read_samples
    from analysis.settings import read_settings

    path = Path(run_dir)
    samples = read_samples(path / folder.SAMPLES)
    events = read_events(path / folder.EVENTS)
    settings = read_settings(path / folder.SCENARIO)

    def first(name: str) -> float | None:
        times = events.loc[events["event"] == name, "ts"]
        return float(times.min()) if len(times) else None

    restarts: dict[str, list[float]] = {}
    for ts, detail in events.loc[events["event"] == folder.SERVICE_RESTART, ["ts", "detail"]].itertuples(index=False):
        words = str(detail).replace(":", " ").split()
        if words:
            restarts.setdefault(words[0], []).append(float(ts))
    return early_verdicts(samples, settings, first(folder.LOAD_START), first(folder.WARMUP_END), restarts)
