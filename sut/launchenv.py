"""What each service process is started with: its Settings (the shared ones, plus its own overrides) and its
environment. The launcher's side; the service reads it back with ``sut.config.from_sources``.

All three services share the scenario's settings and the launcher's plumbing (JWT secret, Redis prefix, agent URL).
``service_settings`` overrides fields for one service only: a fault runner points the backend's ``redis_url`` at a
TCP proxy in front of the same Redis, so cutting that proxy cuts the backend's Redis and nobody else's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from sut.config import PLAIN_ENV, SERVICES, Settings, SutConfig, to_env

# Fields that must be equal in every service; the value says why, for the error message.
SHARED_ONLY = {
    "jwt_secret": "auth signs the tokens the backend checks with it",
    "redis_prefix": "the backend and the agent meet on its keys and channel",
}


class SutError(RuntimeError):
    """The sut could not be started (the message says which service and why, with the end of its log)."""


def resolve_url(value: str, variable: str) -> str:
    """``"env"`` -> ``$variable`` (SutError when unset); anything else is the URL itself ("" = the stand-in)."""
    if value != "env":
        return value
    url = os.environ.get(variable, "")
    if not url:
        raise SutError(f"{variable.lower()} = 'env' but ${variable} is not set")
    return url


def settings_for(config: SutConfig, **extra: Any) -> Settings:
    """The service settings for ``config``: URLs resolved, plus plumbing (secret, Redis prefix, ...) in ``extra``."""
    values = dataclasses.asdict(config)
    values["redis_url"] = resolve_url(config.redis_url, "REDIS_URL")
    values["database_url"] = resolve_url(config.database_url, "DATABASE_URL")
    return Settings(**values, **extra)


def _check(service: str, key: str, value: Any, kinds: dict[str, type]) -> None:
    if key not in kinds:
        raise SutError(f"service_settings: unknown setting {key!r} for {service} (see sut.config.Settings)")
    if key in SHARED_ONLY:
        raise SutError(f"service_settings: {key} cannot differ per service ({SHARED_ONLY[key]})")
    kind = kinds[key]
    if isinstance(value, bool):  # a bool is an int to isinstance, but no number here
        fits = kind is bool
    elif kind is float:
        fits = isinstance(value, int | float)  # an int is a fine float
    else:
        fits = isinstance(value, kind)
    if not fits:
        raise SutError(
            f"service_settings: {service}.{key} must be a {kind.__name__}, got {type(value).__name__} {value!r}"
        )


def per_service(shared: Settings, overrides: dict[str, dict[str, Any]] | None) -> dict[str, Settings]:
    """Each service's Settings: ``shared`` with that service's ``overrides`` applied (URLs may be ``"env"``).

    Raises SutError naming an unknown service, an unknown or per-service-forbidden field, or a wrong type.
    """
    overrides = overrides or {}
    kinds = {f.name: type(f.default) for f in dataclasses.fields(Settings)}
    for service, changes in overrides.items():
        if service not in SERVICES:
            raise SutError(f"service_settings: unknown service {service!r} (known: {', '.join(SERVICES)})")
        if not isinstance(changes, dict):
            raise SutError(f"service_settings: {service} must map setting names to values, got {changes!r}")
        for key, value in changes.items():
            _check(service, key, value, kinds)
    result: dict[str, Settings] = {}
    for service in SERVICES:
        changes = dict(overrides.get(service, {}))
        for key, variable in PLAIN_ENV.items():
            if key in changes:
                changes[key] = resolve_url(changes[key], variable)
        result[service] = dataclasses.replace(shared, **changes)
    if bool(result["backend"].redis_url) != bool(result["agent"].redis_url):
        # the bus mode follows redis_url: one on Redis and one on the /bus socket would never meet
        raise SutError("service_settings: the backend and the agent must both use Redis or neither (their job bus)")
    return result


def service_env(settings: Settings, data_dir: Path | None) -> dict[str, str]:
    """The environment of one service process: ours minus any SUT_*/REDIS_URL/DATABASE_URL, plus ``settings``.

    ``data_dir``: the SQLite stand-ins' folder, given only to a service without a database_url.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUT_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(to_env(settings))
    if data_dir is not None and not settings.database_url:
        env["SUT_DATA_DIR"] = str(data_dir)  # the launcher's folder, made after the settings were
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env
