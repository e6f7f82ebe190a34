"""A service as a Docker container: memory working set and CPU computed exactly as ``docker stats`` does.

Named dockerstats so it never shadows the ``docker`` SDK package. The engine call is one line (``_stats``); all
the arithmetic is in plain functions over the API's stats payload, so it is tested on real payloads where no
engine runs. One-shot stats (API 1.41+) answer at once; CPU is the delta against our previous reading.
"""

from __future__ import annotations

from typing import Any

from sampler.sources import Source, Tick
from sampler.spec import SourceSpec

DOCKER_TIMEOUT = 3  # seconds, for each engine call


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


class DockerSource(Source):
    def __init__(self, service: str, spec: SourceSpec, client: Any = None) -> None:
        super().__init__(service, spec)
        self.container = spec.target
        self._client = client
        self._previous_cpu: dict[str, Any] | None = None
        self._container_id: str | None = None
        self._up = False

    def _stats(self) -> dict[str, Any]:
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=DOCKER_TIMEOUT)
        return self._client.api.stats(self.container, stream=False, one_shot=True)

    def read(self, tick: Tick) -> dict[str, float]:
        try:
            payload = self._stats()
        except Exception as exc:
            if type(exc).__name__ == "NotFound":  # docker.errors.NotFound: the container is gone
                return self._down("removed")
            raise
        out = from_payload(payload, self._previous_cpu)
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
        if self._up:
            self.events.append(("service_down", f"{self.service}: container {self.container} {why}"))
        self._up, self._previous_cpu = False, None
        return {}

    def close(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()
