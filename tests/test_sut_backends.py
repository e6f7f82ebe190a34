"""The sut on the real Redis and Postgres of this machine (.ci/run starts them; elsewhere the fixtures skip, saying so)."""

from __future__ import annotations

import socket

import psycopg
import pytest
import redis
import requests

from sut.client import Client
from sut.launcher import SutConfig, SutError, start_sut

AGENT_SEQUENCE = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def test_chat_history_and_users_live_in_postgres_and_jobs_go_through_redis(sut_factory, redis_url, database_url):
    sut = sut_factory(redis_url=redis_url, database_url=database_url, agent_step=0.0, db_pool_size=3)
    checks = requests.get(sut.urls["backend"] + "/health", timeout=5).json()["checks"]
    assert checks == {"database": "ok (postgresql+psycopg)", "redis": "ok", "agent": "ok (redis)"}
    assert requests.get(sut.urls["agent"] + "/health", timeout=5).json()["checks"]["redis"] == "ok"
    assert metric(sut.urls["backend"], "db_pool_size") == 3.0

    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    thread = client.create_thread("in postgres")
    tabs = [client.tab(), client.tab()]
    msg = tabs[0].chat("stored for real", thread_id=thread)
    for tab in tabs:
        events = tab.until_type("agent_completed", msg)
        assert [e["type"] for e in events] == AGENT_SEQUENCE
    history = client.api("GET", f"/api/threads/{thread}/messages").json()
    assert [m["role"] for m in history] == ["user", "assistant"]

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT role, content FROM messages WHERE thread_id = %s ORDER BY id", (thread,)).fetchall()
        assert rows[0] == ("user", "stored for real") and rows[1][0] == "assistant"
        assert conn.execute("SELECT tier FROM users WHERE email = %s", (client.email,)).fetchone() == ("free",)
    for tab in tabs:
        tab.close()


def test_two_suts_on_one_redis_keep_apart(sut_factory, redis_url):
    first = sut_factory(redis_url=redis_url, agent_step=0.0, rate_limit=1)
    second = sut_factory(redis_url=redis_url, agent_step=0.0, rate_limit=1)
    assert first.settings.redis_prefix != second.settings.redis_prefix
    # same email on both: limits and events must not cross (each sut has its own users and key prefix)
    tabs = []
    for sut in (first, second):
        client = Client(sut.urls["auth"], sut.urls["backend"], email="same@example.com")
        client.login()
        tabs.append(client.tab())
    sent = [tab.chat("one each") for tab in tabs]
    for tab, msg in zip(tabs, sent, strict=True):
        events = tab.until_type("agent_completed", msg)
        assert {e["reply_to"] for e in events} == {msg}
        tab.close()


def test_redis_that_does_not_answer_is_named_when_the_sut_cannot_start(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens there
    # long enough for the backend to start answering (503 naming redis) on a busy machine: the wait ends only at
    # the timeout, since the sut never becomes healthy with a dead Redis
    with pytest.raises(SutError) as caught:
        start_sut(SutConfig(redis_url=dead), log_dir=tmp_path, timeout=15)
    assert "never became healthy" in str(caught.value) and "redis" in str(caught.value)


def test_every_redis_key_the_sut_writes_expires(sut_factory, redis_url):
    sut = sut_factory(redis_url=redis_url, agent_step=0.0)
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    tab = client.tab()
    tab.until_type("agent_completed", tab.chat("leave a trace"))
    tab.close()
    server = redis.Redis.from_url(redis_url)
    try:
        keys = list(server.scan_iter(sut.settings.redis_prefix + "*"))
        assert keys and all(server.pttl(key) > 0 for key in keys)  # nothing is kept forever
    finally:
        server.close()
