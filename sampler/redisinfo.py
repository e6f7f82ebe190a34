"""Redis as a service: clients, memory, keys and pub/sub channels from one ``INFO`` per tick.

The sampler's own connection is one of ``redis_connected_clients`` (a constant +1, so it never looks like a leak).
"""

from __future__ import annotations

import redis

from sampler.sources import Source, Tick
from sampler.spec import SourceSpec

REDIS_TIMEOUT = 2.0  # seconds, for connect and for each command
SECTIONS = ("clients", "memory", "stats", "keyspace")
# INFO field -> our metric name
INFO_FIELDS = {
    "connected_clients": "redis_connected_clients",
    "blocked_clients": "redis_blocked_clients",
    "used_memory": "redis_used_memory_bytes",
    "used_memory_rss": "redis_used_memory_rss_bytes",
    "pubsub_channels": "redis_pubsub_channels",
    "pubsub_patterns": "redis_pubsub_patterns",
}


class RedisSource(Source):
    def __init__(self, service: str, spec: SourceSpec) -> None:
        super().__init__(service, spec)
        self._client = redis.Redis.from_url(
            spec.target, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, client_name="soak-sampler"
        )
        self._sections = True

    def read(self, tick: Tick) -> dict[str, float]:
        if self._sections:
            try:  # Redis 7+: only the sections we read (a quarter of the text to parse)
                return from_info(self._client.info(*SECTIONS))
            except redis.ResponseError:
                self._sections = False
        return from_info(self._client.info())

    def close(self) -> None:
        self._client.close()


def from_info(info: dict) -> dict[str, float]:
    """Our metrics from a parsed ``INFO`` reply (redis-py's dict); keys summed over every ``dbN``."""
    out = {ours: float(info[field]) for field, ours in INFO_FIELDS.items() if field in info}
    out["redis_keys"] = float(
        sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
    )
    return out
