"""What every source shares: the per-tick context, the base class, and the factory from a parsed spec."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sampler import procfs
from sampler.netstat import Snapshot
from sampler.spec import SourceSpec


@dataclass
class Tick:
    """One tick, shared by all sources: its timestamp, the machine's TCP view, and lazily the process table."""

    ts: float  # unix seconds, the timestamp of every row of this tick
    mono: float  # time.monotonic() at the start of the tick, for rates
    net: Snapshot | None
    uss_due: bool = False
    _parents: dict[int, int] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def parents(self) -> dict[int, int]:
        """pid -> parent pid, read once per tick whichever source asks first."""
        with self._lock:
            if self._parents is None:
                self._parents = procfs.parent_map()
            return self._parents


def make_tick(net: Snapshot | None = None, uss_due: bool = False) -> Tick:
    return Tick(ts=time.time(), mono=time.monotonic(), net=net, uss_due=uss_due)


class Source:
    """Reads one service's metrics from one place. ``read`` returns {metric: value}; {} while the service is down.

    ``read`` may raise: the sampler logs the failure once and keeps ticking. Events (``service_restart``, ...)
    go to ``self.events`` as (event, detail) and are written by the sampler with the tick's timestamp.
    """

    def __init__(self, service: str, spec: SourceSpec) -> None:
        self.service = service
        self.spec = spec
        self.events: list[tuple[str, str]] = []

    def read(self, tick: Tick) -> dict[str, float]:
        raise NotImplementedError

    def wanted_ports(self) -> set[int]:
        """Local ports whose established connections this source will ask for (counted in one query per tick)."""
        return set()

    def close(self) -> None:
        """Release connections; called once when sampling stops."""

    def __repr__(self) -> str:
        return f"{self.service} {self.spec.text}"


def make_source(service: str, spec: SourceSpec) -> Source:
    # Imported here so a run that samples no Redis never imports redis, and so on.
    if spec.kind in ("pid", "port", "cmd"):
        from sampler.process import ProcessSource

        return ProcessSource(service, spec)
    if spec.kind == "docker":
        from sampler.dockerstats import DockerSource

        return DockerSource(service, spec)
    if spec.kind == "prometheus":
        from sampler.prometheus import PrometheusSource

        return PrometheusSource(service, spec)
    if spec.kind == "redis":
        from sampler.redisinfo import RedisSource

        return RedisSource(service, spec)
    if spec.kind == "postgres":
        from sampler.postgres import PostgresSource

        return PostgresSource(service, spec)
    raise AssertionError(spec.kind)
