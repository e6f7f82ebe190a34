"""Which class reads which kind of source spec: the one table from spec kind to Source class.

Nothing in sampler/ imports this module back except the Sampler (core.py), so the source modules can import
``Source`` and ``Tick`` from sources.py without a circle. Each class is imported on first use, so a run that samples
no Redis never imports redis, and one without Docker never imports the Docker SDK.
"""

from __future__ import annotations

import importlib

from sampler.sources import Source
from sampler.spec import SourceSpec

# spec kind -> (module, class)
SOURCES: dict[str, tuple[str, str]] = {
    "pid": ("sampler.process", "ProcessSource"),
    "port": ("sampler.process", "ProcessSource"),
    "cmd": ("sampler.process", "ProcessSource"),
    "docker": ("sampler.dockerstats", "DockerSource"),
    "prometheus": ("sampler.prometheus", "PrometheusSource"),
    "redis": ("sampler.redisinfo", "RedisSource"),
    "postgres": ("sampler.postgres", "PostgresSource"),
    "health": ("sampler.health", "HealthSource"),
    "tcp": ("sampler.health", "HealthSource"),
}


def source_class(kind: str) -> type[Source]:
    module, name = SOURCES[kind]
    return getattr(importlib.import_module(module), name)


def make_source(service: str, spec: SourceSpec) -> Source:
    """The Source that reads ``spec`` for ``service``; no I/O (connections are made on the first read)."""
    return source_class(spec.kind)(service, spec)
