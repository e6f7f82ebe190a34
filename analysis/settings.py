"""The thresholds and targets a run is judged by, read from the run folder's resolved ``scenario.toml``.

The defaults below copy the few that matter from soak/scenario.py's SCHEMA (analysis/ imports nothing of ours),
so a folder without a scenario.toml, or with a partial one, is still judged by the documented defaults.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LATENCY_TARGETS = [
    {"name": "api", "percentile": 95.0, "max_ms": 100.0},
    {"name": "ws round trip", "percentile": 95.0, "max_ms": 50.0},
    {"name": "agent startup", "percentile": 95.0, "max_ms": 500.0},
]
DEFAULT_WARMUP_S = 30.0
DEFAULT_DRAIN_S = 30.0
DEFAULT_ERROR_RATE_MAX = 0.01
DEFAULT_MEMORY_MB_PER_HOUR = 1.0
DEFAULT_COUNT_PER_HOUR = 0.0
DEFAULT_DRAIN_TOLERANCE = 0.0
FAULT_SWITCHES = (
    "leak_bytes_per_message",
    "leak_connections",
    "leak_pool",
    "rest_latency",
    "agent_latency",
    "cross_talk",
)


class RunFolderError(ValueError):
    """Bad input: one line naming the file, row and column. ``soak analyze`` prints it and exits 2."""


@dataclass
class Settings:
    name: str = ""
    description: str = ""
    warmup_s: float = DEFAULT_WARMUP_S
    drain_s: float = DEFAULT_DRAIN_S
    error_rate_max: float = DEFAULT_ERROR_RATE_MAX
    latency_targets: list[dict[str, Any]] = field(default_factory=lambda: [dict(t) for t in DEFAULT_LATENCY_TARGETS])
    memory_mb_per_hour: float = DEFAULT_MEMORY_MB_PER_HOUR
    count_per_hour: float = DEFAULT_COUNT_PER_HOUR
    drain_tolerance: float = DEFAULT_DRAIN_TOLERANCE
    metric_thresholds: dict[str, float] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)
    scenario: dict[str, Any] = field(default_factory=dict)  # the whole file as read, for the report's metadata
    found: bool = False  # False: no scenario.toml, every value is a default

    def faults(self) -> dict[str, Any]:
        """The embedded sut's fault switches that were on in this run."""
        sut = self.scenario.get("sut", {})
        if not isinstance(sut, dict):
            return {}
        return {key: sut[key] for key in FAULT_SWITCHES if sut.get(key)}

    def ignored(self, service: str, metric: str) -> bool:
        return f"{service}:{metric}" in self.ignore or f"{service}:*" in self.ignore or f"*:{metric}" in self.ignore


def _number(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RunFolderError(f"{where}: {key}: expected a number >= 0, got {value!r}")
    return float(value)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RunFolderError(f"{where}: [{key}]: expected a table, got {value!r}")
    return value


def read_settings(path: Path) -> Settings:
    """Settings from a resolved scenario.toml; a missing file or key means the default."""
    if not path.exists():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunFolderError(f"{path}: not valid TOML: {exc}") from None
    where = str(path)
    phases, targets, leaks = (_table(data, key, where) for key in ("phases", "targets", "leaks"))
    settings = Settings(
        name=str(data.get("name", "")),
        description=str(data.get("description", "")),
        warmup_s=_number(phases, "warmup", DEFAULT_WARMUP_S, f"{where}: phases"),
        drain_s=_number(phases, "drain", DEFAULT_DRAIN_S, f"{where}: phases"),
        error_rate_max=_number(targets, "error_rate_max", DEFAULT_ERROR_RATE_MAX, f"{where}: targets"),
        memory_mb_per_hour=_number(leaks, "memory_mb_per_hour", DEFAULT_MEMORY_MB_PER_HOUR, f"{where}: leaks"),
        count_per_hour=_number(leaks, "count_per_hour", DEFAULT_COUNT_PER_HOUR, f"{where}: leaks"),
        drain_tolerance=_number(leaks, "drain_tolerance", DEFAULT_DRAIN_TOLERANCE, f"{where}: leaks"),
        scenario=data,
        found=True,
    )
    if "latency" in targets:
        settings.latency_targets = _latency_targets(targets["latency"], f"{where}: targets.latency")
    metrics = _table(leaks, "metrics", f"{where}: leaks")
    settings.metric_thresholds = {k: _number(metrics, k, 0.0, f"{where}: leaks.metrics") for k in metrics}
    ignore = leaks.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(i, str) for i in ignore):
        raise RunFolderError(f"{where}: leaks.ignore: expected a list of 'service:metric' strings, got {ignore!r}")
    settings.ignore = ignore
    return settings


def _latency_targets(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RunFolderError(f"{where}: expected a list of {{name, percentile, max_ms}} tables, got {value!r}")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise RunFolderError(f"{at}: expected a table with a name, percentile and max_ms")
        pct = item.get("percentile", 95)
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100:
            raise RunFolderError(f"{at}: percentile: expected a number in (0, 100], got {pct!r}")
        if "max_ms" not in item:
            raise RunFolderError(f"{at}: missing key 'max_ms'")
        out.append({"name": item["name"], "percentile": float(pct), "max_ms": _number(item, "max_ms", 0.0, at)})
    return out
