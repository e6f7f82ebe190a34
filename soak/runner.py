"""One run, from scenario to report: check the target, start the sut (if embedded), the sampler and Locust on one
clock, drive the phases, watch every service's health, drain, stop everything, analyse and report.

A night that goes wrong never reads green: a Ctrl-C or SIGTERM, a service down for longer than ``health.down_max``
(the load is stopped early) or a load generator that dies all leave an event in ``events.csv`` that the analysis turns
into status ``incomplete`` and a non-zero exit code; a ``kill -9`` leaves a folder without ``load_stop`` /
``drain_end``, which the analysis reads the same way.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from runspec import FAULT_SWITCHES, folder
from runspec.units import LOAD_GENERATOR
from sampler import Sampler, append_event
from sampler.health import wait_healthy
from sampler.phases import Phases
from sampler.trend import Trend
from soak import netcut, progress
from soak.early import EarlyWatch
from soak.embedded import EmbeddedSut
from soak.faults import FaultSchedule
from soak.locustcmd import LocustCommand, worker_argv
from soak.prepare import RunError, die_with_parent, new_run_dir, validate_target, version
from soak.scenario import write_resolved
from soak.target import ExternalTarget, health_checks

BASELINE_TICKS = 3  # idle samples before load starts: the level the drain check compares against
LOCUST_GRACE = 60.0  # seconds past duration + stop timeout before the runner stops Locust itself
LOCUST_STOP_WAIT = 30.0  # after SIGINT, how long Locust may take to write its report before SIGKILL
STACK_DUMP_WAIT = 1.0  # after SIGUSR1, for a hung Locust to write its stacks
LOCUST_NORMAL_EXITS = (0, 1)  # 1: Locust's own "some requests failed"; anything else is the load generator lost
POLL = 0.5


@dataclass
class RunOptions:
    scenario: dict[str, Any]
    out: Path | None = None
    processes: int | None = None
    master: bool = False
    expect_workers: int = 1
    locust_args: list[str] = field(default_factory=list)
    baseline: Path | None = None


class Run:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.scenario = options.scenario
        validate_target(self.scenario)
        if not self.scenario["target"]["host"]:
            _check_runtime(self.scenario["sut"])  # a memory limit without containers: refused before anything exists
        netcut.cleanup_stale()  # rules left by a runner that was killed with -9
        self.external = self._preflight()  # an external target must be healthy before a folder or process exists
        self.dir = new_run_dir(self.scenario["name"], options.out)
        self.interrupted = False
        self.signals = 0
        self.sut: EmbeddedSut | None = None
        self.actions: EmbeddedSut | ExternalTarget | None = None
        self.faults: FaultSchedule | None = None
        self.samplers: list[Sampler] = []
        self.health: Sampler | None = None
        self.locust: subprocess.Popen | None = None
        self.stop_asked: float | None = None  # when the runner sent Locust its SIGINT
        self.trend = Trend()
        phases = self.scenario["phases"]
        self.phases = Phases(self.dir, warmup=phases["warmup"], drain=phases["drain"])
        self.stopped_early = ""
        self.early: EarlyWatch | None = None
        self.decided = ""  # a leak the early verdict confirmed, with leaks.stop_on_confirmed: the load ends on it

    # --- signals -------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals += 1
        if not self.interrupted:
            self.interrupted = True
            append_event(self.dir, folder.INTERRUPTED, signal.Signals(signum).name)
            self.say(
                f"{signal.Signals(signum).name}: stopping the load; the run will be analysed and marked incomplete"
            )
        self._stop_locust(kill=self.signals > 1)

    def _stop_locust(self, kill: bool = False) -> None:
        if self.locust and self.locust.poll() is None:
            # SIGINT, not SIGTERM: Locust writes its HTML report only on a normal end or Ctrl-C.
            self.locust.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            if self.stop_asked is None:  # a Locust that does not stop (a user stuck in on_stop) must not hold the night
                self.stop_asked = time.time()

    def _kill_hung_locust(self) -> None:
        """SIGKILL, after SIGUSR1 (the plugin's stack dump into locust.log): why it hung stays on record."""
        try:
            self.locust.send_signal(signal.SIGUSR1)
            self.locust.wait(STACK_DUMP_WAIT)
        except subprocess.TimeoutExpired:
            pass
        self.locust.kill()

    def say(self, line: str) -> None:
        print(line, flush=True)

    # --- phases --------------------------------------------------------------------------------------------
    def execute(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.say(f"run folder: {self.dir}")
            host, auth_host, services, checks = self._start_target()
            self._write_scenario(host, auth_host, services)
            self._start_sampler(services, checks)
            self._load(host, auth_host)
            self._drain()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._analyse()

    def _start_target(self) -> tuple[str, str, dict[str, list[str]], dict[str, str]]:
        if self.external is not None:
            host, auth_host, services, _checks = self.external
            self.actions = ExternalTarget(host, auth_host, services)
            return self.external
        from sut.launcher import SutError

        self.say("starting the embedded sut (auth, backend, agent) ...")
        self.sut = self.actions = EmbeddedSut(self.scenario, self.dir)
        try:
            self.sut.start(timeout=self.scenario["health"]["start_timeout"])
        except SutError as exc:
            raise RunError(str(exc)) from None
        for name in sorted(self.sut.urls):
            self.say(f"  {name:8s} {self.sut.urls[name]}  pid {self.sut.pids[name]}")
        for line in self.sut.describe():  # the containers, with [sut] runtime = "docker"
            self.say(f"  {line}")
        for key, value in self.scenario["sut"].items():
            if key in FAULT_SWITCHES and value:
                append_event(self.dir, folder.FAULT, f"{key}={value}")
        services, checks = self.sut.sources(), self.sut.health_checks()
        users = self.sut.user_urls
        for name, url in sorted(users.items()):
            if url != self.sut.urls[name]:
                self.say(f"  {name:8s} users go through a proxy at {url} (for a slow fault)")
        return users["backend"], users["auth"], services, checks

    def _preflight(self) -> tuple[str, str, dict[str, list[str]], dict[str, str]] | None:
        target = self.scenario["target"]
        if not target["host"]:
            return None
        host, auth_host = target["host"], target["auth_host"] or target["host"]
        services = dict(target["services"])
        checks = health_checks(host, auth_host, services, self.scenario["protocol"]["health"])
        self._wait_healthy(checks)
        self._probe(host, auth_host)
        return host, auth_host, services, checks

    def _probe(self, host: str, auth_host: str) -> None:
        """The contract walked once before any load: a night is never spent on a first-step error."""
        from soak.probe import preflight

        self.say("probing the target's protocol (soak probe) ...")
        problems = preflight(self.scenario, host, auth_host)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise RunError(f"{problems[0]}{more}; no load was sent (soak probe shows every step)")

    def _wait_healthy(self, checks: dict[str, str]) -> None:
        timeout = self.scenario["health"]["start_timeout"]
        self.say(f"waiting up to {progress.format_duration(timeout)} for {', '.join(sorted(checks))} to be healthy")
        failing = wait_healthy(checks, timeout)
        if failing:
            name = sorted(failing)[0]
            spec = checks[name].partition(":")[2]
            raise RunError(f"{name} at {spec} not healthy after {timeout:.0f} s: {failing[name]}; no load was sent")

    def _write_scenario(self, host: str, auth_host: str, services: dict[str, list[str]]) -> None:
        resolved = dict(self.scenario)
        resolved["target"] = {**self.scenario["target"], "services": services}
        resolved["run"] = {
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count() or 0,
            "versions": {pkg: version(pkg) for pkg in ("chat-soak", "locust", "gevent", "pandas")},
            "embedded_sut": self.sut is not None,
            "host": host,
            "auth_host": auth_host,
            "command": " ".join(sys.argv),
        }
        self.scenario = resolved
        write_resolved(resolved, self.dir / folder.SCENARIO)
        placement = self.sut.placement() if self.sut is not None else _external_placement(services)
        (self.dir / folder.RUNTIME).write_text(json.dumps(placement, indent=1) + "\n", encoding="utf-8")

    def _start_sampler(self, services: dict[str, list[str]], checks: dict[str, str]) -> None:
        sampling = self.scenario["sampler"]
        if services:
            sampler = Sampler(services, self.dir, interval=sampling["interval"], uss_interval=sampling["uss_interval"])
            sampler.start()
            self.samplers.append(sampler)
        if checks:
            interval = self.scenario["health"]["interval"]
            self.health = Sampler({name: [spec] for name, spec in checks.items()}, self.dir, interval=interval)
            self.health.start()
            self.samplers.append(self.health)
        self._sleep(BASELINE_TICKS * sampling["interval"])

    def _locust_command(self, host: str, auth_host: str, web: tuple[str, int] | None = None) -> list[str]:
        return LocustCommand(
            run_dir=self.dir,
            scenario=self.scenario,
            host=host,
            auth_host=auth_host,
            web=web,
            processes=self.options.processes,
            master=self.options.master,
            expect_workers=self.options.expect_workers,
            extra=self.options.locust_args,
        ).argv()

    def _spawn_locust(self, command: list[str]) -> None:
        with (self.dir / folder.LOCUST_LOG).open("ab") as log:
            self.locust = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
            )

    def _load(self, host: str, auth_host: str) -> None:
        if self.interrupted:
            return
        shape = self.scenario["shape"]
        duration, stop_timeout = shape["duration"], self.scenario["locust"]["stop_timeout"]
        start = time.time()
        self.phases.start_load(f"{shape['kind']} {shape['users']} users for {duration:.0f} s")
        self._spawn_locust(self._locust_command(host, auth_host))
        if self.scenario["faults"] and self.actions is not None:
            self.faults = FaultSchedule(self.scenario["faults"], self.dir, self.actions)
            self.faults.start(start, until=start + duration)
        if self.samplers:  # the load generator samples as service "locust": the report shows it is not the leak
            interval = self.scenario["sampler"]["interval"]
            own = Sampler({LOAD_GENERATOR: [f"pid:{self.locust.pid}"]}, self.dir, interval=interval)
            own.start()
            self.samplers.append(own)
        self.say(
            f"load: {shape['kind']}, {shape['users']} users, {progress.format_duration(duration)} (log: locust.log)"
        )
        self.early = EarlyWatch(self.dir, self.scenario["leaks"]["early_every"], start, self._leak_confirmed)
        every = progress.progress_interval(duration)
        next_progress = start + every
        deadline = start + duration + stop_timeout + LOCUST_GRACE
        killed = False
        while self.locust.poll() is None:
            now = time.time()
            self.phases.advance()
            for line in self.faults.advance() if self.faults else ():
                self.say(line)
            for sampler in self.samplers:
                self.trend.add(sampler.latest())
            self._watch_health()
            self.early.poll(now)
            self._stop_if_decided()
            if now >= next_progress and not self.interrupted:
                history = progress.latest_history(self.dir / folder.LOCUST_HISTORY)
                slopes = progress.memory_slopes(self.trend)
                self.say(progress.progress_line(now - start, duration, history, slopes, self.early.summary()))
                next_progress += every
            if now > deadline and self.stop_asked is None:
                self.say("Locust ran past its duration: stopping it")
                self._stop_locust()
            elif self.stop_asked is not None and now > self.stop_asked + stop_timeout + LOCUST_STOP_WAIT and not killed:
                self.say(
                    f"Locust still running {now - self.stop_asked:.0f} s after it was asked to stop: killing it"
                    " (its stacks are at the end of locust.log)"
                )
                self._kill_hung_locust()
                killed = True
            time.sleep(POLL)
        code = self.locust.returncode
        self.early.stop()
        if self.faults is not None:
            for line in self.faults.stop():  # the drain measures the service at rest, not under a fault
                self.say(line)
        self.phases.stop_load(f"locust exit code {code}")
        if code not in LOCUST_NORMAL_EXITS and not self.interrupted and not self.stopped_early:
            append_event(self.dir, folder.LOAD_GENERATOR_GONE, f"exit code {code}")
            self.say(f"Locust ended with exit code {code}; the run is incomplete. Last lines of locust.log:")
            self.say(self._tail(self.dir / folder.LOCUST_LOG))
        elif not (self.dir / folder.LOCUST_STATS).exists():
            # It exited as if it had run (a Locust stuck at start-up until our SIGINT), but it measured nothing:
            # a run without load must not pass on its samples alone.
            append_event(self.dir, folder.LOAD_GENERATOR_GONE, f"exit code {code}, no {folder.LOCUST_STATS} written")
            self.say(f"Locust wrote no {folder.LOCUST_STATS}; the run is incomplete. Last lines of locust.log:")
            self.say(self._tail(self.dir / folder.LOCUST_LOG))

    def _leak_confirmed(self, detail: str) -> None:
        """From the early verdict's thread: say it; with leaks.stop_on_confirmed the loop ends the load on it."""
        self.say(f"leak confirmed (early verdict): {detail}")
        if self.scenario["leaks"]["stop_on_confirmed"] and not self.decided:
            self.decided = detail

    def _stop_if_decided(self) -> None:
        if not self.decided or self.interrupted or self.stopped_early:
            return
        self.stopped_early = f"leak confirmed: {self.decided}"
        append_event(self.dir, folder.STOPPED_DECIDED, self.stopped_early)
        self.say("leaks.stop_on_confirmed: stopping the load; the run is decided (failed)")
        self._stop_locust()

    def _watch_health(self) -> None:
        """A service down for longer than health.down_max ends the load: what follows would measure an outage."""
        if self.health is None or self.interrupted or self.stopped_early:
            return
        down_max = self.scenario["health"]["down_max"]
        now = time.time()
        for service, since in sorted(self.health.down_since().items()):
            if now - since > down_max:
                self.stopped_early = f"{service} down for {now - since:.0f} s (health.down_max {down_max:.0f} s)"
                append_event(self.dir, folder.STOPPED_EARLY, self.stopped_early)
                self.say(f"{self.stopped_early}: stopping the load; the run is incomplete")
                self._stop_locust()
                return

    def _drain(self) -> None:
        if self.interrupted or self.locust is None:
            return
        self.say(f"drain: sampling {progress.format_duration(self.scenario['phases']['drain'])} more with no load")
        while not self.interrupted and not self.phases.done:
            wait = self.phases.seconds_to_next()
            if wait is None:
                break
            time.sleep(min(POLL, wait))
            self.phases.advance()

    def _sleep(self, seconds: float) -> None:
        end = time.time() + seconds
        while not self.interrupted and time.time() < end:
            time.sleep(min(POLL, max(0.0, end - time.time())))

    def _stop_all(self) -> None:
        if self.faults is not None:
            for line in self.faults.stop():  # the network back first: Locust and the sut must be able to stop
                self.say(line)
        if self.locust and self.locust.poll() is None:
            self.locust.send_signal(signal.SIGINT)
            try:
                self.locust.wait(LOCUST_STOP_WAIT)
            except subprocess.TimeoutExpired:
                self._kill_hung_locust()
                self.locust.wait()
        for sampler in self.samplers:
            sampler.stop()
        if self.sut is not None:
            self.sut.stop()

    def _analyse(self) -> int:
        from analysis import RunFolderError, analyze_and_write, exit_code, summary_lines

        try:
            analysis = analyze_and_write(self.dir, baseline=self.options.baseline)
        except RunFolderError as exc:
            self.say(f"analysis failed: {exc}")
            return folder.EXIT_BAD_INPUT
        for line in summary_lines(analysis):
            self.say(line)
        self.say(f"report: {self.dir / folder.REPORT}")
        return exit_code(analysis)

    @staticmethod
    def _tail(path: Path, lines: int = 15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _check_runtime(sut: dict[str, Any]) -> None:
    from sut.containers import check_runtime
    from sut.launchenv import SutError

    try:
        check_runtime(sut)
    except SutError as exc:
        raise RunError(str(exc)) from None


def _external_placement(services: dict[str, list[str]]) -> dict[str, Any]:
    """Where a team's services ran, as far as their sampler specs say: a container (docker:NAME) or a process."""
    placed: dict[str, Any] = {}
    for name, specs in sorted(services.items()):
        kinds = {spec.partition(":")[0]: spec.partition(":")[2] for spec in specs}
        if "docker" in kinds:
            placed[name] = {"runs_as": "container", "container": kinds["docker"], "memory_limit_bytes": None}
        elif kinds.keys() & {"pid", "port", "cmd"}:
            placed[name] = {"runs_as": "process", "memory_limit_bytes": None}
    return {"runtime": "external", "services": placed}


def run_worker(master_host: str, master_port: int, locust_args: list[str]) -> int:
    """A Locust worker for ``soak run --master`` elsewhere: no sut, no sampler, no analysis."""
    return subprocess.call(worker_argv(master_host, master_port, locust_args))
