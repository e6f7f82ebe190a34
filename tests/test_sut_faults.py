"""Each fault switch, proven on the running sut: leaks show in RSS and gauges, latencies and cross-talk are real."""

from __future__ import annotations

import time

import psutil
import pytest
import requests

from sut.client import Client

MESSAGES = 2000
LEAK_BYTES = 50_000  # x 2000 messages = 100 MB, far above the noise of a clean backend (~1 MB)
BATCH = 50


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def login(sut) -> Client:
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    return client


def chat_many(sut, count: int) -> None:
    """``count`` messages through one tab, BATCH at a time, each answered to the end."""
    tab = login(sut).tab()
    for start in range(0, count, BATCH):
        waiting = {tab.chat("leak?") for _ in range(min(BATCH, count - start))}
        while waiting:
            event = tab.recv()
            assert event["type"] != "error", event
            if event["type"] == "agent_completed":
                waiting.discard(event["reply_to"])
        tab.events.clear()
    tab.close()


def rss_growth(sut, count: int) -> int:
    backend = psutil.Process(sut.pids["backend"])
    chat_many(sut, 100)  # warm-up: imports, caches, pool connections
    before = backend.memory_info().rss
    chat_many(sut, count)
    return backend.memory_info().rss - before


def test_leak_switch_grows_backend_rss_by_about_the_configured_amount(sut_factory):
    clean = rss_growth(sut_factory(agent_step=0.0, rate_limit=0), MESSAGES)
    leaky_sut = sut_factory(agent_step=0.0, rate_limit=0, leak_bytes_per_message=LEAK_BYTES)
    leaky = rss_growth(leaky_sut, MESSAGES)
    expected = MESSAGES * LEAK_BYTES
    assert 0.8 * expected < leaky - clean < 1.25 * expected, (clean, leaky, expected)
    assert metric(leaky_sut.urls["backend"], "sut_leaked_bytes") == (MESSAGES + 100) * LEAK_BYTES


def test_pool_leak_switch_makes_checked_out_climb_until_the_pool_is_exhausted(sut_factory):
    sut = sut_factory(leak_pool=True, db_pool_size=3, db_max_overflow=2, settings={"db_pool_timeout": 0.5})
    client = login(sut)
    backend = sut.urls["backend"]
    seen = [metric(backend, "db_pool_checked_out")]
    for _ in range(4):  # each call keeps one of the 5 connections and needs another for its own query
        assert client.api("GET", "/api/threads").status_code == 200
        seen.append(metric(backend, "db_pool_checked_out"))
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert metric(backend, "db_pool_overflow") > 0  # the pool had to open connections beyond its size
    exhausted = client.api("GET", "/api/threads")  # takes the last one: nothing left for the query
    assert exhausted.status_code == 503 and exhausted.json()["code"] == "DB_POOL_EXHAUSTED"
    health = requests.get(backend + "/health", timeout=5)
    assert health.status_code == 503 and health.json()["failing"] == ["database"]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    from sut.launcher import SutConfig, start_sut

    config = SutConfig(agent_step=0.0, leak_connections=True, rest_latency=0.3, agent_latency=0.4, cross_talk=True)
    with start_sut(config, log_dir=tmp_path_factory.mktemp("sut-faulty")) as running:
        yield running


def test_connection_leak_switch_keeps_closed_connections(faulty, sut_factory):
    clean = sut_factory(agent_step=0.0)
    for sut in (faulty, clean):
        client = login(sut)
        start = metric(sut.urls["backend"], "ws_connections_active")
        for _ in range(5):
            client.tab().close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the server notices each close a moment later
            now = metric(sut.urls["backend"], "ws_connections_active")
            if now == start + (5 if sut is faulty else 0):
                break
            time.sleep(0.05)
        assert now - start == (5 if sut is faulty else 0)


def test_rest_latency_switch_delays_every_rest_call(faulty):
    client = Client(faulty.urls["auth"], faulty.urls["backend"])
    began = time.perf_counter()
    client.login()
    assert time.perf_counter() - began >= 0.3  # auth is REST too
    began = time.perf_counter()
    assert client.api("GET", "/api/threads").status_code == 200
    assert time.perf_counter() - began >= 0.3


def test_agent_latency_switch_delays_agent_startup(faulty):
    tab = login(faulty).tab()
    began = time.perf_counter()
    msg = tab.chat("slow start")
    tab.until_type("agent_started", msg)
    assert time.perf_counter() - began >= 0.4
    tab.until_type("agent_completed", msg)
    tab.close()


def test_cross_talk_switch_shows_a_user_someone_elses_events(faulty):
    alice, bob = login(faulty).tab(), login(faulty).tab()
    msg = alice.chat("for alice only")
    alice.until_type("agent_completed", msg)
    foreign = bob.until(lambda e: e.get("reply_to") == msg, timeout=5)
    assert foreign[-1]["reply_to"] == msg  # bob never sent it: the suite must flag this
    alice.close()
    bob.close()
