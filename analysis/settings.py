"""The thresholds and targets a run is judged by, read from the run folder's resolved ``scenario.toml``.

The keys, types and defaults are runspec.scenario's: a folder without a scenario.toml is judged by the defaults, a
partial one has the rest filled in, and a bad one is refused with the same one line every other part prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runspec.scenario import FAULT_SWITCHES, ScenarioError, read_scenario_file, resolve


class RunFolderError(ValueError):
    """Bad input: one line naming the file, row and column. ``soak analyze`` prints it and exits 2."""


@dataclass
class Settings:
    name: str
    description: str
    warmup_s: float
    drain_s: float
    error_rate_max: float
    latency_targets: list[dict[str, Any]]
    memory_mb_per_hour: float
    count_per_hour: float
    drain_tolerance: float
    metric_thresholds: dict[str, float]
    ignore: list[str]
    count_steps: float = 3.0  # leaks.count_steps
    late: bool = True  # leaks.late
    scenario: dict[str, Any] = field(default_factory=dict)  # the resolved scenario, for the report's metadata
    found: bool = False  # False: no scenario.toml, every value is a default

    @classmethod
    def from_scenario(cls, scenario: dict[str, Any], found: bool) -> Settings:
        """From a resolved scenario (runspec.scenario.resolve): every key is there, with its type."""
        phases, targets, leaks = scenario["phases"], scenario["targets"], scenario["leaks"]
        return cls(
            name=scenario["name"],
            description=scenario["description"],
            warmup_s=phases["warmup"],
            drain_s=phases["drain"],
            error_rate_max=targets["error_rate_max"],
            latency_targets=[dict(t) for t in targets["latency"]],
            memory_mb_per_hour=leaks["memory_mb_per_hour"],
            count_per_hour=leaks["count_per_hour"],
            drain_tolerance=leaks["drain_tolerance"],
            metric_thresholds=dict(leaks["metrics"]),
            ignore=list(leaks["ignore"]),
            count_steps=leaks["count_steps"],
            late=leaks["late"],
            scenario=scenario,
            found=found,
        )

    def faults(self) -> dict[str, Any]:
        """The embedded sut's fault switches that were on in this run."""
        sut = self.scenario.get("sut", {})
        return {key: sut[key] for key in FAULT_SWITCHES if sut.get(key)}

    def ignored(self, service: str, metric: str) -> bool:
        return f"{service}:{metric}" in self.ignore or f"{service}:*" in self.ignore or f"*:{metric}" in self.ignore


def read_settings(path: Path) -> Settings:
    """Settings from a resolved scenario.toml; a missing file means every default, a missing key its default."""
    found = path.exists()
    try:
        return Settings.from_scenario(resolve(read_scenario_file(path) if found else {}, str(path)), found)
    except ScenarioError as exc:
        raise RunFolderError(str(exc)) from None
