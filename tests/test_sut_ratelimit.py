"""Rate limits per user and tier: the limiters alone, then through the running sut (in memory and in real Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import requests

from sut.client import Client
from sut.launcher import SutConfig, start_sut
from sut.ratelimit import MemoryLimiter, RedisLimiter

LIMIT = 3
WINDOW = 2.0


async def sliding_window(limiter, window: float = 0.6) -> None:
    key = uuid.uuid4().hex
    assert (await limiter.hit(key, 3, window)).allowed
    await asyncio.sleep(window / 3)
    assert [(await limiter.hit(key, 3, window)).allowed for _ in range(2)] == [True, True]
    refused = await limiter.hit(key, 3, window)
    assert not refused.allowed and 0 < refused.retry_after <= window * 2 / 3 + 0.01
    assert (await limiter.hit("someone else " + key, 3, window)).allowed  # per user
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await limiter.hit(key, 3, window)).allowed  # the first hit has left the window ...
    assert not (await limiter.hit(key, 3, window)).allowed  # ... the later two have not: sliding, not fixed


def test_memory_limiter_is_a_sliding_window():
    asyncio.run(sliding_window(MemoryLimiter()))


def test_redis_limiter_is_a_sliding_window(redis_url):
    import redis.asyncio as aioredis

    prefix = f"soak-test:{uuid.uuid4().hex[:8]}:"

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            limiter = RedisLimiter(client, prefix)
            await sliding_window(limiter)
            key = uuid.uuid4().hex
            assert (await limiter.hit(key, 1, 5.0)).allowed
            refused = await limiter.hit(key, 1, 5.0)
            assert not refused.allowed and 4.0 < refused.retry_after <= 5.0
            assert 0 < await client.pttl(f"{prefix}ratelimit:{key}") <= 5000  # windows expire: no key leak
        finally:
            keys = await client.keys(prefix + "*")
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(scenario())


def check_chat_limit(sut) -> None:
    """The free tier's N+1-th message in a window is refused with retry_after and accepted after it."""
    free = Client(sut.urls["auth"], sut.urls["backend"])
    free.login()
    tab = free.tab()
    sent = [tab.chat(f"message {i}") for i in range(LIMIT + 1)]
    refused = tab.until(lambda e: e["type"] == "error")[-1]
    assert refused["code"] == "RATE_LIMITED" and refused["reply_to"] == sent[-1]
    assert 0 < refused["retry_after"] <= WINDOW
    acked = {e["reply_to"] for e in tab.events if e["type"] == "ack"}
    assert sent[-1] not in acked
    time.sleep(refused["retry_after"] + 0.1)
    again = tab.chat("after the window")
    assert tab.until(lambda e: e.get("reply_to") == again)[-1]["type"] == "ack"
    # REST shares the limit: 429 with Retry-After
    thread = free.create_thread()
    statuses = [free.api("POST", f"/api/threads/{thread}/messages", json={"content": "x"}) for _ in range(LIMIT)]
    over = statuses[-1]
    assert over.status_code == 429 and over.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(over.headers["Retry-After"]) <= WINDOW + 1
    tab.close()

    paid = Client(sut.urls["auth"], sut.urls["backend"])
    paid.login()
    paid.upgrade()
    tab = paid.tab()
    sent = [tab.chat(f"paid {i}") for i in range(LIMIT * 3)]
    tab.until(lambda e: e["type"] == "ack" and e["reply_to"] == sent[-1])
    assert [e for e in tab.events if e["type"] == "error"] == []
    tab.close()


@pytest.fixture(scope="module")
def memory_sut(tmp_path_factory):
    config = SutConfig(rate_limit=LIMIT, rate_window=WINDOW, agent_step=0.0)
    with start_sut(config, log_dir=tmp_path_factory.mktemp("sut-ratelimit")) as running:
        yield running


def test_chat_limit_in_memory(memory_sut):
    check_chat_limit(memory_sut)


def test_chat_limit_in_redis(sut_factory, redis_url):
    import redis

    sut = sut_factory(rate_limit=LIMIT, rate_window=WINDOW, agent_step=0.0, redis_url=redis_url)
    health = requests.get(sut.urls["backend"] + "/health", timeout=5).json()
    assert health["checks"]["redis"] == "ok"
    check_chat_limit(sut)
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(sut.settings.redis_prefix + "ratelimit:*"))
        assert keys, "the limits were not kept in Redis"
    finally:
        client.close()
