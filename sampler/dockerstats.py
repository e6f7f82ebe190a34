"""A service as a Docker container: memory working set and CPU computed exactly as ``docker stats`` does, and the
kernel's OOM kills of it.

Named dockerstats so it never shadows the ``docker`` SDK package. The stats come from the engine's stream (what
``docker stats`` reads), kept by a thread of this source: the engine collects every second, and a one-shot read waits
for its next collection, most of a tick. All the arithmetic is in plain functions over the API's stats payload, so it
is tested on recorded payloads of engines this machine does not run, too.

OOM kills are read from the engine's event log (``oom`` events of the container since the last tick), not from the
container's ``State.OOMKilled``: an orchestrator (or ``[sut] supervise``) starting the container again within the
tick resets that flag, while the event stays. Each is written as ``oom_killed`` dated by the engine.

Beside a process source for the same service (``port:8001`` and ``docker:NAME``: the process inside the container),
this source writes only what the container alone knows: ``mem_working_set_bytes`` and the OOM kills; the process
source writes CPU, threads, downs and restarts, so nothing is written twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from runspec import folder
from runspec.units import MB
from sampler.sources import Source, Tick
from sampler.spec import SourceSpec

DOCKER_TIMEOUT = 3  # seconds, for each engine call
CONTAINER_ONLY = ("mem_working_set_bytes",)  # what this source adds beside a process source
STALE_S = 5.0  # a payload older than this is no reading (the stream is being reopened, or the engine is stuck)
REOPEN_S = 0.5  # after a stream ended (container stopped, engine hiccup), wait this long before asking again


def working_set_bytes(memory_stats: dict[str, Any]) -> float | None:
    """``docker stats``' MEM USAGE: usage minus inactive file cache (cgroup v1: total_inactive_file; v2: inactive_file).

    Same rule as the CLI's calculateMemUsageUnixNoCache (docker/cli cli/command/container/stats_helpers.go),
    the working set that cAdvisor and the kubelet report too. None when the payload has no usage (not running).
    """
    usage = memory_stats.get("usage")
    if usage is None:
        return None
    stats = memory_stats.get("stats") or {}
    if "total_inactive_file" in stats and stats["total_inactive_file"] < usage:  # cgroup v1
        return float(usage - stats["total_inactive_file"])
    inactive = stats.get("inactive_file", 0)  # cgroup v2
    if inactive < usage:
        return float(usage - inactive)
    return float(usage)


def cpu_percent(previous: dict[str, Any], current: dict[str, Any]) -> float:
    """``docker stats``' CPU %: container CPU delta over system CPU delta, times online CPUs (100% = one core)."""
    cpu_delta = current.get("cpu_usage", {}).get("total_usage", 0) - previous.get("cpu_usage", {}).get("total_usage", 0)
    system_delta = current.get("system_cpu_usage", 0) - previous.get("system_cpu_usage", 0)
    online = current.get("online_cpus") or len(current.get("cpu_usage", {}).get("percpu_usage") or ())
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def from_payload(payload: dict[str, Any], previous_cpu: dict[str, Any] | None) -> dict[str, float]:
    """Our metrics from one stats payload; CPU against ``precpu_stats`` when the engine filled it, else ours."""
    memory = payload.get("memory_stats") or {}
    working_set = working_set_bytes(memory)
    if working_set is None:
        return {}
    # Only gauges: usage with page cache or the network byte counters would rise for ever and read as leaks.
    out = {"mem_working_set_bytes": working_set}
    pre = payload.get("precpu_stats") or {}
    if not pre.get("system_cpu_usage"):
        pre = previous_cpu or {}
    current = payload.get("cpu_stats") or {}
    if pre.get("system_cpu_usage") and current.get("system_cpu_usage"):
        out["cpu_percent"] = cpu_percent(pre, current)
    pids = (payload.get("pids_stats") or {}).get("current")
    if pids is not None:
        out["threads"] = float(pids)  # the cgroup's task count: every thread of every process in the container
    return out


class StatsStream:
    """The engine's stats stream of one container, read by a thread of its own; ``latest()`` never waits."""

    def __init__(self, api: Any, container: str) -> None:
        self.api = api
        self.container = container
        self._latest: tuple[float, dict[str, Any]] | None = None
        self._missing: BaseException | None = None  # the SDK's NotFound: no such container (removed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"docker stats {container}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for payload in self.api.stats(self.container, stream=True, decode=True):
                    self._latest, self._missing = (time.monotonic(), payload), None
                    if self._stop.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - the stream broke: asked again below
                if type(exc).__name__ == "NotFound":  # docker.errors.NotFound, by name: the SDK import stays lazy
                    self._latest, self._missing = None, exc
            self._stop.wait(REOPEN_S)  # a stopped container's stream ends after one empty payload

    def latest(self) -> dict[str, Any] | None:
        """The newest payload (None: none fresh); raises NotFound when the container is gone."""
        if self._missing is not None:
            raise self._missing
        latest = self._latest
        if latest is None or time.monotonic() - latest[0] > STALE_S:
            return None
        return latest[1]

    def close(self) -> None:
        self._stop.set()  # the thread ends at the stream's next payload (a daemon: never holds the exit)


