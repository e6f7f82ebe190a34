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

from analysis.faultevents import LEDGER_COMPLETE, RECOVERY
from analysis.groups import group_indices, stable_order
from analysis.runfolder import Run
from runspec import folder
from runspec.keys import DEFAULT_LATENCY_TARGETS
from runspec.protocol import TOKEN_FIRST, TOKEN_GAP, TOKEN_RATE, TOKEN_STALL

WS_TYPE = "WS"
API = "api"  # a target name meaning every HTTP request type together
HTTP_CHANNEL = "HTTP"
SHOWN_PERCENTILES = (50.0, 95.0, 99.0, 100.0)
HOURLY_FROM_S = 10 * 3600.0  # runs at least this long are judged per hour, shorter ones per tenth
MIN_BUCKET_S = 10.0  # the record's own resolution
PLOT_BINS = 120
TAIL_TIMINGS = 5  # a bucket's percentile is judged only with this many timings above it (p95: 100 timings)
ERROR_GROUPS_SHOWN = 20
# Timed, but not a request's latency: a user's recovery after an outage, a ledger entry, a resend, a reconnect. Shown under
# their own names; never part of the "api" target or a channel's figures, whatever request type the users gave them.
# A streamed reply's gaps (many per reply) and its rate (tokens per second, not ms) are not requests either: kept out
# of "api" and the channels so they do not swamp the WS figures; judged under their own names.
# The open model's lateness of each send against its schedule is the load generator's figure, not the target's.
NOT_LATENCY = (
    RECOVERY,
    LEDGER_COMPLETE,
    folder.WS_RESEND,
    folder.WS_RECONNECT,
    TOKEN_GAP,
    TOKEN_RATE,
    TOKEN_STALL,
    folder.SEND_LATENESS,
    folder.SEND_DROPPED,
)
# Targets a platform that does not stream cannot time: without timings they are "no data", not "measured nothing".
STREAM_TARGETS = (TOKEN_FIRST, TOKEN_GAP)
STREAM_FAULTS = (
    "stall_tokens_every",
    "drop_token_every",
    "repeat_token_every",
)  # [sut] fault switches a failed stream target names as a likely cause
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
    warmup_end = run.first_event(folder.WARMUP_END)
    if warmup_end is not None:
        return warmup_end, "after warmup_end"
    load_start = run.first_event(folder.LOAD_START)
    if load_start is not None:
        return load_start + run.settings.warmup_s, f"from {run.settings.warmup_s:g} s after load_start"
    if run.latency is not None and not run.latency.empty:
        return float(
            run.latency["ts"].min()
        ) + run.settings.warmup_s, f"from {run.settings.warmup_s:g} s after the first timing"
    return None, ""


