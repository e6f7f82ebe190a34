"""A "Services" tab in the Locust web UI: each sampled service's current memory, connections and pool gauges,
and its memory slope so far, refreshed with the stats every 2 s while a test runs.

Locust's UI renders ``extended_tabs``/``extended_tables`` from its template args and fills them from an
``extended_stats`` list in the ``/stats/requests`` JSON (see Locust's examples/extend_web_ui.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from locust import events

from analysis import leak_slope
from locustfiles import sampling

TAB_KEY = "soak-services"
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
    ("age_s", "Sampled s ago"),
]


def service_rows(latest: dict[tuple[str, str], tuple[float, float]], trend: Any, now: float) -> list[dict[str, Any]]:
    """One row per service; a gauge a service does not have is shown as an empty cell, never as 0."""
    services = sorted({service for service, _ in latest})
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
            slope = f"{per_hour / 1e6:+.1f} ({low / 1e6:+.1f} to {high / 1e6:+.1f})"
        newest = max(ts for (svc, _), (ts, _v) in latest.items() if svc == service)
        rows.append(
            {
                "service": service,
                "rss_mb": value("mem_rss_bytes", 1e6, 1),
                "cpu_percent": value("cpu_percent", 1.0, 1),
                "open_fds": value("open_fds"),
                "tcp_established": value("tcp_established"),
                "ws_connections_active": value("ws_connections_active"),
                "db_pool_checked_out": value("db_pool_checked_out"),
                "slope_mb_per_hour": slope or "(collecting)",
                "age_s": f"{max(0.0, now - newest):.0f}",
            }
        )
    return rows


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    web_ui = environment.web_ui
    if web_ui is None:
        return
    from flask import request

    web_ui.template_args["extended_tabs"] = [{"title": "Services", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}
    ]

    @web_ui.app.after_request
    def _add_service_stats(response: Any) -> Any:
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        plugin = sampling.PLUGIN
        rows = []
        if plugin is not None:
            rows = service_rows(plugin.latest(), plugin.trend, time.time())
        payload = response.get_json(silent=True) or {}
        payload["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
        response.set_data(json.dumps(payload))
        return response
