"""The sampler as a Locust plugin: runs on the master only (never on workers or ``--processes`` children), starts
when a test starts, and stops after the drain that follows the test's end.

It samples the services named in the scenario's ``target.services`` plus the load generator itself (service
``locust``: this process and its ``--processes`` children). The phase events are written by sampler.phases.Phases,
the one owner of them (the runner drives the same class): this plugin says when load starts and stops, and a
greenlet calls ``advance()`` until the drain is over. ``soak run`` passes ``--soak-sampler off`` because it
samples from outside, before the load starts and through the drain.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import WorkerRunner

from locustfiles import options
from runspec.units import LOAD_GENERATOR
from sampler import Sampler, SourceSpecError, parse_services
from sampler.phases import Phases
from sampler.trend import Trend

log = logging.getLogger(__name__)

REPORTS = Path(__file__).resolve().parent.parent / "reports"
TREND_EVERY = 1.0  # seconds between reads of the sampler's latest values for the live table
PHASE_POLL = 1.0  # seconds between the phase greenlet's looks while nothing timed is due (load running)
DRAIN_SLACK = 5.0  # seconds past the drain that quitting waits for drain_end
# Without --soak-scenario a plain `locust -f chat.py` run has no warm-up to mark and no drain to wait for at quit.
NO_SCENARIO_PHASES = {"warmup": 0.0, "drain": 0.0}


class SamplingPlugin:
    """State of the master's sampler; the web UI tab reads ``latest`` and ``trend``."""

    def __init__(self, environment: Any, run_dir: Path, scenario: dict[str, Any], phases: dict[str, float]) -> None:
        self.environment = environment
        self.run_dir = run_dir
        self.scenario = scenario
        self.services = {LOAD_GENERATOR: [f"pid:{os.getpid()}"], **scenario["target"]["services"]}
        parse_services(self.services)  # a bad spec is refused at start-up, not when the first test starts
        self.phases = Phases(run_dir, warmup=phases["warmup"], drain=phases["drain"])
        self.sampler: Sampler | None = None
        self.trend = Trend()
        self.driver: gevent.Greenlet | None = None
        self.reader: gevent.Greenlet | None = None

    def start(self) -> None:
        if self.sampler is None:
            sampling = self.scenario["sampler"]
            self.sampler = Sampler(
                self.services, self.run_dir, interval=sampling["interval"], uss_interval=sampling["uss_interval"]
            )
            self.sampler.start()
            self.reader = gevent.spawn(self._read_latest)
        # a new test during the previous drain goes on as load: no drain_end for the old one (Phases decides)
        self.phases.start_load("locust test started")
        self.phases.advance()
        if self.driver is None:
            self.driver = gevent.spawn(self._drive)

    def stop_after_drain(self) -> None:
        self.phases.stop_load("locust test stopped")

    def _drive(self) -> None:
        """Write the timed phase events as they fall due; close the sampler once the drain is over."""
        while not self.phases.done:
            wait = self.phases.seconds_to_next()
            gevent.sleep(PHASE_POLL if wait is None else min(wait, PHASE_POLL))
            self.phases.advance()
        self.driver = None  # before close() yields: a test started meanwhile gets a driver of its own
        self.close()

    def finish_drain(self) -> None:
        """At quit: a headless run quits right after the test stops, so let a pending drain run its course."""
        driver = self.driver
        if driver is not None and self.phases.draining:
            log.info("draining: sampling goes on for up to %.0f s before exit", self.phases.drain)
            driver.join(timeout=self.phases.drain + DRAIN_SLACK)

    def close(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.kill(block=False)
        sampler, self.sampler = self.sampler, None
        if sampler is not None:
            sampler.stop()

    def latest(self) -> dict[tuple[str, str], tuple[float, float]]:
        return self.sampler.latest() if self.sampler is not None else {}

    def _read_latest(self) -> None:
        while True:
            self.trend.add(self.latest())
            gevent.sleep(TREND_EVERY)


PLUGIN: SamplingPlugin | None = None


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    global PLUGIN
    parsed = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or getattr(parsed, "soak_sampler", "on") != "on":
        return
    settings = options.apply(parsed)  # read once, shared with the users' plugin
    phases = settings.scenario["phases"] if getattr(parsed, "soak_scenario", "") else NO_SCENARIO_PHASES
    run_dir = settings.run_dir or REPORTS / f"{datetime.now():%Y%m%d-%H%M%S}-locust"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        PLUGIN = SamplingPlugin(environment, run_dir, settings.scenario, phases)
    except SourceSpecError as exc:
        options.exit_with(f"{settings.scenario_path}: target.services: {exc}")
    except OSError as exc:
        options.exit_with(f"--soak-run-dir {run_dir}: cannot create: {exc.strerror or exc}")
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
