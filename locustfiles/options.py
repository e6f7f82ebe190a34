"""Custom command-line options and the scenario they point at.

The scenario is read with tomllib alone (a resolved ``scenario.toml`` from a run folder, or a scenario file as
written by hand): every key this package uses has its default here, mirroring soak/scenario.py, so Locust runs
without the soak package and without a scenario at all.
"""

from __future__ import annotations

import copy
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USER_CLASSES = ("ChattingUser", "MultiTabUser", "UploadingUser", "RateLimitedUser", "ReconnectingUser")

USER_DEFAULTS: dict[str, Any] = {
    "weight": 0,
    "wait_min": 1.0,
    "wait_max": 3.0,
    "event_timeout": 10.0,
    "tabs": 3,
    "reopen_every": 10,
    "sizes": [1024, 65536, 5 * 1024 * 1024],
    "burst": 0,
    "drop_every": 3,
}
SHAPE_DEFAULTS: dict[str, Any] = {
    "kind": "steady",
    "users": 10,
    "spawn_rate": 2.0,
    "duration": 120.0,
    "step_users": 5,
    "step_every": 60.0,
    "spike_users": 50,
    "spike_at": 60.0,
    "spike_for": 30.0,
    "min_users": 2,
    "period": 86400.0,
    "time_scale": 1.0,
}
# What RateLimitedUser expects of the free tier; the scenario's [sut] holds the numbers the sut was started with.
SUT_DEFAULTS: dict[str, Any] = {"rate_limit": 5, "rate_window": 60.0}
DURATION_KEYS = {"wait_min", "wait_max", "event_timeout", "duration", "step_every", "spike_at", "spike_for", "period"}
SHAPE_KINDS = ("steady", "step", "spike", "wave")

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


class ScenarioFileError(ValueError):
    """A one-line message naming the file and key."""


@dataclass
class Settings:
    """Everything the users, shapes and record writers take from the command line and the scenario."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    shape: dict[str, Any] = field(default_factory=lambda: dict(SHAPE_DEFAULTS))
    sut: dict[str, Any] = field(default_factory=lambda: dict(SUT_DEFAULTS))
    run_dir: Path | None = None
    auth_host: str = ""
    scenario_path: str = ""

    def user(self, class_name: str) -> dict[str, Any]:
        return self.users.get(class_name) or dict(USER_DEFAULTS)


current = Settings(users={"ChattingUser": {**USER_DEFAULTS, "weight": 1}})


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("soak", "chat-soak options")
    group.add_argument(
        "--soak-scenario", default="", help="a scenario TOML (e.g. RUN/scenario.toml); default: built-in"
    )
    group.add_argument("--soak-run-dir", default="", help="run folder for latency.csv and samples.csv (none: no files)")
    group.add_argument("--auth-host", default="", help="auth service base URL (default: same as --host)")
    group.add_argument("--soak-sampler", default="on", choices=["on", "off"], help="sample services from Locust")


def _duration(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ScenarioFileError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()):
            hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
    raise ScenarioFileError(f"{where}: expected seconds or e.g. '90s', '2m', '1h30m', got {value!r}")


def _fill(defaults: dict[str, Any], data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioFileError(f"{where}: expected a table")
    out = copy.deepcopy(defaults)
    for key, value in data.items():
        if key not in defaults:
            continue  # keys this package does not use belong to other parts
        at = f"{where}.{key}"
        if key in DURATION_KEYS:
            out[key] = _duration(value, at)
        elif isinstance(defaults[key], list):
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ScenarioFileError(f"{at}: expected a list of whole numbers, got {value!r}")
            out[key] = value
        elif isinstance(defaults[key], str):
            if not isinstance(value, str):
                raise ScenarioFileError(f"{at}: expected a string, got {value!r}")
            out[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ScenarioFileError(f"{at}: expected a number >= 0, got {value!r}")
            out[key] = type(defaults[key])(value)
    return out


def parse_scenario(data: dict[str, Any], source: str) -> Settings:
    """Settings from a parsed scenario table; raises ScenarioFileError naming ``source`` and the key."""
    try:
        users_data = data.get("users") or {"ChattingUser": {"weight": 1}}
        if not isinstance(users_data, dict):
            raise ScenarioFileError("users: expected tables like [users.ChattingUser]")
        users = {}
        for name, table in users_data.items():
            if name not in USER_CLASSES:
                raise ScenarioFileError(f"users.{name}: unknown user class (known: {', '.join(USER_CLASSES)})")
            users[name] = _fill(USER_DEFAULTS, table, f"users.{name}")
            if users[name]["wait_min"] > users[name]["wait_max"]:
                raise ScenarioFileError(f"users.{name}.wait_min: above wait_max")
        if not any(table["weight"] > 0 for table in users.values()):
            raise ScenarioFileError("users: every user class has weight 0; give at least one a weight > 0")
        shape = _fill(SHAPE_DEFAULTS, data.get("shape", {}), "shape")
        if shape["kind"] not in SHAPE_KINDS:
            raise ScenarioFileError(f"shape.kind: expected one of {', '.join(SHAPE_KINDS)}, got {shape['kind']!r}")
        if shape["spawn_rate"] <= 0 or shape["duration"] <= 0:
            raise ScenarioFileError("shape: spawn_rate and duration must be above 0")
        sut = _fill(SUT_DEFAULTS, data.get("sut", {}), "sut")
    except ScenarioFileError as exc:
        raise ScenarioFileError(f"{source}: {exc}") from None
    return Settings(users=users, shape=shape, sut=sut, scenario_path=source)


def load_settings(scenario_path: str, run_dir: str = "", auth_host: str = "") -> Settings:
    """Settings from the command-line values; raises ScenarioFileError with a one-line message."""
    if scenario_path:
        path = Path(scenario_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ScenarioFileError(f"--soak-scenario {scenario_path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioFileError(f"--soak-scenario {scenario_path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioFileError(f"--soak-scenario {scenario_path}: not valid TOML: {exc}") from None
        settings = parse_scenario(data, scenario_path)
    else:
        settings = parse_scenario({}, "<defaults>")
    if run_dir:
        settings.run_dir = Path(run_dir)
        try:
            settings.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ScenarioFileError(f"--soak-run-dir {run_dir}: cannot create: {exc.strerror}") from None
    settings.auth_host = auth_host.rstrip("/")
    return settings


def apply(parsed_options: Any) -> Settings:
    """Load the scenario named on the command line into ``current``; bad input ends the process with exit 2."""
    global current
    try:
        current = load_settings(
            getattr(parsed_options, "soak_scenario", "") or "",
            getattr(parsed_options, "soak_run_dir", "") or "",
            getattr(parsed_options, "auth_host", "") or "",
        )
    except ScenarioFileError as exc:
        exit_with(str(exc))
    return current


def exit_with(message: str) -> None:
    """A user mistake: one line on stderr and exit code 2 (SystemExit passes through Locust's event hooks)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(2)
