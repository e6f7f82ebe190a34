"""Locust's command line for a run, built from what the run wants (headless or the web UI, who samples, how many
processes), never by editing a list after the fact."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runspec import folder

ROOT = Path(__file__).resolve().parent.parent
SHAPED_LOCUSTFILE = ROOT / "locustfiles" / "shaped.py"  # users + the scenario's load shape
UI_LOCUSTFILE = ROOT / "locustfiles" / "chat.py"  # users only: the web UI's form sets users and spawn rate


@dataclass
class LocustCommand:
    run_dir: Path
    scenario: dict[str, Any]
    host: str
    auth_host: str
    web: tuple[str, int] | None = None  # (host, port): the web UI; None: headless with the scenario's shape
    processes: int | None = None  # None: the scenario's locust.processes
    master: bool = False
    expect_workers: int = 1
    extra: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        run, locust = self.run_dir, self.scenario["locust"]
        locustfile = UI_LOCUSTFILE if self.web else SHAPED_LOCUSTFILE
        command = [sys.executable, "-m", "locust", "-f", str(locustfile)]
        command += ["--host", self.host, "--auth-host", self.auth_host]
        command += ["--soak-scenario", str(run / folder.SCENARIO), "--soak-run-dir", str(run)]
        # Headless runs are sampled by the runner from outside (before load and through the drain); the web UI's
        # tests start and stop at the user's click, so the sampler runs inside Locust there.
        command += ["--soak-sampler", "on" if self.web else "off"]
        command += ["--csv", str(run / folder.LOCUST_CSV_PREFIX), "--csv-full-history"]
        command += ["--html", str(run / folder.LOCUST_HTML), "--stop-timeout", str(int(locust["stop_timeout"]))]
        if self.web:
            command += ["--web-host", self.web[0], "--web-port", str(self.web[1])]
        else:
            command += ["--headless", "--only-summary"]
        processes = self.processes if self.processes is not None else locust["processes"]
        if self.master:
            command += ["--master", "--expect-workers", str(self.expect_workers)]
        elif processes:
            command += ["--processes", str(processes)]
        classes = [name for name, table in self.scenario["users"].items() if table["weight"] > 0]
        return command + self.extra + classes


def worker_argv(master_host: str, master_port: int, extra: list[str]) -> list[str]:
    """A Locust worker for ``soak run --master`` elsewhere: no sut, no sampler, no analysis."""
    command = [sys.executable, "-m", "locust", "-f", str(SHAPED_LOCUSTFILE), "--worker"]
    return command + ["--master-host", master_host, "--master-port", str(master_port), *extra]
