"""What every part agrees on, written once: the scenario schema, the run folder's layout, the units.

A leaf: standard library only, and nothing of ours. ``soak/``, ``locustfiles/``, ``sampler/``, ``analysis/`` and
``sut/`` all import it; it imports none of them.

    from runspec import load_scenario, ScenarioError, folder, units
    scenario = load_scenario("smoke", ["shape.users=50"])   # every key filled in, durations in seconds
    (run_dir / folder.SAMPLES).open(...)                    # the file names, headers and events
    slope_mb_h = slope_bytes_h / units.MB
"""

from __future__ import annotations

from runspec import folder, units
from runspec.scenario import (
    FAULT_SWITCHES,
    SCHEMA,
    ScenarioError,
    find_scenario,
    load_scenario,
    parse_duration,
    read_scenario_file,
    resolve,
)

__all__ = [
    "FAULT_SWITCHES",
    "SCHEMA",
    "ScenarioError",
    "find_scenario",
    "folder",
    "load_scenario",
    "parse_duration",
    "read_scenario_file",
    "resolve",
    "units",
]
