"""Settings of the sut services: one table of options, each settable by a CLI flag or an environment variable.

A flag wins over the environment, the environment over the default. ``leak_bytes_per_message`` is the flag
``--leak-bytes-per-message`` and the variable ``SUT_LEAK_BYTES_PER_MESSAGE``; ``redis_url`` and ``database_url``
also read the conventional ``REDIS_URL`` and ``DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from runspec.scenario import SUT_SCHEMA, ScenarioError, sut_value

SERVICES = ("auth", "backend", "agent")
ENV_PREFIX = "SUT_"
PLAIN_ENV = {"redis_url": "REDIS_URL", "database_url": "DATABASE_URL"}
DEV_SECRET = "sut-development-secret-change-me"  # the launcher passes a random one; compose sets its own


_TYPES = {"str": str, "bool": bool, "int": int, "float": float, "duration": float}

# Exactly the [sut] keys of a scenario, generated from the one schema (runspec.scenario.SUT_SCHEMA): same names,
# same defaults, durations in seconds. redis_url / database_url: "" = the in-process stand-ins (in-memory limits and
# bus, SQLite); "env" = take $REDIS_URL / $DATABASE_URL; anything else is the URL itself.
SutConfig = make_dataclass(
    "SutConfig",
    [(name, _TYPES[key.kind], field(default=key.default)) for name, key in SUT_SCHEMA.items()],
)
SutConfig.__module__ = __name__


@dataclass
class Settings(SutConfig):  # type: ignore[misc,valid-type]
    """A service's whole configuration: the scenario keys plus the plumbing the launcher and compose set."""

    # service plumbing, not scenario keys
    jwt_secret: str = DEV_SECRET
    refresh_token_ttl: float = 7 * 86400.0
    paid_rate_limit: int = 0  # 0 = the paid tier is never limited
    db_pool_timeout: float = 10.0
    redis_prefix: str = "sut:"
    agent_url: str = "http://127.0.0.1:8003"  # backend -> agent when there is no Redis
    agent_job_timeout: float = 30.0  # backend: a job without agent_completed by then is failed (AGENT_UNAVAILABLE)
    seed_users: str = ""  # "email:password:tier,..." created at start
    replay_max_events: int = 1000
    replay_max_bytes: int = 1024 * 1024
    replay_idle_ttl: float = 600.0  # a user's replay buffer outlives their last connection by this long
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 120.0  # 0 = never close a client for a late pong
    parent_pid: int = 0  # exit when this process is gone (set by the launcher)
    data_dir: str = ""  # the SQLite stand-ins' folder, kept across restarts (set by the launcher)


HELP = {
    **{name: key.doc for name, key in SUT_SCHEMA.items()},
    "jwt_secret": "HS256 secret shared by auth and backend",
    "refresh_token_ttl": "refresh token lifetime in seconds",
    "paid_rate_limit": "paid tier: chat messages per window; 0 = unlimited",
    "db_pool_timeout": "seconds to wait for a pool connection before 503",
    "redis_prefix": "prefix of every Redis key and channel",
    "agent_url": "agent base URL (backend only, when there is no Redis)",
    "agent_job_timeout": "backend: seconds from sending a chat job to its agent_completed before the user gets "
    "AGENT_UNAVAILABLE instead; 0 = 300",
    "seed_users": "users created at start: email:password:tier[,...]",
    "replay_max_events": "replay buffer per user: most events kept",
    "replay_max_bytes": "replay buffer per user: most bytes kept",
    "replay_idle_ttl": "seconds a user's replay buffer is kept after their last connection closes",
    "ws_ping_interval": "seconds between server pings; 0 = no pings",
    "ws_ping_timeout": "seconds to wait for a pong before closing; 0 = never",
    "parent_pid": "exit when this pid is gone",
    "data_dir": "folder for the SQLite stand-ins' files, kept across restarts; '' = a temporary folder per process",
}


class SettingsError(ValueError):
    """A bad flag or environment value; the message is one line naming it."""


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _convert(name: str, kind: type, raw: str, where: str) -> Any:
    if name in SUT_SCHEMA:  # a scenario key: the schema's rules (durations as "90s", finite, > 0 where it must be)
        try:
            return sut_value(name, raw, where)
        except ScenarioError as exc:
            raise SettingsError(str(exc)) from None
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{where}: expected true or false, got {raw!r}")
    if kind is str:
        return raw
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{where}: expected a {'whole ' if kind is int else ''}number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{where}: must be >= 0, got {raw!r}")
    return value


def _kinds() -> dict[str, type]:
    return {f.name: type(f.default) for f in fields(Settings)}


def add_flags(parser: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """Add a flag per setting (default None, so the environment can fill what was not given)."""
    defaults = Settings()
    for name, kind in _kinds().items():
        if names is not None and name not in names:
            continue
        default = getattr(defaults, name)
        help_text = f"{HELP[name]} (default {default!r}; env {PLAIN_ENV.get(name, env_name(name))})"
        if kind is bool:
            parser.add_argument(flag_name(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            schema_kind = SUT_SCHEMA[name].kind if name in SUT_SCHEMA else ""
            metavar = "SECONDS" if schema_kind == "duration" else kind.__name__.upper()
            parser.add_argument(flag_name(name), default=None, metavar=metavar, help=help_text)


def from_sources(given: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Settings from flags already parsed (None = not given), then the environment, then the defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, kind in _kinds().items():
        value = given.get(name)
        if value is not None:
            values[name] = value if isinstance(value, kind) else _convert(name, kind, str(value), flag_name(name))
            continue
        for var in (env_name(name), PLAIN_ENV.get(name)):
            if var and var in environ:
                values[name] = _convert(name, kind, environ[var], var)
                break
    return Settings(**values)


def parse_service_args(argv: list[str] | None = None) -> tuple[str, str, int, int | None, Settings]:
    """``python -m sut SERVICE [--host H] [--port P | --fd N] [flags]`` -> (service, host, port, fd, settings)."""
    parser = argparse.ArgumentParser(prog="python -m sut", description="Run one service of the reference sut")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (printed at start)")
    parser.add_argument("--fd", type=int, default=None, help="serve on this already-bound socket (the launcher)")
    add_flags(parser)
    args = parser.parse_args(argv)
    given = {name: getattr(args, name) for name in _kinds()}
    try:
        settings = from_sources(given)
    except SettingsError as exc:
        print(f"sut {args.service}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return args.service, args.host, args.port, args.fd, settings


def to_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in a service process (the launcher's side).

    The environment rather than flags, so the JWT secret and database password do not show in ``ps``.
    """
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        env[env_name(f.name)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env
