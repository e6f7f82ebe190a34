"""`soak run` with faults on the clock, end to end: the real embedded sut (supervised), real nftables cuts on
loopback, a real headless Locust whose users reconnect by themselves, and the real analysis. Then nothing is left
behind: no nft table of ours, no proxy thread, no child process, whether the runner ended or was killed."""

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

from soak import netcut
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        not netcut.available() and not os.environ.get("CI"),
        reason=f"nftables not usable here: {netcut.unavailable_reason()}",
    ),
    # these look at every nft table on the machine: one pytest-xdist worker runs all the tests that make them
    pytest.mark.xdist_group("nft"),
]


def soak(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def our_tables() -> list[str]:
    """The chat_soak_ tables left behind: those of a dead process (a runner that ended or was killed) and those of
    this test's own processes. A live process outside this test (pids wrap at 32768 here) is not ours to judge;
    it is named, so a failure says whose table it was."""
    mine = {psutil.Process().pid} | {child.pid for child in psutil.Process().children(recursive=True)}
    left = []
    for name in netcut.tables():
        match = netcut.TABLE_PATTERN.match(name)
        pid = int(match.group(1)) if match else -1
        if pid in mine or not psutil.pid_exists(pid):
            left.append(f"{name} (pid {pid} {'ours' if pid in mine else 'gone'})")
    return left


def event_rows(run: Path) -> list[dict[str, str]]:
    with (run / "events.csv").open() as fh:
        return list(csv.DictReader(fh))


def explain(done: subprocess.CompletedProcess, run: Path) -> str:
    verdict = (run / "verdict.json").read_text() if (run / "verdict.json").exists() else "(no verdict)"
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-2000:]}\n{verdict[-4000:]}"


def leftovers(before: set[int]) -> list[psutil.Process]:
    me = psutil.Process()
    return [child for child in me.children(recursive=True) if child.pid not in before]


@pytest.mark.parametrize("scenario", ["network-cut", "error-cascade"])
def test_fault_scenario_recovers_passes_and_leaves_nothing_behind(scenario, tmp_path):
    children = {child.pid for child in psutil.Process().children(recursive=True)}
    run = tmp_path / scenario
    done = soak("run", scenario, "--out", str(run))
    assert done.returncode == 0, explain(done, run)
    rows = event_rows(run)
    starts = [row for row in rows if row["event"] == "fault_start"]
    ends = [row for row in rows if row["event"] == "fault_end"]
    assert len(starts) == 1 and len(ends) == 1, rows
    assert "outcome=ok" in ends[0]["detail"], ends[0]
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["status"] == "passed", verdict["status_reason"]
    assert verdict["faults"] and len(verdict["faults"]) == 1, verdict.get("faults")
    report = (run / "report.html").read_text()
    assert "fault" in report.lower() and ("cut" in report or "kill" in report)
    if scenario == "error-cascade":
        assert any(r["service"] == "backend" for r in verdict["restarts"]), verdict["restarts"]
    assert our_tables() == []
    assert leftovers(children) == []


