"""What every source shares: the per-tick context and the base class. Which class reads which spec kind is in
registry.py, so the source modules import this one and nothing here imports them."""

from __future__ import annotations

import math
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
    deadline: float = math.inf  # time.monotonic() after which the tick no longer waits for a source's answer
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
    go to ``self.events`` as (event, detail) and are written by the sampler with the tick's timestamp, or as
    (event, detail, unix time) when the source knows better when it happened.
    ``down_since``: unix time since which a health source has found its service down; None while it is up.
    """

    def __init__(self, service: str, spec: SourceSpec) -> None:
        self.service = service
        self.spec = spec
        self.events: list[tuple[str, str] | tuple[str, str, float]] = []
        self.down_since: float | None = None

    def read(self, tick: Tick) -> dict[str, float]:
        raise NotImplementedError

    def wanted_ports(self) -> set[int]:
        """Local ports whose established connections this source will ask for (counted in one query per tick)."""
        return set()

    def close(self) -> None:
        """Release connections; called once when sampling stops."""

    def __repr__(self) -> str:
        return f"{self.service} {self.spec.text}"
