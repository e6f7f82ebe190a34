"""The embedded sut in containers of a real Docker engine (``[sut] runtime = "docker"``): a private dockerd started for
this module (tests/dockerengine.py), an image imported from a few symlinks, nothing pulled. Each service is a
container whose memory the engine reports; a leak grows it, a limit turns the leak into an OOM kill that the sampler,
the verdict and the report name; a pause freezes a service; kill and restart go through the engine; what a killed
launcher or engine left is swept at the next start; nothing is left behind. Mistakes in the keys are one-line errors.

Without an engine (no docker.io, not root) these skip saying why, and fail under CI, where provisioning installs it.
"""

from __future__ import annotations

import csv
import html
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from runspec import folder
from sampler import Sampler
from sampler.phases import Phases
from sut.client import Client
from sut.containers import OWNER_LABEL, SUT_LABEL
from sut.launcher import SutConfig, start_sut
from tests.dockerengine import _mounts_under, _processes_using, engine_or_skip, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
WAIT = 60.0  # seconds a wait for a condition may take before the test says what it did not see

pytestmark = pytest.mark.xdist_group("docker")  # one worker owns the engines: machine-wide processes and mounts


@pytest.fixture(scope="module")
def engine():
    started = engine_or_skip()
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = started.address
    yield started
    if previous is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = previous
    started.stop()


@pytest.fixture
def client(engine):
    import docker

    api = docker.DockerClient(base_url=engine.address, timeout=30)
    yield api
    api.close()


