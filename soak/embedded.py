"""The embedded sut as a run uses it: started (with a service's Redis/Postgres connections through a proxy of ours
when a fault cuts or slows them, and a proxy in front of a service that a fault slows), sampled, health-checked, and
the actions a fault schedule takes on it.

Each proxy sits on one (service, dependency) pair: a cut of "backend to redis" reaches the backend's connections
only, while the agent (which shares the bus with the backend) and auth keep theirs. ``to = ''`` is the proxy in front
of the service itself, which the users then go through.

With ``[sut] runtime = "docker"`` each service is a container (sut/containers.py): it is sampled twice, as the
process inside (``port:``: RSS, CPU, fds) and as the container (``docker:NAME``: the working set the engine and an
OOM kill go by), and kill, restart and pause go through the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soak import netcut
from soak.proxy import Proxy, url_target, url_via
from soak.target import env_or, libpq_url

DEPENDENCIES = {"redis": ("redis_url", "REDIS_URL", 6379), "postgres": ("database_url", "DATABASE_URL", 5432)}
SERVICES = ("auth", "backend", "agent")


def dependency_url(scenario: dict[str, Any], name: str) -> str:
    """The real URL of dependency ``name`` ('redis', 'postgres') the sut uses, or '' when it uses a stand-in."""
    key, variable, _port = DEPENDENCIES[name]
    url = env_or(scenario["sut"][key], variable)
    if name == "postgres" and not url.startswith("postgresql"):
        return ""
    return url


def proxied_pairs(scenario: dict[str, Any], nft: bool | None = None) -> set[tuple[str, str]]:
    """The (service, to) pairs a run puts a proxy on: each service's connections to a real Redis/Postgres that a
    fault cuts or slows, and ``(service, '')`` in front of a service that a fault slows (or cuts, without nftables).
    ``nft``: whether nftables works (None: probe it only if a cut needs to know)."""
    pairs = set()
    for fault in scenario["faults"]:
        service, to, kind = fault["service"], fault["to"], fault["kind"]
        if service not in SERVICES or kind not in ("cut", "slow"):
            continue
        if to:
            if to in DEPENDENCIES and dependency_url(scenario, to):
                pairs.add((service, to))
        elif kind == "slow":
            pairs.add((service, ""))
        else:
            if nft is None:
                nft = netcut.available()
            if not nft:
                pairs.add((service, ""))
    return pairs


class EmbeddedSut:
    """Start, sample, check and hit the embedded sut. Also the fault schedule's ``Actions`` (soak.faults)."""

    def __init__(self, scenario: dict[str, Any], log_dir: Path) -> None:
        from sut.launcher import SutConfig

        self.scenario = scenario
        self.log_dir = log_dir
        self.pairs = proxied_pairs(scenario)
        self.proxies: dict[tuple[str, str], Proxy] = {}
        self.service_settings: dict[str, dict[str, str]] = {}
        try:
            for service, to in sorted(p for p in self.pairs if p[1]):
                key, _variable, default_port = DEPENDENCIES[to]
                url = dependency_url(scenario, to)
                target = url_target(url, default_port)
                if target is None:
                    continue
                proxy = Proxy(target)
                self.proxies[service, to] = proxy
                self.service_settings.setdefault(service, {})[key] = url_via(url, proxy.port)
        except BaseException:
            self._close_proxies()
            raise
        self.config = SutConfig(**scenario["sut"])
        self.sut: Any = None

    def start(self, timeout: float) -> None:
        from sut.launcher import start_sut

        self.sut = start_sut(
            self.config,
            host="127.0.0.1",
            log_dir=self.log_dir,
            timeout=timeout,
            service_settings=self.service_settings,
        )
        for service, to in sorted(self.pairs):
            if not to:
                self.proxies[service, ""] = Proxy(("127.0.0.1", self.sut.ports[service]))

    @property
    def urls(self) -> dict[str, str]:
        return self.sut.urls

    @property
    def user_urls(self) -> dict[str, str]:
        """Where the users go: through the proxy in front of a service when there is one."""
        out = dict(self.sut.urls)
        for (service, to), proxy in self.proxies.items():
            if not to:
                out[service] = f"http://127.0.0.1:{proxy.port}"
        return out

    @property
    def pids(self) -> dict[str, int]:
        return self.sut.pids

    def sources(self) -> dict[str, list[str]]:
        """Sampler sources: each service by its port (found again after a restart) and its /metrics, plus the real
        Redis and Postgres (never through our proxies) when the sut uses them."""
        services = {
            name: [f"port:{self.sut.ports[name]}", f"prometheus:{self.sut.urls[name]}/metrics"]
            for name in sorted(self.sut.urls)
        }
        for name, container in sorted(getattr(self.sut, "containers", {}).items()):
            services[name].append(f"docker:{container}")
        redis_url = dependency_url(self.scenario, "redis")
        database_url = dependency_url(self.scenario, "postgres")
        if redis_url:
            services["redis"] = [f"redis:{redis_url}"]
        if database_url:
            services["postgres"] = [f"postgres:{libpq_url(database_url)}"]
        return services

    def health_checks(self) -> dict[str, str]:
        return {name: f"health:{url}/health" for name, url in sorted(self.sut.urls.items())}

    # --- soak.faults.Actions ---------------------------------------------------------------------------------
    def kill(self, service: str) -> str | None:
        pid = self.sut.pids[service]
        code = self.sut.kill(service)
        return f"pid={pid} exit={code}"

    def restart(self, service: str) -> str | None:
        old = self.sut.pids[service]
        new = self.sut.restart(service, timeout=self.scenario["health"]["start_timeout"])
        return f"pid={old}->{new}"

    def pause(self, service: str) -> str | None:
        return self.sut.pause(service)

    def unpause(self, service: str) -> None:
        self.sut.unpause(service)

    def describe(self) -> list[str]:
        """Lines on where the services run beyond URL and pid: the containers and their limits (none for processes)."""
        return self.sut.describe()

    def placement(self) -> dict[str, Any]:
        """Where each service runs (process or container, memory limit, engine): the run folder's RUNTIME file."""
        return self.sut.placement()

    def port(self, service: str) -> int | None:
        return self.sut.ports.get(service) if self.sut is not None else None

    def proxy(self, service: str, to: str) -> Proxy | None:
        return self.proxies.get((service, to))

    def stop(self) -> None:
        try:
            if self.sut is not None:
                self.sut.stop()
        finally:
            self._close_proxies()

    def _close_proxies(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
