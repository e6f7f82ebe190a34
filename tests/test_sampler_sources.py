"""Prometheus against the sut's real /metrics, Redis and Postgres against the real servers of this machine."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import psycopg
import pytest
import redis
import websocket

from sampler import Sampler
from sampler.prometheus import DEFAULT_GAUGES
from sut.launcher import SutConfig, start_sut


def readings(sampler: Sampler, service: str) -> dict[str, float]:
    return {metric: value for _ts, name, metric, value in sampler.tick() if name == service}


@pytest.fixture(scope="module")
def sut():
    with start_sut(SutConfig(), host="127.0.0.1") as running:
        yield running


def test_prometheus_default_gauges_from_the_sut(sut, tmp_path):
    url = sut.urls["backend"] + "/metrics"
    sampler = Sampler({"backend": f"prometheus:{url}"}, tmp_path, interval=0.2)
    request = urllib.request.Request(
        sut.urls["auth"] + "/auth/login",
        data=json.dumps({"email": "sampler-prom@example.com", "password": "pw"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    token = json.load(urllib.request.urlopen(request, timeout=10))["access_token"]
    ws_url = sut.urls["backend"].replace("http://", "ws://") + f"/ws?token={token}"
    sockets = []
    try:
        before = readings(sampler, "backend")
        sockets = [websocket.create_connection(ws_url, timeout=10) for _ in range(3)]
        during = readings(sampler, "backend")
    finally:
        for ws in sockets:
            ws.close()
        sampler.stop()
    assert {"ws_connections_active", "db_pool_size", "db_pool_checked_out"} <= set(before)
    assert set(before) <= set(DEFAULT_GAUGES)  # the process collector's series are the process source's job
    assert during["ws_connections_active"] == before["ws_connections_active"] + 3


def test_prometheus_mapping_renames_and_selects_labels(sut, tmp_path):
    url = sut.urls["auth"] + "/metrics"
    spec = (
        f'prometheus:{url}#process_open_fds=auth_fds,python_gc_collections_total{{generation="2"}}=gc2,no_such_series'
    )
    sampler = Sampler({"auth": spec}, tmp_path)
    got = readings(sampler, "auth")
    sampler.stop()
    assert set(got) == {"auth_fds", "gc2"}  # a series absent from the page is left out, not written as 0
    assert got["auth_fds"] >= 3 and got["gc2"] >= 0


def test_redis_clients_memory_and_channels(redis_url, tmp_path):
    sampler = Sampler({"redis": f"redis:{redis_url}"}, tmp_path)
    before = readings(sampler, "redis")
    clients = [redis.Redis.from_url(redis_url) for _ in range(10)]
    for client in clients:
        client.ping()
    pubsub = clients[0].pubsub()
    pubsub.subscribe(f"sampler-test-{uuid.uuid4().hex}")
    pubsub.get_message(timeout=1)
    try:
        during = readings(sampler, "redis")
    finally:
        pubsub.close()
        for client in clients:
            client.close()
        sampler.stop()
    assert during["redis_connected_clients"] >= before["redis_connected_clients"] + 10
    assert during["redis_pubsub_channels"] >= 1
    assert during["redis_used_memory_bytes"] > 0 and during["redis_keys"] >= 0


def test_postgres_connections_by_state_and_application(database_url, tmp_path):
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    sampler = Sampler({"postgres": f"postgres:{database_url}"}, tmp_path)
    conns = [psycopg.connect(url, autocommit=True, application_name="chat-backend") for _ in range(2)]
    worker = psycopg.connect(url, application_name="chat worker")
    worker.execute("SELECT 1")  # leaves it idle in transaction: the classic pool leak
    try:
        during = readings(sampler, "postgres")
    finally:
        for conn in (*conns, worker):
            conn.close()
    after = {}
    for _ in range(50):  # backends exit a moment after the client closes
        after = readings(sampler, "postgres")
        if after["pg_connections"] == 0:
            break
        time.sleep(0.05)
    sampler.stop()
    assert during["pg_connections"] == 3  # only this fresh database, and not the sampler's own connection
    assert during["pg_connections_idle"] == 2
    assert during["pg_connections_idle_in_transaction"] == 1
    assert during["pg_connections_app_chat_backend"] == 2
    assert during["pg_connections_app_chat_worker"] == 1
    assert after["pg_connections"] == 0
    assert after["pg_connections_app_chat_backend"] == 0  # still written: a fall to zero, not a series that stops