class DockerSource(Source):
    """``stats``: a callable returning the latest payload (None: none yet), for recorded payloads; by default the
    engine's stream."""

    def __init__(
        self,
        service: str,
        spec: SourceSpec,
        client: Any = None,
        stats: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        super().__init__(service, spec)
        self.container = spec.target
        self.beside_process = spec.beside_process
        self._client = client
        self._stats_feed = stats
        self._stream: StatsStream | None = None
        self._previous_cpu: dict[str, Any] | None = None
        self._container_id: str | None = None
        self._up = False
        self._events_since: float | None = None  # unix time up to which the engine's events were read
        self._last_payload: dict[str, Any] | None = None

    def _engine(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=DOCKER_TIMEOUT)
        return self._client

    def _stats(self) -> dict[str, Any] | None:
        if self._stats_feed is not None:
            return self._stats_feed()
        if self._stream is None:
            self._stream = StatsStream(self._engine().api, self.container)
        return self._stream.latest()

    def _oom_events(self, since: float, until: float) -> list[dict[str, Any]]:
        # until in the past: the engine answers with what it has and closes, never waits for more
        events = self._engine().api.events(
            since=f"{since:.9f}",
            until=f"{until:.9f}",
            filters={"container": self.container, "event": "oom"},
            decode=True,
        )
        return list(events)

    def _memory_limit(self) -> int:
        """The container's memory limit in bytes (0: none), for the OOM kill's detail."""
        try:
            return int(self._engine().api.inspect_container(self.container)["HostConfig"].get("Memory") or 0)
        except Exception:  # noqa: BLE001 - only a detail: the kill is written without it
            return 0

    def _check_oom(self, tick: Tick) -> None:
        since = self._events_since
        if since is None:  # the first read: a kill before sampling began is not this run's
            self._events_since = tick.ts
            return
        events = self._oom_events(since, tick.ts)
        self._events_since = tick.ts  # only once read: a failed read is asked again, over the longer stretch
        for event in events:
            when = event.get("timeNano", 0) / 1e9 or float(event.get("time", tick.ts))
            limit = self._memory_limit()
            at_limit = f" at its memory limit of {limit / MB:g} MB" if limit else ""
            detail = f"{self.service}: container {self.container} OOM-killed{at_limit}"
            # dated by the engine, never after this tick: the kill comes before the down or restart it caused
            self.events.append((folder.OOM_KILLED, detail, min(max(when, since), tick.ts)))

    def read(self, tick: Tick) -> dict[str, float]:
        try:
            self._check_oom(tick)  # first: a kill since the last tick is named before the down it caused
            payload = self._stats()
        except Exception as exc:
            if type(exc).__name__ == "NotFound":  # docker.errors.NotFound: the container is gone
                return self._down("removed")
            raise
        if payload is None or payload is self._last_payload:
            # nothing fresh (the engine collects about once a second): no reading this tick, no claim either way;
            # a copy of the last reading would be a flat step to a fit
            return {}
        self._last_payload = payload
        out = from_payload(payload, self._previous_cpu)
        if self.beside_process:
            return {metric: out[metric] for metric in CONTAINER_ONLY if metric in out}
        if not out:
            return self._down("not running")
        cpu = payload.get("cpu_stats") or {}
        container_id = payload.get("id")
        recreated = self._container_id is not None and container_id and container_id != self._container_id
        counter_reset = self._previous_cpu is not None and cpu.get("cpu_usage", {}).get(
            "total_usage", 0
        ) < self._previous_cpu.get("cpu_usage", {}).get("total_usage", 0)
        if recreated or counter_reset or (self._container_id is not None and not self._up):
            self.events.append(("service_restart", f"{self.service}: container {self.container} restarted"))
            out.pop("cpu_percent", None)  # a delta across a restart means nothing
        self._container_id = container_id or self._container_id
        self._previous_cpu, self._up = cpu, True
        return out

    def _down(self, why: str) -> dict[str, float]:
        if self._up and not self.beside_process:  # beside a process source, that source says it
            self.events.append(("service_down", f"{self.service}: container {self.container} {why}"))
        self._up, self._previous_cpu = False, None
        return {}

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()
