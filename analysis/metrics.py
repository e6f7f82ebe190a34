"""The metric vocabulary: which sampled metrics are memory (judged by slope in MB/h), which are counts (judged by
the drain check) and which are only shown. Metric names are added, never renamed (DESIGN.md)."""

from __future__ import annotations

COUNT_METRICS = {
    "open_fds",
    "tcp_established",
    "ws_connections_active",
    "sse_streams_active",
    "db_pool_checked_out",
    "db_pool_overflow",
    "redis_connected_clients",
    "pg_connections",
    "agent_tasks_inflight",
}
COUNT_HINTS = ("connection", "_fds", "pool_checked", "pool_overflow", "clients", "established", "inflight", "pubsub")
# Counts that pools keep up while idle: what is left after the drain must also have piled up under load ...
POOLED_COUNTS = {"open_fds", "tcp_established", "pg_connections", "pg_connections_other", "redis_connected_clients"}
POOLED_PREFIXES = ("pg_connections_",)  # the server's connections by state and by application: a pool's too


def is_pooled(metric: str) -> bool:
    """A count that a connection pool holds open while idle: opened under load and kept is not a leak by itself."""
    return metric in POOLED_COUNTS or metric.startswith(POOLED_PREFIXES)


# Counts that must be back at zero once the load is gone, whatever the level before load (counts.judge_zero):
STRICT_ZERO = {"db_pool_checked_out", "ws_connections_active", "sse_streams_active", "agent_tasks_inflight"}
# The rule that judged a leak entry (verdict.json "rule"), one per series and check.
RULE_SLOPE = "slope"  # memory (and gauges with a per-hour threshold): Theil-Sen over the whole load period
RULE_LATE = "late slope"  # the same, over the stretch since growth began (changepoint.py): a leak that starts late
RULE_DRAIN = "drain"  # counts with samples before load: the level after the drain minus the level before
RULE_ZERO = "zero after drain"  # counts that must return to zero (STRICT_ZERO), when there is no baseline
RULE_TREND = "count trend"  # counts without a baseline: the floor under load climbs by a few steps and stays
# The memory metric a service is shown and stepped by, first found first.
MEMORY_FIRST = ("mem_rss_bytes", "mem_working_set_bytes", "mem_uss_bytes")
# Health checks at 1 Hz: up/down and how long /health took. The run status and the health timeline read them.
HEALTH_UP = "health_up"
HEALTH_LATENCY = "health_latency_ms"
# Gauges that are not leak signals: a configured size, idle pooled connections, a limit, cumulative traffic, health.
NOT_JUDGED = {
    "db_pool_size",
    "pg_connections_idle",
    "mem_limit_bytes",
    "threads",
    "processes",
    HEALTH_UP,
    HEALTH_LATENCY,
}


def metric_kind(metric: str) -> str | None:
    """'memory' (bytes, judged by slope in MB/h), 'count' (judged by the drain check), or None (shown only)."""
    if metric in NOT_JUDGED or metric.startswith(("net_", "health_")) or metric.endswith("_total"):
        return None
    if metric.startswith("mem_") or (metric.endswith("_bytes") and ("memory" in metric or "buffer" in metric)):
        return "memory"
    if metric in COUNT_METRICS or any(hint in metric for hint in COUNT_HINTS):
        return "count"
    return None
