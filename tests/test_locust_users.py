"""Every user class, headless against the real sut (Redis, Postgres): every name has requests and no failures,
and the exact timing record agrees with Locust's own counts.

Locust runs as a subprocess (it monkey-patches with gevent); the sut runs as its three processes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

ROOT = Path(__file__).resolve().parent.parent
LOCUST = Path(sys.executable).parent / "locust"
SHAPED = ROOT / "locustfiles" / "shaped.py"

ALL_NAMES = {
    ("WS", "WS connect"),
    ("WS", "ws round trip"),
    ("WS", "agent startup"),
    ("WS", "agent complete"),
    ("WS", "upload processed"),
    ("WS", "fan-out lag"),
    ("WS", "rate limit"),
    ("WS", "reconnect replay"),
    ("WS", "ws token refresh"),
    ("WS", "ledger complete"),
    ("WS", "ws resend"),  # ReconnectingUser's losses before an ack
    ("POST", "POST /auth/login"),
    ("POST", "POST /auth/refresh"),
    ("POST", "POST /auth/upgrade"),
    ("GET", "GET /api/threads"),
    ("POST", "POST /api/threads"),
    ("GET", "GET /api/threads/{id}/messages"),
    ("POST", "POST /api/uploads"),
}
FAST_WAIT = {"wait_min": 0.2, "wait_max": 0.6}


def write_scenario(path: Path, users: dict[str, dict], shape: dict, sut: dict) -> Path:
    path.write_text(tomli_w.dumps({"sut": sut, "users": users, "shape": shape}), encoding="utf-8")
    return path


def run_locust(
    sut: Any,
    scenario: Path,
    run_dir: Path,
    extra: list[str] = (),
    stop_after: float | None = None,
    stop_signal: int = signal.SIGTERM,
    timeout: float = 120.0,
    during: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """The command the runner uses; with ``stop_after``, the signal is sent that many seconds after the load began;
    ``during`` is called (in this thread) once the load began, e.g. to inject a fault."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(LOCUST), "-f", str(SHAPED), "--headless", "--only-summary",
        "--host", sut.urls["backend"], "--auth-host", sut.urls["auth"],
        "--soak-scenario", str(scenario), "--soak-run-dir", str(run_dir), "--soak-sampler", "off",
        "--csv", str(run_dir / "locust"), "--csv-full-history", "--html", str(run_dir / "locust_report.html"),
        "--json-file", str(run_dir / "final"),  # Locust's stats at exit: its CSV is a snapshot taken every second
        *extra,
    ]  # fmt: skip
    # a session of its own: a test that fails half-way can kill --processes workers with their master
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        if during is not None:
            wait_for_load(run_dir, process)
            during()
        if stop_after is not None:
            wait_for_load(run_dir, process)
            try:
                process.wait(stop_after)
            except subprocess.TimeoutExpired:
                process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def wait_for_load(run_dir: Path, process: subprocess.Popen, limit: float = 30.0) -> None:
    """Until Locust's history shows users (it writes a row a second), so a signal never lands before its handlers."""
    deadline = time.monotonic() + limit
    history = run_dir / "locust_stats_history.csv"
    while time.monotonic() < deadline and process.poll() is None:
        if history.exists():
            with open(history, newline="") as file:
                if any(int(row["User Count"] or 0) > 0 for row in csv.DictReader(file)):
                    return
        time.sleep(0.2)


def locust_stats(run_dir: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(type, name) -> (requests, failures) as Locust counted them when it quit (its --json-file)."""
    entries = json.loads((run_dir / "final.json").read_text())
    return {(e["method"], e["name"]): (e["num_requests"], e["num_failures"]) for e in entries}


def latency_counts(run_dir: Path) -> Counter:
    counts: Counter = Counter()
    with open(run_dir / "latency.csv", newline="") as file:
        for row in csv.DictReader(file):
            counts[(row["type"], row["name"])] += int(row["count"])
    return counts


def failures(run_dir: Path) -> list[str]:
    with open(run_dir / "locust_failures.csv", newline="") as file:
        return [f"{row['Name']}: {row['Error']}" for row in csv.DictReader(file)]


def gc_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "samples.csv", newline="") as file:
        return [row for row in csv.DictReader(file) if row["service"] == "locust"]


@pytest.fixture
def sut(sut_factory, redis_url, database_url):
    # a short token lifetime forces refreshes mid-run; a 3-per-3-s limit lets RateLimitedUser finish cycles quickly
    return sut_factory(
        redis_url=redis_url,
        database_url=database_url,
        rate_limit=3,
        rate_window=3.0,
        access_token_ttl=6.0,
        agent_step=0.01,
    )


def test_every_user_class_on_a_clean_sut(sut, tmp_path):
    users = {
        "ChattingUser": {"weight": 1, **FAST_WAIT},
        "MultiTabUser": {"weight": 1, "tabs": 3, "reopen_every": 3, **FAST_WAIT},
        "UploadingUser": {"weight": 1, "sizes": [1024, 5 * 1024 * 1024], **FAST_WAIT},
        "RateLimitedUser": {"weight": 1, **FAST_WAIT},
        "ReconnectingUser": {"weight": 1, "drop_every": 2, **FAST_WAIT},
    }
    shape = {"kind": "steady", "users": 5, "spawn_rate": 5.0, "duration": 30.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {"rate_limit": 3, "rate_window": 3.0})
    run_dir = tmp_path / "run"

    result = run_locust(sut, scenario, run_dir)

    assert result.returncode == 0, result.stdout[-3000:]
    stats = locust_stats(run_dir)
    assert failures(run_dir) == [] and sum(failed for _, failed in stats.values()) == 0
    for key in sorted(ALL_NAMES):
        assert stats.get(key, (0, 0))[0] > 0, f"no requests named {key}"
    assert ("WS", "ws event") not in stats  # nothing foreign, repeated or malformed arrived
    # the exact record counts every successful request Locust counted, name by name
    assert latency_counts(run_dir) == Counter({key: ok - failed for key, (ok, failed) in stats.items()})
    rows = gc_rows(run_dir)
    generator_metrics = {"gc_pause_max_ms", "gc_pause_total_ms", "gc_collections"}
    generator_metrics |= {"hub_lag_max_ms", "hub_blocked_ms", "worker_cpu_max_percent"}
    assert {row["metric"] for row in rows} == generator_metrics
    assert sum(float(row["value"]) for row in rows if row["metric"] == "gc_collections") > 0
    assert (run_dir / "locust_report.html").stat().st_size > 0


def test_weight_zero_classes_do_not_spawn_and_sigterm_ends_cleanly(sut, tmp_path):
    users = {"ChattingUser": {"weight": 1, **FAST_WAIT}, "UploadingUser": {"weight": 0}}
    shape = {"kind": "steady", "users": 2, "spawn_rate": 10.0, "duration": 300.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {})
    run_dir = tmp_path / "run"

    result = run_locust(sut, scenario, run_dir, stop_after=6.0)

    assert result.returncode == 0, result.stdout[-3000:]
    stats = locust_stats(run_dir)
    assert stats[("WS", "agent complete")][0] > 0
    assert ("POST", "POST /api/uploads") not in stats
    # SIGTERM mid-shape still ends through Locust's normal way out: final counts written, HTML report saved
    assert latency_counts(run_dir)[("WS", "agent complete")] == stats[("WS", "agent complete")][0]
    assert (run_dir / "locust_report.html").exists()
