"""One run, from scenario to report: start the sut (if embedded), the sampler and Locust on one clock, write the
phase events, drain, stop everything, analyse and report. A Ctrl-C or SIGTERM still ends in an analysed folder
marked as interrupted; a ``kill -9`` leaves a folder that ``soak analyze`` can read (everything is flushed as it goes).
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sampler import Sampler, append_event
from sampler.trend import Trend
from soak import progress
from soak.scenario import write_resolved

ROOT = Path(__file__).resolve().parent.parent
RUN_ROOT = ROOT / "reports"
LOCUSTFILE = ROOT / "locustfiles" / "shaped.py"  # users + the scenario's load shape
UI_LOCUSTFILE = ROOT / "locustfiles" / "chat.py"  # users only: the web UI's form sets users and spawn rate
BASELINE_TICKS = 3  # idle samples before load starts: the level the drain check compares against
LOCUST_GRACE = 60.0  # seconds past duration + stop timeout before the runner stops Locust itself
LOCUST_STOP_WAIT = 30.0  # after SIGINT, how long Locust may take to write its report before SIGKILL
POLL = 0.5


class RunError(Exception):
    """The run could not start (bad target, sut never healthy, folder in use): one line, exit code 2."""


@dataclass
class RunOptions:
    scenario: dict[str, Any]
    out: Path | None = None
    processes: int | None = None
    master: bool = False
    expect_workers: int = 1
    locust_args: list[str] = field(default_factory=list)
    baseline: Path | None = None


def new_run_dir(name: str, out: Path | None) -> Path:
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RUN_ROOT / f"{stamp}-{name}"
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: run folder exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _libpq_url(sqlalchemy_url: str) -> str:
    scheme, sep, rest = sqlalchemy_url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def embedded_services(sut: Any, config: Any) -> dict[str, list[str]]:
    """Sampler sources for the embedded sut: each service by its port (found again after a restart) and its
    /metrics, plus Redis and Postgres when the sut uses the real servers."""
    services = {name: [f"port:{sut.ports[name]}", f"prometheus:{sut.urls[name]}/metrics"] for name in sorted(sut.urls)}
    redis_url = _env_or(config.redis_url, "REDIS_URL")
    database_url = _env_or(config.database_url, "DATABASE_URL")
    if redis_url:
        services["redis"] = [f"redis:{redis_url}"]
    if database_url and database_url.startswith("postgresql"):
        services["postgres"] = [f"postgres:{_libpq_url(database_url)}"]
    return services


def die_with_parent() -> None:
    """preexec_fn for child processes: the kernel sends SIGTERM to the child if the runner dies, even by kill -9,
    so no sut or Locust process outlives it (Linux only; elsewhere a no-op)."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _env_or(value: str, variable: str) -> str:
    return os.environ.get(variable, "") if value == "env" else value


