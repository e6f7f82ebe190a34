"""Judge a run folder: leak, drain, latency and error checks -> verdict.json, junit.xml, an exit code.

A check is "passed", "failed" or "no data" (with a reason). "no data" never fails a run, with two exceptions that
guard against a green run that measured nothing: Locust output without timings for a target fails that target,
and a run in which no check at all could be judged fails.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis import leaks
from analysis.latency import failure_groups, judge_errors, judge_latency
from analysis.runfolder import Run, load_run

VERDICT_FILE = "verdict.json"
JUNIT_FILE = "junit.xml"
VERDICT_VERSION = 1


@dataclass
class Analysis:
    """The verdict plus what the report draws (fits per series, latency tables)."""

    run: Run
    verdict: dict[str, Any]
    fits: dict[tuple[str, str], leaks.Fit] = field(default_factory=dict)
    latency_info: dict[str, Any] = field(default_factory=dict)


def leak_window(run: Run) -> tuple[float, float, float, str]:
    """(judged from, judged to, time origin for messages, how the start was chosen) for the leak verdicts."""
    ts = run.samples["ts"]
    first, last = float(ts.min()), float(ts.max())
    load_start, warmup_end, load_stop = (run.first_event(e) for e in ("load_start", "warmup_end", "load_stop"))
    origin = load_start if load_start is not None else first
    if warmup_end is not None:
        start, how = warmup_end, "from warmup_end"
    elif load_start is not None:
        start, how = load_start, "from load_start, warm-up detected from the series"
    else:
        start, how = first, "from the first sample, warm-up detected from the series"
    end = load_stop if load_stop is not None and load_stop > start else last
    return start, end, origin, how


def _threshold(run: Run, service: str, metric: str, kind: str | None) -> float | None:
    """Per hour, in the metric's unit (bytes for memory); per-metric overrides for memory are given in MB."""
    table = run.settings.metric_thresholds
    for key in (f"{service}:{metric}", metric):
        if key in table:
            return table[key] * leaks.MIB if kind == "memory" else table[key]
    if kind == "memory":
        return run.settings.memory_mb_per_hour * leaks.MIB
    if kind == "count" and run.settings.count_per_hour > 0:
        return run.settings.count_per_hour
    return None


def _restarts(run: Run, service: str) -> list[float]:
    rows = run.events[run.events["event"] == "service_restart"]
    out = []
    for ts, detail in zip(rows["ts"], rows["detail"], strict=True):
        words = str(detail).replace(":", " ").replace("=", " ").split()
        if not words or service in words:
            out.append(float(ts))
    return out


def judge_leaks(run: Run) -> tuple[list[dict[str, Any]], dict[tuple[str, str], leaks.Fit], list[str], dict]:
    start, end, origin, how = leak_window(run)
    load_start, load_stop = run.first_event("load_start"), run.last_event("load_stop")
    drain_end = run.last_event("drain_end")
    frame = run.samples
    groups = frame.groupby(["service", "metric"], observed=True, sort=True).indices
    ts_all, values_all = frame["ts"].to_numpy(), frame["value"].to_numpy()
    results: list[dict[str, Any]] = []
    fits: dict[tuple[str, str], leaks.Fit] = {}
    ignored: list[str] = []
    generator: dict[str, Any] = {}
    for (service, metric), idx in groups.items():
        service, metric = str(service), str(metric)
        ts, values = ts_all[idx], values_all[idx]
        kind = leaks.metric_kind(metric)
        if service == leaks.LOAD_GENERATOR:
            generator[metric] = _generator_stats(ts, values, start, end, kind)
            continue
        if kind is None and not any(k in run.settings.metric_thresholds for k in (metric, f"{service}:{metric}")):
            continue
        if run.settings.ignored(service, metric):
            ignored.append(f"{service}:{metric}")
            continue
        threshold = _threshold(run, service, metric, kind)
        if threshold is not None:
            verdict = leaks.judge_slope(ts, values, threshold, kind or "", start, end, _restarts(run, service), origin)
            if verdict.fit is not None:
                fits[(service, metric)] = verdict.fit
            results.append(_leak_entry(service, metric, kind, "slope", verdict, threshold))
        if kind == "count":
            warm_from = start if metric in leaks.POOLED_COUNTS else None
            tolerance = run.settings.drain_tolerance
            verdict = leaks.judge_drain(ts, values, load_start, load_stop, drain_end, tolerance, warm_from)
            results.append(_leak_entry(service, metric, kind, "drain", verdict, None))
    window = {"from": start, "to": end, "how": how}
    return results, fits, ignored, {"generator": generator, "window": window}


