"""Judge a run folder: leak, drain, latency and error checks, and the run's status -> the verdict (an Analysis).

A check is "passed", "failed" or "no data" (with a reason). "no data" never fails a run, with two exceptions that
guard against a green run that measured nothing: Locust output without timings for a target fails that target,
and a run in which no check at all could be judged fails.

The status says whether the night can be trusted at all: ``incomplete`` when the run did not go to its end
(interrupted, killed, a service down and not back, the load generator gone; analysis/status.py says which), else
``passed`` or ``failed`` from the checks. A service the OOM killer ended makes the run ``failed``, its status reason
naming the kill (analysis/oom.py). The exit code follows the status (runspec.folder.exit_code).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.faults import judge_faults
from analysis.formatting import fmt_duration
from analysis.generator import judge_generator, load_model
from analysis.groups import group_indices
from analysis.growth import Fit
from analysis.latency import failure_groups, judge_errors, judge_latency
from analysis.leaks import judge_leaks
from analysis.oom import oom_kills
from analysis.placement import read_placement
from analysis.runfolder import Run, load_run
from analysis.status import run_status
from runspec import folder

VERDICT_VERSION = 3  # 2: status, status_reason, downtime, restarts; 3: faults, errors outside fault windows
# (keys added since, without a new version: leaks[].rule, growth_since*, per_unit, work_per_hour, floor_*, oom_kills,
# placement)


@dataclass
class Analysis:
    """One judged run: the verdict (exactly what verdict.json holds) plus what the report draws (fits per series,
    latency tables) and, when compared, the baseline's own Analysis."""

    run: Run
    verdict: dict[str, Any]
    fits: dict[tuple[str, str], Fit] = field(default_factory=dict)
    latency_info: dict[str, Any] = field(default_factory=dict)
    baseline: Analysis | None = None
    series: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # samples' rows per (service, metric)

    @property
    def status(self) -> str:
        return self.verdict["status"]

    @property
    def passed(self) -> bool:
        return self.verdict["passed"]


def _check(kind: str, title: str, status: str, reason: str) -> dict[str, Any]:
    return {"kind": kind, "title": title, "status": status, "reason": reason}


