"""What a run points at when it is a team's own platform: its sources checked, how to ask each service whether it is up
(``/health``, or its port for a service without one), and what a fault schedule may do to it."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from sampler import SourceSpecError, parse_services


class TargetError(Exception):
    """A target that cannot be run against (bad source spec, unreachable service): one line, exit 2."""


def env_or(value: str, variable: str) -> str:
    return os.environ.get(variable, "") if value == "env" else value


def libpq_url(sqlalchemy_url: str) -> str:
    scheme, sep, rest = sqlalchemy_url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def check_services(services: dict[str, list[str]], where: str = "target.services") -> None:
    """Parse every source spec before anything starts, so a typo is one line and not a half-started run."""
    if not services:  # the embedded sut: its sources are made by the runner once it runs
        return
    try:
        parse_services(services)
    except SourceSpecError as exc:
        raise TargetError(f"{where}: {exc}") from None


def _tcp_spec(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return f"tcp:{parts.hostname}:{parts.port or default_port}"


def health_checks(host: str, auth_host: str, services: dict[str, list[str]], path: str = "/health") -> dict[str, str]:
    """service -> a health source spec: ``health:URL<path>`` for HTTP services (``path``: the scenario's
    ``protocol.health``), ``tcp:HOST:PORT`` where there is only a port. The backend is ``host``; auth is
    ``auth_host`` when it differs."""
    checks: dict[str, str] = {}
    for name, specs in services.items():
        for spec in specs:
            if spec.partition(":")[0] in ("health", "tcp"):
                checks[name] = spec
                break
        else:
            for spec in specs:
                kind, _, rest = spec.partition(":")
                found = {
                    "port": f"tcp:127.0.0.1:{rest}",
                    "prometheus": f"health:{rest.split('#')[0]}",
                    "redis": _tcp_spec(rest, 6379),
                    "postgres": _tcp_spec(rest.split("#")[0], 5432),
                }.get(kind)
                if found:
                    checks[name] = found
                    break
    if host and not checks.get("backend", "").startswith("health:"):
        checks["backend"] = f"health:{host.rstrip('/')}{path}"
    if auth_host and auth_host.rstrip("/") != host.rstrip("/"):
        checks["auth"] = f"health:{auth_host.rstrip('/')}{path}"
    return checks


class ExternalTarget:
    """A team's own platform as a fault schedule sees it (soak.faults.Actions): its ports can be cut; its processes
    are its orchestrator's, not ours to kill or restart."""

    def __init__(self, host: str, auth_host: str, services: dict[str, list[str]]) -> None:
        self.ports: dict[str, int] = {}
        for name, url in (("backend", host), ("auth", auth_host)):
            if urlsplit(url).port:
                self.ports[name] = urlsplit(url).port
        for name, specs in services.items():
            for spec in specs:
                kind, _, rest = spec.partition(":")
                if kind == "port" and rest.isdigit():
                    self.ports[name] = int(rest)

    def kill(self, service: str) -> str | None:
        raise RuntimeError(f"{service}: a target given by --host is not ours to kill")

    def restart(self, service: str) -> str | None:
        raise RuntimeError(f"{service}: a target given by --host is not ours to restart")

    def port(self, service: str) -> int | None:
        return self.ports.get(service)

    def proxy(self, service: str, to: str) -> None:
        return None
