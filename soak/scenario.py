"""Writing the resolved scenario into a run folder. Everything else about scenarios (keys, defaults, loading,
validation, ``--set``) lives in ``runspec.scenario``; this module only adds the TOML writer the leaf cannot have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w


def write_resolved(scenario: dict[str, Any], path: Path) -> None:
    path.write_text(tomli_w.dumps(scenario), encoding="utf-8")
