"""Scenario files: load, validate, resolve defaults, apply ``--set`` overrides, write the resolved copy.

A scenario on disk may write durations as "90s", "2m", "1h30m"; the resolved copy written into the run folder
(``scenario.toml``) has every key filled in and every duration as a number of seconds, so the other parts
(``locustfiles/``, ``analysis/``) read it with ``tomllib`` alone and never need this module.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"

USER_CLASSES = ("ChattingUser", "MultiTabUser", "UploadingUser", "RateLimitedUser", "ReconnectingUser")
SHAPE_KINDS = ("steady", "step", "spike", "wave")

# Each leaf is (type, default). "duration" is a number of seconds or a string like "90s", "2m", "1h30m".
# A dict value is a nested table; USER_SCHEMA applies to every [users.<Class>] table.
USER_SCHEMA: dict[str, tuple[str, Any]] = {
    "weight": ("int", 0),
    "wait_min": ("duration", 1.0),
    "wait_max": ("duration", 3.0),
    "event_timeout": ("duration", 10.0),  # how long to wait for a server event before it counts as missing
    "tabs": ("int", 3),  # MultiTabUser: connections per user
    "reopen_every": ("int", 10),  # MultiTabUser: close and reopen a tab every N messages
    "sizes": ("int_list", [1024, 65536, 5 * 1024 * 1024]),  # UploadingUser: file sizes in bytes
    "burst": ("int", 0),  # RateLimitedUser: messages per burst; 0 = the limit + 1
    "drop_every": ("int", 3),  # ReconnectingUser: drop the connection every N messages
}

SCHEMA: dict[str, Any] = {
    "name": ("str", ""),
    "run": ("table", {}),  # as-run metadata written by the runner (host, versions, sut urls); free-form
    "description": ("str", ""),
    "target": {
        "host": ("str", ""),  # backend base URL; empty = start the embedded sut
        "auth_host": ("str", ""),  # auth base URL; empty = same as host (or the embedded auth service)
        "services": ("services", {}),  # name -> sampler source spec(s), for a target that is not the embedded sut
    },
    "sut": {  # options of the embedded sut (ignored when target.host is set)
        "redis_url": ("str", ""),  # "" = in-process stand-ins; "env" = take $REDIS_URL
        "database_url": ("str", ""),  # "" = SQLite; "env" = take $DATABASE_URL
        "access_token_ttl": ("duration", 900.0),
        "rate_limit": ("int", 5),
        "rate_window": ("duration", 60.0),
        "agent_step": ("duration", 0.02),
        "upload_max_bytes": ("int", 10 * 1024 * 1024),
        "db_pool_size": ("int", 5),
        "db_max_overflow": ("int", 10),
        "leak_bytes_per_message": ("int", 0),
        "leak_connections": ("bool", False),
        "leak_pool": ("bool", False),
        "rest_latency": ("duration", 0.0),
        "agent_latency": ("duration", 0.0),
        "cross_talk": ("bool", False),  # fault: also push each event to another user's connections
    },
    "users": "users",
    "shape": {
        "kind": ("str", "steady"),
        "users": ("int", 10),
        "spawn_rate": ("float", 2.0),
        "duration": ("duration", 120.0),  # how long load runs; the drain follows
        "step_users": ("int", 5),  # step: users added per step
        "step_every": ("duration", 60.0),
        "spike_users": ("int", 50),  # spike: users during the spike
        "spike_at": ("duration", 60.0),
        "spike_for": ("duration", 30.0),
        "min_users": ("int", 2),  # wave: users at the trough; "users" is the crest
        "period": ("duration", 86400.0),  # wave: one full day ...
        "time_scale": ("float", 1.0),  # ... compressed by this factor (24.0 = a day in an hour)
    },
    "phases": {
        "warmup": ("duration", 30.0),  # excluded from latency and leak verdicts
        "drain": ("duration", 30.0),  # sampling goes on after load stops, for the drain check
    },
    "sampler": {
        "interval": ("duration", 1.0),
        "uss_interval": ("duration", 0.0),  # 0 = USS off (it costs ms per process)
    },
    "locust": {
        "processes": ("int", 0),  # >0: Locust --processes N
        "stop_timeout": ("duration", 10.0),
    },
    "targets": {
        "error_rate_max": ("float", 0.01),
        "latency": ("latency_list", None),  # list of {name, percentile, max_ms}; name "api" = every HTTP request
    },
    "leaks": {
        "memory_mb_per_hour": ("float", 1.0),  # mem_* metrics, per service
        "count_per_hour": ("float", 0.0),  # count gauges while load runs; 0 = judged by the drain check only
        "drain_tolerance": ("float", 0.0),  # count gauges: allowed level after drain minus level before load
        "metrics": ("float_table", {}),  # per-metric threshold per hour, overrides the above
        "ignore": ("str_list", []),  # "service:metric" or "service:*" left out of the verdict
    },
}

DEFAULT_LATENCY_TARGETS = [
    {"name": "api", "percentile": 95, "max_ms": 100.0},
    {"name": "ws round trip", "percentile": 95, "max_ms": 50.0},
    {"name": "agent startup", "percentile": 95, "max_ms": 500.0},
]

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


class ScenarioError(ValueError):
    """A user mistake in a scenario file or override; the message is one line naming the file and key."""


def parse_duration(value: Any) -> float:
    """Seconds from 90, 90.0, "90", "90s", "2m", "1h30m"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()):
            hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '90s', '2m', '1h30m')")


