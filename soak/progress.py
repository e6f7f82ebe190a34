"""The one-line progress report of a long run: elapsed / remaining, users, requests per second, current p95 per
channel and the memory slope so far per service. Reads only the run folder and the sampler's latest readings."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from analysis import leak_slope
from runspec.units import MB
from sampler.trend import Trend

HISTORY_TAIL_BYTES = 256 * 1024  # enough for the last second's rows of a few hundred request names
MEMORY_METRIC = "mem_rss_bytes"
HTTP_TYPES = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
AGGREGATED = "Aggregated"  # the last row Locust writes for each second of its history


def progress_interval(duration: float) -> float:
    """About once a minute on long runs, more often on short ones."""
    return min(60.0, max(10.0, duration / 8))


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def latest_history(history_csv: Path) -> dict[str, dict[str, str]]:
    """The rows of the newest whole second in locust_stats_history.csv, keyed by request name.

    Locust flushes that file every few seconds, but its buffered writer also writes out whenever its buffer fills, so
    the file often ends inside a second's rows, even inside a row. The newest second whose ``Aggregated`` row (its
    last) is there whole is the one read: otherwise the line shows that second's first names only."""
    try:
        with history_csv.open("rb") as fh:
            header = fh.readline().decode()
            fh.seek(0, io.SEEK_END)
            size = fh.tell()
            fh.seek(max(len(header), size - HISTORY_TAIL_BYTES))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return {}
    lines = tail.splitlines()
    if size > HISTORY_TAIL_BYTES and lines:
        lines = lines[1:]  # the first line of the tail is probably cut
    if lines and not tail.endswith("\n"):
        lines = lines[:-1]  # the writer stopped inside this row
    rows = [row for row in csv.DictReader([header, *lines]) if row.get("Timestamp")]
    whole = [row["Timestamp"] for row in rows if row.get("Name") == AGGREGATED]
    if not whole:
        return {}
    return {row["Name"]: row for row in rows if row["Timestamp"] == whole[-1]}


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def memory_slopes(trend: Trend, metric: str = MEMORY_METRIC) -> dict[str, float]:
    """MB/hour so far per service, from the live trend (needs 10 readings before it says anything)."""
    out = {}
    for service, name in list(trend.series):
        points = trend.points(service, name)
        if name != metric or len(points) < 10:
            continue
        ts, values = np.array(points).T
        slope, _, _ = leak_slope(ts, values)
        if math.isfinite(slope):  # too few distinct points (or a flat start) gives no slope yet
            out[service] = slope / MB
    return out


def progress_line(
    elapsed: float, total: float, history: dict[str, dict[str, str]], slopes: dict[str, float], early: str = ""
) -> str:
    parts = [f"[{format_duration(elapsed)} / {format_duration(total)}, {format_duration(total - elapsed)} left]"]
    aggregated = history.get(AGGREGATED, {})
    users = _number(aggregated.get("User Count"))
    rps = _number(aggregated.get("Requests/s"))
    fails = _number(aggregated.get("Failures/s"))
    parts.append(f"users {int(users) if users is not None else '-'}")
    parts.append(f"{rps:.1f} req/s" if rps is not None else "- req/s")
    if fails:
        parts.append(f"{fails:.1f} fail/s")
    rest = [_number(row.get("95%")) for row in history.values() if row.get("Type") in HTTP_TYPES]
    rest = [value for value in rest if value is not None]
    p95 = [f"REST {max(rest):.0f}" if rest else None]
    for name, label in (("ws round trip", "ws"), ("agent startup", "agent")):
        value = _number(history.get(name, {}).get("95%"))
        p95.append(f"{label} {value:.0f}" if value is not None else None)
    shown = [item for item in p95 if item]
    if shown:
        parts.append("p95 ms: " + " ".join(shown))
    if slopes:
        parts.append("MB/h: " + " ".join(f"{svc} {slope:+.1f}" for svc, slope in sorted(slopes.items())))
    if early:
        parts.append(early)
    return " | ".join(parts)
