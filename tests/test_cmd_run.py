"""`soak run` end to end: the real embedded sut, the real sampler, a real headless Locust, the real analysis.

The leak-check pair is the proof, on every CI run, that the whole chain catches a real leak in a real process and
passes a clean one.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
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
    # Five minutes planned, but the early verdict confirms the leak within about a minute and, asked to, ends the
    # load there: the run is decided (failed), not incomplete.
    early = ["--set", "shape.duration=300s", "--set", "leaks.early_every=10s", "--set", "leaks.stop_on_confirmed=true"]
    done = soak("run", "leak-check", "--out", str(leaky), *early)
    assert done.returncode == 1, explain(done, leaky)
    verdict = json.loads((leaky / "verdict.json").read_text())
    assert verdict["status"] == "failed" and "stopped early" in verdict["status_reason"], verdict["status_reason"]
    leaking = {(item["service"], item["metric"]) for item in verdict["leaks"] if item["leaking"]}
    assert ("backend", "mem_rss_bytes") in leaking, verdict["leaks"]
    assert not any(service in ("auth", "agent", "locust") for service, _ in leaking), leaking
    assert "backend" in done.stdout and "mem_rss_bytes" in done.stdout  # the summary names it
    assert "leak confirmed (early verdict): backend mem_rss_bytes" in done.stdout, done.stdout
    names = events(leaky)
    assert names.index("leak_confirmed") < names.index("stopped_decided") < names.index("load_stop"), names
    backend = next(
        item for item in verdict["leaks"] if (item["service"], item["metric"]) == ("backend", "mem_rss_bytes")
    )
    assert 100_000 < backend["per_unit"]["message"] < 400_000, backend  # bytes kept per chat message: 200 KB written

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


def assert_incomplete(run: Path, output: str, returncode: int, *reason_words: str) -> dict:
    """The run is incomplete everywhere a person or a CI job looks: exit code, verdict, summary, banner, junit."""
    verdict = json.loads((run / "verdict.json").read_text())
    assert returncode == 3, output
    assert verdict["status"] == "incomplete" and verdict["passed"] is False, verdict.get("status_reason")
    for word in reason_words:
        assert word in verdict["status_reason"], verdict["status_reason"]
    assert "INCOMPLETE" in output, output[-2000:]
    assert "INCOMPLETE" in (run / "report.html").read_text()
    junit = (run / "junit.xml").read_text()
    assert "<failure" in junit and 'failures="0"' not in junit.split("<testcase", 1)[0]
    assert "Traceback" not in output
    return verdict


def test_sigterm_half_way_is_incomplete_and_never_green(tmp_path):
    run = tmp_path / "interrupted"
    proc = _start(run)
    _wait_for_event(run, "warmup_end", proc)
    proc.send_signal(signal.SIGTERM)
    output = _finish(proc, run)
    assert {"interrupted", "load_stop"} <= set(events(run))
    verdict = assert_incomplete(run, output, proc.returncode, "SIGTERM")
    assert verdict.get("interrupted") is True
    assert "interrupted" in (run / "report.html").read_text().lower()


def _finish(proc: subprocess.Popen, run: Path, timeout: float = 180) -> str:
    """The runner's output once it ends; past ``timeout`` it is killed and the failure shows what Locust was doing."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        said = proc.communicate()[0] or ""
    log = run / "locust.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else "(no locust.log)"
    raise AssertionError(f"soak run still running after {timeout:.0f} s\n{said[-3000:]}\nlocust.log:\n{tail}")