def _check(kind: str, value: Any, where: str) -> Any:
    def bad(expected: str) -> ScenarioError:
        return ScenarioError(f"{where}: expected {expected}, got {value!r}")

    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("a whole number >= 0")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise bad("a number >= 0")
        return float(value)
    if kind == "duration":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
    if kind == "int_list":
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of whole numbers")
        return value
    if kind == "str_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return value
    if kind == "table":
        if not isinstance(value, dict):
            raise bad("a table")
        return value
    if kind == "float_table":
        if not isinstance(value, dict):
            raise bad("a table of metric = number")
        return {k: _check("float", v, f"{where}.{k}") for k, v in value.items()}
    if kind == "services":
        if not isinstance(value, dict):
            raise bad("a table of service = source spec (or list of specs)")
        out = {}
        for name, specs in value.items():
            specs = [specs] if isinstance(specs, str) else specs
            if not isinstance(specs, list) or not specs or not all(isinstance(s, str) and ":" in s for s in specs):
                raise ScenarioError(f"{where}.{name}: expected a source spec like 'port:8001' or a list of them")
            out[name] = specs
        return out
    if kind == "latency_list":
        if not isinstance(value, list):
            raise bad("a list of {name, percentile, max_ms} tables ([[targets.latency]])")
        out = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(item, dict):
                raise ScenarioError(f"{at}: expected a table with name, percentile, max_ms")
            unknown = set(item) - {"name", "percentile", "max_ms"}
            if unknown:
                raise ScenarioError(f"{at}: unknown key {sorted(unknown)[0]!r} (known: name, percentile, max_ms)")
            for key in ("name", "max_ms"):
                if key not in item:
                    raise ScenarioError(f"{at}: missing key {key!r}")
            pct = item.get("percentile", 95)
            if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100:
                raise ScenarioError(f"{at}.percentile: expected a number in (0, 100], got {pct!r}")
            out.append(
                {
                    "name": _check("str", item["name"], f"{at}.name"),
                    "percentile": pct,
                    "max_ms": _check("float", item["max_ms"], f"{at}.max_ms"),
                }
            )
        return out
    raise AssertionError(kind)


def _resolve_table(schema: dict[str, Any], data: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a table")
    unknown = set(data) - set(schema)
    if unknown:
        key = sorted(unknown)[0]
        raise ScenarioError(f"{_join(where, key)}: unknown key (known here: {', '.join(schema)})")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        at = _join(where, key)
        if spec == "users":
            out[key] = _resolve_users(data.get(key, {}), at)
        elif isinstance(spec, dict):
            out[key] = _resolve_table(spec, data.get(key, {}), at)
        else:
            kind, default = spec
            if key in data:
                out[key] = _check(kind, data[key], at)
            elif kind == "latency_list":
                out[key] = copy.deepcopy(DEFAULT_LATENCY_TARGETS)
            else:
                out[key] = copy.deepcopy(default)
    return out


def _resolve_users(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected tables like [users.ChattingUser]")
    unknown = set(data) - set(USER_CLASSES)
    if unknown:
        raise ScenarioError(f"{where}.{sorted(unknown)[0]}: unknown user class (known: {', '.join(USER_CLASSES)})")
    if not data:
        data = {"ChattingUser": {"weight": 1}}
    out = {name: _resolve_table(USER_SCHEMA, table, f"{where}.{name}") for name, table in data.items()}
    if not any(table["weight"] > 0 for table in out.values()):
        raise ScenarioError(f"{where}: every user class has weight 0; give at least one a weight > 0")
    for name, table in out.items():
        if table["wait_min"] > table["wait_max"]:
            raise ScenarioError(f"{where}.{name}.wait_min: {table['wait_min']} is above wait_max {table['wait_max']}")
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def resolve(data: dict[str, Any], source: str = "<scenario>") -> dict[str, Any]:
    """Validate ``data`` against the schema and fill every default; errors name ``source`` and the key."""
    try:
        resolved = _resolve_table(SCHEMA, data, "")
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    shape = resolved["shape"]
    if shape["kind"] not in SHAPE_KINDS:
        raise ScenarioError(f"{source}: shape.kind: expected one of {', '.join(SHAPE_KINDS)}, got {shape['kind']!r}")
    if shape["duration"] <= 0:
        raise ScenarioError(f"{source}: shape.duration: must be above 0")
    if resolved["sampler"]["interval"] <= 0:
        raise ScenarioError(f"{source}: sampler.interval: must be above 0")
    if shape["spawn_rate"] <= 0:
        raise ScenarioError(f"{source}: shape.spawn_rate: must be above 0")
    return resolved


def find_scenario(name_or_path: str) -> Path:
    """A path as given, or a bare name looked up in scenarios/ (``smoke`` -> scenarios/smoke.toml)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    candidate = SCENARIO_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
    raise ScenarioError(f"{name_or_path}: no such scenario file or name (known names: {known})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``shape.users=50`` -> (["shape", "users"], 50); the value is read as TOML, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set {text!r}: expected key=value, e.g. shape.users=50")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [part.strip() for part in key.split(".")], value


def load_scenario(name_or_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read, override and resolve a scenario; raises ScenarioError with a one-line message on any mistake."""
    path = find_scenario(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    for text in overrides or []:
        keys, value = parse_override(text)
        table = data
        for key in keys[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ScenarioError(f"--set {text!r}: {key} is not a table")
        table[keys[-1]] = value
    data.setdefault("name", path.stem)
    return resolve(data, str(path))


def write_resolved(scenario: dict[str, Any], path: Path) -> None:
    path.write_text(tomli_w.dumps(scenario), encoding="utf-8")
