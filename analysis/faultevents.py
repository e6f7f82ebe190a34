"""Faults as the run folder records them: the windows from events.csv (``fault_start`` / ``fault_end``, soak/faults.py's
format), the request counts over time from Locust's history and the delivery ledger's totals, for analysis/faults.py
to judge.

Counts come from the cumulative totals in ``locust_stats_history.csv`` (per name with ``--csv-full-history``), so a
window's count is exact to the second; Locust's per-second rates are 10-second averages. Request names are matched
by name, whatever their type (the constants below are the contract with locustfiles/users.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.runfolder import Run
from runspec import folder

# What the users report through Locust's request events (the names are the contract with locustfiles/users.py).
RECOVERY = folder.WS_RECOVERY  # success: one user's time from noticing an outage to its first good round trip
OUTAGE = folder.WS_OUTAGE  # failure: a user got a clear error (a close code, a status, an exception)
LEDGER_COMPLETE = folder.LEDGER_COMPLETE
LEDGER = {"lost": folder.LEDGER_LOST, "duplicate": folder.LEDGER_DUPLICATE, "order": folder.LEDGER_ORDER}
AGGREGATED = "Aggregated"
# Not a user left hanging: a blackholed reconnect times out by design; the outage it belongs to is counted once.
NOT_USER_ERRORS = {
    AGGREGATED,
    OUTAGE,
    RECOVERY,
    folder.WS_RECONNECT,
    folder.WS_RESEND,
    LEDGER_COMPLETE,
    *LEDGER.values(),
}
# A failure message that says the user waited and nothing came: a hang, not a clear error.
TIMEOUT = re.compile(r"time ?out|timed out|not received within|event missing|no (reply|answer) within", re.I)

# 'ws recovery' is kept per second in latency.csv (locustfiles/timings.py FINE_NAMES): its ts is the second it
# completed in. A folder from before that has 10 s rows, which the bounds read with this still hold for, less tightly.
RECOVERY_INTERVAL_S = 1.0
REPORT_LAG_S = 3.0  # a failure reaches Locust's history up to one worker report (3 s) after it happened
HISTORY_COLUMNS = ("Timestamp", "Type", "Name", "Total Request Count", "Total Failure Count")


@dataclass
class Fault:
    """One occurrence of a fault, from its fault_start and fault_end events."""

    kind: str
    service: str
    spec: int | None  # its index in [[faults]] (id=)
    n: int | None  # its occurrence (n=)
    start: float
    end: float | None = None  # None: no fault_end (the run ended first)
    outcome: str = "unfinished"
    params: dict[str, str] = field(default_factory=dict)  # key=value words of both events
    reason: str = "no fault_end in events.csv: the run ended first"
    detail: str = ""  # the fault_start detail as written

    @property
    def label(self) -> str:
        to = self.params.get("to")
        return f"{self.kind} {self.service}" + (f"->{to}" if to else "")

    @property
    def ran(self) -> bool:
        """False when it never took hold: skipped, or failed before it did anything (no lasted= nor took=)."""
        if self.outcome == "skipped":
            return False
        return not (self.outcome == "failed" and "lasted" not in self.params and "took" not in self.params)


def parse_detail(detail: str) -> tuple[list[str], dict[str, str], str]:
    """``kill backend id=0 n=1 outcome=ok took=0.1 reason=...`` -> (['kill', 'backend'], {id, n, ...}, reason).
    ``reason=`` comes last and runs to the end of the line (soak/faults.py)."""
    head, _, reason = f" {detail}".partition(" reason=")
    words, params = [], {}
    for token in head.split():
        key, eq, value = token.partition("=")
        if eq and key:
            params[key] = value
        else:
            words.append(token)
    return words, params, reason.strip()


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def fault_windows(run: Run) -> list[Fault]:
    """Every fault_start, paired with its fault_end by the words they share, in start order."""
    events = run.events
    rows = events[events["event"].isin((folder.FAULT_START, folder.FAULT_END)).to_numpy()]
    faults: list[Fault] = []
    ends = []
    for ts, event, detail in zip(rows["ts"], rows["event"], rows["detail"], strict=True):
        words, params, reason = parse_detail(str(detail))
        if len(words) < 2:  # no kind and service: not a fault this analysis knows
            continue
        key = (words[0], words[1], params.get("id", ""), params.get("n", ""))
        if event == folder.FAULT_START:
            faults.append(
                Fault(words[0], words[1], _int(params.get("id")), _int(params.get("n")), float(ts), params=params)
            )
            faults[-1].detail, faults[-1].params["key"] = str(detail), "|".join(key)
        else:
            ends.append((float(ts), "|".join(key), params, reason))
    # Matched by key, not by time: the two events of one fault come from two threads, a clock tick apart at worst.
    for ts, key, params, reason in ends:
        fault = next((f for f in faults if f.params.get("key") == key and f.end is None), None)
        if fault is not None:
            fault.end, fault.outcome, fault.reason = max(ts, fault.start), params.get("outcome", "ok"), reason
            fault.params.update(params)
    for fault in faults:
        fault.params.pop("key", None)
    return sorted(faults, key=lambda f: f.start)


def fault_spans(run: Run) -> list[tuple[float, float, float, str]]:
    """(start, end, window end, label) of each fault that took hold, for the bands on the report's time plots
    (plots.fault_bands). The window runs to recovery.time_max after the end, or to the next fault's start."""
    last = float(run.samples["ts"].max())
    time_max = float(run.settings.scenario.get("recovery", {}).get("time_max", 30.0))
    faults = [f for f in fault_windows(run) if f.ran]
    out = []
    for fault in faults:
        end = fault.end if fault.end is not None else last
        later = [f.start for f in faults if f.start > end]
        out.append((fault.start, end, min([end + time_max, *later]), fault.label))
    return out


