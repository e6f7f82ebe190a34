"""What the services do while the load runs: per-service memory, CPU, fds, threads, TCP connections, pool and
WebSocket gauges, from pluggable sources, appended to ``samples.csv`` on the load's clock.

    from sampler import Sampler, append_event, parse_source, SourceSpecError
    s = Sampler({"backend": ["port:8001", "prometheus:http://127.0.0.1:8001/metrics"], "locust": ["pid:5678"]},
                out_dir=run_dir, interval=1.0, uss_interval=0.0)
    s.start(); ...; s.latest(); ...; s.stop()

    wait_healthy({"backend": "health:http://127.0.0.1:8001/health", "redis": "tcp:127.0.0.1:6379"}, timeout=60)
    # -> {} when all are up, else {service: why} ; a Sampler of health:/tcp: specs writes health_up every tick and
    # Sampler.down_since() -> {service: unix time it went down}

Never imports Locust or gevent: it runs standalone (``soak sample``) and inside the Locust master alike.
"""

from __future__ import annotations

from sampler.core import Sampler
from sampler.health import wait_healthy
from sampler.spec import SourceSpec, SourceSpecError, parse_services, parse_source
from sampler.writer import append_event

__all__ = [
    "Sampler",
    "SourceSpec",
    "SourceSpecError",
    "append_event",
    "parse_services",
    "parse_source",
    "wait_healthy",
]