def selected(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Which rows belong to one target name; "api" is every HTTP request type together."""
    if name == API:  # the open model's other view of a call is the same call again: never part of "api"
        return ((frame["type"] != WS_TYPE) & ~frame["name"].isin(NOT_LATENCY)).to_numpy() & ~other_view(frame)
    return (frame["name"] == name).to_numpy()


def select(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of one target name (a copy: judging works on positions, see judge_latency)."""
    return frame[selected(frame, name)]


def stats_table(frame: pd.DataFrame, keep: np.ndarray | None = None) -> list[dict[str, Any]]:
    """p50/p95/p99/max and count per (type, name), then per channel (HTTP, WS), of the rows ``keep`` marks."""
    rows = []
    ms, counts = frame["ms"].to_numpy(), frame["count"].to_numpy()
    for (kind, name), idx in group_indices(frame, "type", "name").items():
        if name == TOKEN_RATE:
            continue  # a rate, not ms: shown by the streamed-replies section (analysis/streamsection.py)
        idx = idx if keep is None else idx[keep[idx]]
        if idx.size:
            rows.append(_stats_row(kind, name, ms[idx], counts[idx]))
    is_ws = (frame["type"] == WS_TYPE).to_numpy()
    timed = ~frame["name"].isin(NOT_LATENCY).to_numpy() & ~other_view(frame)
    for channel, mask in ((HTTP_CHANNEL, ~is_ws & timed), (WS_TYPE, is_ws & timed)):
        mask = mask if keep is None else mask & keep
        if mask.any():
            rows.append(_stats_row("channel", channel, ms[mask], counts[mask]))
    return rows


def other_view(frame: pd.DataFrame) -> np.ndarray:
    """Rows of the open model's round trip that the targets do not judge (``... (from send)``): the same replies
    again, so never part of a channel's figures."""
    return frame["name"].astype(str).str.endswith((folder.FROM_SEND, folder.FROM_INTENDED)).to_numpy()


def _stats_row(kind: str, name: str, ms: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    p50, p95, p99, top = weighted_percentiles(ms, counts, SHOWN_PERCENTILES)
    return {"type": kind, "name": name, "count": int(counts.sum()), "p50": p50, "p95": p95, "p99": p99, "max": top}


def bucket_edges(start: float, end: float) -> tuple[np.ndarray, float]:
    """Edges counted back from the end so the last bucket is a whole hour (or a whole tenth of a short run)."""
    span = max(end - start, MIN_BUCKET_S)
    width = 3600.0 if span >= HOURLY_FROM_S else max(span / 10.0, MIN_BUCKET_S)
    count = int(math.ceil(span / width - 1e-9))
    return end - width * np.arange(count, -1, -1, dtype="float64"), width


def bucket_percentiles(
    ts: np.ndarray, ms: np.ndarray, counts: np.ndarray, edges: np.ndarray, percentile: float
) -> list[dict[str, Any]]:
    """The percentile of the timings in each bucket between ``edges``; rows given sorted by ms."""
    which = np.searchsorted(edges, ts, side="right")  # 0: before the first edge; bucket i is i + 1
    order = stable_order(which, edges.size + 1)  # each bucket's rows together, still sorted by ms
    bounds = np.searchsorted(which[order], np.arange(edges.size + 1))
    out = []
    for i in range(edges.size - 1):
        rows = order[bounds[i + 1] : bounds[i + 2]]
        n = int(counts[rows].sum())
        value = weighted_percentiles(ms[rows], counts[rows], [percentile])[0] if n else math.nan
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
    # Positions rather than filtered copies: a day's record is millions of rows, copied once per target otherwise.
    frame = run.latency
    ts_all, ms_all, counts_all = frame["ts"].to_numpy(), frame["ms"].to_numpy(), frame["count"].to_numpy()
    keep = ts_all >= start if start is not None else np.ones(ts_all.size, dtype=bool)
    if not keep.any():
        keep, how = np.ones(ts_all.size, dtype=bool), "the whole run (no timings after the warm-up)"
    info["window_note"] = how
    info["table"] = stats_table(frame, keep)
    judged_ts = ts_all[keep]
    end = float(judged_ts.max()) + 1e-6
    edges, width = bucket_edges(float(judged_ts.min()), end)
    info["bucket_s"] = width
    info["scope"] = scope = scope_name(width, edges.size - 1)
    checks = []
    faults = run.settings.faults()
    stream_faults = ", ".join(f"{k}={faults[k]}" for k in STREAM_FAULTS if k in faults)
    for target in targets:
        name, pct, limit = target["name"], float(target["percentile"]), float(target["max_ms"])
        # a missed stream target says which fault switch was on: the reader need not dig into scenario.toml
        cause = f" (fault switch on: {stream_faults})" if stream_faults and name in STREAM_TARGETS else ""
        rows = np.flatnonzero(keep & selected(frame, name))
        label = f"p{pct:g}"
        if rows.size == 0 and name in STREAM_TARGETS:
            if target in DEFAULT_LATENCY_TARGETS:
                continue  # a default of every run: one whose replies did not stream has nothing here to judge
            reason = f"no data: no timings named {name!r} (the replies streamed no tokens)"
            checks.append(_check(target, "overall", None, reason))
            continue
        if rows.size == 0:
            total = int(run.stats["Request Count"].iloc[-1]) if run.stats is not None else None
            extra = f" (Locust counted {total} requests in all)" if total is not None else ""
            checks.append(_check(target, "overall", False, f"measured nothing: no timings named {name!r}{extra}"))
            continue
        ts, ms, counts = ts_all[rows], ms_all[rows], counts_all[rows]
        value = weighted_percentiles(ms, counts, [pct])[0]
        count = int(counts.sum())
        passed = value <= limit
        verb = "held" if passed else f"missed{cause}"
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
        buckets = bucket_percentiles(ts, ms, counts, edges, pct)
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
            reason = f"{label} {last['value_ms']:.1f} ms in the {scope}, target {limit:g} ms: missed{cause}"
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


def judge_errors(run: Run, inside: dict[str, Any] | None = None) -> dict[str, Any]:
    """The share of failed requests against targets.error_rate_max. With ``inside`` (the requests and failures
    inside the fault windows, analysis/faults.py) the budget counts only what happened outside them; when the
    windows could not be told apart (``inside`` has no counts) it counts everything and says so."""
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
    base: dict[str, Any] = {"max": limit, "requests": requests, "failures": failures}
    where, apart = "", ""
    if inside is not None:
        windows = f"{inside['windows']} fault window(s)"
        if inside["requests"] is None:
            base["scope"] = "whole run"
            apart = f"; errors in the {windows} counted too: {inside['note']}"
        else:
            # The history's last row may trail the final totals by a second: never below zero.
            in_requests, in_failures = min(inside["requests"], requests), min(inside["failures"], failures)
            base.update(scope="outside faults", inside={"requests": in_requests, "failures": in_failures})
            requests, failures = requests - in_requests, failures - in_failures
            base.update(requests=requests, failures=failures)
            where = " outside the fault windows"
            apart = f"; inside the {windows}: {in_failures} of {in_requests} failed, reported apart"
    if requests == 0:
        reason = f"measured nothing: Locust recorded no requests{where}"
        return {"rate": None, "passed": False, "status": "failed", "reason": reason, **base}
    rate = failures / requests
    passed = rate <= limit
    reason = f"{failures} of {requests} requests failed{where} ({rate:.2%}), allowed {limit:.2%}{apart}"
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
    order = stable_order(which, int(which.max()) + 1)
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
