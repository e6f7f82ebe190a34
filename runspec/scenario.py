"""The scenario: loading, validation against the key tables (``runspec.keys``), ``--set`` overrides and durations.
The runner, the Locust users, the analysis and the sut all read scenarios through ``resolve`` and get the same values
and the same one-line errors.

A scenario on disk may write durations as "90s", "2m", "1h30m"; a resolved scenario (``scenario.toml`` in a run
folder) has every key filled in and every duration as a number of seconds, and resolves again to itself.
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

from runspec.keys import (
    CUT_MODES,
    DEFAULT_LATENCY_TARGETS,
    DURATION_PATTERN,
    FAULT_KINDS,
    FAULT_SCHEMA,
    FAULT_SWITCHES,
    NAME_PATTERN,
    SCENARIO_DIR,
    SCHEMA,
    SHAPE_KINDS,
    SUT_SCHEMA,
    USER_CLASSES,
    USER_SCHEMA,
    Key,
)
from runspec.protocol import ProtocolError, check_protocol

__all__ = [
    "CUT_MODES",
    "DEFAULT_LATENCY_TARGETS",
    "FAULT_KINDS",
    "FAULT_SCHEMA",
    "FAULT_SWITCHES",
    "SCENARIO_DIR",
    "SCHEMA",
    "SHAPE_KINDS",
    "SUT_SCHEMA",
    "USER_CLASSES",
    "USER_SCHEMA",
    "Key",
    "ScenarioError",
    "apply_overrides",
    "check",
    "find_scenario",
    "load_scenario",
    "parse_duration",
    "parse_override",
    "parse_value",
    "read_scenario_file",
    "resolve",
    "sut_value",
]


class ScenarioError(ValueError):
    """A user mistake in a scenario file, an override or a flag; the message is one line naming the file and key."""


def parse_duration(value: Any) -> float:
    """Seconds from 90, 90.0, "90", "90s", "2m", "1h30m", "250ms"; ValueError (one line) otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite duration: {value!r}")
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    if isinstance(value, str):
        match = DURATION_PATTERN.match(value)
        if match and any(match.groups()):
            hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds + millis / 1000
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '90s', '2m', '1h30m', '250ms')")


