"""Exact latency percentiles from the timing record (latency.csv), targets, drift per hour, and the error rate.

latency.csv holds (interval start, type, name, ms rounded to 3 significant digits, count); raw timings are the
case count=1. Percentiles use numpy's default (linear) definition on the timings the rows stand for, so on raw
timings they agree with ``numpy.percentile`` exactly.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from analysis.runfolder import Run

WS_TYPE = "WS"
API = "api"  # a target name meaning every HTTP request type together
HTTP_CHANNEL = "HTTP"
SHOWN_PERCENTILES = (50.0, 95.0, 99.0, 100.0)
HOURLY_FROM_S = 10 * 3600.0  # runs at least this long are judged per hour, shorter ones per tenth
MIN_BUCKET_S = 10.0  # the record's own resolution
PLOT_BINS = 120
TAIL_TIMINGS = 5  # a bucket's percentile is judged only with this many timings above it (p95: 100 timings)
ERROR_GROUPS_SHOWN = 20
_VOLATILE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F-]{27,}|\b[0-9a-fA-F]{16,}\b|\d{4,}")


def weighted_percentiles(
    ms: np.ndarray, counts: np.ndarray, percentiles: tuple[float, ...] | list[float]
) -> list[float]:
    """numpy.percentile (linear) of the timings that ``ms`` repeated ``counts`` times stand for."""
    if ms.size == 0:
        return [math.nan] * len(percentiles)
    if ms.size > 1 and np.any(ms[1:] < ms[:-1]):  # the record is loaded sorted by ms: subsets need no sort
        order = np.argsort(ms, kind="stable")
        ms, counts = ms[order], counts[order]
    values, cum = ms, np.cumsum(counts)
    total = int(cum[-1])
    out = []
    for p in percentiles:
        rank = (total - 1) * p / 100.0
        low = int(math.floor(rank))
        high = min(low + 1, total - 1)
        at_low = values[np.searchsorted(cum, low, side="right")]
        at_high = values[np.searchsorted(cum, high, side="right")]
        out.append(float(at_low + (rank - low) * (at_high - at_low)))
    return out


def min_timings(percentile: float) -> int:
    """How many timings a percentile needs before it means something (p95: 100, p99: 500)."""
    if percentile >= 100:
        return 1
    return int(math.ceil(TAIL_TIMINGS / (1.0 - percentile / 100.0)))


def judged_start(run: Run) -> tuple[float | None, str]:
    """Start of the latency verdict: the end of the warm-up (the ramp is not judged)."""
    warmup_end = run.first_event("warmup_end")
    if warmup_end is not None:
        return warmup_end, "after warmup_end"
    load_start = run.first_event("load_start")
    if load_start is not None:
        return load_start + run.settings.warmup_s, f"from {run.settings.warmup_s:g} s after load_start"
    if run.latency is not None and not run.latency.empty:
        return float(
            run.latency["ts"].min()
        ) + run.settings.warmup_s, f"from {run.settings.warmup_s:g} s after the first timing"
    return None, ""


def select(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of one target name; "api" is every HTTP request type together."""
    if name == API:
        return frame[frame["type"] != WS_TYPE]
    return frame[frame["name"] == name]


