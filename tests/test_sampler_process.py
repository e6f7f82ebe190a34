"""The process source against real sut processes: found by port, pid and command line, every metric recorded,
TCP connections counted while WebSockets are held, and a killed and restarted service found again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket

from sampler import Sampler
from sut.client import Client
from sut.launcher import SutConfig, start_sut

PROCESS_METRICS = {"mem_rss_bytes", "cpu_percent", "open_fds", "threads", "processes", "tcp_established"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sut():
    with start_sut(SutConfig(), host="127.0.0.1") as running:
        yield running


def by_service(rows) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for _ts, service, metric, value in rows:
        out.setdefault(service, {})[metric] = value
    return out


def established(sampler: Sampler) -> float:
    """The backend's next tcp_established reading (a tick may skip counting to keep to its CPU budget)."""
    for _ in range(100):
        row = by_service(sampler.tick()).get("backend", {})
        if "tcp_established" in row:
            return row["tcp_established"]
        time.sleep(0.05)
    raise AssertionError("no tcp_established reading in 100 ticks")


def test_finds_services_by_port_and_pid_and_records_every_metric(sut, tmp_path):
    services = {
        "backend": f"port:{sut.ports['backend']}",
        "auth": f"pid:{sut.pids['auth']}",
        "agent": f"pid:{sut.pids['agent']}",
        "self": "pid:self",
    }
    sampler = Sampler(services, tmp_path, interval=0.2, uss_interval=0.2)
    wanted = PROCESS_METRICS | {"mem_uss_bytes", "mem_pss_bytes"}
    try:
        for _ in range(50):  # cpu_percent needs a previous tick; a tick may skip counting connections (CPU budget)
            sampler.tick()
            latest: dict[str, dict[str, float]] = {}
            for (service, metric), (_ts, value) in sampler.latest().items():
                latest.setdefault(service, {})[metric] = value
            if all(wanted <= set(latest.get(name, ())) for name in ("backend", "auth", "agent")):
                break
            time.sleep(0.2)
    finally:
        sampler.stop()
    for name in ("backend", "auth", "agent"):
        assert wanted <= set(latest[name]), name
        assert latest[name]["mem_rss_bytes"] > 10e6  # a uvicorn app is tens of MB
        assert latest[name]["mem_rss_bytes"] >= latest[name]["mem_uss_bytes"] > 0
        assert latest[name]["open_fds"] >= 3 and latest[name]["threads"] >= 1
    # this test process started the sut, so its tree holds all three services and its own figures exceed theirs
    assert latest["self"]["processes"] >= 4
    assert latest["self"]["mem_rss_bytes"] > latest["backend"]["mem_rss_bytes"]
    header, *lines = (tmp_path / "samples.csv").read_text().splitlines()
    assert header == "ts,service,metric,value" and len(lines) > 40


def test_tcp_established_follows_websockets_held_open(sut, tmp_path):
    sampler = Sampler({"backend": f"port:{sut.ports['backend']}"}, tmp_path, interval=0.2)
    token = Client(sut.urls["auth"], sut.urls["backend"], "sampler-ws@example.com").login()["access_token"]
    ws_url = sut.urls["backend"].replace("http://", "ws://") + f"/ws?token={token}"
    sockets = []
    try:
        before = established(sampler)
        for _ in range(50):
            sockets.append(websocket.create_connection(ws_url, timeout=10))
        held = established(sampler)
        for ws in sockets:
            ws.close()
        sockets.clear()
        after = held
        for _ in range(50):  # the server closes its side within a few ms; give it up to 5 s
            time.sleep(0.1)
            after = established(sampler)
            if after <= before:
                break
    finally:
        for ws in sockets:
            ws.close()
        sampler.stop()
    assert held >= before + 50
    assert after <= before


def test_restarted_service_is_found_again_without_values_for_the_gap(tmp_path):
    with start_sut(SutConfig(), host="127.0.0.1") as sut:
        port = sut.ports["agent"]
        sampler = Sampler({"agent": f"port:{port}", "auth": f"port:{sut.ports['auth']}"}, tmp_path, interval=0.1)
        sampler.start()
        try:
            wait_for(lambda: ("agent", "mem_rss_bytes") in sampler.latest())
            old_pid = sut.pids["agent"]
            sut.kill("agent")  # SIGKILL; without supervise it stays down
            killed_at = time.time()
            time.sleep(0.6)  # several ticks with the service down
            restarted_at = time.time()
            # A new process on the same port, as an orchestrator would start it (the launcher holds the port).
            new_pid = sut.restart("agent")
            assert new_pid != old_pid and sut.ports["agent"] == port
            wait_for(lambda: "service_restart" in events_text(tmp_path))
            wait_for(lambda: sampler.latest().get(("agent", "mem_rss_bytes"), (0,))[0] > restarted_at)
        finally:
            sampler.stop()
    rows = [line.split(",") for line in (tmp_path / "samples.csv").read_text().splitlines()[1:]]
    gap = [r for r in rows if r[1] == "agent" and killed_at < float(r[0]) < restarted_at]
    assert gap == []  # nothing made up while it was down ...
    assert any(r[1] == "auth" and killed_at < float(r[0]) < restarted_at for r in rows)  # ... while others went on
    assert any(r[1] == "agent" and float(r[0]) > restarted_at for r in rows)
    events = events_text(tmp_path)
    assert f"agent: pid {old_pid} exited" in events
    assert f"pid {new_pid}" in events