def _pid_of(output_so_far: list[str], service: str) -> int:
    for line in output_so_far:
        match = re.match(rf"^\s*{service}\s+http://\S+\s+pid (\d+)$", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no pid line for {service} in {output_so_far}")


def _read_until(proc: subprocess.Popen, needle: str, limit: float = 120) -> list[str]:
    lines: list[str] = []
    end = time.time() + limit
    while time.time() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed: {lines}")


def test_a_backend_killed_mid_run_stops_the_load_and_is_incomplete(tmp_path):
    run = tmp_path / "backend-killed"
    proc = _start(run, "--set", "health.down_max=4s", "--set", "phases.drain=3s")
    lines = _read_until(proc, "load:")
    backend = _pid_of(lines, "backend")
    _wait_for_event(run, "warmup_end", proc)
    os.kill(backend, signal.SIGKILL)
    started = time.time()
    output = _finish(proc, run)
    output = "\n".join(lines) + "\n" + output
    assert time.time() - started < 150, "the load went on against a dead backend"
    names = events(run)
    assert "service_down" in names and "stopped_early" in names, names
    verdict = assert_incomplete(run, output, proc.returncode, "backend")
    report = (run / "report.html").read_text()
    assert "backend" in report and "down" in report.lower()
    with (run / "samples.csv").open() as fh:
        health = [row for row in csv.DictReader(fh) if row["metric"] == "health_up" and row["service"] == "backend"]
    assert {row["value"] for row in health} == {"0", "1"}, "health was not sampled up and then down"
    assert verdict["status_reason"]


def test_a_load_generator_that_dies_makes_the_run_incomplete(tmp_path):
    run = tmp_path / "locust-killed"
    proc = _start(run, "--set", "phases.drain=3s")
    _wait_for_event(run, "warmup_end", proc)
    for pid in _locust_pids(run):
        os.kill(pid, signal.SIGKILL)
    output = _finish(proc, run)
    assert "load_generator_gone" in events(run)
    assert_incomplete(run, output, proc.returncode, "load generator")


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
    assert done.returncode == 3, done.stdout + done.stderr
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["status"] == "incomplete" and "killed" in verdict["status_reason"], verdict["status_reason"]
    assert done.stdout.strip().splitlines()[-1].startswith("INCOMPLETE"), done.stdout


@pytest.mark.parametrize("args", [["run", "smoke", "--host", "not a url", "--processes", "0"], ["run"]])
def test_run_usage_errors_exit_2(args, tmp_path):
    done = soak(*args, "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_a_target_that_is_not_there_is_refused_before_any_load(tmp_path):
    port = free_port()
    run = tmp_path / "r"
    started = time.time()
    done = soak(
        "run", "smoke", "--host", f"http://127.0.0.1:{port}", "--set", "health.start_timeout=2s", "--out", str(run)
    )
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"http://127.0.0.1:{port}/health" in line and "no load was sent" in line
    assert not run.exists()
    assert time.time() - started < 60


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--set", "shape.users=0"], "shape.users: must be above 0"),
        (["--set", "shape.duration=inf"], "shape.duration: not a finite duration"),
        (["--set", "shape.spawn_rate=inf"], "shape.spawn_rate"),
        (["--set", 'name="../../escape"'], "is not a folder name"),
        (["--set", 'target.services.backend="nosuchkind:1"'], "target.services"),
    ],
)
def test_bad_values_exit_2_before_anything_starts(extra, expected, tmp_path):
    run = tmp_path / "r"
    done = soak("run", "smoke", "--out", str(run), *extra, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not run.exists()
    assert not (ROOT / "escape").exists()


def test_out_naming_a_file_or_a_used_folder_exits_2(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    done = soak("run", "smoke", "--out", str(afile), timeout=60)
    assert done.returncode == 2 and "is not a folder" in done.stderr and "Traceback" not in done.stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "samples.csv").write_text("ts,service,metric,value\n")
    done = soak("run", "smoke", "--out", str(used), timeout=60)
    assert done.returncode == 2 and "not empty" in done.stderr and "Traceback" not in done.stderr


def test_a_load_generator_that_measured_nothing_makes_the_run_incomplete(tmp_path):
    # A real Locust that exits 0 at once (--version) leaves no statistics: the samples alone must not pass the run.
    run = tmp_path / "no-load"
    done = soak(
        "run", "smoke", "--out", str(run), "--set", "shape.duration=15s", "--set", "phases.warmup=2s",
        "--set", "phases.drain=2s", "--locust-arg=--version",
    )  # fmt: skip
    assert "load_generator_gone" in events(run)
    assert_incomplete(run, done.stdout, done.returncode, "load generator")