def _generator_stats(ts: np.ndarray, values: np.ndarray, start: float, end: float, kind: str | None) -> dict:
    out: dict[str, Any] = {"max": float(np.nanmax(values)) if values.size else None}
    if kind == "memory":
        pick = (ts >= start) & (ts <= end)
        slope, low, high = leaks.leak_slope(ts[pick], values[pick])
        out.update(slope_per_hour=slope, ci_low=low, ci_high=high)
    return out


def _leak_entry(
    service: str, metric: str, kind: str | None, check: str, verdict: leaks.Judgement, threshold: float | None
) -> dict[str, Any]:
    status = "no data" if verdict.leaking is None else ("failed" if verdict.leaking else "passed")
    entry = {
        "service": service,
        "metric": metric,
        "kind": kind or "gauge",
        "check": check,
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


def _check(kind: str, title: str, status: str, reason: str) -> dict[str, Any]:
    return {"kind": kind, "title": title, "status": status, "reason": reason}


def flat_checks(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check in one list, in the order a person reads them: leaks, latency, errors."""
    checks = []
    for entry in verdict["leaks"]:
        what = "leak" if entry["check"] == "slope" else "drain"
        checks.append(_check(what, f"{entry['service']} {entry['metric']} ({what})", entry["status"], entry["reason"]))
    for entry in verdict["latency"]:
        title = f"{entry['name']} p{entry['percentile']:g} {entry['scope']}"
        checks.append(_check("latency", title, entry["status"], entry["reason"]))
    errors = verdict["errors"]
    checks.append(_check("errors", "error rate", errors["status"], errors["reason"]))
    return checks


def judge(run: Run) -> Analysis:
    leak_results, fits, ignored, extra = judge_leaks(run)
    latency_checks, latency_info = judge_latency(run)
    errors = judge_errors(run)
    verdict: dict[str, Any] = {
        "passed": True,
        "interrupted": bool(run.event_times("interrupted")),
        "leaks": leak_results,
        "latency": latency_checks,
        "errors": errors,
    }
    checks = flat_checks(verdict)
    if not any(c["status"] in ("passed", "failed") for c in checks):
        checks.append(_check("run", "something was measured", "failed", "measured nothing: no check had data"))
    verdict["checks"] = checks
    verdict["passed"] = not any(c["status"] == "failed" for c in checks)
    verdict["failed_checks"] = [c["title"] for c in checks if c["status"] == "failed"]
    verdict["ignored"] = ignored
    verdict["latency_table"] = latency_info.get("table", [])
    verdict["latency_window"] = latency_info.get("window_note", "")
    verdict["latency_buckets"] = latency_info.get("buckets", {})
    verdict["failures"] = failure_groups(run)
    verdict["load_generator"] = extra["generator"]
    verdict["leak_window"] = extra["window"]
    verdict["run"] = run_metadata(run)
    verdict["notes"] = list(run.notes)
    verdict["analysis"] = {
        "version": VERDICT_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    return Analysis(run=run, verdict=verdict, fits=fits, latency_info=latency_info)


def run_metadata(run: Run) -> dict[str, Any]:
    ts = run.samples["ts"]
    first, last = float(ts.min()), float(ts.max())
    load_start, load_stop = run.first_event("load_start"), run.last_event("load_stop")
    events = run.events
    restarts = events[events["event"] == "service_restart"]
    faults = [str(d) for d in events[events["event"] == "fault"]["detail"]]
    for key, value in run.settings.faults().items():
        text = f"{key}={value}"
        if not any(text in f or key in f for f in faults):
            faults.append(text)
    scenario = run.settings.scenario
    target = scenario.get("target", {}) if isinstance(scenario.get("target"), dict) else {}
    recorded = scenario.get("run", {}) if isinstance(scenario.get("run"), dict) else {}  # written by `soak run`
    return {
        "folder": str(run.path),
        "name": run.settings.name or run.path.name,
        "description": run.settings.description,
        "scenario_found": run.settings.found,
        "start": first,
        "end": last,
        "duration_s": last - first,
        "load_s": (load_stop - load_start) if load_start is not None and load_stop is not None else None,
        "target_host": target.get("host", "")
        or (recorded.get("host") and f"embedded sut at {recorded['host']}")
        or "embedded sut",
        "faults": faults,
        "restarts": [
            f"+{leaks.fmt_duration(t - (load_start if load_start is not None else first))} {d}".strip()
            for t, d in zip(restarts["ts"], restarts["detail"], strict=True)
        ],
        "services": sorted(str(s) for s in run.samples["service"].cat.categories),
        "meta": {**recorded, **run.meta},
    }


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(analysis: Analysis) -> None:
    path = analysis.run.path
    (path / VERDICT_FILE).write_text(json.dumps(json_safe(analysis.verdict), indent=1) + "\n", encoding="utf-8")
    write_junit(analysis.verdict, path / JUNIT_FILE)


def write_junit(verdict: dict[str, Any], path: Path) -> None:
    """One test case per check; a failed check is a <failure>, "no data" a <skipped>, each with its reason."""
    checks = verdict["checks"]
    failures = sum(c["status"] == "failed" for c in checks)
    skipped = sum(c["status"] == "no data" for c in checks)
    name = f"soak {verdict['run']['name']}"
    counts = {"tests": str(len(checks)), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    root = ET.Element("testsuites", name=name, **counts)
    suite = ET.SubElement(
        root,
        "testsuite",
        name=name,
        timestamp=verdict["analysis"]["generated_at"],
        hostname=verdict["analysis"]["host"],
        **counts,
    )
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"soak.{check['kind']}", name=check["title"], time="0")
        if check["status"] == "failed":
            ET.SubElement(case, "failure", message=check["reason"], type=check["kind"]).text = check["reason"]
        elif check["status"] == "no data":
            ET.SubElement(case, "skipped", message=check["reason"])
        else:
            ET.SubElement(case, "system-out").text = check["reason"]
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def exit_code(verdict: dict[str, Any]) -> int:
    """0 when every check passed (or had no data), 1 when one failed."""
    return 0 if verdict.get("passed") else 1


def summary_lines(verdict: dict[str, Any]) -> list[str]:
    """One line per failed check, then the overall line (what `soak analyze` prints)."""
    lines = [f"FAILED {c['title']}: {c['reason']}" for c in verdict["checks"] if c["status"] == "failed"]
    if verdict.get("interrupted"):
        lines.append("NOTE the run was interrupted (Ctrl-C/SIGTERM): judged on the data gathered")
    for regression in (verdict.get("baseline") or {}).get("regressions", []):
        lines.append(f"REGRESSED {regression['check']}: {regression['reason']}")
    total = len(verdict["checks"])
    failed = sum(c["status"] == "failed" for c in verdict["checks"])
    no_data = sum(c["status"] == "no data" for c in verdict["checks"])
    word = "PASSED" if verdict["passed"] else "FAILED"
    tail = f", {no_data} without data" if no_data else ""
    lines.append(f"{word}: {total - failed - no_data} of {total} checks passed, {failed} failed{tail}")
    return lines


OUTPUTS = (VERDICT_FILE, JUNIT_FILE, "report.html")
# The last analysis, so write_report right after analyze_run (what `soak run` does) does not judge the run twice.
_last: dict[str, Any] = {}


def _fingerprint(*folders: str | Path | None) -> tuple:
    """Identifies the inputs: each folder's files (not our outputs) with their size and modification time."""
    out: list[Any] = []
    for folder in folders:
        if folder is None:
            out.append(None)
            continue
        path = Path(folder).resolve()
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name not in OUTPUTS) if path.is_dir() else []
        out.append((str(path), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)))
    return tuple(out)


def analyze(
    run_dir: str | Path, baseline: str | Path | None = None, reuse: bool = False
) -> tuple[Analysis, Analysis | None]:
    """Load and judge a run (and its baseline), write verdict.json and junit.xml; return both analyses.

    ``reuse``: take the previous call's result when it judged the same, unchanged inputs (and drop it after).
    """
    from analysis.baseline import compare

    key = _fingerprint(run_dir, baseline)
    if reuse and _last.get("key") == key and (Path(run_dir) / VERDICT_FILE).exists():
        analysis, base = _last.pop("result")
        _last.clear()
        return analysis, base
    _last.clear()
    analysis = judge(load_run(run_dir))
    base = None
    if baseline is not None:
        base = judge(load_run(baseline))
        analysis.verdict["baseline"] = compare(analysis.verdict, base.verdict, str(baseline))
    write_outputs(analysis)
    if not reuse:
        _last.update(key=key, result=(analysis, base))
    return analysis, base


def analyze_run(run_dir: str | Path, baseline: str | Path | None = None) -> dict[str, Any]:
    """The verdict, as written to verdict.json; raises RunFolderError (one line) on bad input."""
    analysis, _ = analyze(run_dir, baseline)
    return json_safe(analysis.verdict)
