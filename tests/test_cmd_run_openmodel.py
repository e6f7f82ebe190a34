"""Coordinated omission, end to end with the real sut and a real Locust: the backend's event loop really freezes
(``freeze_for``), and in the open model the round trip timed from the intended send shows the freeze while the one
timed from the actual send understates it; a closed-model report warns about it. A load generator really starved
of CPU (stopped and continued in turn, as a CPU quota would) makes the run invalid, not passed."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from analysis.latency import weighted_percentiles

FREEZE = """
description = "the backend's event loop freezes 500 ms every 2.5 s; users send on schedule"

[sut]
agent_step = "0.002s"
freeze_for = "0.5s"
freeze_every = "2.5s"

[users.ChattingUser]
weight = 1

[shape]
kind = "steady"
users = 4
spawn_rate = 4
duration = "30s"

[phases]
warmup = "5s"
drain = "3s"

[arrival]
rate = 40.0
rest_rate = 40.0
max_in_flight = 1
max_late = "2s"

[[targets.latency]]
name = "ws round trip"
percentile = 95.0
max_ms = 100.0

[generator]
share_max = 1.0  # this run judges the two views of the round trip; a busy CI machine's generator is another test's
"""


def soak(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def timings(run: Path, name: str) -> tuple[list[float], list[int]]:
    with (run / "latency.csv").open() as fh:
        rows = [row for row in csv.DictReader(fh) if row["name"] == name]
    pairs = sorted((float(row["ms"]), int(row["count"])) for row in rows)
    return [ms for ms, _ in pairs], [count for _, count in pairs]


def p95(run: Path, name: str) -> float:
    import numpy as np

    ms, counts = timings(run, name)
    assert ms, f"no {name!r} timings"
    return weighted_percentiles(np.array(ms), np.array(counts), [95.0])[0]


def test_a_frozen_loop_shows_from_the_intended_time_and_hides_from_the_send(tmp_path):
    scenario, run = tmp_path / "freeze.toml", tmp_path / "freeze"
    scenario.write_text(FREEZE)
    done = soak("run", str(scenario), "--out", str(run))
    verdict = json.loads((run / "verdict.json").read_text())
    intended, from_send = p95(run, "ws round trip"), p95(run, "ws round trip (from send)")
    # a message due during a freeze waits for it (its slot is taken), then leaves late and is answered at once
    assert intended > 100.0, (intended, from_send)
    assert from_send < intended / 3, (intended, from_send)
    assert verdict["status"] == "failed", verdict["status_reason"]
    assert any(c["title"].startswith("ws round trip p95") and c["status"] == "failed" for c in verdict["checks"])
    # the REST calls keep their own schedule through the same freeze: the same two views, the same gap
    history = "GET /api/threads/{id}/messages"
    rest_intended, rest_from_send = p95(run, history), p95(run, history + " (from send)")
    assert rest_intended > 100.0, (rest_intended, rest_from_send)
    assert rest_from_send < rest_intended / 3, (rest_intended, rest_from_send)
    model = verdict["load_model"]
    assert model["model"] == "open" and model["sent"] > 0 and model["achieved_rate"] > 20, model
    assert model["rest"]["sent"] > 0 and model["rest"]["achieved_rate"] > 20, model
    assert "open model" in (run / "report.html").read_text()
    assert done.returncode == 1, done.stdout[-3000:]


STOPPED_S, RUNNING_S = 0.3, 0.2  # the load generator gets 40% of the time it asks for


def _throttle(pids: list[int], until: threading.Event) -> None:
    """Stop and continue Locust's processes in turn, as a CPU quota (a cgroup's cpu.max) or a host stealing the
    core would: whatever the process wants to do waits, and its hub wakes late. Always leaves them running."""
    try:
        while not until.is_set():
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            until.wait(STOPPED_S)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            until.wait(RUNNING_S)
    except ProcessLookupError:
        pass
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_a_load_generator_starved_of_cpu_makes_the_run_invalid(tmp_path):
    run = tmp_path / "starved"
    proc = subprocess.Popen(
        [sys.executable, "-m", "soak", "run", "smoke", "--out", str(run), "--set", "shape.duration=50s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    done = threading.Event()
    throttler = None
    try:
        pids: list[int] = []
        for _ in range(240):  # Locust starts within a minute or two, even on a busy machine
            if pids or proc.poll() is not None:
                break
            found = subprocess.run(["pgrep", "-f", f"soak-run-dir {run}"], capture_output=True, text=True).stdout
            pids = [int(pid) for pid in found.split()]
            done.wait(0.5)
        assert pids, "Locust did not start"
        throttler = threading.Thread(target=_throttle, args=(pids, done), daemon=True)
        throttler.start()
        output, _ = proc.communicate(timeout=300)
    finally:
        done.set()
        if throttler is not None:
            throttler.join(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["status"] == "invalid", (verdict["status_reason"], verdict["generator"])
    assert proc.returncode == 4, output[-3000:]
    assert "load generator fell behind" in verdict["status_reason"] and "hub blocked" in verdict["status_reason"]
    assert "INVALID" in output
    report = (run / "report.html").read_text()
    assert "coordinated omission" in report  # a closed-model run says what its percentiles may hide
    assert "fell behind" in report
