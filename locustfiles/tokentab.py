"""The rows of the web UI's "Tokens" tab (webui.py): how the streamed replies feel so far, live. This module does not
import Locust.

Time to first token and token gaps come from the same timings as the exact record (latency.csv), counted here per
rounded value (timings.round_ms, so memory is bounded by distinct values, not by tokens) over the whole test and per
10 s of the last minute; stalls are the gaps above the users' ``token_stall``, counted from those gaps as the
analysis counts them. Where the users run (a local runner) the timings arrive one by one; on a master they arrive
with the workers' reports, already counted. A run whose replies stream no tokens shows no rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.latency import min_timings, weighted_percentiles
from analysis.streaming import stall_threshold_ms
from locustfiles.timings import round_ms
from runspec.protocol import TOKEN_FIRST, TOKEN_GAP

NAMES = frozenset({TOKEN_FIRST, TOKEN_GAP})
BUCKET_S = 10
WINDOW_S = 60  # "last minute": the newest buckets that cover it
COLUMNS = [
    ("measure", "Measure"),
    ("count", "Count"),
    ("p50", "p50"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("last_minute", "Last 60 s (p95; stalls: count)"),
    ("target", "Target"),
    ("state", "So far"),
]

Counts = dict[float, int]


class LiveTokens:
    """Counts of rounded time-to-first-token and gap timings: since the test started, and per recent bucket."""

    def __init__(self) -> None:
        self.total: dict[str, Counts] = {}
        self.buckets: dict[int, dict[str, Counts]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new test, or Locust's stats reset."""
        self.total = {name: {} for name in NAMES}
        self.buckets = {}

    def add(self, name: str, ms: float, now: float, count: int = 1) -> None:
        """One timing (or ``count`` of one value) of ``name``, at ``now`` (unix seconds); other names are ignored."""
        total = self.total.get(name)
        if total is None:
            return
        key = round_ms(ms)
        total[key] = total.get(key, 0) + count
        start = int(now // BUCKET_S) * BUCKET_S
        bucket = self.buckets.get(start)
        if bucket is None:
            bucket = self.buckets[start] = {n: {} for n in NAMES}
            for old in [ts for ts in self.buckets if ts < start - WINDOW_S]:
                del self.buckets[old]  # bounded: the last minute's buckets and the one being filled
        counts = bucket[name]
        counts[key] = counts.get(key, 0) + count

    def merge(self, rows: list[list], now: float) -> None:
        """A worker's timing record rows (``[ts, type, name, ms, count]``), counted as arriving ``now``."""
        for _ts, _type, name, ms, count in rows:
            if name in NAMES:
                self.add(name, float(ms), now, int(count))

    def recent(self, name: str, now: float) -> Counts:
        """``name``'s counts of the buckets that overlap the last WINDOW_S seconds."""
        merged: Counts = {}
        for start, bucket in self.buckets.items():
            if start + BUCKET_S > now - WINDOW_S:
                for key, count in bucket[name].items():
                    merged[key] = merged.get(key, 0) + count
        return merged


def _percentiles(counts: Counts, percentiles: tuple[float, ...]) -> list[float]:
    if not counts:
        return [float("nan")] * len(percentiles)
    ms = np.fromiter(counts.keys(), dtype=float, count=len(counts))
    n = np.fromiter(counts.values(), dtype=float, count=len(counts))
    return weighted_percentiles(ms, n, percentiles)


def _ms(value: float) -> str:
    return "" if value != value else f"{value:.1f}"


def _target(name: str, targets: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((t for t in targets if t.get("name") == name), None)


def _timing_row(label: str, counts: Counts, recent: Counts, target: dict[str, Any] | None) -> dict[str, Any]:
    total = sum(counts.values())
    p50, p95, p99 = _percentiles(counts, (50.0, 95.0, 99.0))
    row = {
        "measure": label,
        "count": str(total),
        "p50": _ms(p50),
        "p95": _ms(p95),
        "p99": _ms(p99),
        "last_minute": _ms(_percentiles(recent, (95.0,))[0]),
        "target": "",
        "state": "",
    }
    if target is not None:
        percentile, max_ms = float(target["percentile"]), float(target["max_ms"])
        row["target"] = f"p{percentile:g} <= {max_ms:g} ms"
        if total < min_timings(percentile):
            row["state"] = f"(too few timings yet: {total} of {min_timings(percentile)})"
        else:
            value = _percentiles(counts, (percentile,))[0]
            row["state"] = "within target" if value <= max_ms else f"over target ({value:.1f} ms)"
    return row


def token_rows(live: LiveTokens, scenario: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Time to first token, token gap and stalls, one row each; none before the first token (or ever, for a run
    whose replies do not stream)."""
    first, gaps = live.total[TOKEN_FIRST], live.total[TOKEN_GAP]
    if not first:
        return []
    targets = scenario.get("targets", {}).get("latency", [])
    stall_ms = stall_threshold_ms(scenario)
    recent_gaps = live.recent(TOKEN_GAP, now)
    stalls = sum(count for ms, count in gaps.items() if ms > stall_ms)
    recent_stalls = sum(count for ms, count in recent_gaps.items() if ms > stall_ms)
    gap_count = sum(gaps.values())
    share = f"{100.0 * stalls / gap_count:.2f}% of gaps" if gap_count else ""
    return [
        _timing_row(f"{TOKEN_FIRST} (ms)", first, live.recent(TOKEN_FIRST, now), _target(TOKEN_FIRST, targets)),
        _timing_row(f"{TOKEN_GAP} (ms)", gaps, recent_gaps, _target(TOKEN_GAP, targets)),
        {
            "measure": f"token stalls (gaps over {stall_ms:g} ms)",
            "count": str(stalls),
            "p50": "",
            "p95": "",
            "p99": "",
            "last_minute": str(recent_stalls),
            "target": "",
            "state": share,
        },
    ]


def may_stream(scenario: dict[str, Any], described: bool) -> bool:
    """Whether a run of ``scenario`` can stream tokens, so the tab is worth showing: not when the [protocol] says the
    platform does not stream, nor for the embedded sut set to stream none. ``described``: the scenario was given
    (Locust without one may point at any platform)."""
    if not scenario["protocol"]["events"]["token"]:
        return False
    if described and not scenario["target"]["host"]:
        return scenario["sut"]["agent_tokens"] > 0
    return True