def test_a_service_that_starts_listening_after_it_was_found_gets_its_connections_counted(tmp_path):
    code = (
        "import socket, sys, time; sys.stdin.readline(); s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
        " print(s.getsockname()[1], flush=True); held = [s.accept() for _ in range(3)]; time.sleep(60)"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    clients = []
    try:
        sampler = Sampler({"svc": f"pid:{server.pid}"}, tmp_path, interval=0.1)
        first = by_service(sampler.tick())["svc"]
        server.stdin.write("listen now\n")
        server.stdin.flush()
        port = int(server.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        count = None
        for _ in range(200):  # found on a later scan of its fds (at most every 2 s until it has a port)
            count = by_service(sampler.tick())["svc"].get("tcp_established")
            if count == 3:
                break
            time.sleep(0.05)
        sampler.stop()
    finally:
        for sock in clients:
            sock.close()
        server.kill()
        server.wait()
    assert "tcp_established" not in first
    assert count == 3


def test_process_tree_is_summed(tmp_path):
    """A parent with two children (as uvicorn --workers): three processes, each one's memory counted once."""
    script = "import subprocess, sys, time; kids = [subprocess.Popen([sys.executable, '-c', 'import time; x = b\"x\" * 30_000_000; time.sleep(60)']) for _ in range(2)]; print('up', flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "up"
        sampler = Sampler({"tree": f"pid:{parent.pid}"}, tmp_path, interval=1)
        for _ in range(100):  # the children allocate their 30 MB right after they start
            tree = by_service(sampler.tick())["tree"]
            if tree["processes"] == 3 and tree["mem_rss_bytes"] > 60e6:
                break
            time.sleep(0.05)
        sampler.stop()
    finally:
        for child in _children(parent.pid):
            os.kill(child, 9)
        parent.kill()
        parent.wait()
    assert tree["processes"] == 3
    assert tree["mem_rss_bytes"] > 60e6  # both children's 30 MB, on top of the parent's own
    assert "tcp_established" not in tree  # it listens on nothing: no count rather than a made-up 0


def test_cmd_finds_the_oldest_matching_process_but_never_the_sampler(tmp_path):
    marker = f"sampler-cmd-test-{os.getpid()}-{time.monotonic_ns()}"
    code = f"import time; time.sleep(60)  # {marker}"
    first = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.05)
    second = subprocess.Popen([sys.executable, "-c", code])
    try:
        # (that a `soak sample --service x=cmd:...` process skips itself is tested in test_cmd_sample.py)
        sampler = Sampler({"svc": f"cmd:{marker}", "none": "cmd:no-such-process-anywhere-[0-9]{30}"}, tmp_path)
        rows = by_service(sampler.tick())
        source = next(s for s in sampler.sources if s.service == "svc")
        root = source.root
        sampler.stop()
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
    assert root == first.pid
    assert rows["svc"]["processes"] == 1
    assert "none" not in rows


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def events_text(run_dir: Path) -> str:
    path = run_dir / "events.csv"
    return path.read_text() if path.exists() else ""


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the time allowed")
        time.sleep(0.05)


def test_the_load_generator_exiting_is_no_service_down(tmp_path):
    """Locust exits at every load stop: the runner says whether it died early (load_generator_gone), not the sampler."""
    sleepers = {
        name: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for name in ("locust", "x")
    }
    sampler = Sampler({name: f"pid:{proc.pid}" for name, proc in sleepers.items()}, tmp_path, interval=0.1)
    sampler.start()
    try:
        wait_for(lambda: {("locust", "mem_rss_bytes"), ("x", "mem_rss_bytes")} <= set(sampler.latest()))
        for proc in sleepers.values():
            proc.kill()
            proc.wait()
        wait_for(lambda: "service_down" in events_text(tmp_path))
        time.sleep(0.3)  # a few more ticks: the load generator's would have come by now
    finally:
        sampler.stop()
        for proc in sleepers.values():
            proc.kill()
    events = events_text(tmp_path)
    assert f"x: pid {sleepers['x'].pid} exited" in events
    assert "locust:" not in events
