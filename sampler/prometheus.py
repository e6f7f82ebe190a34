"""Scrape a Prometheus ``/metrics`` page (the sut's, a team's exporter, cAdvisor) and keep the chosen series.

Without a mapping the gauges named as in DESIGN.md (and the sut's other gauges) keep their names. With one,
``prometheus:URL#their_name=our_name,other{label="x"}=ours2,plain`` keeps exactly those series; samples that share a
name and match the labels are summed (per-worker or per-state series add up to one figure per service).
"""

from __future__ import annotations

import http.client
import urllib.parse

from prometheus_client.parser import text_string_to_metric_families

from sampler.sources import Source, Tick
from sampler.spec import PromSelector, SourceSpec

SCRAPE_TIMEOUT = 2.0  # seconds; the tick's own time box usually ends the wait first
DEFAULT_GAUGES = (
    "ws_connections_active",
    "ws_replay_buffer_bytes",
    "db_pool_size",
    "db_pool_checked_out",
    "db_pool_overflow",
    "agent_tasks_inflight",
    "redis_connected_clients",
    "pg_connections",
    "tcp_established",
)


class PrometheusSource(Source):
    def __init__(self, service: str, spec: SourceSpec) -> None:
        super().__init__(service, spec)
        self.url = spec.target
        self.selectors = spec.selectors or tuple(PromSelector(name, (), name) for name in DEFAULT_GAUGES)
        self._names = {selector.name for selector in self.selectors}
        parts = urllib.parse.urlsplit(self.url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range: a spec mistake, refused up front
        self._connect = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._netloc = parts.netloc
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None

    def read(self, tick: Tick) -> dict[str, float]:
        # One kept-alive connection (plain http.client: a scrape a second through requests costs ~1 ms of CPU)
        if self._conn is None:
            self._conn = self._connect(self._netloc, timeout=SCRAPE_TIMEOUT)
        try:
            self._conn.request("GET", self._path, headers={"Accept": "text/plain"})
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()  # a fresh connection next tick
            raise
        if response.status != 200:
            raise OSError(f"GET {self.url}: HTTP {response.status} {response.reason}")
        if response.will_close:
            self.close()
        return select(body.decode("utf-8", errors="replace"), self.selectors, self._names)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def select(text: str, selectors: tuple[PromSelector, ...], names: set[str] | None = None) -> dict[str, float]:
    """Our metrics from a scrape: each selector's matching samples summed; a series absent from the page is left out."""
    names = names if names is not None else {selector.name for selector in selectors}
    # Parse only the sample lines that can match (a page is mostly the process and GC collectors): startswith with
    # a tuple runs in C, the parser in Python. Without their TYPE lines the samples keep their exact names.
    prefixes = tuple(names)
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(prefixes))
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(wanted + "\n"):
        for sample in family.samples:
            if sample.name in names:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    out: dict[str, float] = {}
    for selector in selectors:
        values = [
            value
            for labels, value in samples.get(selector.name, ())
            if all(labels.get(key) == wanted for key, wanted in selector.labels)
        ]
        if values:
            out[selector.metric] = out.get(selector.metric, 0.0) + sum(values)
    return out
