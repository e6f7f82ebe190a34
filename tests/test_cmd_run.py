"""`soak run` end to end: the real embedded sut, the real sampler, a real headless Locust, the real analysis.

The leak-check pair is the proof, on every CI run, that the whole chain catches a real leak in a real process and
passes a clean one.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

RUN_FILES = [
    "scenario.toml",
    "samples.csv",
    "events.csv",
    "latency.csv",
    "locust_stats.csv",
    "locust_stats_history.csv",
    "locust_failures.csv",
    "locust_report.html",
    "verdict.json",
    "junit.xml",
    "report.html",
]


def soak(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def events(run: Path) -> list[str]:
    with (run / "events.csv").open() as fh:
        return [row["event"] for row in csv.DictReader(fh)]


def sampled(run: Path) -> set[tuple[str, str]]:
    with (run / "samples.csv").open() as fh:
        return {(row["service"], row["metric"]) for row in csv.DictReader(fh)}


def explain(done: subprocess.CompletedProcess, run: Path) -> str:
    log = run / "locust.log"
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no locust.log)"
    return (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}\nlocust.log:\n{tail}"
    )


def test_smoke_run_passes_and_leaves_every_file(tmp_path):
    run = tmp_path / "smoke"
    done = soak("run", "smoke", "--out", str(run))
    assert done.returncode == 0, explain(done, run)
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, f"{name} missing or empty"
    order = events(run)
    phases = [e for e in order if e in ("load_start", "warmup_end", "load_stop", "drain_end")]
    assert phases == ["load_start", "warmup_end", "load_stop", "drain_end"]
    seen = sampled(run)
    for service in ("auth", "backend", "agent", "locust"):
        assert (service, "mem_rss_bytes") in seen, f"{service} memory was not sampled"
    assert ("backend", "ws_connections_active") in seen  # from the sut's /metrics
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["passed"] is True
    measured = {item["name"]: item for item in verdict["latency"] if item.get("scope", "overall") == "overall"}
    for name in ("api", "ws round trip", "agent startup"):
        assert measured[name]["value_ms"] is not None and measured[name]["passed"] is True, measured[name]
    assert "report:" in done.stdout and "PASSED" in done.stdout


def test_leak_check_fails_naming_backend_memory_and_clean_twin_passes(tmp_path):
    leaky, clean = tmp_path / "leaky", tmp_path / "clean"
    done = soak("run", "leak-check", "--out", str(leaky))
    assert done.returncode == 1, explain(done, leaky)
    verdict = json.loads((leaky / "verdict.json").read_text())
    leaking = {(item["service"], item["metric"]) for item in verdict["leaks"] if item["leaking"]}
    assert ("backend", "mem_rss_bytes") in leaking, verdict["leaks"]
    assert not any(service in ("auth", "agent", "locust") for service, _ in leaking), leaking
    assert "backend" in done.stdout and "mem_rss_bytes" in done.stdout  # the summary names it

    done = soak("run", "leak-check-clean", "--out", str(clean))
    assert done.returncode == 0, explain(done, clean) + json.dumps(
        json.loads((clean / "verdict.json").read_text()) if (clean / "verdict.json").exists() else {}, indent=1
    )


def _start(run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "soak", "run", "smoke", "--out", str(run), "--set", "shape.duration=300s", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def _wait_for_event(run: Path, event: str, proc: subprocess.Popen, limit: float = 120) -> None:
    end = time.time() + limit
    while time.time() < end:
        if (run / "events.csv").exists() and event in events(run):
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    raise AssertionError(f"no {event} event within {limit} s")


def test_sigterm_half_way_still_analyses_and_says_interrupted(tmp_path):
    run = tmp_path / "interrupted"
    proc = _start(run)
    _wait_for_event(run, "warmup_end", proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode in (0, 1), output
    assert {"interrupted", "load_stop"} <= set(events(run))
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict.get("interrupted") is True
    assert "interrupted" in (run / "report.html").read_text().lower()
    assert "Traceback" not in output


def _locust_pids(run: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"soak-run-dir {run}"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_kill_9_leaves_a_folder_that_analyses_and_no_orphans(tmp_path):
    run = tmp_path / "killed"
    proc = _start(run)
    _wait_for_event(run, "load_start", proc)
    time.sleep(8)
    os.kill(proc.pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=30)
    sut_pids = [int(line.rsplit("pid", 1)[1]) for line in output.splitlines() if " pid " in line]
    assert len(sut_pids) == 3, output
    # The sut and Locust die with the runner (PR_SET_PDEATHSIG), however it died; Locust stops gracefully on the
    # SIGTERM it gets, within its stop timeout.
    end = time.time() + 45
    while time.time() < end and (alive := [pid for pid in sut_pids + _locust_pids(run) if psutil.pid_exists(pid)]):
        time.sleep(0.5)
    assert not alive, f"processes outlived the runner: {alive}"
    done = soak("analyze", str(run))
    assert done.returncode in (0, 1), done.stderr
    assert (run / "verdict.json").exists()


@pytest.mark.parametrize("args", [["run", "smoke", "--host", "not a url", "--processes", "0"], ["run"]])
def test_run_usage_errors_exit_2(args, tmp_path):
    done = soak(*args, "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