class Run:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.scenario = options.scenario
        self.dir = new_run_dir(self.scenario["name"], options.out)
        self.interrupted = False
        self.signals = 0
        self.sut: Any = None
        self.samplers: list[Sampler] = []
        self.locust: subprocess.Popen | None = None
        self.trend = Trend()

    # --- signals -------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals += 1
        if not self.interrupted:
            self.interrupted = True
            append_event(self.dir, "interrupted", signal.Signals(signum).name)
            self.say(f"{signal.Signals(signum).name}: stopping the load; the run will still be analysed")
        if self.locust and self.locust.poll() is None:
            # SIGINT, not SIGTERM: Locust writes its HTML report only on a normal end or Ctrl-C.
            self.locust.send_signal(signal.SIGINT if self.signals == 1 else signal.SIGKILL)

    def say(self, line: str) -> None:
        print(line, flush=True)

    # --- phases --------------------------------------------------------------------------------------------
    def execute(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.say(f"run folder: {self.dir}")
            host, auth_host, services = self._start_target()
            self._write_scenario(host, auth_host, services)
            self._start_sampler(services)
            self._load(host, auth_host)
            self._drain()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._analyse()

    def _start_target(self) -> tuple[str, str, dict[str, list[str]]]:
        target = self.scenario["target"]
        if target["host"]:
            return target["host"], target["auth_host"] or target["host"], dict(target["services"])
        from sut.launcher import SutConfig, SutError, start_sut

        config = SutConfig(**self.scenario["sut"])
        self.say("starting the embedded sut (auth, backend, agent) ...")
        try:
            self.sut = start_sut(config, host="127.0.0.1", log_dir=self.dir)
        except SutError as exc:
            raise RunError(str(exc)) from None
        for name in sorted(self.sut.urls):
            self.say(f"  {name:8s} {self.sut.urls[name]}  pid {self.sut.pids[name]}")
        for key, value in self.scenario["sut"].items():
            if (key.startswith("leak_") or key in ("cross_talk", "rest_latency", "agent_latency")) and value:
                append_event(self.dir, "fault", f"{key}={value}")
        return self.sut.urls["backend"], self.sut.urls["auth"], embedded_services(self.sut, config)

    def _write_scenario(self, host: str, auth_host: str, services: dict[str, list[str]]) -> None:
        resolved = dict(self.scenario)
        resolved["target"] = {**self.scenario["target"], "services": services}
        resolved["run"] = {
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count() or 0,
            "versions": {pkg: _version(pkg) for pkg in ("chat-soak", "locust", "gevent", "pandas")},
            "embedded_sut": self.sut is not None,
            "host": host,
            "auth_host": auth_host,
            "command": " ".join(sys.argv),
        }
        self.scenario = resolved
        write_resolved(resolved, self.dir / "scenario.toml")

    def _start_sampler(self, services: dict[str, list[str]]) -> None:
        sampling = self.scenario["sampler"]
        if services:
            sampler = Sampler(services, self.dir, interval=sampling["interval"], uss_interval=sampling["uss_interval"])
            sampler.start()
            self.samplers.append(sampler)
        self._sleep(BASELINE_TICKS * sampling["interval"])

    def _locust_command(self, host: str, auth_host: str, locustfile: Path = LOCUSTFILE) -> list[str]:
        run, locust = self.dir, self.scenario["locust"]
        command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
        command += ["--host", host, "--auth-host", auth_host, "--soak-scenario", str(run / "scenario.toml")]
        command += ["--soak-run-dir", str(run), "--soak-sampler", "off", "--csv", str(run / "locust")]
        command += ["--csv-full-history", "--html", str(run / "locust_report.html")]
        command += ["--stop-timeout", str(int(locust["stop_timeout"])), "--only-summary"]
        processes = self.options.processes if self.options.processes is not None else locust["processes"]
        if self.options.master:
            command += ["--master", "--expect-workers", str(self.options.expect_workers)]
        elif processes:
            command += ["--processes", str(processes)]
        classes = [name for name, table in self.scenario["users"].items() if table["weight"] > 0]
        return command + self.options.locust_args + classes

    def _load(self, host: str, auth_host: str) -> None:
        if self.interrupted:
            return
        shape, phases = self.scenario["shape"], self.scenario["phases"]
        duration, stop_timeout = shape["duration"], self.scenario["locust"]["stop_timeout"]
        log = (self.dir / "locust.log").open("ab")
        start = time.time()
        append_event(self.dir, "load_start", f"{shape['kind']} {shape['users']} users for {duration:.0f} s")
        self.locust = subprocess.Popen(
            self._locust_command(host, auth_host),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        if self.samplers:  # the load generator samples as service "locust": the report shows it is not the leak
            own = Sampler(
                {"locust": [f"pid:{self.locust.pid}"]}, self.dir, interval=self.scenario["sampler"]["interval"]
            )
            own.start()
            self.samplers.append(own)
        self.say(
            f"load: {shape['kind']}, {shape['users']} users, {progress.format_duration(duration)} (log: locust.log)"
        )
        warmup_written, next_progress = False, start + progress.progress_interval(duration)
        every = progress.progress_interval(duration)
        deadline = start + duration + stop_timeout + LOCUST_GRACE
        while self.locust.poll() is None:
            now = time.time()
            if not warmup_written and now >= start + phases["warmup"]:
                append_event(self.dir, "warmup_end")
                warmup_written = True
            for sampler in self.samplers:
                self.trend.add(sampler.latest())
            if now >= next_progress and not self.interrupted:
                history = progress.latest_history(self.dir / "locust_stats_history.csv")
                self.say(progress.progress_line(now - start, duration, history, progress.memory_slopes(self.trend)))
                next_progress += every
            if now > deadline and not self.interrupted:
                self.say("Locust ran past its duration: stopping it")
                self.locust.send_signal(signal.SIGINT)
                deadline = now + LOCUST_STOP_WAIT
            elif now > deadline:
                self.locust.kill()
            time.sleep(POLL)
        append_event(self.dir, "load_stop", f"locust exit code {self.locust.returncode}")
        if self.locust.returncode not in (0, 1) and not self.interrupted:
            self.say(f"Locust ended with exit code {self.locust.returncode}; last lines of locust.log:")
            self.say(self._tail(self.dir / "locust.log"))

    def _drain(self) -> None:
        if self.interrupted or self.locust is None:
            return
        drain = self.scenario["phases"]["drain"]
        self.say(f"drain: sampling {progress.format_duration(drain)} more with no load")
        self._sleep(drain)
        if not self.interrupted:
            append_event(self.dir, "drain_end")

    def _sleep(self, seconds: float) -> None:
        end = time.time() + seconds
        while not self.interrupted and time.time() < end:
            time.sleep(min(POLL, max(0.0, end - time.time())))

    def _stop_all(self) -> None:
        if self.locust and self.locust.poll() is None:
            self.locust.send_signal(signal.SIGINT)
            try:
                self.locust.wait(LOCUST_STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.locust.kill()
                self.locust.wait()
        for sampler in self.samplers:
            sampler.stop()
        if self.sut is not None:
            self.sut.stop()

    def _analyse(self) -> int:
        from analysis import RunFolderError, analyze_run, exit_code, summary_lines, write_report

        try:
            verdict = analyze_run(self.dir, baseline=self.options.baseline)
            report = write_report(self.dir, baseline=self.options.baseline)
        except RunFolderError as exc:
            self.say(f"analysis failed: {exc}")
            return 2
        for line in summary_lines(verdict):
            self.say(line)
        self.say(f"report: {report}")
        return exit_code(verdict)

    @staticmethod
    def _tail(path: Path, lines: int = 15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def run_worker(master_host: str, master_port: int, locust_args: list[str]) -> int:
    """A Locust worker for ``soak run --master`` elsewhere: no sut, no sampler, no analysis."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", master_host]
    command += ["--master-port", str(master_port), *locust_args]
    return subprocess.call(command)


class UiRun(Run):
    """``soak ui``: the Locust web UI against the scenario's target. The sampler runs inside Locust (the plugin in
    locustfiles/sampling.py) so the Services tab shows it live; the runner analyses the folder when Locust exits."""

    def __init__(self, options: RunOptions, web_host: str, web_port: int) -> None:
        super().__init__(options)
        self.web_host, self.web_port = web_host, web_port

    def execute(self) -> int:
        previous = {sig: signal.signal(sig, self._on_ui_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.say(f"run folder: {self.dir}")
            host, auth_host, services = self._start_target()
            self._write_scenario(host, auth_host, services)
            command = self._locust_command(host, auth_host, UI_LOCUSTFILE)
            command.remove("--headless")
            command[command.index("--soak-sampler") + 1] = "on"
            command += ["--web-host", self.web_host, "--web-port", str(self.web_port)]
            log = (self.dir / "locust.log").open("ab")
            self.locust = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
            )
            log.close()
            self.say(f"web UI: http://{self.web_host}:{self.web_port}  (Ctrl-C to stop; log: locust.log)")
            while self.locust.poll() is None:
                time.sleep(POLL)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not (self.dir / "samples.csv").exists():
            self.say("no test was started: nothing to analyse")
            return 0
        return self._analyse()

    def _on_ui_signal(self, signum: int, _frame: Any) -> None:
        # Ending the web UI is the normal way out, not an interruption of a test.
        self.signals += 1
        if self.locust and self.locust.poll() is None:
            self.locust.send_signal(signal.SIGINT if self.signals == 1 else signal.SIGKILL)
