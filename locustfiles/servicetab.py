"""The rows of the web UI's "Services" tab (webui.py): each sampled service's current memory, connections and pool
gauges, and its memory slope so far. This module does not import Locust.

MB is runspec.units.MB (2**20 bytes), the MB of the verdict, the report and the progress line: one slope, one number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis import leak_slope
from runspec.units import MB

MIN_POINTS_FOR_SLOPE = 10
COLUMNS = [
    ("service", "Service"),
    ("rss_mb", "RSS MB"),
    ("cpu_percent", "CPU %"),
    ("open_fds", "Open fds"),
    ("tcp_established", "TCP conns"),
    ("ws_connections_active", "WS conns"),
    ("db_pool_checked_out", "DB pool out"),
    ("slope_mb_per_hour", "Memory slope MB/h (so far)"),
    ("leak", "Leak (early verdict)"),
    ("age_s", "Sampled s ago"),
]
STATE_ORDER = ("confirmed leak", "undecided", "clean so far")  # a service shows its worst series


def early_by_service(early: list[dict[str, Any]] | None) -> dict[str, str]:
    """service -> one cell: its worst series' state ("confirmed leak: mem_rss_bytes grows ..." names the series)."""
    out: dict[str, str] = {}
    worst: dict[str, int] = {}
    for item in early or []:
        service, state = str(item.get("service", "")), str(item.get("state", ""))
        rank = STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)
        if service and rank < worst.get(service, len(STATE_ORDER) + 1):
            worst[service] = rank
            out[service] = f"{state}: {item.get('metric', '')} {item.get('reason', '')}" if rank == 0 else state
    return out


def service_rows(
    latest: dict[tuple[str, str], tuple[float, float]],
    trend: Any,
    now: float,
    early: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per service; a gauge a service does not have is shown as an empty cell, never as 0. ``early``: the
    early verdict's latest look (``early.json``'s ``verdicts``), shown per service."""
    services = sorted({service for service, _ in latest})
    leaks = early_by_service(early)
    rows = []
    for service in services:

        def value(metric: str, scale: float = 1.0, digits: int = 0, service: str = service) -> str:
            reading = latest.get((service, metric))
            return "" if reading is None else f"{reading[1] / scale:.{digits}f}"

        points = trend.points(service, "mem_rss_bytes")
        slope = ""
        if len(points) >= MIN_POINTS_FOR_SLOPE:
            ts, values = np.array(points).T
            per_hour, low, high = leak_slope(ts, values)
            slope = f"{per_hour / MB:+.1f} ({low / MB:+.1f} to {high / MB:+.1f})"
        newest = max(ts for (svc, _), (ts, _v) in latest.items() if svc == service)
        rows.append(
            {
                "service": service,
                "rss_mb": value("mem_rss_bytes", MB, 1),
                "cpu_percent": value("cpu_percent", 1.0, 1),
                "open_fds": value("open_fds"),
                "tcp_established": value("tcp_established"),
                "ws_connections_active": value("ws_connections_active"),
                "db_pool_checked_out": value("db_pool_checked_out"),
                "slope_mb_per_hour": slope or "(collecting)",
                "leak": leaks.get(service, "(not judged yet)"),
                "age_s": f"{max(0.0, now - newest):.0f}",
            }
        )
    return rows
