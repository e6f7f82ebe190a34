"""Faults during a run: each fault's window from events.csv, and the checks that judge it (recovery, no cascade,
a clear error and not a hang, no memory step after recovery), the delivery ledger over the run, and the error budget
counted outside the fault windows. Hand-made run folders (analysis.synthetic.fault_run) with known truth."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from analysis import analyze, analyze_and_write, exit_code
from analysis.faultevents import fault_windows, parse_detail
from analysis.runfolder import load_run
from analysis.synthetic import T0, fault_run
from runspec import folder

KILL = T0 + 600.0
FAULT_KINDS = {"faults", "recovery", "cascade", "clear error", "memory step", "ledger"}


def _checks(verdict: dict, kind: str) -> list[dict]:
    return [c for c in verdict["checks"] if c["kind"] == kind]


def _one(verdict: dict, kind: str) -> dict:
    (found,) = _checks(verdict, kind)
    return found


def _replace_faults(path: Path, rows: list[tuple[float, str, str]]) -> None:
    """events.csv with its fault events replaced by ``rows`` (appended out of time order, as threads may)."""
    with (path / folder.EVENTS).open(encoding="utf-8", newline="") as handle:
        kept = [r for r in csv.reader(handle) if r[1] not in (folder.FAULT_START, folder.FAULT_END)]
    with (path / folder.EVENTS).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows(kept + [[f"{ts:.3f}", event, detail] for ts, event, detail in rows])


def test_a_clean_recovery_passes(tmp_path):
    verdict = analyze(fault_run(tmp_path / "run")).verdict
    assert verdict["status"] == folder.PASSED, verdict["status_reason"]
    (fault,) = verdict["faults"]
    assert (fault["kind"], fault["service"], fault["outcome"]) == ("kill", "backend", "ok")
    assert fault["at_s"] == pytest.approx(540) and fault["length_s"] == pytest.approx(0.1)
    assert all(c["status"] == "passed" for c in fault["checks"].values()), fault["checks"]
    recovery = fault["checks"]["recovery"]
    # users were back 6-9 s after their first failure, 1 s after the kill: 7-10 s after it
    assert 6.5 < recovery["p95_s"] < 10 and recovery["timings"] == 10 and recovery["target_s"] == 30
    assert recovery["service_back_s"] == pytest.approx(5.9)
    assert fault["checks"]["cascade"]["stayed_up"] == ["agent", "auth"]
    assert fault["ledger"] == {"lost": 0, "duplicate": 0, "order": 0}
    assert fault["checks"]["clear_error"]["outages"] == 10 and fault["checks"]["clear_error"]["timeouts"] == 0
    kinds = {c["kind"] for c in verdict["checks"]}
    assert FAULT_KINDS <= kinds
    assert all(c["status"] == "passed" for c in verdict["checks"] if c["kind"] in FAULT_KINDS)
    assert _one(verdict, "recovery")["title"] == "kill backend (faults[0]): recovery"


def test_a_service_that_does_not_come_back_fails_recovery_and_the_run_is_incomplete(tmp_path):
    analysis = analyze(fault_run(tmp_path / "run", back=False))
    verdict = analysis.verdict
    recovery = _one(verdict, "recovery")
    assert recovery["status"] == "failed" and "backend did not come back" in recovery["reason"]
    assert "10 user outage(s) and no user recovered" in recovery["reason"]
    # analysis/status.py's rule composes: a service down at the end makes the run incomplete, whatever the checks
    assert verdict["status"] == folder.INCOMPLETE and "backend down since" in verdict["status_reason"]
    assert exit_code(analysis) == folder.exit_code(folder.INCOMPLETE)
    assert recovery["title"] in verdict["failed_checks"]


def test_lost_events_fail_the_ledger(tmp_path):
    verdict = analyze(fault_run(tmp_path / "run", lost=3)).verdict
    ledger = _one(verdict, "ledger")
    assert ledger["status"] == "failed" and ledger["lost"] == 3 and ledger["complete"] > 0
    assert verdict["faults"][0]["ledger"]["lost"] == 3  # and it is placed in the fault's window
    assert verdict["status"] == folder.FAILED


def test_a_cascade_fails(tmp_path):
    verdict = analyze(fault_run(tmp_path / "run", cascade=True)).verdict
    cascade = verdict["faults"][0]["checks"]["cascade"]
    assert cascade["status"] == "failed" and cascade["went_down"] == ["auth"] and cascade["stayed_up"] == ["agent"]
    assert "auth 10 s after it began" in cascade["reason"]
    assert _one(verdict, "cascade")["status"] == "failed"


def test_errors_in_the_window_do_not_eat_the_error_budget_outside_it(tmp_path):
    path = fault_run(tmp_path / "run", window_errors=400)
    verdict = analyze(path).verdict
    errors = verdict["errors"]
    assert errors["scope"] == "outside faults" and errors["status"] == "passed"
    assert errors["inside"]["failures"] >= 400 and errors["failures"] < 30
    assert "outside the fault windows" in errors["reason"] and "reported apart" in errors["reason"]
    assert verdict["faults"][0]["errors"]["failures"] >= 400
    # the same run counted whole would miss its 0.5% budget
    row = load_run(path).stats.iloc[-1]
    assert row["Failure Count"] / row["Request Count"] > 0.005
    # without the history the windows cannot be told apart: everything counts, and the reason says why
    (path / folder.LOCUST_HISTORY).unlink()
    verdict = analyze(path).verdict
    assert verdict["errors"]["scope"] == "whole run" and verdict["errors"]["status"] == "failed"
    assert f"no {folder.LOCUST_HISTORY}" in verdict["errors"]["reason"]
    assert verdict["faults"][0]["checks"]["clear_error"]["status"] == "no data"


def test_a_memory_step_that_stays_after_recovery_is_flagged(tmp_path):
    verdict = analyze(fault_run(tmp_path / "step", memory_step_mb=40)).verdict
    memory = verdict["faults"][0]["checks"]["memory_step"]
    assert memory["status"] == "failed" and "backend mem_rss_bytes 200 -> 240 MB" in memory["reason"]
    assert [s["service"] for s in memory["steps"] if s["flagged"]] == ["backend"]
    small = analyze(fault_run(tmp_path / "small", memory_step_mb=5)).verdict
    assert small["faults"][0]["checks"]["memory_step"]["status"] == "passed"


def test_timeouts_in_the_window_are_a_hang_not_a_clear_error(tmp_path):
    verdict = analyze(fault_run(tmp_path / "run", timeouts=5)).verdict
    clear = verdict["faults"][0]["checks"]["clear_error"]
    assert clear["status"] == "failed" and clear["timeouts"] == 5 and clear["outages"] == 10
    assert "timed out" in clear["reason"]


def test_a_run_without_faults_is_unchanged(tmp_path):
    plain = analyze(fault_run(tmp_path / "plain", faults=False)).verdict
    faulty = analyze(fault_run(tmp_path / "faulty")).verdict
    assert set(plain) == set(faulty) and plain["faults"] == []
    assert {c["kind"] for c in plain["checks"]} <= {"leak", "drain", "latency", "errors"}
    assert "scope" not in plain["errors"] and "inside" not in plain["errors"]
    assert "fault" not in plain["errors"]["reason"]
    assert plain["status"] == folder.PASSED


def test_fault_events_are_paired_by_their_words_whatever_their_order(tmp_path):
    path = fault_run(tmp_path / "run")
    _replace_faults(
        path,
        [
            (KILL + 0.1, folder.FAULT_END, "kill backend id=0 n=1 outcome=ok took=0.100"),
            (KILL, folder.FAULT_START, "kill backend id=0 n=1"),
            (T0 + 300, folder.FAULT_START, "cut backend id=1 n=1 mode=blackhole to=redis for=5"),
            (
                T0 + 300,
                folder.FAULT_END,
                "cut backend id=1 n=1 outcome=failed reason=no proxy on backend's redis connections",
            ),
            (T0 + 700, folder.FAULT_START, "restart auth id=2 n=1"),
        ],
    )
    faults = fault_windows(load_run(path))
    assert [f.label for f in faults] == ["cut backend->redis", "kill backend", "restart auth"]
    cut, kill, restart = faults
    assert not cut.ran and cut.reason == "no proxy on backend's redis connections"
    assert kill.ran and kill.end == pytest.approx(KILL + 0.1) and kill.params["took"] == "0.100"
    assert restart.end is None and restart.outcome == "unfinished"
    verdict = analyze(path).verdict
    assert verdict["faults"][0]["checks"]["recovery"]["status"] == "no data"
    assert "did not take hold (failed: no proxy" in verdict["faults"][0]["checks"]["recovery"]["reason"]
    assert _one(verdict, "faults")["reason"].startswith("2 of 3 fault(s) took hold")


def test_parse_detail_keeps_the_reason_whole():
    words, params, reason = parse_detail("restart auth id=2 n=1 outcome=failed took=61.0 reason=not healthy: a=b c")
    assert words == ["restart", "auth"] and params == {"id": "2", "n": "1", "outcome": "failed", "took": "61.0"}
    assert reason == "not healthy: a=b c"


def test_occurrences_of_one_fault_are_one_check_that_fails_if_any_does(tmp_path):
    path = fault_run(tmp_path / "run", cascade=True)
    _replace_faults(
        path,
        [
            (T0 + 300, folder.FAULT_START, "kill backend id=0 n=1"),
            (T0 + 300.1, folder.FAULT_END, "kill backend id=0 n=1 outcome=ok took=0.100"),
            (KILL, folder.FAULT_START, "kill backend id=0 n=2"),
            (KILL + 0.1, folder.FAULT_END, "kill backend id=0 n=2 outcome=ok took=0.100"),
        ],
    )
    verdict = analyze(path).verdict
    assert [f["n"] for f in verdict["faults"]] == [1, 2]
    cascade = _one(verdict, "cascade")
    assert cascade["status"] == "failed" and cascade["reason"].startswith("1 of 2 failed; the first at +9:00")


def test_planned_faults_that_never_started_fail(tmp_path):
    path = fault_run(tmp_path / "run")
    _replace_faults(path, [])
    verdict = analyze(path).verdict
    ran = _one(verdict, "faults")
    assert ran["status"] == "failed" and "nothing was tested" in ran["reason"]
    assert verdict["faults"] == [] and verdict["status"] == folder.FAILED


def test_fault_checks_reach_junit_and_the_report(tmp_path):
    path = fault_run(tmp_path / "run", lost=2)
    analyze_and_write(path)
    cases = ET.parse(path / folder.JUNIT).getroot().find("testsuite").findall("testcase")
    names = {c.get("name"): c for c in cases}
    assert names["delivery ledger: nothing lost, duplicated or out of order"].find("failure") is not None
    assert names["kill backend (faults[0]): recovery"].find("failure") is None
    page = (path / folder.REPORT).read_text(encoding="utf-8")
    assert "<h2>Faults</h2>" in page and "<b>kill backend</b>" in page and "+9:00" in page
    assert page.index("<h2>Faults</h2>") < page.index("<h2>Latency")
    assert "only the requests outside the fault windows count" in page
    saved = json.loads((path / folder.VERDICT).read_text())
    assert saved["faults"][0]["label"] == "kill backend" and saved["analysis"]["version"] == 3


def test_every_time_plot_gets_the_fault_bands(tmp_path, monkeypatch):
    from analysis import plots

    drawn = []
    real = plots.fault_bands
    monkeypatch.setattr(plots, "fault_bands", lambda ax, clock, faults: drawn.append(faults) or real(ax, clock, faults))
    analyze_and_write(fault_run(tmp_path / "run"))
    with_bands = [f for f in drawn if f]
    assert len(with_bands) >= 6  # latency x3, load, memory x3 (the health timeline is analysis/health.py's)
    assert all(f == [(KILL, KILL + 0.1, KILL + 30.1, "kill backend")] for f in with_bands)


def test_recovery_timings_never_count_as_api_latency(tmp_path):
    """The users may give 'ws recovery' any request type: seconds-long recoveries must not judge the api target."""
    path = fault_run(tmp_path / "run")
    before = {(c["name"], c["scope"]): c["value_ms"] for c in analyze(path).verdict["latency"]}
    record = path / folder.LATENCY
    record.write_text(record.read_text().replace(",WS,ws recovery,", ",GET,ws recovery,"))
    verdict = analyze(path).verdict
    after = {(c["name"], c["scope"]): c["value_ms"] for c in verdict["latency"]}
    assert after == before and verdict["status"] == folder.PASSED
    channels = {r["name"]: r for r in verdict["latency_table"] if r["type"] == "channel"}
    assert channels["HTTP"]["max"] < 1000 and channels["WS"]["max"] < 1000
    assert any(r["name"] == "ws recovery" and r["max"] > 6000 for r in verdict["latency_table"])
