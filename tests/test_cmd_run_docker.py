"""`soak run` with the embedded sut in containers of a real Docker engine (``[sut] runtime = "docker"``), end to end:
real containers, real Locust, the real sampler reading each container through the engine beside the process inside
it, a pause of the agent through the engine on the run's clock, and the real analysis and report.

One run answers several questions, each a test: the leak is named on the backend's container working set, the
pause shows as a stall of the replies, the run folder says where each service ran, and nothing is left behind.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runspec import folder
from sut.containers import IMAGE_REPOSITORY, OWNER_LABEL
from tests.dockerengine import engine_or_skip

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
PAUSE_S = 3.0
# the leak-check pair's load and leak; long enough for 40 working-set readings after a short warm-up (the engine
# collects once a second), with the agent frozen for a few seconds in the middle
SCENARIO = f"""
name = "docker-leak"
description = "the leak-check leak, the services in containers, the agent paused mid-run"

[sut]
runtime = "docker"
leak_bytes_per_message = 204800
backend_memory_mb = 1024

[users.ChattingUser]
weight = 1
wait_min = "0.2s"
wait_max = "0.5s"

[shape]
kind = "steady"
users = 5
spawn_rate = 5
duration = "50s"

[phases]
warmup = "5s"
drain = "5s"

[leaks]
memory_mb_per_hour = 200.0

[[faults]]
at = "25s"
kind = "pause"
service = "agent"
for = "{PAUSE_S:g}s"
"""

pytestmark = pytest.mark.xdist_group("docker")  # one worker owns the engines


@pytest.fixture(scope="module")
def docker_run(tmp_path_factory):
    """(the finished run's folder, soak's output and exit code, the engine's containers and images of ours after it)."""
    import docker

    engine = engine_or_skip()
    try:
        scenario = tmp_path_factory.mktemp("scenario") / "docker-leak.toml"
        scenario.write_text(SCENARIO)
        run = tmp_path_factory.mktemp("runs") / "docker-leak"
        done = subprocess.run(
            [sys.executable, "-m", "soak", "run", str(scenario), "--out", str(run)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            env={**os.environ, "DOCKER_HOST": engine.address},
            stdin=subprocess.DEVNULL,
        )
        client = docker.DockerClient(base_url=engine.address, timeout=30)
        left = [c.name for c in client.containers.list(all=True, filters={"label": OWNER_LABEL})]
        left += [tag for image in client.images.list() for tag in image.tags if IMAGE_REPOSITORY in tag]
        client.close()
    finally:
        engine.stop()
    return run, done, left


def explain(run: Path, done: subprocess.CompletedProcess) -> str:
    verdict = (run / folder.VERDICT).read_text() if (run / folder.VERDICT).exists() else "(no verdict)"
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-2000:]}\n{verdict[-3000:]}"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_the_leak_is_named_on_the_backends_container_working_set(docker_run):
    run, done, _left = docker_run
    assert done.returncode == 1, explain(run, done)
    verdict = json.loads((run / folder.VERDICT).read_text())
    assert verdict["status"] == "failed", verdict["status_reason"]
    entries = {(e["service"], e["metric"]): e for e in verdict["leaks"] if e["check"] == "slope"}
    working_set = entries["backend", "mem_working_set_bytes"]
    assert working_set["status"] == "failed" and working_set["rule"] == "slope", working_set
    assert (
        working_set["slope_per_hour"] > 200 * MB and "backend mem_working_set_bytes (leak)" in verdict["failed_checks"]
    )
    for service in ("auth", "agent"):  # the clean containers pass on the same metric
        assert entries[service, "mem_working_set_bytes"]["status"] == "passed", entries[
            service, "mem_working_set_bytes"
        ]
    assert "FAILED backend mem_working_set_bytes (leak): grows" in done.stdout


def test_the_pause_through_the_engine_shows_as_a_stall_of_the_replies(docker_run):
    run, done, _left = docker_run
    events = rows(run / folder.EVENTS)
    starts = [e for e in events if e["event"] == "fault_start"]
    ends = [e for e in events if e["event"] == "fault_end"]
    assert len(starts) == 1 and len(ends) == 1, explain(run, done)
    assert starts[0]["detail"].startswith(f"pause agent id=0 n=1 for={PAUSE_S:g} container=chat-soak-"), starts
    assert starts[0]["detail"].endswith("-agent via=docker") and "outcome=ok" in ends[0]["detail"], ends
    # frozen, not killed: its health check got no answer until the thaw, and it was never restarted
    agent = [(e["event"], e["detail"]) for e in events if e["detail"].startswith("agent")]
    assert [event for event, _ in agent] == ["service_down", "service_up"], agent
    assert "no answer within" in agent[0][1], agent
    # a message sent to a frozen agent starts only once it thaws: its agent startup spans most of the pause
    start, end = float(starts[0]["ts"]), float(ends[0]["ts"])
    startups = [
        float(r["ms"])
        for r in rows(run / folder.LATENCY)
        if r["name"] == "agent startup" and start - 10 <= float(r["ts"]) <= end + 10
    ]
    lasted = float(ends[0]["detail"].split("lasted=")[1].split()[0])
    assert max(startups) >= lasted * 1000 / 2, (max(startups), lasted)
    verdict = json.loads((run / folder.VERDICT).read_text())
    assert [(f["kind"], f["service"]) for f in verdict["faults"]] == [("pause", "agent")], verdict["faults"]


def test_the_run_folder_and_the_report_say_where_each_service_ran(docker_run):
    run, done, _left = docker_run
    placement = json.loads((run / folder.RUNTIME).read_text())
    assert placement["runtime"] == "docker" and placement["network"] == "host", placement
    assert placement["engine"]["version"].startswith("20.10") and placement["engine"]["api"]
    services = placement["services"]
    assert sorted(services) == ["agent", "auth", "backend"]
    assert all(s["runs_as"] == "container" and s["container"].startswith("chat-soak-") for s in services.values())
    assert services["backend"]["memory_limit_bytes"] == 1024 * MB and services["auth"]["memory_limit_bytes"] is None
    sampled = {(r["service"], r["metric"]) for r in rows(run / folder.SAMPLES)}
    for service in services:  # the container's working set beside the process's RSS
        assert {(service, "mem_working_set_bytes"), (service, "mem_rss_bytes")} <= sampled, service
    report = (run / folder.REPORT).read_text()
    assert "<h2>Where it ran</h2>" in report and services["backend"]["container"] in report
    assert "1,024 MB" in report and f"Docker engine {placement['engine']['version']}" in report
    assert "backend mem_working_set_bytes" in report  # its own plot, beside mem_rss_bytes
    assert "memory limit 1024 MB" in done.stdout  # the runner said so as it started them


def test_nothing_of_the_run_is_left_on_the_engine(docker_run):
    run, done, left = docker_run
    assert left == [], left
    assert "chat-soak-" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.replace(
        "chat-soak-dockerd-", ""
    ), "a process of the run's containers is still running"