def _number(value: Any, whole: bool) -> bool:
    if isinstance(value, bool):
        return False
    if whole:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def check(key: Key, value: Any, where: str) -> Any:
    """``value`` as the key's type, or ScenarioError naming ``where``."""

    def bad(expected: str) -> ScenarioError:
        return ScenarioError(f"{where}: expected {expected}, got {value!r}")

    kind = key.kind
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        if key.choices and value not in key.choices:
            raise bad(f"one of {', '.join(key.choices)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind in ("int", "float", "duration"):
        if kind == "duration":
            try:
                number = parse_duration(value)
            except ValueError as exc:
                raise ScenarioError(f"{where}: {exc}") from None
        elif not _number(value, whole=kind == "int") or value < 0:
            raise bad("a whole number >= 0" if kind == "int" else "a finite number >= 0")
        else:
            number = value if kind == "int" else float(value)
        if key.positive and number <= 0:
            raise ScenarioError(f"{where}: must be above 0, got {value!r}")
        return number
    if kind == "int_list":
        if not isinstance(value, list) or not all(_number(v, whole=True) and v > 0 for v in value):
            raise bad("a list of whole numbers > 0")
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
        return {k: check(Key("float", 0.0, ""), v, f"{where}.{k}") for k, v in value.items()}
    if kind == "services":
        return _services(value, where)
    if kind == "latency_list":
        return _latency_list(value, where)
    if kind == "fault_list":
        return _fault_list(value, where)
    raise AssertionError(kind)


def _services(value: Any, where: str) -> dict[str, list[str]]:
    # The specs themselves are parsed by the sampler (sampler.parse_services) before anything starts.
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a table of service = source spec (or list of specs), got {value!r}")
    out = {}
    for name, specs in value.items():
        specs = [specs] if isinstance(specs, str) else specs
        if not isinstance(specs, list) or not specs or not all(isinstance(s, str) and ":" in s for s in specs):
            raise ScenarioError(f"{where}.{name}: expected a source spec like 'port:8001' or a list of them")
        out[name] = specs
    return out


def _latency_list(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list of {{name, percentile, max_ms}} tables ([[targets.latency]])")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ScenarioError(f"{at}: expected a table with name, percentile, max_ms")
        unknown = set(item) - {"name", "percentile", "max_ms"}
        if unknown:
            raise ScenarioError(f"{at}: unknown key {sorted(unknown)[0]!r} (known: name, percentile, max_ms)")
        for name in ("name", "max_ms"):
            if name not in item:
                raise ScenarioError(f"{at}: missing key {name!r}")
        if not isinstance(item["name"], str) or not item["name"]:
            raise ScenarioError(f"{at}.name: expected a non-empty string, got {item['name']!r}")
        pct = item.get("percentile", 95)
        if not _number(pct, whole=False) or not 0 < pct <= 100:
            raise ScenarioError(f"{at}.percentile: expected a number in (0, 100], got {pct!r}")
        max_ms = check(Key("float", 0.0, "", positive=True), item["max_ms"], f"{at}.max_ms")
        out.append({"name": item["name"], "percentile": float(pct), "max_ms": max_ms})
    return out


def _fault_list(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list of tables ([[faults]]), got {value!r}")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        fault = _resolve_table(FAULT_SCHEMA, item, at)
        for name in ("kind", "service"):
            if not fault[name]:
                raise ScenarioError(
                    f"{at}.{name}: missing (one of {', '.join(FAULT_KINDS)})"
                    if name == "kind"
                    else f"{at}.service: missing"
                )
        if fault["kind"] in ("cut", "slow") and fault["for"] <= 0:
            raise ScenarioError(f"{at}.for: a {fault['kind']} needs a length above 0")
        if fault["kind"] == "slow" and fault["latency"] <= 0:
            raise ScenarioError(f"{at}.latency: a slow fault needs a latency above 0")
        if fault["to"] not in ("", "redis", "postgres"):
            raise ScenarioError(f"{at}.to: expected '', 'redis' or 'postgres', got {fault['to']!r}")
        if fault["every"] and fault["every"] <= fault["for"]:
            raise ScenarioError(f"{at}.every: {fault['every']} must be longer than for ({fault['for']})")
        out.append(fault)
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _resolve_table(schema: dict[str, Any], data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a table, got {data!r}")
    unknown = set(data) - set(schema)
    if unknown:
        key = sorted(unknown)[0]
        raise ScenarioError(f"{_join(where, key)}: unknown key (known here: {', '.join(schema)})")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        at = _join(where, name)
        if spec == "users":
            out[name] = _resolve_users(data.get(name, {}), at)
        elif isinstance(spec, dict):
            out[name] = _resolve_table(spec, data.get(name, {}), at)
        else:
            out[name] = check(spec, data[name], at) if name in data else copy.deepcopy(spec.default)
    return out


def _resolve_users(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected tables like [users.ChattingUser], got {data!r}")
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


def resolve(data: dict[str, Any], source: str = "<scenario>") -> dict[str, Any]:
    """Validate ``data`` against the schema and fill every default; errors name ``source`` and the key."""
    try:
        resolved = _resolve_table(SCHEMA, data, "")
        check_protocol(resolved["protocol"])
        if resolved["name"] and not NAME_PATTERN.match(resolved["name"]):
            raise ScenarioError(
                f"name: {resolved['name']!r} is not a folder name (letters, digits, '.', '_', '-'; no '/' or '..')"
            )
        arrival = resolved["arrival"]
        if arrival["rest_rate"] > 0 and arrival["rate"] <= 0:
            raise ScenarioError(
                f"arrival.rest_rate: {arrival['rest_rate']:g} needs arrival.rate above 0 (the open model)"
            )
    except (ScenarioError, ProtocolError) as exc:
        raise ScenarioError(f"{source}: {exc}") from None
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


def parse_value(raw: str) -> Any:
    """A value as written after ``=`` in ``--set`` or a flag: read as TOML, else kept as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``shape.users=50`` -> (["shape", "users"], 50)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set {text!r}: expected key=value, e.g. shape.users=50")
    return [part.strip() for part in key.split(".")], parse_value(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        table = data
        for key in keys[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ScenarioError(f"--set {text!r}: {key} is not a table")
        table[keys[-1]] = value
    return data


def read_scenario_file(path: Path | str) -> dict[str, Any]:
    """The TOML table of a scenario file, not yet resolved; ScenarioError naming the file on any mistake."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a folder, not a scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None


def load_scenario(name_or_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read, override and resolve a scenario; raises ScenarioError with a one-line message on any mistake."""
    path = find_scenario(name_or_path)
    data = apply_overrides(read_scenario_file(path), overrides or [])
    data.setdefault("name", path.stem)
    return resolve(data, str(path))


def sut_value(name: str, raw: Any, where: str) -> Any:
    """A [sut] key's value from a flag or an environment variable (text) or a scenario (typed)."""
    key = SUT_SCHEMA[name]
    if isinstance(raw, str) and key.kind != "str":
        raw = raw.strip()
        if key.kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
        raw = parse_value(raw)
    return check(key, raw, where)