def flat_checks(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """The leak, latency and error checks in one list, in the order a person reads them (the fault checks,
    analysis/faults.py, follow them in verdict["checks"])."""
    checks = []
    for entry in verdict["leaks"]:
        # A count is titled by the rule that judged it (drain, zero after drain, count trend): they read differently.
        what = "leak" if entry["check"] == "slope" else "drain"
        named = what if entry["check"] == "slope" else entry.get("rule", what)
        checks.append(_check(what, f"{entry['service']} {entry['metric']} ({named})", entry["status"], entry["reason"]))
    for entry in verdict["latency"]:
        title = f"{entry['name']} p{entry['percentile']:g} {entry['scope']}"
        checks.append(_check("latency", title, entry["status"], entry["reason"]))
    errors = verdict["errors"]
    checks.append(_check("errors", "error rate", errors["status"], errors["reason"]))
    return checks


def check_counts(checks: list[dict[str, Any]]) -> str:
    """'20 of 24 checks passed, 1 failed, 3 without data': the summary line's and a passed run's reason."""
    total = len(checks)
    failed = sum(c["status"] == "failed" for c in checks)
    no_data = sum(c["status"] == "no data" for c in checks)
    tail = f", {no_data} without data" if no_data else ""
    return f"{total - failed - no_data} of {total} checks passed, {failed} failed{tail}"


def _status(
    complete: bool,
    incomplete_reason: str,
    checks: list[dict[str, Any]],
    decided: str = "",
    invalid: str = "",
    oom: str = "",
) -> tuple[str, str]:
    """(status, one-line reason): incomplete whatever the checks say, then invalid when the load generator fell
    behind (``invalid``: why; the figures describe the client, not the target), else failed when a check failed.

    A run stopped early on a confirmed leak (``decided``) is failed when the final verdict fails too; when no check
    fails on the data it has, the stop was not borne out, and the run did not go to its end: incomplete."""
    if not complete:
        return folder.INCOMPLETE, incomplete_reason or "the run did not go to its end"
    if oom:  # a service the OOM killer ended (``oom``: the first kill, said): failed, however the rest went
        failed_count = sum(c["status"] == "failed" for c in checks)
        return folder.FAILED, f"{oom}; {failed_count} of {len(checks)} checks failed"
    if invalid:
        return folder.INVALID, invalid
    failed = [c["title"] for c in checks if c["status"] == "failed"]
    if failed:
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        why = f"{len(failed)} of {len(checks)} checks failed: {failed[0]}{more}"
        return folder.FAILED, f"{why} ({decided})" if decided else why
    if decided:
        return folder.INCOMPLETE, f"{decided}, but no check failed on the data gathered"
    return folder.PASSED, check_counts(checks)


def judge(run: Run) -> Analysis:
    series = group_indices(run.samples, "service", "metric")  # once: the leak checks and the figures use it
    leak_results, fits, ignored, extra = judge_leaks(run, series)
    latency_checks, latency_info = judge_latency(run)
    state = run_status(run)
    placement = read_placement(run.path, run.notes)
    ooms = oom_kills(run, series, placement)
    faults = judge_faults(run, state.downtime, series)  # nothing for a run without faults
    errors = judge_errors(run, faults.inside)
    generator = judge_generator(run, series)
    verdict: dict[str, Any] = {
        "passed": True,
        "status": folder.PASSED,
        "status_reason": "",
        "interrupted": bool(run.event_times(folder.INTERRUPTED)),
        "leaks": leak_results,
        "latency": latency_checks,
        "errors": errors,
        "faults": faults.faults,
    }
    oom_checks = [_check("oom", f"{kill['service']} OOM kill", "failed", kill["reason"]) for kill in ooms]
    checks = oom_checks + flat_checks(verdict) + faults.checks
    if not any(c["status"] in ("passed", "failed") for c in checks):
        checks.append(_check("run", "something was measured", "failed", "measured nothing: no check had data"))
    verdict["checks"] = checks
    invalid = generator.reason if generator.invalid else ""
    verdict["status"], verdict["status_reason"] = _status(
        state.complete, state.reason, checks, state.decided, invalid, _oom_reason(ooms)
    )
    verdict["passed"] = verdict["status"] == folder.PASSED
    verdict["failed_checks"] = [c["title"] for c in checks if c["status"] == "failed"]
    verdict["downtime"] = list(state.downtime)
    verdict["oom_kills"] = ooms
    verdict["placement"] = placement
    verdict["restarts"] = list(state.restarts)
    verdict["ignored"] = ignored
    verdict["latency_table"] = latency_info.get("table", [])
    verdict["latency_window"] = latency_info.get("window_note", "")
    verdict["latency_buckets"] = latency_info.get("buckets", {})
    verdict["failures"] = failure_groups(run)
    verdict["load_generator"] = extra["generator"]
    verdict["generator"] = generator.as_dict()
    verdict["load_model"] = load_model(run)
    verdict["leak_window"] = extra["window"]
    verdict["run"] = run_metadata(run)
    verdict["notes"] = list(run.notes)
    verdict["analysis"] = {
        "version": VERDICT_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    return Analysis(run=run, verdict=json_safe(verdict), fits=fits, latency_info=latency_info, series=series)


def _oom_reason(ooms: list[dict[str, Any]]) -> str:
    """The first OOM kill, said, and how many more there were."""
    if not ooms:
        return ""
    more = f" ({len(ooms)} OOM kills in all)" if len(ooms) > 1 else ""
    return ooms[0]["reason"] + more


def run_metadata(run: Run) -> dict[str, Any]:
    ts = run.samples["ts"]
    first, last = float(ts.min()), float(ts.max())
    load_start, load_stop = run.first_event(folder.LOAD_START), run.last_event(folder.LOAD_STOP)
    events = run.events
    restarts = events[events["event"] == folder.SERVICE_RESTART]
    faults = [str(d) for d in events[events["event"] == folder.FAULT]["detail"]]
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
            f"+{fmt_duration(t - (load_start if load_start is not None else first))} {d}".strip()
            for t, d in zip(restarts["ts"], restarts["detail"], strict=True)
        ],
        "services": sorted(str(s) for s in run.samples["service"].cat.categories),
        "meta": {**recorded, **run.meta},
    }


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def analyze(run_dir: str | Path, baseline: Analysis | str | Path | None = None) -> Analysis:
    """Load and judge a run folder (and compare it with a baseline: an Analysis or a run folder); writes nothing.
    Raises RunFolderError (one line) on bad input, in either folder."""
    from analysis.baseline import compare

    analysis = judge(load_run(run_dir))
    if baseline is not None:
        base = baseline if isinstance(baseline, Analysis) else judge(load_run(baseline))
        where = str(base.run.path) if isinstance(baseline, Analysis) else str(baseline)
        analysis.verdict["baseline"] = json_safe(compare(analysis.verdict, base.verdict, where))
        analysis.baseline = base
    return analysis


def write_verdict(analysis: Analysis) -> Path:
    """verdict.json in the run folder."""
    path = analysis.run.path / folder.VERDICT
    path.write_text(json.dumps(analysis.verdict, indent=1) + "\n", encoding="utf-8")
    return path


def _verdict(analysis_or_verdict: Analysis | dict[str, Any]) -> dict[str, Any]:
    if isinstance(analysis_or_verdict, Analysis):
        return analysis_or_verdict.verdict
    return analysis_or_verdict


def exit_code(analysis_or_verdict: Analysis | dict[str, Any]) -> int:
    """0 passed, 1 failed, 3 incomplete, 4 invalid (runspec.folder.exit_code; 2, bad input, is raised earlier).
    A verdict from before statuses existed: 0 when every check passed, else 1."""
    verdict = _verdict(analysis_or_verdict)
    status = verdict.get("status") or (folder.PASSED if verdict.get("passed") else folder.FAILED)
    return folder.exit_code(status)


def summary_lines(analysis_or_verdict: Analysis | dict[str, Any]) -> list[str]:
    """One line per failed check, then the overall line (what `soak analyze` prints): 'STATUS: ...'. The overall
    line of a run that is not passed or failed names why first ('INCOMPLETE: killed: ...; 20 of 24 checks ...')."""
    verdict = _verdict(analysis_or_verdict)
    status = verdict.get("status") or (folder.PASSED if verdict.get("passed") else folder.FAILED)
    lines = [f"FAILED {c['title']}: {c['reason']}" for c in verdict["checks"] if c["status"] == "failed"]
    if verdict.get("interrupted") and status != folder.INCOMPLETE:
        lines.append("NOTE the run was interrupted (Ctrl-C/SIGTERM): judged on the data gathered")
    for regression in (verdict.get("baseline") or {}).get("regressions", []):
        lines.append(f"REGRESSED {regression['check']}: {regression['reason']}")
    why = "" if status in (folder.PASSED, folder.FAILED) else f"{verdict.get('status_reason', '')}; "
    lines.append(f"{status.upper()}: {why}{check_counts(verdict['checks'])}")
    return lines
