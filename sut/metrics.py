"""Prometheus metrics of a service: gauges read at scrape time, plus prometheus_client's process collector.

Each service is its own process, so the default registry (which already holds ``process_resident_memory_bytes``,
``process_open_fds``, ... and the GC collector) is that service's alone.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from starlette.responses import Response

from sut.storage import Store

CHAT_MESSAGES = Counter("sut_chat_messages", "chat messages accepted (WebSocket and REST)")
CHAT_DUPLICATES = Counter("sut_chat_duplicates", "chat messages resent with an accepted client id, not run again")
AGENT_JOBS = Counter("sut_agent_jobs", "jobs the agent started (one per chat message it runs)")
AGENT_JOBS_FAILED = Counter(
    "sut_agent_jobs_failed",
    "chat jobs answered with AGENT_UNAVAILABLE: agent unreachable at submit, channel lost mid-job, or timeout",
    ["reason"],
)
for _reason in ("unreachable", "lost", "timeout"):
    AGENT_JOBS_FAILED.labels(_reason)  # every series from the start, at 0: a rate() needs the zero before the rise
RATE_LIMITED = Counter("sut_rate_limited", "chat messages refused by the rate limiter")
EVENTS_SENT = Counter("sut_ws_events", "events queued to WebSocket connections")
UPLOADS = Counter("sut_uploads", "uploads accepted")
LOOP_FREEZES = Counter("sut_loop_freezes", "event loop freezes made by the freeze_for fault")
WS_CLOSED_SLOW_CONSUMER = Counter(
    "ws_closed_slow_consumer", "WebSocket connections closed with 1013: the client read too slowly"
)


def gauge(name: str, help_text: str, read: Callable[[], float]) -> Gauge:
    metric = Gauge(name, help_text)
    metric.set_function(read)
    return metric


def pool_gauges(store: Store) -> None:
    gauge("db_pool_size", "connections the pool keeps", lambda: store.pool_stats()["size"])
    gauge("db_pool_checked_out", "pool connections in use", lambda: store.pool_stats()["checked_out"])
    gauge(
        "db_pool_overflow",
        "connections open beyond pool_size (up to max_overflow)",
        lambda: store.pool_stats()["overflow"],
    )


def response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
