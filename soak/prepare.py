"""Before a run starts: its folder, the checks that need no process, and what every child process is started
with. Everything here refuses bad input with a one-line RunError (exit code 2) before anything exists."""

from __future__ import annotations

import signal
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from soak.embedded import SERVICES as EMBEDDED_SERVICES
from soak.embedded import proxied_pairs
from soak.faults import check_faults
from soak.target import TargetError, check_services

ROOT = Path(__file__).resolve().parent.parent
RUN_ROOT = ROOT / "reports"


class RunError(Exception):
    """The run could not start (bad target, sut never healthy, folder in use): one line, exit code 2."""


def new_run_dir(name: str, out: Path | None) -> Path:
    """A new or empty folder; anything else is refused before a process starts."""
    if out is None:
        out = RUN_ROOT / f"{datetime.now():%Y%m%d-%H%M%S}-{name}"
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise RunError(f"--out {out}: run folder exists and is not empty; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {out}: cannot create: {exc.strerror}") from None
    return out


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def die_with_parent() -> None:
    """preexec_fn for child processes: the kernel sends SIGTERM to the child if the runner dies, even by kill -9,
    so no sut or Locust process outlives it (Linux only; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def validate_target(scenario: dict[str, Any]) -> None:
    """What can be checked before any folder or process exists: every sampler source spec parses, and every fault
    names a service it can hit with a means this machine has."""
    where = scenario.get("name") or "scenario"
    try:
        check_services(scenario["target"]["services"])
    except TargetError as exc:
        raise RunError(f"{where}: {exc}") from None
    if not scenario["faults"]:
        return
    target = scenario["target"]
    if target["host"]:
        services, can_kill, proxied = {"backend", "auth", *target["services"]}, False, set()
    else:
        services, can_kill, proxied = set(EMBEDDED_SERVICES), True, proxied_pairs(scenario)
    try:
        check_faults(scenario["faults"], services, can_kill=can_kill, proxied=proxied)
    except ValueError as exc:
        raise RunError(f"{where}: {exc}") from None