def test_a_runner_killed_during_a_cut_leaves_rules_that_the_next_start_removes(tmp_path):
    run = tmp_path / "killed"
    scenario = tmp_path / "early-cut.toml"
    text = (ROOT / "scenarios" / "network-cut.toml").read_text()
    scenario.write_text(text.replace('at = "40s"', 'at = "20s"').replace('for = "5s"', 'for = "60s"'))
    proc = subprocess.Popen(
        [sys.executable, "-m", "soak", "run", str(scenario), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    end = time.time() + 150
    while time.time() < end:
        if (run / "events.csv").exists() and any(r["event"] == "fault_start" for r in event_rows(run)):
            break
        assert proc.poll() is None, "the run ended before its fault"
        time.sleep(0.5)
    else:
        raise AssertionError("no fault_start within 150 s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert our_tables(), "a cut was under way: its table should still be there after kill -9"
    # The next start of any run clears what a dead runner left, before it does anything else.
    done = soak("run", "smoke", "--host", f"http://127.0.0.1:{free_port()}", "--set", "health.start_timeout=1s")
    assert done.returncode == 2, done.stderr
    assert our_tables() == []


RESTART_AND_SLOW = """
description = "the backend restarted, then every packet to it held 150 ms for 8 s"

[sut]
supervise = true
agent_step = "0.05s"

[users.ChattingUser]
weight = 1
wait_min = "0.5s"
wait_max = "1.5s"

[shape]
kind = "steady"
users = 4
spawn_rate = 4
duration = "60s"

[phases]
warmup = "10s"
drain = "8s"

[[faults]]
at = "15s"
kind = "restart"
service = "backend"

[[faults]]
at = "35s"
kind = "slow"
service = "backend"
for = "8s"
latency = "150ms"

[recovery]
time_max = "30s"

[[targets.latency]]
name = "api"
percentile = 95.0
max_ms = 2000.0

[[targets.latency]]
name = "ws round trip"
percentile = 95.0
max_ms = 2000.0

[leaks]
memory_mb_per_hour = 500.0
drain_tolerance = 5.0  # half-dead sockets of a fault outlive a 10 s drain (see network-cut.toml)
"""


def test_restart_and_slow_take_hold_and_users_go_through_the_slow_proxy(tmp_path):
    children = {child.pid for child in psutil.Process().children(recursive=True)}
    scenario, run = tmp_path / "restart-slow.toml", tmp_path / "restart-slow"
    scenario.write_text(RESTART_AND_SLOW)
    done = soak("run", str(scenario), "--out", str(run))
    assert done.returncode == 0, explain(done, run)
    assert "users go through a proxy" in done.stdout, done.stdout
    ends = {row["detail"].split()[0]: row["detail"] for row in event_rows(run) if row["event"] == "fault_end"}
    restart = next(detail for ident, detail in ends.items() if "restart" in ident)
    slow = next(detail for ident, detail in ends.items() if "slow" in ident)
    assert "outcome=ok" in restart and "pid=" in restart, restart
    assert "outcome=ok" in slow, slow
    starts = [row["detail"] for row in event_rows(run) if row["event"] == "fault_start" and "slow" in row["detail"]]
    assert starts and "via=proxy" in starts[0] and "latency=0.15" in starts[0], starts
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["status"] == "passed", verdict["status_reason"]
    assert any(r["service"] == "backend" for r in verdict["restarts"]), verdict["restarts"]
    # the slow window really was slow for the users: a round trip through it waits out the proxy's 150 ms each way
    with (run / "latency.csv").open() as fh:
        rows = [row for row in csv.DictReader(fh) if row["name"] == "ws round trip" and float(row["ms"]) >= 300]
    assert rows, "no round trip was slowed by the proxy"
    assert our_tables() == []
    assert leftovers(children) == []


DEPENDENCY_OUTAGES = """
description = "the backend's own connections to Redis, then to Postgres, reset for 8 s each"

[sut]
redis_url = "redis://127.0.0.1:6379/0"
database_url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
supervise = true
agent_step = "0.05s"

[users.ChattingUser]
weight = 1
wait_min = "0.5s"
wait_max = "1.5s"

[shape]
kind = "steady"
users = 5
spawn_rate = 5
duration = "75s"

[phases]
warmup = "10s"
drain = "10s"

[[faults]]
at = "20s"
kind = "cut"
service = "backend"
to = "redis"
for = "8s"
mode = "reset"

[[faults]]
at = "48s"
kind = "cut"
service = "backend"
to = "postgres"
for = "8s"
mode = "reset"

[recovery]
time_max = "30s"  # as db-outage.toml: the backend's Postgres pool has taken up to 21 s to answer again

[leaks]
memory_mb_per_hour = 500.0
drain_tolerance = 5.0  # half-dead sockets of a fault outlive a 10 s drain (see network-cut.toml)
"""


def test_redis_and_postgres_outages_of_one_service_degrade_clearly_and_recover(tmp_path):
    """The scenarios redis-outage and db-outage in one run: only the backend's own connections are cut, so auth
    (Postgres) and the agent (Redis) stay up; users get AGENT_UNAVAILABLE / DATABASE_UNAVAILABLE, never a hang, and
    nothing is lost once the backend's connections are back."""
    children = {child.pid for child in psutil.Process().children(recursive=True)}
    scenario, run = tmp_path / "outages.toml", tmp_path / "outages"
    scenario.write_text(DEPENDENCY_OUTAGES)
    done = soak("run", str(scenario), "--out", str(run))
    assert done.returncode == 0, explain(done, run)
    starts = [row["detail"] for row in event_rows(run) if row["event"] == "fault_start"]
    assert [s.split(" to=")[1].split()[0] for s in starts] == ["redis", "postgres"], starts
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["status"] == "passed", verdict["status_reason"]
    for fault in verdict["faults"]:
        assert set(fault["checks"]["cascade"]["stayed_up"]) >= {"agent", "auth"}, fault["checks"]["cascade"]
    with (run / "locust_failures.csv").open() as fh:
        errors = " ".join(row["Error"] for row in csv.DictReader(fh))
    assert "AGENT_UNAVAILABLE" in errors and "DATABASE_UNAVAILABLE" in errors, errors
    assert "not received within" not in errors, errors  # a clear error every time, never a wait for nothing
    assert our_tables() == []
    assert leftovers(children) == []
