"""The sampler as a Locust plugin: runs on the master only (never on workers or ``--processes`` children), starts
when a test starts, writes the phase events, and stops after the drain that follows the test's end.

It samples the services named in the scenario's ``target.services`` plus the load generator itself (service
``locust``: this process and its ``--processes`` children). ``soak run`` passes ``--soak-sampler off`` because it
samples from outside, before the load starts and through the drain.
"""

from __future__ import annotations

import logging
import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import WorkerRunner

from sampler import Sampler, SourceSpecError, append_event
from sampler.trend import Trend

log = logging.getLogger(__name__)

REPORTS = Path(__file__).resolve().parent.parent / "reports"
TREND_EVERY = 1.0  # seconds between reads of the sampler's latest values for the live table
DRAIN_SLACK = 5.0  # seconds past the drain that quitting waits for drain_end


class SamplingPlugin:
    """State of the master's sampler; the web UI tab reads ``latest`` and ``trend``."""

    def __init__(self, environment: Any, run_dir: Path, scenario: dict[str, Any]) -> None:
        self.environment = environment
        self.run_dir = run_dir
        self.scenario = scenario
        self.services = {"locust": [f"pid:{os.getpid()}"], **scenario.get("target", {}).get("services", {})}
        self.sampler: Sampler | None = None
        self.trend = Trend()
        self.phase_greenlets: list[gevent.Greenlet] = []
        self.reader: gevent.Greenlet | None = None

    def start(self) -> None:
        for greenlet in self.phase_greenlets:
            greenlet.kill(block=False)  # a new test during the previous drain: keep sampling, no drain_end
        self.phase_greenlets = []
        if self.sampler is None:
            sampling = self.scenario.get("sampler", {})
            self.sampler = Sampler(
                self.services,
                self.run_dir,
                interval=float(sampling.get("interval", 1.0)),
                uss_interval=float(sampling.get("uss_interval", 0.0)),
            )
            self.sampler.start()
            self.reader = gevent.spawn(self._read_latest)
        append_event(self.run_dir, "load_start", "locust test started")
        warmup = float(self.scenario.get("phases", {}).get("warmup", 0.0))
        self.phase_greenlets.append(gevent.spawn_later(warmup, append_event, self.run_dir, "warmup_end"))

    def stop_after_drain(self) -> None:
        for greenlet in self.phase_greenlets:
            greenlet.kill(block=False)
        append_event(self.run_dir, "load_stop", "locust test stopped")
        drain = float(self.scenario.get("phases", {}).get("drain", 0.0))
        self.phase_greenlets = [gevent.spawn_later(drain, self._drain_end)]

    def finish_drain(self) -> None:
        """At quit: a headless run quits right after the test stops, so let a pending drain run its course."""
        pending = [greenlet for greenlet in self.phase_greenlets if not greenlet.dead]
        if pending:
            drain = float(self.scenario.get("phases", {}).get("drain", 0.0))
            log.info("draining: sampling goes on for up to %.0f s before exit", drain)
            gevent.joinall(pending, timeout=drain + DRAIN_SLACK)

    def _drain_end(self) -> None:
        append_event(self.run_dir, "drain_end")
        self.close()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.kill(block=False)
            self.reader = None
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None

    def latest(self) -> dict[tuple[str, str], tuple[float, float]]:
        return self.sampler.latest() if self.sampler is not None else {}

    def _read_latest(self) -> None:
        while True:
            self.trend.add(self.latest())
            gevent.sleep(TREND_EVERY)


PLUGIN: SamplingPlugin | None = None


def _read_scenario(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"--soak-scenario {path}: cannot read: {exc}") from None


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    global PLUGIN
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or getattr(options, "soak_sampler", "on") != "on":
        return
    scenario = _read_scenario(getattr(options, "soak_scenario", None))
    run_dir = getattr(options, "soak_run_dir", None)
    run_dir = Path(run_dir) if run_dir else REPORTS / f"{datetime.now():%Y%m%d-%H%M%S}-locust"
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        PLUGIN = SamplingPlugin(environment, run_dir, scenario)
    except SourceSpecError as exc:
        raise SystemExit(f"{getattr(options, 'soak_scenario', 'scenario')}: target.services: {exc}") from None
    log.info("sampling %s into %s", ", ".join(PLUGIN.services), run_dir)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kwargs: Any) -> None:
    if PLUGIN is not None and not isinstance(environment.runner, WorkerRunner):
        PLUGIN.start()


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_kwargs: Any) -> None:
    if PLUGIN is not None and not isinstance(environment.runner, WorkerRunner):
        PLUGIN.stop_after_drain()


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kwargs: Any) -> None:
    if PLUGIN is not None:
        PLUGIN.finish_drain()
        PLUGIN.close()
