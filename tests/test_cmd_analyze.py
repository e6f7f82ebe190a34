"""`soak analyze`: verdict.json as in DESIGN.md, junit.xml, the printed summary and exit codes 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from analysis.synthetic import T0, build_run
from soak.cli import main

MB = 1024.0 * 1024.0
HOUR = 3600.0
ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, leak_mb_per_hour: float = 0.0, name: str = "run", extra_events=(), slow_ms: float = 10.0):
    rng = np.random.default_rng(1)
    ts = np.arange(T0, T0 + 3 * HOUR, 10.0)
    h = (ts - T0) / HOUR
    series = {
        ("backend", "mem_rss_bytes"): (ts, 2e8 + leak_mb_per_hour * MB * h + 0.2 * MB * rng.normal(size=ts.size)),
        ("auth", "mem_rss_bytes"): (ts, 1e8 + 0.2 * MB * rng.normal(size=ts.size)),
        ("backend", "ws_connections_active"): (ts, np.where((ts > T0 + 60) & (ts < T0 + 2.9 * HOUR), 20.0, 0.0)),
    }
    events = [
        (T0 + 60, "load_start", ""),
        (T0 + 120, "warmup_end", ""),
        (T0 + 2.9 * HOUR, "load_stop", ""),
        (T0 + 3 * HOUR, "drain_end", ""),
        *extra_events,
    ]
    timings = [(T0 + 200 + i, "WS", "ws round trip", slow_ms + (i % 7), 1) for i in range(0, 10000, 5)]
    timings += [(T0 + 200 + i, "WS", "agent startup", 100.0 + (i % 9), 1) for i in range(0, 10000, 5)]
    timings += [(T0 + 200 + i, "GET", "GET /api/threads", 30.0 + (i % 11), 1) for i in range(0, 10000, 5)]
    locust = {
        ("WS", "ws round trip"): (2000, 0),
        ("WS", "agent startup"): (2000, 0),
        ("GET", "GET /api/threads"): (2000, 1),
    }
    return build_run(tmp_path / name, series, events=events, latency=timings, locust=locust, scenario={"name": "cli"})


def test_clean_run_exits_0_and_writes_verdict_as_designed(tmp_path, capsys):
    folder = _run(tmp_path)
    assert main(["analyze", str(folder)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("PASSED:")
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["passed"] is True and verdict["interrupted"] is False
    leak = next(e for e in verdict["leaks"] if e["service"] == "backend" and e["metric"] == "mem_rss_bytes")
    for key in ("service", "metric", "leaking", "slope_per_hour", "ci_low", "ci_high", "threshold_per_hour", "reason"):
        assert key in leak
    assert leak["threshold_per_hour"] == MB
    latency = verdict["latency"][0]
    for key in ("name", "percentile", "value_ms", "target_ms", "passed"):
        assert key in latency
    assert set(verdict["errors"]) >= {"rate", "max", "passed"}
    assert verdict["errors"]["rate"] == pytest.approx(1 / 6000)


def test_leak_exits_1_with_one_line_per_failed_check(tmp_path, capsys):
    folder = _run(tmp_path, leak_mb_per_hour=6.0, slow_ms=70.0)
    assert main(["analyze", str(folder)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    failed = [line for line in out if line.startswith("FAILED ")]
    assert any("backend mem_rss_bytes (leak)" in line and "MB/h" in line for line in failed)
    assert any("ws round trip p95 overall" in line for line in failed)
    assert out[-1].startswith("FAILED:")

    suite = ET.parse(folder / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    verdict = json.loads((folder / "verdict.json").read_text())
    assert len(cases) == len(verdict["checks"]) == int(suite.get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures) == len(failed)
    leak_case = next(c for c in cases if c.get("name") == "backend mem_rss_bytes (leak)")
    assert "MB/h" in leak_case.find("failure").get("message")


def test_interrupted_run_is_judged_and_flagged(tmp_path, capsys):
    folder = _run(tmp_path, extra_events=[(T0 + 2 * HOUR, "interrupted", "SIGTERM")])
    assert main(["analyze", str(folder)]) == 3  # incomplete: never 0 for a night that did not run to its end
    out = capsys.readouterr().out
    assert "interrupted" in out and out.splitlines()[-1].startswith("INCOMPLETE: ")
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["interrupted"] is True
    assert verdict["status"] == "incomplete" and verdict["passed"] is False and "SIGTERM" in verdict["status_reason"]


def test_baseline_regressions_are_flagged(tmp_path, capsys):
    base = _run(tmp_path, name="last-week")
    folder = _run(tmp_path, leak_mb_per_hour=6.0, slow_ms=30.0, name="tonight")
    main(["analyze", str(folder), "--baseline", str(base)])
    out = capsys.readouterr().out
    assert "REGRESSED backend mem_rss_bytes (leak)" in out
    assert "REGRESSED ws round trip p95 overall" in out
    baseline = json.loads((folder / "verdict.json").read_text())["baseline"]
    assert baseline["regressed"] is True and baseline["passed"] is True
    same = next(r for r in baseline["comparisons"] if r["check"] == "agent startup p95 overall")
    assert same["regressed"] is False


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "samples.csv: empty file"),
        ("ts,service,metric,value\n1,a,m,x\n", "row 2, column 'value'"),
        ("time,name\n1,2\n", "unknown format"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, expected):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "samples.csv").write_text(content, encoding="utf-8")
    assert main(["analyze", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert err.startswith("soak analyze: error: ")


def test_bad_baseline_is_exit_2(tmp_path, capsys):
    folder = _run(tmp_path)
    assert main(["analyze", str(folder), "--baseline", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_real_process_exit_codes(tmp_path):
    """The installed command, as CI calls it: 1 for a failed check, 2 for bad input (no traceback)."""
    leaking = _run(tmp_path, leak_mb_per_hour=6.0)
    command = [sys.executable, "-m", "soak", "analyze"]
    done = subprocess.run([*command, str(leaking)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "FAILED backend mem_rss_bytes (leak)" in done.stdout
    done = subprocess.run([*command, str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "no such run folder" in done.stderr and "Traceback" not in done.stderr
