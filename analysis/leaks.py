"""The leak checks of a run: every (service, metric) judged by slope (memory, and any gauge given a per-hour
threshold; over the whole load period and since growth began, changepoint.py) or by the count rules (connections,
pool slots, tasks: counts.py). Each entry names the rule that judged it (``rule``); a memory entry also says what
the growth is per unit of work (perwork.py). The statistics live in growth.py, the metric vocabulary in metrics.py;
the load generator's own figures are reported, never judged."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis import counts, growth, metrics
from analysis.changepoint import late_growth, prefer_late
from analysis.formatting import fmt_clock, fmt_rate, unit
from analysis.growth import Fit, Judgement
from analysis.perwork import Work, per_unit, per_unit_text, work_record
from analysis.runfolder import Run
from analysis.settings import Settings
from runspec import folder
from runspec.units import LOAD_GENERATOR, MB


def leak_window(run: Run) -> tuple[float, float, float, str]:
    """(judged from, judged to, time origin for messages, how the start was chosen) for the leak verdicts."""
    ts = run.samples["ts"]
    first, last = float(ts.min()), float(ts.max())
    load_start, warmup_end, load_stop = (
        run.first_event(e) for e in (folder.LOAD_START, folder.WARMUP_END, folder.LOAD_STOP)
    )
    origin = load_start if load_start is not None else first
    if warmup_end is not None:
        start, how = warmup_end, "from warmup_end"
    elif load_start is not None:
        start, how = load_start, "from load_start, warm-up detected from the series"
    else:
        start, how = first, "from the first sample, warm-up detected from the series"
    end = load_stop if load_stop is not None and load_stop > start else last
    return start, end, origin, how


def threshold_for(settings: Settings, service: str, metric: str, kind: str | None) -> float | None:
    """Per hour, in the metric's unit (bytes for memory); per-metric overrides for memory are given in MB."""
    table = settings.metric_thresholds
    for key in (f"{service}:{metric}", metric):
        if key in table:
            return table[key] * MB if kind == "memory" else table[key]
    if kind == "memory":
        return settings.memory_mb_per_hour * MB
    if kind == "count" and settings.count_per_hour > 0:
        return settings.count_per_hour
    return None


def judged(settings: Settings, service: str, metric: str) -> str | None:
    """The metric's kind when the series is judged ('gauge' for one given only a threshold), None when not."""
    kind = metrics.metric_kind(metric)
    if kind is None and not any(k in settings.metric_thresholds for k in (metric, f"{service}:{metric}")):
        return None
    return kind or "gauge"


def judge_growth(
    ts: np.ndarray,
    values: np.ndarray,
    threshold: float,
    kind: str,
    window: tuple[float, float, float],
    breaks: list[float],
    late: bool = True,
) -> Judgement:
    """The slope rule over the whole judged period and (with ``late``) since growth began: the one that says more.
    ``window``: (judged from, judged to, time origin). ``details["rule"]`` names the rule."""
    start, end, origin = window
    verdict = growth.judge_slope(ts, values, threshold, kind, start, end, breaks, origin)
    verdict.details["rule"] = metrics.RULE_SLOPE
    if not late or verdict.leaking is None:
        return verdict
    stretch = late_growth(ts, values, threshold, kind, start, end, breaks, origin)
    if stretch is None:
        verdict.details["late_note"] = "not judged: too few samples or envelope points after the last gap or restart"
    else:
        verdict.details["late_slope_per_hour"] = stretch.judgement.slope
        verdict.details["late_since"] = stretch.since
    if not prefer_late(verdict, stretch):
        return verdict
    chosen = stretch.judgement
    chosen.details.update(
        rule=metrics.RULE_LATE,
        whole_slope_per_hour=verdict.slope,
        growth_since=stretch.since,
        growth_since_s=stretch.since - origin,
        growth_since_text=fmt_clock(stretch.since - origin),
    )
    chosen.reason += f"; {fmt_rate(verdict.slope, kind)}{unit(kind)}/h over the whole load"
    return chosen


def _restarts(run: Run, service: str, rows: Any = None) -> list[float]:
    """Restart times of ``service`` (a restart that names no service restarts them all); ``rows``: the
    service_restart events, when the caller has them already (one filter per run, not one per series)."""
    if rows is None:
        rows = run.events[run.events["event"] == folder.SERVICE_RESTART]
    out = []
    for ts, detail in zip(rows["ts"], rows["detail"], strict=True):
        words = str(detail).replace(":", " ").replace("=", " ").split()
        if not words or service in words:
            out.append(float(ts))
    return out


