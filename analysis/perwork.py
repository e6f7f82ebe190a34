"""Memory per unit of work: bytes kept per chat message, per request, per connection opened.

MB/h says how fast a service grows at this load; the same leak reads twice as fast at twice the users. Divided by
the work done over the same stretch, it reads the same at any load: "keeps ~20 KB per chat message".

The work is counted from the run folder, cheapest source first:
1. locust_stats.csv totals per name, spread over time as locust_stats_history.csv's requests per second were
   (a few hundred thousand rows already read; assumes the mix of requests holds, as it does under steady load);
2. latency.csv (the exact timing record, one row per interval, name and rounded time, with a count: exact, but
   millions of rows in a day, so only when Locust's history is missing);
3. locust_stats.csv totals spread evenly over the load (a steady run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.formatting import fmt_bytes
from analysis.runfolder import Run
from runspec import folder
from runspec.units import HOUR

CHAT_NAMES = ("ws round trip", "agent startup")  # one per chat message: its ack (first found is used)
CONNECT_NAMES = ("WS connect", folder.WS_RECONNECT)  # a WebSocket opened, first time or again
WS_TYPE = "WS"  # every other request type is an HTTP method: a request
UNITS = ("message", "request", "connection")
MIN_UNITS = 100  # a figure per unit of work needs this many units in the stretch (8 connections opened at the
# start of a run say nothing per connection)
UNIT_WORDS = {"message": "chat message", "request": "request", "connection": "connection opened"}


@dataclass
class Work:
    """Cumulative counts of each unit of work over time: (times, counts so far), sorted by time."""

    cumulative: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    source: str = ""

    def count(self, unit: str, t0: float, t1: float) -> float:
        times, totals = self.cumulative[unit]
        below = np.searchsorted(times, [t0, t1], side="right") - 1
        at = [float(totals[i]) if i >= 0 else 0.0 for i in below]
        return at[1] - at[0]

    def per_hour(self, t0: float, t1: float) -> dict[str, float]:
        """Units of work per hour between t0 and t1 (units with fewer than MIN_UNITS left out)."""
        hours = (t1 - t0) / HOUR
        if hours <= 0:
            return {}
        counted = {unit: self.count(unit, t0, t1) for unit in self.cumulative}
        return {unit: n / hours for unit, n in counted.items() if n >= MIN_UNITS}


def _unit_lookup(type_of: np.ndarray, name_of: np.ndarray, has: np.ndarray) -> np.ndarray:
    """unit index (UNITS) or -1 for every (type category, name category) pair: worked out on the categories (a
    handful), then read per row (millions). ``has``: the name categories that occur in the rows."""
    chat = next((n for n in CHAT_NAMES if np.any((name_of == n) & has)), None)
    table = np.full((type_of.size, name_of.size), -1, dtype=np.int64)
    table[:, np.isin(name_of, CONNECT_NAMES)] = UNITS.index("connection")
    table[np.ix_((type_of != WS_TYPE) & (type_of != ""), name_of != "Aggregated")] = UNITS.index("request")
    if chat is not None:
        table[:, name_of == chat] = UNITS.index("message")
    return table


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    column = column.astype("category")
    return np.asarray(column.cat.categories, dtype=str), column.cat.codes.to_numpy().astype(np.int64)


def _unit_of_rows(types: pd.Series, names: pd.Series) -> np.ndarray:
    type_of, tcode = _codes(types)
    name_of, ncode = _codes(names)
    has = np.bincount(ncode[ncode >= 0], minlength=name_of.size) > 0
    table = _unit_lookup(type_of, name_of, has)
    unit = table[tcode, ncode]
    unit[(tcode < 0) | (ncode < 0)] = -1
    return unit


def work_record(run: Run) -> Work | None:
    """The run's work over time, or None when the folder has no record of it (only samples.csv)."""
    history = run.history
    has_history = history is not None and len(history) > 1 and float(history["Requests/s"].sum()) > 0
    if run.latency is not None and not run.latency.empty and not (has_history and run.stats is not None):
        return _from_timings(run.latency)
    stats = run.stats
    if stats is None:
        return None
    unit = _unit_of_rows(stats["Type"].fillna(""), stats["Name"])
    counted = stats["Request Count"].to_numpy(dtype="float64")
    totals = {name: float(counted[unit == index].sum()) for index, name in enumerate(UNITS)}
    if has_history:
        times = history["Timestamp"].to_numpy(dtype="float64")
        rate = history["Requests/s"].to_numpy(dtype="float64")
        share = np.cumsum(rate * np.r_[np.diff(times), 0.0])
        share = share / share[-1]
        source = f"{folder.LOCUST_STATS} spread by {folder.LOCUST_HISTORY}"
    else:
        start, stop = run.first_event(folder.LOAD_START), run.last_event(folder.LOAD_STOP)
        if start is None or stop is None or stop <= start:
            return None
        times, share = np.array([start, stop]), np.array([0.0, 1.0])
        source = f"{folder.LOCUST_STATS} spread evenly over the load"
    work = Work(source=source)
    for name, total in totals.items():
        if total > 0:
            work.cumulative[name] = (times, total * share)
    return work if work.cumulative else None


def _from_timings(frame: pd.DataFrame) -> Work | None:
    """The work from latency.csv's counts per interval and name."""
    ts, counts = frame["ts"].to_numpy(dtype="float64"), frame["count"].to_numpy(dtype="float64")
    unit = _unit_of_rows(frame["type"], frame["name"])
    keep = unit >= 0
    if not keep.any():
        return None
    # One pass for all units: a bin per (unit, second), no sort of the millions of rows.
    first = float(np.floor(ts[keep].min()))
    seconds = (ts[keep] - first).astype(np.int64)
    width = int(seconds.max()) + 1
    bins = np.bincount(unit[keep] * width + seconds, weights=counts[keep], minlength=len(UNITS) * width)
    marks = first + np.arange(width, dtype="float64")
    work = Work(source="latency.csv")
    for index, name in enumerate(UNITS):
        per_second = bins[index * width : (index + 1) * width]
        if per_second.any():
            work.cumulative[name] = (marks, np.cumsum(per_second))
    return work


def per_unit(slope_per_hour: float, work: Work | None, t0: float, t1: float) -> dict[str, Any]:
    """{"per_unit": {unit: value per unit}, "work_per_hour": {unit: rate}} over t0..t1; empty without a record."""
    if work is None or not np.isfinite(slope_per_hour):
        return {}
    rates = work.per_hour(t0, t1)
    if not rates:
        return {}
    return {
        "per_unit": {unit: slope_per_hour / rate for unit, rate in rates.items()},
        "work_per_hour": rates,
        "work_source": work.source,
    }


def per_unit_text(figures: dict[str, Any]) -> str:
    """'~20.5 KB per chat message, ~4 KB per request': the memory a unit of work leaves behind."""
    per = figures.get("per_unit") or {}
    parts = [f"~{fmt_bytes(per[unit])} per {UNIT_WORDS[unit]}" for unit in UNITS if unit in per]
    return ", ".join(parts)
