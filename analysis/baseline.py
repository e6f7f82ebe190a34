"""Compare a run's verdict with a baseline run's (a nightly run against last week's) and flag regressions.

A regression is reported, not failed on: the targets decide pass or fail, the baseline says what got worse.
"""

from __future__ import annotations

import math
from typing import Any

from runspec.units import MB

LATENCY_RATIO = 1.10  # slower by more than 10% ...
LATENCY_MIN_MS = 1.0  # ... and by at least 1 ms
SLOPE_SHARE = 0.5  # a leak slope up by more than half its threshold
ERROR_RATIO = 1.5  # an error rate up by half ...
ERROR_MIN = 0.001  # ... and by at least 0.1 percentage point


def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _worse_status(current: str, base: str) -> bool:
    return current == "failed" and base == "passed"


def compare(current: dict[str, Any], base: dict[str, Any], base_path: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    base_leaks = {(e["service"], e["metric"], e["check"]): e for e in base["leaks"]}
    for entry in current["leaks"]:
        old = base_leaks.get((entry["service"], entry["metric"], entry["check"]))
        if old is None:
            continue
        title = f"{entry['service']} {entry['metric']} ({'leak' if entry['check'] == 'slope' else 'drain'})"
        if entry["check"] == "slope":
            now, then = _num(entry["slope_per_hour"]), _num(old["slope_per_hour"])
            threshold = _num(entry["threshold_per_hour"]) or 0.0
            scale, unit = (MB, " MB/h") if entry["kind"] == "memory" else (1.0, "/h")
            worse = now is not None and then is not None and now - then > SLOPE_SHARE * threshold
        else:
            now, then = _num(entry.get("level_after")), _num(old.get("level_after"))
            now = None if now is None else now - (_num(entry.get("level_before")) or 0.0)
            then = None if then is None else then - (_num(old.get("level_before")) or 0.0)
            scale, unit = 1.0, " left"
            worse = now is not None and then is not None and now > then
        worse = worse or _worse_status(entry["status"], old["status"])
        rows.append(_row(title, now, then, scale, unit, worse, entry["status"], old["status"]))
    base_latency = {(e["name"], e["percentile"], e["scope"]): e for e in base["latency"]}
    for entry in current["latency"]:
        old = base_latency.get((entry["name"], entry["percentile"], entry["scope"]))
        if old is None:
            continue
        now, then = _num(entry["value_ms"]), _num(old["value_ms"])
        worse = (
            now is not None and then is not None and now > then * LATENCY_RATIO and now - then >= LATENCY_MIN_MS
        ) or _worse_status(entry["status"], old["status"])
        title = f"{entry['name']} p{entry['percentile']:g} {entry['scope']}"
        rows.append(_row(title, now, then, 1.0, " ms", worse, entry["status"], old["status"]))
    now, then = _num(current["errors"].get("rate")), _num(base["errors"].get("rate"))
    worse = (now is not None and then is not None and now > then * ERROR_RATIO and now - then >= ERROR_MIN) or (
        _worse_status(current["errors"]["status"], base["errors"]["status"])
    )
    rows.append(_row("error rate", now, then, 0.01, "%", worse, current["errors"]["status"], base["errors"]["status"]))
    return {
        "run": base_path,
        "name": base["run"]["name"],
        "passed": base["passed"],
        "status": base.get("status", "passed" if base["passed"] else "failed"),
        "comparisons": rows,
        "regressions": [r for r in rows if r["regressed"]],
        "regressed": any(r["regressed"] for r in rows),
    }


def _fmt(value: float | None, scale: float, unit: str) -> str:
    return "n/a" if value is None else f"{value / scale:.3g}{unit}"


def _row(
    title: str, now: float | None, then: float | None, scale: float, unit: str, worse: bool, status: str, old: str
) -> dict[str, Any]:
    reason = f"{_fmt(now, scale, unit)} now, {_fmt(then, scale, unit)} in the baseline"
    if status != old:
        reason += f" ({old} -> {status})"
    return {
        "check": title,
        "current": now,
        "baseline": then,
        "status": status,
        "baseline_status": old,
        "regressed": bool(worse),
        "reason": reason,
    }