def judge_leaks(
    run: Run, series: dict[tuple[str, str], np.ndarray]
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], Fit], list[str], dict]:
    """(leak entries, fits the report draws, 'service:metric' left out by leaks.ignore, generator and window).
    ``series``: the samples' row positions per (service, metric), groups.group_indices."""
    start, end, origin, how = leak_window(run)
    load_start, load_stop = run.first_event(folder.LOAD_START), run.last_event(folder.LOAD_STOP)
    drain_end = run.last_event(folder.DRAIN_END)
    settings = run.settings
    frame = run.samples
    ts_all, values_all = frame["ts"].to_numpy(), frame["value"].to_numpy()
    results: list[dict[str, Any]] = []
    fits: dict[tuple[str, str], Fit] = {}
    ignored: list[str] = []
    generator: dict[str, Any] = {}
    work: Work | None = None
    work_read = False
    restart_rows = run.events[run.events["event"] == folder.SERVICE_RESTART]
    restarts: dict[str, list[float]] = {}
    for (service, metric), idx in series.items():
        ts, values = ts_all[idx], values_all[idx]
        kind = metrics.metric_kind(metric)
        if service == LOAD_GENERATOR:
            generator[metric] = _generator_stats(ts, values, start, end, kind)
            continue
        if judged(settings, service, metric) is None:
            continue
        if settings.ignored(service, metric):
            ignored.append(f"{service}:{metric}")
            continue
        threshold = threshold_for(settings, service, metric, kind)
        if service not in restarts:
            restarts[service] = _restarts(run, service, restart_rows)
        breaks = restarts[service]
        if threshold is not None:
            verdict = judge_growth(ts, values, threshold, kind or "", (start, end, origin), breaks, settings.late)
            if verdict.fit is not None:
                fits[(service, metric)] = verdict.fit
            if kind == "memory":
                if not work_read:
                    work, work_read = work_record(run), True
                _add_per_unit(verdict, work, start, end)
            results.append(_leak_entry(service, metric, kind, "slope", verdict, threshold))
        if kind == "count":
            verdict = counts.judge_count(
                ts,
                values,
                metric,
                load_start=load_start,
                load_stop=load_stop,
                drain_end=drain_end,
                start=start,
                end=end,
                origin=origin,
                breaks=breaks,
                tolerance=settings.drain_tolerance,
                steps=settings.count_steps,
                warm_from=start if metrics.is_pooled(metric) else None,
            )
            results.append(_leak_entry(service, metric, kind, "drain", verdict, None))
    window = {"from": start, "to": end, "how": how}
    return results, fits, ignored, {"generator": generator, "window": window}


def _add_per_unit(verdict: Judgement, work: Work | None, start: float, end: float) -> None:
    """Bytes per unit of work over the stretch the slope was judged on (since growth began, for a late leak)."""
    if verdict.leaking is None:
        return
    since = verdict.details.get("growth_since")
    figures = per_unit(verdict.slope, work, since if since is not None else start, end)
    if not figures:
        return
    verdict.details.update(figures)
    if verdict.leaking:
        verdict.reason += f"; {per_unit_text(figures)}"


def _generator_stats(ts: np.ndarray, values: np.ndarray, start: float, end: float, kind: str | None) -> dict:
    out: dict[str, Any] = {"max": float(np.nanmax(values)) if values.size else None}
    if kind == "memory":
        pick = (ts >= start) & (ts <= end)
        slope, low, high = growth.leak_slope(ts[pick], values[pick])
        out.update(slope_per_hour=slope, ci_low=low, ci_high=high)
    return out


def _leak_entry(
    service: str, metric: str, kind: str | None, check: str, verdict: Judgement, threshold: float | None
) -> dict[str, Any]:
    status = "no data" if verdict.leaking is None else ("failed" if verdict.leaking else "passed")
    entry = {
        "service": service,
        "metric": metric,
        "kind": kind or "gauge",
        "check": check,
        "rule": verdict.details.get("rule", check),
        "leaking": bool(verdict.leaking),
        "status": status,
        "passed": None if verdict.leaking is None else not verdict.leaking,
        "slope_per_hour": verdict.slope,
        "ci_low": verdict.ci_low,
        "ci_high": verdict.ci_high,
        "threshold_per_hour": threshold,
        "reason": verdict.reason,
    }
    entry.update(verdict.details)
    return entry
