"""Where each service ran: ``runtime.json`` in the run folder (runspec.folder.RUNTIME), written by the runner.

``{"runtime": "process" | "docker" | "external", "engine": {"version", "api", "cgroup", "address"} (docker),
"services": {name: {"runs_as": "process" | "container", "container", "pid", "memory_limit_bytes"}}}``. A folder
without it (an older run, another tool's) has no placement; a broken one is a note, never a failed analysis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runspec import folder


def read_placement(run_dir: Path, notes: list[str] | None = None) -> dict[str, Any]:
    """The run's placement, or {} when the folder has none (or an unreadable one, said in ``notes``)."""
    path = Path(run_dir) / folder.RUNTIME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if notes is not None:
            notes.append(f"{folder.RUNTIME}: unreadable ({' '.join(str(exc).split())[:200]}); where it ran is unknown")
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("services", {}), dict):
        if notes is not None:
            notes.append(f"{folder.RUNTIME}: not a placement (expected an object with 'services'); ignored")
        return {}
    return data


def memory_limit(placement: dict[str, Any], service: str) -> float | None:
    """``service``'s memory limit in bytes, or None (no limit, or not known)."""
    where = (placement.get("services") or {}).get(service) or {}
    limit = where.get("memory_limit_bytes") if isinstance(where, dict) else None
    return float(limit) if isinstance(limit, int | float) and limit > 0 else None
