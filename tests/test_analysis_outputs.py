"""The analysis as a value and its outputs: verdict.json's status and reason, the summary lines, junit.xml and the
report's banner, downtime and health timeline. A night that did not go to its end never reads green."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from analysis import analyze, analyze_and_write, exit_code, summary_lines
from analysis.formatting import fmt_rate
from analysis.metrics import NOT_JUDGED, metric_kind
from analysis.settings import read_settings
from analysis.synthetic import T0, build_run, timing_rows
from runspec import folder
from runspec.scenario import DEFAULT_LATENCY_TARGETS, SCHEMA
from runspec.units import MB
from soak.cli import main

HOUR = 3600.0
LOAD_START, LOAD_STOP, DRAIN_END = T0 + 60, T0 + HOUR - 120, T0 + HOUR
PHASES = [
    (LOAD_START, folder.LOAD_START, ""),
    (LOAD_START + 120, folder.WARMUP_END, ""),
    (LOAD_STOP, folder.LOAD_STOP, ""),
    (DRAIN_END, folder.DRAIN_END, ""),
]


def _run(tmp_path: Path, events=PHASES, backend_up=None, name: str = "run", leak: float = 0.0) -> Path:
    """An hour as `soak run` leaves it: memory, connections and 1 Hz health checks of two services, the exact timing
    record and Locust's totals. ``backend_up(ts)`` -> 0/1 replaces the backend's health (up throughout)."""
    rng = np.random.default_rng(7)
    ts = np.arange(T0, DRAIN_END, 5.0)
    hz = np.arange(T0, DRAIN_END, 1.0)
    loaded = (ts > LOAD_START) & (ts < LOAD_STOP)
    h = (ts - T0) / HOUR
    series = {}
    for service, base in (("backend", 200 * MB), ("auth", 100 * MB)):
        slope = leak * MB if service == "backend" else 0.0
        series[(service, "mem_rss_bytes")] = (ts, base + slope * h + 0.2 * MB * rng.normal(size=ts.size))
        series[(service, "tcp_established")] = (ts, np.where(loaded, 12.0, 2.0))
        up = backend_up(hz) if service == "backend" and backend_up is not None else np.ones(hz.size)
        series[(service, "health_up")] = (hz, up)
        # Growing health latency: judged as a leak it would fail; it must never be judged.
        series[(service, "health_latency_ms")] = (hz, 2 + 50 * (hz - T0) / HOUR)
    stamps = T0 + rng.uniform(300, LOAD_STOP - T0, 4000)
    rows = timing_rows(stamps, "WS", "ws round trip", rng.lognormal(np.log(12), 0.3, stamps.size))
    rows += timing_rows(stamps, "WS", "agent startup", rng.lognormal(np.log(100), 0.3, stamps.size))
    rows += timing_rows(stamps, "GET", "GET /api/threads", rng.lognormal(np.log(20), 0.3, stamps.size))
    locust = {
        ("WS", "ws round trip"): (4000, 0),
        ("WS", "agent startup"): (4000, 0),
        ("GET", "/api/threads"): (4000, 0),
    }
    return build_run(tmp_path / name, series, events=events, scenario={"name": "outputs"}, latency=rows, locust=locust)


def _junit(path: Path) -> tuple[ET.Element, list[ET.Element]]:
    suite = ET.parse(path / folder.JUNIT).getroot().find("testsuite")
    return suite, suite.findall("testcase")


def test_a_complete_run_is_unchanged(tmp_path, capsys):
    path = _run(tmp_path)
    assert main(["analyze", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("PASSED: ") and "INCOMPLETE" not in lines[-1]
    verdict = json.loads((path / folder.VERDICT).read_text())
    assert verdict["status"] == folder.PASSED and verdict["passed"] is True
    assert verdict["status_reason"].endswith("checks passed, 0 failed")
    assert verdict["downtime"] == [] and verdict["restarts"] == []
    suite, cases = _junit(path)
    assert len(cases) == len(verdict["checks"]) and suite.get("failures") == "0"
    assert all(c.get("name") != "run complete" for c in cases)


def test_a_killed_run_is_incomplete_everywhere(tmp_path, capsys):
    """kill -9 after the warm-up: no load_stop, no drain_end; every check that has data passes."""
    path = _run(tmp_path, events=PHASES[:2])
    assert main(["analyze", str(path)]) == 3 == folder.exit_code(folder.INCOMPLETE)
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("INCOMPLETE: killed: no load_stop in events.csv") and "checks passed" in last

    verdict = json.loads((path / folder.VERDICT).read_text())
    assert verdict["status"] == folder.INCOMPLETE and verdict["passed"] is False
    assert verdict["status_reason"].startswith("killed: no load_stop") and "\n" not in verdict["status_reason"]
    assert verdict["failed_checks"] == []  # the checks are judged on the data gathered, as before

    suite, cases = _junit(path)
    assert len(cases) == len(verdict["checks"]) + 1 and suite.get("failures") == "1"
    failure = next(c for c in cases if c.get("name") == "run complete").find("failure")
    assert failure is not None and failure.get("message") == verdict["status_reason"]

    assert main(["report", str(path)]) == 3
    out = capsys.readouterr().out
    assert out.startswith("INCOMPLETE: killed") and f"report written to {path / folder.REPORT}" in out
    page = (path / folder.REPORT).read_text(encoding="utf-8")
    assert '<header class="verdict incomplete"><h1>INCOMPLETE</h1>' in page
    assert "<title>INCOMPLETE: outputs" in page and "killed: no load_stop in events.csv" in page
    assert 'class="verdict passed"' not in page and "Every check passed." not in page
    css = page[page.find(".verdict.incomplete{") :].split("}")[0]
    assert "#2e7d32" not in css and "background:" in css  # its own colour, not the green of a pass


def test_a_service_down_and_not_back_is_listed_and_drawn(tmp_path):
    down_at = LOAD_START + 1500
    events = [*PHASES, (down_at, folder.SERVICE_DOWN, "backend: pid 4242 exited")]
    path = _run(tmp_path, events=sorted(events), backend_up=lambda t: (t < down_at).astype(float))
    analysis = analyze_and_write(path)
    verdict = analysis.verdict
    assert verdict["status"] == folder.INCOMPLETE and exit_code(analysis) == 3
    assert "backend down since +25 min and not back" in verdict["status_reason"]
    [down] = verdict["downtime"]
    assert down["service"] == "backend" and down["start"] == pytest.approx(down_at) and down["end"] is None
    page = (path / folder.REPORT).read_text(encoding="utf-8")
    section = page[page.find("<h2>Service health") : page.find("<h2>Services")]
    assert "backend" in section and "down at +25 min, not back" in section and "pid 4242 exited" in section
    assert 'alt="health of each service' in section and "data:image/png;base64," in section
    assert page.find("<h2>Latency") < page.find("<h2>Service health") < page.find("<h2>Services")
    assert "<th>downtime</th><td>backend down at +25 min, not back" in page


def test_restarts_replace_none_in_the_report(tmp_path):
    events = sorted([*PHASES, (LOAD_START + 900, folder.SERVICE_RESTART, "auth: new pid 77")])
    path = _run(tmp_path, events=events)
    analysis = analyze_and_write(path)
    assert analysis.status == folder.PASSED  # a restart it came back from is not an incomplete run
    assert analysis.verdict["restarts"] == [{"service": "auth", "ts": LOAD_START + 900, "detail": "new pid 77"}]
    page = (path / folder.REPORT).read_text(encoding="utf-8")
    assert "<th>service restarts</th><td>auth restarted at +15 min: new pid 77</td>" in page
    assert "<h2>Service health</h2>" in page and "restarted at +15 min" in page


def test_a_run_without_health_samples_or_outages_has_no_health_section(tmp_path):
    ts = np.arange(T0, T0 + HOUR, 5.0)
    path = build_run(tmp_path / "run", {("backend", "mem_rss_bytes"): (ts, 2e8 + 0 * ts)}, events=PHASES)
    analyze_and_write(path)
    page = (path / folder.REPORT).read_text(encoding="utf-8")
    assert "Service health" not in page and "<th>service restarts</th><td>none</td>" in page


def test_health_metrics_are_never_judged(tmp_path):
    assert {"health_up", "health_latency_ms"} <= NOT_JUDGED
    assert metric_kind("health_up") is None and metric_kind("health_latency_ms") is None
    path = _run(tmp_path)
    verdict = analyze(path).verdict
    assert not any(e["metric"].startswith("health_") for e in verdict["leaks"])
    assert {(e["service"], e["metric"]) for e in verdict["leaks"]} == {
        (s, m) for s in ("auth", "backend") for m in ("mem_rss_bytes", "tcp_established")
    }
    # A service sampled only for its health is listed, with no leak table and no crash.
    ts = np.arange(T0, T0 + HOUR, 1.0)
    only = build_run(tmp_path / "only", {("redis", "health_up"): (ts, np.ones(ts.size))}, events=PHASES)
    analysis = analyze_and_write(only)
    assert analysis.verdict["leaks"] == [] and "redis" in analysis.verdict["run"]["services"]


def test_failed_run_says_which_check_in_its_reason(tmp_path, capsys):
    path = _run(tmp_path, leak=8.0)
    assert main(["analyze", str(path)]) == 1
    verdict = json.loads((path / folder.VERDICT).read_text())
    assert verdict["status"] == folder.FAILED
    assert verdict["status_reason"] == f"1 of {len(verdict['checks'])} checks failed: backend mem_rss_bytes (leak)"
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAILED: ")


def test_summary_and_exit_code_take_an_analysis_or_a_verdict(tmp_path):
    analysis = analyze(_run(tmp_path, events=PHASES[:2]))
    assert summary_lines(analysis) == summary_lines(analysis.verdict)
    assert exit_code(analysis) == exit_code(analysis.verdict) == 3
    old = {"passed": False, "checks": [{"title": "x", "status": "failed", "reason": "r"}]}  # before statuses
    assert exit_code(old) == 1 and summary_lines(old)[-1] == "FAILED: 0 of 1 checks passed, 1 failed"


def test_settings_defaults_are_runspecs(tmp_path):
    settings = read_settings(tmp_path / "missing.toml")
    assert settings.found is False
    assert settings.latency_targets == DEFAULT_LATENCY_TARGETS
    assert settings.warmup_s == SCHEMA["phases"]["warmup"].default
    assert settings.memory_mb_per_hour == SCHEMA["leaks"]["memory_mb_per_hour"].default
    assert settings.error_rate_max == SCHEMA["targets"]["error_rate_max"].default


def test_one_mb_is_runspecs():
    assert MB == 2**20 and fmt_rate(3 * MB, "memory") == "3.0"
