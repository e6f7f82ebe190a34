"""Custom command-line options and the scenario they point at.

The scenario is read and resolved by runspec, like everywhere else: the same keys, defaults and one-line errors as
``soak run`` (a resolved ``scenario.toml`` from a run folder, or a scenario file as written by hand). Without
``--soak-scenario`` the schema's defaults apply, so Locust runs without a scenario at all.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locustfiles.wire import Wire, wire_for
from runspec import ScenarioError, read_scenario_file, resolve
from runspec.scenario import USER_SCHEMA


def user_defaults() -> dict[str, Any]:
    """A [users.<Class>] table with every key at its default (weight 0: a class the scenario does not name)."""
    return {name: copy.deepcopy(key.default) for name, key in USER_SCHEMA.items()}


@dataclass
class Settings:
    """Everything the users, shapes and record writers take from the command line and the resolved scenario."""

    scenario: dict[str, Any] = field(default_factory=lambda: resolve({}, "<defaults>"))
    run_dir: Path | None = None
    auth_host: str = ""
    scenario_path: str = ""

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return self.scenario["users"]

    @property
    def shape(self) -> dict[str, Any]:
        return self.scenario["shape"]

    @property
    def sut(self) -> dict[str, Any]:
        # what RateLimitedUser expects of the free tier: the numbers the sut was started with
        return self.scenario["sut"]

    @property
    def wire(self) -> Wire:
        """The scenario's [protocol] as the clients use it (the contract unless the scenario says otherwise)."""
        return wire_for(self.scenario["protocol"])

    def user(self, class_name: str) -> dict[str, Any]:
        return self.users.get(class_name) or user_defaults()


current = Settings()
_applied_from: tuple[str, str, str] | None = None  # the option values ``current`` was loaded from
_parsed: dict[str, dict[str, Any]] = {}  # --soak-scenario path -> resolved scenario, read while Locust parses


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("soak", "chat-soak options")
    group.add_argument(
        "--soak-scenario",
        default="",
        type=scenario_option,
        help="a scenario TOML (e.g. RUN/scenario.toml); default: built-in",
    )
    group.add_argument("--soak-run-dir", default="", help="run folder for latency.csv and samples.csv (none: no files)")
    group.add_argument("--auth-host", default="", help="auth service base URL (default: same as --host)")
    group.add_argument("--soak-sampler", default="on", choices=["on", "off"], help="sample services from Locust")


def scenario_option(value: str) -> str:
    """The ``type`` of --soak-scenario: the scenario is read and resolved while Locust parses its command line, so a
    bad one is one line and exit 2 before Locust has logged a word or started anything."""
    try:
        _parsed[value] = read_scenario(value)
    except ScenarioError as exc:
        exit_with(str(exc))
    return value


def read_scenario(scenario_path: str) -> dict[str, Any]:
    """The resolved scenario at ``scenario_path`` (the schema's defaults for ""); ScenarioError, one line."""
    if not scenario_path:
        return resolve({}, "<defaults>")
    try:
        data = read_scenario_file(scenario_path)
    except ScenarioError as exc:
        raise ScenarioError(f"--soak-scenario {exc}") from None  # name the flag: the path alone may puzzle
    return resolve(data, scenario_path)


def load_settings(scenario_path: str, run_dir: str = "", auth_host: str = "") -> Settings:
    """Settings from the command-line values; raises ScenarioError with a one-line message."""
    scenario = _parsed.pop(scenario_path, None) or read_scenario(scenario_path)
    settings = Settings(scenario=scenario, scenario_path=scenario_path or "<defaults>")
    if run_dir:
        settings.run_dir = Path(run_dir)
        try:
            settings.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ScenarioError(f"--soak-run-dir {run_dir}: cannot create: {exc.strerror}") from None
    settings.auth_host = auth_host.rstrip("/")
    return settings


def apply(parsed_options: Any) -> Settings:
    """Load the scenario named on the command line into ``current``; bad input ends the process with exit 2.

    Every plugin calls this from its init listener; the scenario is read once per set of option values.
    """
    global current, _applied_from
    values = tuple(getattr(parsed_options, name, "") or "" for name in ("soak_scenario", "soak_run_dir", "auth_host"))
    if values == _applied_from:
        return current
    try:
        current = load_settings(*values)
    except ScenarioError as exc:
        exit_with(str(exc))
    _applied_from = values
    return current


def exit_with(message: str) -> None:
    """A user mistake: one line on stderr and exit code 2 (SystemExit passes through Locust's event hooks)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(2)