class Counts:
    """Requests and failures per request name over time: the increments of the cumulative totals in Locust's
    history, so a window's count is exact to the second (Locust's per-second rates are 10-second averages)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for (_, name), group in frame.groupby(["Type", "Name"], sort=False):
            group = group.sort_values("Timestamp", kind="stable")
            ts = group["Timestamp"].to_numpy()
            steps = [_increments(group[c].to_numpy()) for c in ("Total Request Count", "Total Failure Count")]
            parts.setdefault(str(name), []).append((ts, *steps))
        for name, items in parts.items():
            self.rows[name] = tuple(np.concatenate([item[i] for item in items]) for i in range(3))  # type: ignore
        self.full = any(name != AGGREGATED for name in self.rows)  # per-name rows: --csv-full-history

    def between(self, name: str, start: float, end: float) -> tuple[int, int]:
        """(requests, failures) of ``name`` from ``start`` to ``end`` (and the report lag after it)."""
        if name not in self.rows:
            return 0, 0
        ts, requests, failures = self.rows[name]
        mask = self.mask(ts, [(start, end)])
        return int(requests[mask].sum()), int(failures[mask].sum())

    @staticmethod
    def mask(ts: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
        out = np.zeros(ts.size, dtype=bool)
        for start, end in windows:  # history times are whole seconds: the row of the second the fault began counts
            out |= (ts >= math.floor(start)) & (ts <= end + REPORT_LAG_S)
        return out

    def names(self) -> list[str]:
        return list(self.rows)


def _increments(total: np.ndarray) -> np.ndarray:
    """Per-row increments of a cumulative count; a drop is a stats reset, after which the total counts afresh."""
    steps = np.diff(total, prepend=0.0)
    return np.where(steps < 0, total, steps)


def read_counts(run: Run) -> tuple[Counts | None, str]:
    """The history's cumulative counts, or (None, why not). Only read for a run with faults: a day with full
    history is some 2 million rows."""
    path = run.path / folder.LOCUST_HISTORY
    if not path.exists():
        return None, f"no {folder.LOCUST_HISTORY}"
    try:
        frame = pd.read_csv(
            path,
            usecols=lambda c: str(c).strip() in HISTORY_COLUMNS,
            dtype={"Type": str, "Name": str},  # the counts as numbers (from strings, they take 5x longer)
            keep_default_na=False,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        return None, f"{folder.LOCUST_HISTORY} unreadable: {str(exc).strip().splitlines()[-1]}"
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in HISTORY_COLUMNS if c not in frame.columns and c != "Type"]
    if missing:
        return None, f"{folder.LOCUST_HISTORY} has no {missing[0]!r} column"
    if "Type" not in frame.columns:
        frame["Type"] = ""
    for column in ("Timestamp", "Total Request Count", "Total Failure Count"):
        if not pd.api.types.is_numeric_dtype(frame[column]):  # a torn or garbled row: that row is dropped
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=["Timestamp", "Total Request Count", "Total Failure Count"])
    if frame.empty:
        return None, f"{folder.LOCUST_HISTORY} has no rows"
    return Counts(frame), ""


def timeout_shares(run: Run) -> dict[str, float]:
    """Per request name: the share of its failures whose message says it timed out (locust_failures.csv holds
    messages but no times; the history holds times but no messages)."""
    if run.failures is None or run.failures.empty:
        return {}
    totals: dict[str, float] = {}
    timeouts: dict[str, float] = {}
    for name, error, count in run.failures[["Name", "Error", "Occurrences"]].itertuples(index=False):
        totals[str(name)] = totals.get(str(name), 0.0) + float(count)
        if TIMEOUT.search(str(error)):
            timeouts[str(name)] = timeouts.get(str(name), 0.0) + float(count)
    return {name: timeouts.get(name, 0.0) / total for name, total in totals.items() if total > 0}


def clock_time(seconds: float) -> str:
    """Time since load start to the second: '+9:05', '+1:02:03' ('-0:30' before it)."""
    sign = "-" if seconds < 0 else "+"
    minutes, secs = divmod(round(abs(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"{sign}{minutes}:{secs:02d}"


def check(status: str, reason: str, **figures: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, **figures}


def ledger_check(run: Run) -> dict[str, Any]:
    """Over the whole run, from locust_stats.csv: every message got exactly one complete reply sequence."""
    title = "delivery ledger: nothing lost, duplicated or out of order"
    if run.stats is None:
        return {"kind": "ledger", "title": title, **check("no data", f"no data: no {folder.LOCUST_STATS}")}
    names = run.stats["Name"].astype(str)
    requests, failures = run.stats["Request Count"], run.stats["Failure Count"]
    complete = int((requests - failures)[names == LEDGER_COMPLETE].sum())
    counts = {key: int(failures[names == name].sum()) for key, name in LEDGER.items()}
    figures = {"complete": complete, **counts}
    if complete == 0 and not any(counts.values()):
        reason = "no data: the users kept no delivery ledger (no 'ledger ...' requests in locust_stats.csv)"
        return {"kind": "ledger", "title": title, **check("no data", reason, **figures)}
    bad = sum(counts.values())
    text = f"{counts['lost']} lost, {counts['duplicate']} duplicated, {counts['order']} out of order"
    if bad:
        reason = f"{text} (and {complete} complete) over the run"
        return {"kind": "ledger", "title": title, **check("failed", reason, **figures)}
    reason = f"{complete} messages each got one complete reply sequence: none lost, duplicated or out of order"
    return {"kind": "ledger", "title": title, **check("passed", reason, **figures)}