def until(condition, what: str, timeout: float = WAIT):
    """Poll ``condition`` until it returns something true, and return that; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout:g} s")


def rows(run: Path, name: str) -> list[dict[str, str]]:
    with (run / name).open() as fh:
        return list(csv.DictReader(fh))


def chat(client: Client, count: int) -> None:
    """``count`` chat messages, each answered in full: the backend keeps its leak for every one it accepted."""
    if not client.tokens:
        client.login()
    tab = client.tab()
    try:
        for _ in range(count):
            tab.until_type("agent_completed", tab.chat("leak"), timeout=30)
    finally:
        tab.close()


def cgroup_working_set(container_id: str) -> float:
    """The container's working set from the kernel's own files (cgroup v1 here; v2 where that is what runs)."""
    v1 = Path("/sys/fs/cgroup/memory/docker") / container_id
    if v1.is_dir():
        usage, inactive_key = int((v1 / "memory.usage_in_bytes").read_text()), "total_inactive_file"
        stat = v1 / "memory.stat"
    else:
        v2 = Path("/sys/fs/cgroup/docker") / container_id
        usage, inactive_key, stat = int((v2 / "memory.current").read_text()), "inactive_file", v2 / "memory.stat"
    fields = dict(line.split() for line in stat.read_text().splitlines())
    return float(usage - int(fields[inactive_key]))


def fault(kind: str, service: str, **extra) -> dict:
    """One resolved [[faults]] entry."""
    base = {"at": 0.0, "every": 0.0, "for": 0.0, "mode": "blackhole", "to": "", "latency": 0.0}
    return {**base, "kind": kind, "service": service, **extra}


# --- no engine needed: the keys' mistakes ----------------------------------------------------------------------
def soak(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soak", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["run", "leak-check", "--set", "sut.backend_memory_mb=64"],
            "sut.backend_memory_mb = 64: a memory limit needs",
        ),
        (["run", "leak-check", "--set", "sut.runtime='podman'"], "sut.runtime: expected one of process, docker"),
        (["run", "leak-check", "--set", "faults=[{kind='pause', service='backend'}]"], "faults[0].for: a pause needs"),
        (["sut", "--agent-memory-mb", "64"], "sut.agent_memory_mb = 64: a memory limit needs sut.runtime = 'docker'"),
    ],
    ids=["limit-without-docker", "unknown-runtime", "pause-without-for", "sut-limit-without-docker"],
)
def test_a_bad_runtime_key_is_one_line_naming_it_before_anything_starts(args, says, tmp_path):
    done = soak(*args, "--out", str(tmp_path / "run")) if args[0] == "run" else soak(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()


def test_no_engine_is_one_line_naming_where_it_was_looked_for(tmp_path):
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    done = soak("sut", "--docker", env={"DOCKER_HOST": nowhere})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"no Docker engine answers at {nowhere}" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- the engine ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def leaky(engine, tmp_path_factory):
    """One container sut for the module: the backend keeps 2 MB per chat message and has a 512 MB limit."""
    sut = start_sut(
        SutConfig(runtime="docker", rate_limit=0, leak_bytes_per_message=2 * 1000 * 1000, backend_memory_mb=512),
        log_dir=tmp_path_factory.mktemp("leaky-logs"),
    )
    yield sut
    sut.stop()


def test_each_service_is_a_container_on_the_host_network_running_our_code_read_only(leaky, client):
    for name, container_name in leaky.containers.items():
        container = client.containers.get(container_name)
        assert container.status == "running" and container.attrs["HostConfig"]["NetworkMode"] == "host"
        mounts = {m["Destination"]: m["RW"] for m in container.attrs["Mounts"]}
        assert mounts["/usr"] is False and mounts[str(ROOT)] is False and mounts[sys.base_prefix] is False
        assert mounts[str(leaky.log_dir)] is True  # its log, where the process runtime writes it too
        assert container.attrs["HostConfig"]["Memory"] == (512 * MB if name == "backend" else 0), name
        # the pid the launcher reports is the service's process, inside the container's cgroup
        assert container.id in Path(f"/proc/{leaky.pids[name]}/cgroup").read_text()
        assert requests.get(leaky.urls[name] + "/health", timeout=5).status_code == 200
    assert "listening on" in leaky.log_tail("backend")
    placement = leaky.placement()
    assert placement["runtime"] == "docker" and placement["engine"]["version"].startswith("20.10")
    assert placement["services"]["backend"] == {
        "runs_as": "container",
        "container": leaky.containers["backend"],
        "pid": leaky.pids["backend"],
        "memory_limit_bytes": 512 * MB,
    }


def test_the_container_is_sampled_beside_its_process_and_the_leak_grows_its_working_set(leaky, tmp_path):
    specs = {"backend": [f"port:{leaky.ports['backend']}", f"docker:{leaky.containers['backend']}"]}
    sampler = Sampler(specs, tmp_path)

    def reading() -> dict[str, float]:
        return {metric: value for _ts, _service, metric, value in sampler.tick()}

    try:
        before = until(lambda: (r := reading()).get("mem_working_set_bytes") and r, "a first working set")
        # what the engine reported is what the kernel holds against the container: usage minus inactive file cache
        kernel = cgroup_working_set(leaky.container_ids["backend"])
        assert abs(before["mem_working_set_bytes"] - kernel) < MB, (before, kernel)  # idle: the same to a page or so
        chat(Client(leaky.urls["auth"], leaky.urls["backend"]), 40)  # 40 x 2 MB kept
        grown = before["mem_working_set_bytes"] + 60 * MB
        after = until(
            lambda: (r := reading()).get("mem_working_set_bytes", 0) >= grown and r,
            f"the working set to grow by 60 of the 76 MB kept (before: {before})",
        )
    finally:
        sampler.stop()
    assert after["mem_rss_bytes"] >= before["mem_rss_bytes"] + 60 * MB  # the process inside shows the same leak
    # beside the process source the container adds its working set only: no metric twice in a tick
    assert {"cpu_percent", "threads", "mem_rss_bytes", "open_fds"} <= set(after)
    per_tick = [(r["ts"], r["metric"]) for r in rows(tmp_path, folder.SAMPLES)]
    assert len(per_tick) == len(set(per_tick))


def pause_and_thaw(sut, run: Path, frozen) -> list[dict[str, str]]:
    """Pause auth for a second through the fault schedule (the sut's own handles); ``frozen()`` is asked while it
    is; a request sent meanwhile must wait for the thaw. Returns the events written."""
    from soak.faults import FaultSchedule

    pid = sut.pids["auth"]
    schedule = FaultSchedule([fault("pause", "auth", **{"for": 1.0})], run, sut)
    schedule.start(time.time())
    schedule.advance()
    until(frozen, "the service to be frozen")  # a signal is delivered a moment after it is sent
    answer: list[int] = []
    answered = threading.Event()

    def ask() -> None:
        answer.append(requests.get(sut.urls["auth"] + "/health", timeout=WAIT).status_code)
        answered.set()

    threading.Thread(target=ask, daemon=True).start()
    assert not answered.wait(1.0)  # a frozen service answers nothing, however long it is given
    until(lambda: any("fault_end" in line for line in schedule.advance()), "the schedule to end the pause")
    assert answered.wait(WAIT) and answer == [200]  # thawed: the request that waited is answered
    schedule.stop()
    assert sut.pids["auth"] == pid and sut.processes["auth"].poll() is None  # thawed, not restarted
    events = rows(run, folder.EVENTS)
    assert [e["event"] for e in events] == ["fault_start", "fault_end"], events
    assert "outcome=ok" in events[1]["detail"], events
    return events


def test_pause_freezes_the_container_until_the_schedule_thaws_it(leaky, client, tmp_path):
    events = pause_and_thaw(
        leaky, tmp_path, lambda: client.containers.get(leaky.containers["auth"]).attrs["State"]["Paused"]
    )
    assert events[0]["detail"] == f"pause auth id=0 n=1 for=1 container={leaky.containers['auth']} via=docker"


def test_pause_of_a_process_is_sigstop_until_the_schedule_thaws_it(tmp_path):
    with start_sut(SutConfig(), log_dir=tmp_path / "logs") as sut:
        events = pause_and_thaw(sut, tmp_path, lambda: psutil.Process(sut.pids["auth"]).status() == "stopped")
    assert events[0]["detail"] == f"pause auth id=0 n=1 for=1 pid={sut.pids['auth']} via=sigstop"


def test_kill_and_restart_go_through_the_engine(leaky, client):
    name = leaky.containers["agent"]
    assert leaky.kill("agent") == -signal.SIGKILL
    state = client.containers.get(name).attrs["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137 and not state["OOMKilled"]
    old = leaky.pids["agent"]
    new = leaky.restart("agent")  # the same container started again: same name, same port, a new process
    assert new != old and client.containers.get(name).status == "running"
    assert requests.get(leaky.urls["agent"] + "/health", timeout=5).status_code == 200


def test_a_memory_limit_turns_the_leak_into_an_oom_kill_that_the_verdict_and_report_name(engine, tmp_path):
    from analysis import analyze_and_write

    run = tmp_path / "run"
    run.mkdir()
    config = SutConfig(
        runtime="docker", rate_limit=0, leak_bytes_per_message=1000 * 1000, backend_memory_mb=120, supervise=True
    )
    sut = start_sut(config, log_dir=tmp_path / "logs")
    try:
        (run / folder.RUNTIME).write_text(json.dumps(sut.placement()))  # as the runner writes it
        specs = {name: [f"port:{sut.ports[name]}", f"docker:{sut.containers[name]}"] for name in sut.containers}
        first_pid = sut.pids["backend"]
        with Sampler(specs, run, interval=0.5):
            phases = Phases(run, warmup=0.0, drain=1.0)
            phases.start_load("chat until the backend is OOM-killed")
            with pytest.raises(Exception):  # noqa: B017 - the socket dies with the backend, however it says so
                chat(Client(sut.urls["auth"], sut.urls["backend"]), 200)  # 200 MB into a 120 MB container
            until(lambda: sut.pids["backend"] != first_pid, "the supervisor to start the backend's container again")
            until(lambda: any(e["event"] == folder.OOM_KILLED for e in rows(run, folder.EVENTS)), "oom_killed")
            phases.stop_load()
            until(lambda: phases.advance() or phases.done, "the drain's end")
        history = [(what, detail) for _ts, name, what, detail in sut.history if name == "backend"]
    finally:
        sut.stop()
    assert history[0][0] == "exited" and "SIGKILL" in history[0][1], history
    kills = [e for e in rows(run, folder.EVENTS) if e["event"] == folder.OOM_KILLED]
    assert (
        kills[0]["detail"] == f"backend: container {sut.containers['backend']} OOM-killed at its memory limit of 120 MB"
    )

    verdict = analyze_and_write(run).verdict
    reason = verdict["status_reason"]
    assert verdict["status"] == "failed", reason
    assert reason.startswith("backend was OOM-killed at +") and " MB/h (mem_working_set_bytes at " in reason, reason
    assert "limit 120 MB)" in reason and verdict["oom_kills"][0]["growth_per_hour"] > 0
    assert {"kind": "oom", "title": "backend OOM kill", "status": "failed"}.items() <= verdict["checks"][0].items()
    report = (run / folder.REPORT).read_text()
    assert f'<p class="why">{html.escape(reason)}</p>' in report  # the banner says it
    assert "<h2>Where it ran</h2>" in report and sut.containers["backend"] in report
    assert '<td class="status s-failed">OOM-killed at +' in report  # and the box marks the service


def test_a_killed_launcher_leaves_containers_that_the_next_start_removes(engine, client, tmp_path):
    launcher = subprocess.Popen(
        [sys.executable, "-m", "soak", "sut", "--docker", "--log-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def labelled(key: str, value: str) -> list[str]:
        label = {"label": f"{key}={value}"}
        return [c.name for c in client.containers.list(all=True, filters=label)] + [
            tag for image in client.images.list(filters=label) for tag in image.tags
        ]

    try:
        for line in launcher.stdout:
            if line.startswith("healthy"):
                break
        theirs = [c for c in client.containers.list() if f":{launcher.pid}:" in c.labels.get(OWNER_LABEL, "")]
        assert len(theirs) == 3, line
        dead_owner = theirs[0].labels[OWNER_LABEL]
    finally:
        launcher.kill()  # -9: its stop never runs
        launcher.wait()
    left = labelled(OWNER_LABEL, dead_owner)
    assert len(left) == 4, left  # three containers, still running (nobody stopped them), and the image
    sut = start_sut(SutConfig(runtime="docker"), log_dir=tmp_path / "next")
    try:
        assert sorted(sut.swept) == sorted(left) and labelled(OWNER_LABEL, dead_owner) == []
        assert sorted(labelled(SUT_LABEL, sut.sut_id)) == sorted([*sut.containers.values(), sut.image])
    finally:
        sut.stop()
    assert labelled(SUT_LABEL, sut.sut_id) == []  # a stop leaves nothing either


def test_an_engine_leaves_nothing_whether_stopped_or_killed():
    if unavailable_reason():
        engine_or_skip()  # skips (fails under CI) saying why, as the other tests do
    killed = subprocess.Popen([sys.executable, "-m", "tests.dockerengine"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        for line in killed.stdout:
            if line.startswith("export DOCKER_HOST="):
                break
        assert line.startswith("export DOCKER_HOST="), f"tests.dockerengine did not name its socket: {line!r}"
    finally:
        killed.kill()  # -9: its stop never runs; the kernel sends its dockerd SIGTERM, the folder stays
        killed.wait()
    stale = Path(line.strip().split("unix://", 1)[1]).parent
    assert stale.exists()
    engine = engine_or_skip()  # a start sweeps what the dead one left: processes, mounts, folder
    try:
        assert not stale.exists() and not _processes_using(stale) and not _mounts_under(stale)
    finally:
        engine.stop()
    assert not engine.root.exists() and not _processes_using(engine.root) and not _mounts_under(engine.root)
    assert not psutil.pid_exists(engine.process.pid)
