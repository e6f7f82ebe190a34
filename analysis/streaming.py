"""Streamed replies from the timing record: time to first token, gaps, stalls over time, tokens per second.

The users fire one ``time to first token`` per reply, one ``token gap`` per gap and one ``tokens per second`` per
reply (runspec.protocol names them); latency.csv holds them counted per 10 s interval and rounded value. A stall is
a gap above the users' ``token_stall``: counted here from the gap rows themselves, so the time axis needs nothing
the record does not have. The targets (``time to first token``, ``token gap``) are judged with the others in
latency.py; this module only summarises for the report. pandas and numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.latency import weighted_percentiles
from runspec.keys import USER_SCHEMA
from runspec.protocol import TOKEN_FIRST, TOKEN_GAP, TOKEN_RATE

INTERVAL_S = 10.0  # the timing record's interval (locustfiles/timings.py INTERVAL)
DEFAULT_STALL_MS = USER_SCHEMA["token_stall"].default * 1000.0


def stall_threshold_ms(scenario: dict[str, Any]) -> float:
    """The users' stall threshold: the smallest ``token_stall`` of the classes that ran (the default without any)."""
    users = scenario.get("users") or {}
    values = [
        float(table["token_stall"]) * 1000.0
        for table in users.values()
        if isinstance(table, dict) and table.get("weight", 0) and "token_stall" in table
    ]
    return min(values) if values else DEFAULT_STALL_MS


def _values(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = frame[frame["name"] == name]
    return rows["ts"].to_numpy(), rows["ms"].to_numpy(), rows["count"].to_numpy()


def _pcts(ms: np.ndarray, counts: np.ndarray, percentiles: tuple[float, ...]) -> list[float | None]:
    values = weighted_percentiles(ms, counts, percentiles)
    return [None if math.isnan(v) else round(v, 3) for v in values]


def stream_summary(latency: pd.DataFrame | None, stall_ms: float = DEFAULT_STALL_MS) -> dict[str, Any] | None:
    """Replies, tokens, stalls and their percentiles, plus stalls and gap p95 per interval; None without tokens."""
    if latency is None or latency.empty:
        return None
    first_ts, first_ms, first_n = _values(latency, TOKEN_FIRST)
    gap_ts, gap_ms, gap_n = _values(latency, TOKEN_GAP)
    if first_n.sum() == 0:
        return None
    _, rate, rate_n = _values(latency, TOKEN_RATE)
    stalled = gap_ms > stall_ms
    summary: dict[str, Any] = {
        "replies": int(first_n.sum()),
        "gaps": int(gap_n.sum()),
        "stall_ms": stall_ms,
        "stalls": int(gap_n[stalled].sum()),
        "first_p50_ms": None,
        "first_p95_ms": None,
        "gap_p50_ms": None,
        "gap_p95_ms": None,
        "gap_p99_ms": None,
        "rate_p50": None,
        "rate_p5": None,
    }
    summary["first_p50_ms"], summary["first_p95_ms"] = _pcts(first_ms, first_n, (50.0, 95.0))
    if gap_n.sum():
        summary["gap_p50_ms"], summary["gap_p95_ms"], summary["gap_p99_ms"] = _pcts(gap_ms, gap_n, (50.0, 95.0, 99.0))
    if rate_n.sum():
        # the slow end of the rate is what a reader feels: its 5th percentile beside the median
        summary["rate_p50"], summary["rate_p5"] = _pcts(rate, rate_n, (50.0, 5.0))
    summary["series"] = per_interval(first_ts, first_ms, first_n, gap_ts, gap_ms, gap_n, stall_ms)
    return summary


def per_interval(
    first_ts: np.ndarray,
    first_ms: np.ndarray,
    first_n: np.ndarray,
    gap_ts: np.ndarray,
    gap_ms: np.ndarray,
    gap_n: np.ndarray,
    stall_ms: float,
) -> dict[str, np.ndarray]:
    """Per interval of the record: stalls, time-to-first-token p95 and gap p95 (NaN where none)."""
    # the record's rows start their interval already; binning again keeps a hand-made (raw) record bounded too
    first_ts, gap_ts = _bin(first_ts), _bin(gap_ts)
    ts = np.unique(np.concatenate([first_ts, gap_ts]))
    stalls = np.zeros(ts.size)
    first_p95 = _p95_at(ts, first_ts, first_ms, first_n)
    gap_p95 = _p95_at(ts, gap_ts, gap_ms, gap_n)
    stalled = gap_ms > stall_ms
    if stalled.any():
        np.add.at(stalls, np.searchsorted(ts, gap_ts[stalled]), gap_n[stalled])
    return {"ts": ts, "stalls": stalls, "first_p95": first_p95, "gap_p95": gap_p95}


def _bin(ts: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(ts, dtype="float64") / INTERVAL_S) * INTERVAL_S


def _p95_at(ts: np.ndarray, at: np.ndarray, ms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The p95 of each interval in ``ts``: one sort, then a slice per interval (a day is 8640 of them)."""
    out = np.full(ts.size, np.nan)
    if at.size == 0:
        return out
    order = np.lexsort((ms, at))
    at, ms, counts = at[order], ms[order], counts[order]
    starts = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
    bounds = np.r_[starts, at.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        out[np.searchsorted(ts, at[lo])] = weighted_percentiles(ms[lo:hi], counts[lo:hi], [95.0])[0]
    return out
