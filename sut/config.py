"""Settings of the sut services: one table of options, each settable by a CLI flag or an environment variable.

A flag wins over the environment, the environment over the default. ``leak_bytes_per_message`` is the flag
``--leak-bytes-per-message`` and the variable ``SUT_LEAK_BYTES_PER_MESSAGE``; ``redis_url`` and ``database_url``
also read the conventional ``REDIS_URL`` and ``DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, fields
from typing import Any

SERVICES = ("auth", "backend", "agent")
ENV_PREFIX = "SUT_"
PLAIN_ENV = {"redis_url": "REDIS_URL", "database_url": "DATABASE_URL"}
DEV_SECRET = "sut-development-secret-change-me"  # the launcher passes a random one; compose sets its own


@dataclass
class SutConfig:
    """Exactly the [sut] keys of a scenario (soak/scenario.py SCHEMA["sut"]), same defaults, durations in seconds.

    redis_url / database_url: "" = the in-process stand-ins (in-memory limits and bus, SQLite); "env" = take
    $REDIS_URL / $DATABASE_URL; anything else is the URL itself.
    """

    redis_url: str = ""
    database_url: str = ""
    access_token_ttl: float = 900.0
    rate_limit: int = 5
    rate_window: float = 60.0
    agent_step: float = 0.02
    upload_max_bytes: int = 10 * 1024 * 1024
    db_pool_size: int = 5
    db_max_overflow: int = 10
    leak_bytes_per_message: int = 0
    leak_connections: bool = False
    leak_pool: bool = False
    rest_latency: float = 0.0
    agent_latency: float = 0.0
    cross_talk: bool = False


@dataclass
class Settings(SutConfig):
    """A service's whole configuration: the scenario keys plus the plumbing the launcher and compose set."""

    # service plumbing, not scenario keys
    jwt_secret: str = DEV_SECRET
    refresh_token_ttl: float = 7 * 86400.0
    paid_rate_limit: int = 0  # 0 = the paid tier is never limited
    db_pool_timeout: float = 10.0
    redis_prefix: str = "sut:"
    agent_url: str = "http://127.0.0.1:8003"  # backend -> agent when there is no Redis
    seed_users: str = ""  # "email:password:tier,..." created at start
    replay_max_events: int = 1000
    replay_max_bytes: int = 1024 * 1024
    replay_idle_ttl: float = 600.0  # a user's replay buffer outlives their last connection by this long
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 120.0  # 0 = never close a client for a late pong
    parent_pid: int = 0  # exit when this process is gone (set by the launcher)


HELP = {
    "redis_url": "Redis URL for rate limits and the backend<->agent bus; empty = in-process stand-ins",
    "database_url": "SQLAlchemy URL (postgresql+psycopg://...); empty = SQLite in a temporary folder",
    "access_token_ttl": "access token lifetime in seconds",
    "rate_limit": "free tier: chat messages per window; 0 = unlimited",
    "rate_window": "rate limit window in seconds",
    "agent_step": "seconds per agent step (five steps per message)",
    "upload_max_bytes": "largest upload accepted; above it 413",
    "db_pool_size": "SQLAlchemy pool size",
    "db_max_overflow": "SQLAlchemy pool max overflow",
    "leak_bytes_per_message": "FAULT: keep this many written bytes per chat message forever",
    "leak_connections": "FAULT: keep the state of closed WebSocket connections",
    "leak_pool": "FAULT: check out a DB connection per request and never return it",
    "rest_latency": "FAULT: seconds added to every REST call",
    "agent_latency": "FAULT: seconds added to the agent's first step (startup)",
    "cross_talk": "FAULT: also push each event to another user's connections",
    "jwt_secret": "HS256 secret shared by auth and backend",
    "refresh_token_ttl": "refresh token lifetime in seconds",
    "paid_rate_limit": "paid tier: chat messages per window; 0 = unlimited",
    "db_pool_timeout": "seconds to wait for a pool connection before 503",
    "redis_prefix": "prefix of every Redis key and channel",
    "agent_url": "agent base URL (backend only, when there is no Redis)",
    "seed_users": "users created at start: email:password:tier[,...]",
    "replay_max_events": "replay buffer per user: most events kept",
    "replay_max_bytes": "replay buffer per user: most bytes kept",
    "replay_idle_ttl": "seconds a user's replay buffer is kept after their last connection closes",
    "ws_ping_interval": "seconds between server pings; 0 = no pings",
    "ws_ping_timeout": "seconds to wait for a pong before closing; 0 = never",
    "parent_pid": "exit when this pid is gone",
}


class SettingsError(ValueError):
    """A bad flag or environment value; the message is one line naming it."""


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _convert(kind: type, raw: str, where: str) -> Any:
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
    for name, kind in _kinds().items():
        if names is not None and name not in names:
            continue
        help_text = f"{HELP[name]} (env {PLAIN_ENV.get(name, env_name(name))})"
        if kind is bool:
            parser.add_argument(flag_name(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag_name(name), default=None, metavar=kind.__name__.upper(), help=help_text)


def from_sources(given: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Settings from flags already parsed (None = not given), then the environment, then the defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, kind in _kinds().items():
        value = given.get(name)
        if value is not None:
            values[name] = value if isinstance(value, kind) else _convert(kind, str(value), flag_name(name))
            continue
        for var in (env_name(name), PLAIN_ENV.get(name)):
            if var and var in environ:
                values[name] = _convert(kind, environ[var], var)
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