def stats_table(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """p50/p95/p99/max and count per (type, name), then per channel (HTTP, WS) and all together."""
    rows = []
    groups = frame.groupby(["type", "name"], observed=True, sort=True).indices
    for (kind, name), idx in groups.items():
        rows.append(_stats_row(str(kind), str(name), frame["ms"].to_numpy()[idx], frame["count"].to_numpy()[idx]))
    ms, counts = frame["ms"].to_numpy(), frame["count"].to_numpy()
    is_ws = (frame["type"] == WS_TYPE).to_numpy()
    for channel, mask in ((HTTP_CHANNEL, ~is_ws), (WS_TYPE, is_ws)):
        if mask.any():
            rows.append(_stats_row("channel", channel, ms[mask], counts[mask]))
    return rows


def _stats_row(kind: str, name: str, ms: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    p50, p95, p99, top = weighted_percentiles(ms, counts, SHOWN_PERCENTILES)
    return {"type": kind, "name": name, "count": int(counts.sum()), "p50": p50, "p95": p95, "p99": p99, "max": top}


def bucket_edges(start: float, end: float) -> tuple[np.ndarray, float]:
    """Edges counted back from the end so the last bucket is a whole hour (or a whole tenth of a short run)."""
    span = max(end - start, MIN_BUCKET_S)
    width = 3600.0 if span >= HOURLY_FROM_S else max(span / 10.0, MIN_BUCKET_S)
    count = int(math.ceil(span / width - 1e-9))
    return end - width * np.arange(count, -1, -1, dtype="float64"), width


def bucket_percentiles(frame: pd.DataFrame, edges: np.ndarray, percentile: float) -> list[dict[str, Any]]:
    ts, ms, counts = frame["ts"].to_numpy(), frame["ms"].to_numpy(), frame["count"].to_numpy()
    which = np.searchsorted(edges, ts, side="right") - 1
    out = []
    for i in range(edges.size - 1):
        mask = which == i
        n = int(counts[mask].sum())
        value = weighted_percentiles(ms[mask], counts[mask], [percentile])[0] if n else math.nan
        out.append({"start": float(edges[i]), "end": float(edges[i + 1]), "count": n, "value_ms": value})
    return out


def scope_name(width: float, buckets: int) -> str:
    """What the last bucket is called: "last hour", "last tenth", or its length when a short run has fewer."""
    if width == 3600.0:
        return "last hour"
    return "last tenth" if buckets == 10 else f"last {width:.0f} s"


def judge_latency(run: Run) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One check per target overall and one for its last hour (or tenth); plus the tables the report shows."""
    targets = run.settings.latency_targets
    measured = run.latency is not None or run.stats is not None
    info: dict[str, Any] = {"table": [], "buckets": {}, "window_note": ""}
    if not measured:
        return [
            _check(t, "overall", None, "no data: this run folder has no Locust output and no latency.csv")
            for t in targets
        ], info
    if run.latency is None:
        reason = "failed: Locust ran but there is no exact timing record (latency.csv)"
        return [_check(t, "overall", False, reason) for t in targets], info
    start, how = judged_start(run)
    frame = run.latency
    judged = frame[frame["ts"] >= start] if start is not None else frame
    if judged.empty:
        judged, how = frame, "the whole run (no timings after the warm-up)"
    info["window_note"] = how
    info["table"] = stats_table(judged)
    end = float(judged["ts"].max()) + 1e-6
    edges, width = bucket_edges(float(judged["ts"].min()), end)
    info["bucket_s"] = width
    info["scope"] = scope = scope_name(width, edges.size - 1)
    checks = []
    for target in targets:
        name, pct, limit = target["name"], float(target["percentile"]), float(target["max_ms"])
        rows = select(judged, name)
        label = f"p{pct:g}"
        if rows.empty:
            total = int(run.stats["Request Count"].iloc[-1]) if run.stats is not None else None
            extra = f" (Locust counted {total} requests in all)" if total is not None else ""
            checks.append(_check(target, "overall", False, f"measured nothing: no timings named {name!r}{extra}"))
            continue
        value = weighted_percentiles(rows["ms"].to_numpy(), rows["count"].to_numpy(), [pct])[0]
        count = int(rows["count"].sum())
        passed = value <= limit
        verb = "held" if passed else "missed"
        checks.append(
            _check(
                target,
                "overall",
                passed,
                f"{label} {value:.1f} ms over {count} timings, target {limit:g} ms: {verb}",
                value,
                count,
            )
        )
        buckets = bucket_percentiles(rows, edges, pct)
        info["buckets"][name] = buckets
        last = buckets[-1]
        need = min_timings(pct)
        if last["count"] < need:
            reason = f"no data: {last['count']} timings in the {scope}, a {label} needs {need}"
            checks.append(_check(target, scope, None, reason, None, last["count"]))
            continue
        passed_last = last["value_ms"] <= limit
        if passed_last:
            reason = f"{label} {last['value_ms']:.1f} ms in the {scope}, target {limit:g} ms: held"
        elif passed:
            reason = (
                f"{label} {last['value_ms']:.1f} ms in the {scope} over target {limit:g} ms "
                f"(overall {value:.1f} ms held): latency drifts up"
            )
        else:
            reason = f"{label} {last['value_ms']:.1f} ms in the {scope}, target {limit:g} ms: missed"
        checks.append(_check(target, scope, passed_last, reason, last["value_ms"], last["count"]))
    return checks, info


def _check(
    target: dict[str, Any],
    scope: str,
    passed: bool | None,
    reason: str,
    value: float | None = None,
    count: int | None = None,
) -> dict[str, Any]:
    return {
        "name": target["name"],
        "percentile": target["percentile"],
        "scope": scope,
        "value_ms": None if value is None or math.isnan(value) else round(value, 3),
        "target_ms": target["max_ms"],
        "count": count,
        "passed": passed,
        "status": "no data" if passed is None else ("passed" if passed else "failed"),
        "reason": reason,
    }


def judge_errors(run: Run) -> dict[str, Any]:
    limit = run.settings.error_rate_max
    if run.stats is None:
        return {
            "rate": None,
            "max": limit,
            "passed": None,
            "status": "no data",
            "reason": "no data: no locust_stats.csv",
        }
    row = run.stats[run.stats["Name"] == "Aggregated"].iloc[-1]
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    base = {"max": limit, "requests": requests, "failures": failures}
    if requests == 0:
        reason = "measured nothing: Locust recorded no requests"
        return {"rate": None, "passed": False, "status": "failed", "reason": reason, **base}
    rate = failures / requests
    passed = rate <= limit
    reason = f"{failures} of {requests} requests failed ({rate:.2%}), allowed {limit:.2%}"
    return {"rate": rate, "passed": passed, "status": "passed" if passed else "failed", "reason": reason, **base}


def failure_groups(run: Run) -> list[dict[str, Any]]:
    """Locust's failures grouped by error message (ids and long numbers folded), most frequent first."""
    if run.failures is None or run.failures.empty:
        return []
    groups: dict[str, dict[str, Any]] = {}
    for method, name, error, count in run.failures[["Method", "Name", "Error", "Occurrences"]].itertuples(index=False):
        key = _VOLATILE.sub("#", str(error))
        group = groups.setdefault(key, {"error": key, "occurrences": 0, "requests": {}})
        group["occurrences"] += int(count)
        label = f"{method} {name}".strip()
        group["requests"][label] = group["requests"].get(label, 0) + int(count)
    ordered = sorted(groups.values(), key=lambda g: -g["occurrences"])[:ERROR_GROUPS_SHOWN]
    for group in ordered:
        group["requests"] = sorted(group["requests"].items(), key=lambda kv: -kv[1])
    return ordered


def percentile_series(frame: pd.DataFrame, name: str, start: float, end: float) -> dict[str, np.ndarray]:
    """p50/p95/p99 over time in about PLOT_BINS bins, for the latency plot."""
    rows = select(frame, name)
    rows = rows[(rows["ts"] >= start) & (rows["ts"] <= end)]
    if rows.empty:
        return {}
    width = max((end - start) / PLOT_BINS, MIN_BUCKET_S)
    ts, ms, counts = rows["ts"].to_numpy(), rows["ms"].to_numpy(), rows["count"].to_numpy()
    which = np.floor((ts - start) / width).astype(np.int64)
    order = np.argsort(which, kind="stable")
    which, ms, counts = which[order], ms[order], counts[order]
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
    bounds = np.r_[starts, which.size]
    out: dict[str, list[float]] = {"t": [], "p50": [], "p95": [], "p99": []}
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        p50, p95, p99 = weighted_percentiles(ms[lo:hi], counts[lo:hi], (50.0, 95.0, 99.0))
        out["t"].append(start + (which[lo] + 0.5) * width)
        out["p50"].append(p50)
        out["p95"].append(p95)
        out["p99"].append(p99)
    return {key: np.asarray(value) for key, value in out.items()}
