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
RATE_LIMITED = Counter("sut_rate_limited", "chat messages refused by the rate limiter")
EVENTS_SENT = Counter("sut_ws_events", "events queued to WebSocket connections")
UPLOADS = Counter("sut_uploads", "uploads accepted")


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
