"""Health sources against the real sut: up, a 503 that names its failing check, a refused port, a service that
accepts and never answers; service_down / service_up written once per transition; wait_healthy for the runner's
health-gated start."""

from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

import pytest
from conftest import free_port

from sampler import Sampler, SourceSpecError, parse_source, wait_healthy
from sampler.health import HEALTH_TIMEOUT, check, failing_checks
from sut.client import Client
from sut.launcher import SutConfig, start_sut


def health(sampler: Sampler) -> dict[str, dict[str, float]]:
    """One tick: {service: {metric: value}}."""
    out: dict[str, dict[str, float]] = {}
    for _ts, service, metric, value in sampler.tick():
        out.setdefault(service, {})[metric] = value
    return out


def events(run_dir: Path) -> list[tuple[str, str]]:
    path = run_dir / "events.csv"
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return [(row["event"], row["detail"]) for row in csv.DictReader(file)]


def test_specs_parse_and_mistakes_are_one_line():
    assert parse_source("health:http://127.0.0.1:8001/health").kind == "health"
    assert parse_source("tcp:127.0.0.1:6379").target == "127.0.0.1:6379"
    assert parse_source("tcp:[::1]:6379").kind == "tcp"
    for text, says in [
        ("health:127.0.0.1:8001/health", "http:// or https://"),
        ("health:http://127.0.0.1:99999/health", "out of range"),
        ("tcp:127.0.0.1", "HOST:PORT"),
        ("tcp:127.0.0.1:0", "between 1 and 65535"),
        ("tcp::6379", "HOST:PORT"),
    ]:
        with pytest.raises(SourceSpecError) as info:
            parse_source(text)
        assert says in str(info.value) and repr(text) in str(info.value) and "\n" not in str(info.value)


def test_a_failing_check_is_named_from_the_body():
    assert failing_checks(b'{"status": "degraded", "checks": {"database": "error: x"}, "failing": ["database"]}') == (
        "database"
    )
    assert failing_checks(b'{"checks": {"db": {"status": "DOWN"}, "cache": {"status": "UP"}}}') == "db"
    assert failing_checks(b'{"checks": {"redis": "ok", "agent": "unhealthy: gone"}}') == "agent"
    assert failing_checks(b"<html>Service Unavailable</html>") == ""
    assert failing_checks(b'["database"]') == ""


def test_up_503_refused_and_back_each_written_once(sut_factory, tmp_path):
    # a pool of one that leaks a connection per authenticated request: one REST call and /health answers
    # 503 naming "database"; then the services stop (refused), then a clean sut comes back on the same ports
    sut = sut_factory(leak_pool=True, db_pool_size=1, db_max_overflow=0, settings={"db_pool_timeout": 0.5})
    checks = {"backend": f"health:{sut.urls['backend']}/health", "auth": f"tcp:127.0.0.1:{sut.ports['auth']}"}
    run = tmp_path / "run"
    sampler = Sampler({name: [spec] for name, spec in checks.items()}, run, interval=0.5)
    restarted = None
    try:
        assert wait_healthy(checks, timeout=5) == {}
        first = health(sampler)
        assert first["backend"]["health_up"] == 1 and first["auth"]["health_up"] == 1
        assert 0 < first["backend"]["health_latency_ms"] < HEALTH_TIMEOUT * 1000
        assert sampler.down_since() == {} and events(run) == []

        client = Client(sut.urls["auth"], sut.urls["backend"])
        client.login()
        client.api("GET", "/api/threads")  # keeps the pool's only connection
        before = time.time()
        downs = [health(sampler)["backend"] for _ in range(3)]
        assert all(tick["health_up"] == 0 and tick["health_latency_ms"] > 0 for tick in downs)  # it answered: 503
        assert events(run) == [("service_down", "backend: 503 database")]
        assert before <= sampler.down_since()["backend"] <= time.time()
        assert wait_healthy(checks, timeout=0) == {"backend": "503 database"}

        sut.stop()
        stopped = health(sampler)
        assert stopped["backend"] == {"health_up": 0} and stopped["auth"] == {"health_up": 0}  # no answer, no latency
        assert events(run)[1:] == [("service_down", "auth: connection refused")]  # backend was down already
        assert wait_healthy(checks, timeout=0.3) == {"backend": "connection refused", "auth": "connection refused"}

        restarted = start_sut(SutConfig(), ports=sut.ports, log_dir=tmp_path / "sut-again")
        assert wait_healthy(checks, timeout=10) == {}
        for _ in range(2):
            back = health(sampler)
        assert back["backend"]["health_up"] == 1 and back["auth"]["health_up"] == 1
        later = events(run)[2:]
        assert sorted(event for event, _ in later) == ["service_up", "service_up"]
        assert {detail.split(":")[0] for _, detail in later} == {"backend", "auth"}
        assert all(" s down" in detail for _, detail in later)
        assert sampler.down_since() == {}
    finally:
        sampler.stop()
        if restarted is not None:
            restarted.stop()
    rows = (run / "samples.csv").read_text().splitlines()
    assert rows[0] == "ts,service,metric,value" and any(",backend,health_up,0" in row for row in rows)


def test_a_service_that_never_answers_is_down_without_holding_up_a_tick(tmp_path):
    # a real listening socket that is never accepted from: the connect succeeds (backlog), the answer never comes
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    closed = free_port()
    sampler = Sampler(
        {"hung": f"health:http://127.0.0.1:{port}/health", "gone": f"tcp:127.0.0.1:{closed}", "me": "pid:self"},
        tmp_path,
        interval=0.5,
    )
    try:
        ticks, took = [], []
        deadline = time.monotonic() + HEALTH_TIMEOUT + 5
        while "hung" not in sampler.down_since() and time.monotonic() < deadline:
            started = time.monotonic()
            ticks.append(health(sampler))
            took.append(time.monotonic() - started)
            time.sleep(0.5)
    finally:
        sampler.stop()
        listener.close()
    assert max(took) < 0.5  # each tick ended at its deadline; the check went on in its own thread
    assert all("me" in tick and tick["gone"] == {"health_up": 0} for tick in ticks)
    assert ticks[-1]["hung"] == {"health_up": 0}
    details = [detail for event, detail in events(tmp_path) if event == "service_down"]
    assert sorted(details) == ["gone: connection refused", f"hung: no answer within {HEALTH_TIMEOUT:g} s"]


def test_wait_healthy_refuses_a_spec_that_is_not_a_health_check():
    with pytest.raises(SourceSpecError, match="not a health check"):
        wait_healthy({"backend": "port:8001"}, timeout=0)
    assert wait_healthy({}, timeout=0) == {}
    assert check(parse_source(f"tcp:127.0.0.1:{free_port()}")).reason == "connection refused"
