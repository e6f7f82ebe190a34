"""Per-user sliding-window rate limits: a Lua script in Redis (atomic) when Redis is given, in memory otherwise."""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from typing import NamedTuple, Protocol

from sut.config import Settings

SWEEP_EVERY = 1000  # in-memory limiter: drop idle users' windows every N hits, or they pile up over a soak

# KEYS[1] = the user's window; ARGV = now (s), window (s), limit, a unique member.
# Returns {1, "0"} when allowed, {0, "<seconds until the oldest hit leaves the window>"} when not.
# Numbers go back as strings: Redis turns Lua floats into integers.
SLIDING_WINDOW_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + window - now)}
"""


class Decision(NamedTuple):
    allowed: bool
    retry_after: float  # seconds; 0 when allowed

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class Limiter(Protocol):
    kind: str

    async def hit(self, key: str, limit: int, window: float) -> Decision: ...


class MemoryLimiter:
    kind = "memory"

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._calls = 0

    async def hit(self, key: str, limit: int, window: float) -> Decision:
        now = time.monotonic()
        self._calls += 1
        if self._calls % SWEEP_EVERY == 0:
            self._sweep(now, window)
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) < limit:
            hits.append(now)
            return Decision(True, 0.0)
        return Decision(False, max(hits[0] + window - now, 0.001))

    def _sweep(self, now: float, window: float) -> None:
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - window]:
            del self._hits[key]


class RedisLimiter:
    kind = "redis"

    def __init__(self, client, prefix: str) -> None:  # noqa: ANN001 - a redis.asyncio.Redis
        self._script = client.register_script(SLIDING_WINDOW_LUA)
        self._prefix = prefix

    async def hit(self, key: str, limit: int, window: float) -> Decision:
        now = time.time()
        allowed, retry = await self._script(
            keys=[f"{self._prefix}ratelimit:{key}"], args=[repr(now), repr(window), limit, f"{now}:{uuid.uuid4().hex}"]
        )
        return Decision(bool(int(allowed)), 0.0 if int(allowed) else max(float(retry), 0.001))


def limit_for(settings: Settings, tier: str) -> int:
    """Messages per window for a tier; 0 = unlimited (for either tier)."""
    return settings.paid_rate_limit if tier == "paid" else settings.rate_limit


class ChatLimiter:
    """The chat-message limit of the contract: per user, per tier, one window."""

    def __init__(self, settings: Settings, limiter: Limiter) -> None:
        self.settings = settings
        self.limiter = limiter

    async def check(self, user: str, tier: str) -> Decision:
        limit = limit_for(self.settings, tier)
        if limit == 0:
            return Decision(True, 0.0)
        return await self.limiter.hit(f"{tier}:{user}", limit, self.settings.rate_window)
