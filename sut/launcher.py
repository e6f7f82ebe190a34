"""Start and stop the three services as OS processes, from Python (the runner, tests) or ``soak sut``.

    with start_sut(SutConfig(**resolved_scenario["sut"]), host="127.0.0.1") as sut:
        sut.urls["backend"], sut.pids["backend"], sut.ports["backend"]

The launcher binds each listening socket itself (port 0 = a free port) and hands it to the service process, so
there is no window in which another program can take the port. For the sut's whole life it also keeps a second
socket bound to each port that never listens (SO_REUSEPORT): it reserves the port, so a service started again
(``restart``, the supervisor) gets the same one, while only the service itself listens on it. So a service that is
down refuses connections, as behind an orchestrator, and the sampler's ``port:`` source finds the service's
process, never the launcher. Each service gets a random JWT secret shared with its siblings, and a Redis key prefix
of its own, so two suts on one Redis never see each other's keys; the SQLite stand-ins live in a data folder of the
sut's, kept across restarts and removed by ``stop``. ``service_settings`` gives one service settings of its own
(sut/launchenv.py), e.g. its ``redis_url`` through a proxy that a fault schedule can cut for that service alone.

With the [sut] key ``supervise`` a thread restarts a service that dies (sut/supervisor.py); ``kill``, ``restart``,
``pause`` and ``unpause`` are the handles of a fault schedule. With ``runtime = "docker"`` each service runs in a
container of a Docker engine instead (sut/containers.py: the same Sut, its processes containers).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sut import procs
from sut.config import SERVICES, Settings, SutConfig
from sut.launchenv import SutError, per_service, service_env, settings_for

__all__ = ["SERVICES", "Settings", "Sut", "SutConfig", "SutError", "settings_for", "start_sut"]

HEALTH_TIMEOUT = 60.0
HEALTH_POLL = 0.1
STOP_TIMEOUT = 10.0
RESTART_TIMEOUT = 10.0  # restart(): seconds the old process gets to exit after SIGTERM before SIGKILL
LOG_TAIL_LINES = 15
START_ORDER = ("agent", "auth", "backend")  # the backend connects to the agent


log = logging.getLogger("sut.launcher")


class Sut:
    """Three running services. Use as a context manager, or call stop().

    ``restarts[name]`` counts the starts after the first (the supervisor's and ``restart``'s); ``pids`` and
    ``processes`` always hold the current process. ``history`` lists ``(unix time, service, what, detail)`` with
    ``what`` one of ``killed``, ``exited``, ``restarted``, ``gave_up``; ``on_event(service, what, detail)``, when
    set, is called for each as it happens (from the supervisor's thread). ``settings`` are the ones every service
    shares; ``service_settings(name)`` one service's own (the same unless ``start_sut`` got ``service_settings``).
    """

    def __init__(
        self, host: str, settings: Settings, log_dir: Path, own_log_dir: bool, data_dir: Path | None = None
    ) -> None:
        self.host = host
        self.settings = settings
        self.log_dir = log_dir
        self._own_log_dir = own_log_dir
        self.data_dir = data_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.urls: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.log_paths: dict[str, Path] = {}
        self.restarts: dict[str, int] = {}
        self.history: list[tuple[float, str, str, str]] = []
        self.on_event: Callable[[str, str, str], None] | None = None
        self.supervisor: Any = None  # a sut.supervisor.Supervisor when settings.supervise
        self._services: dict[str, Settings] = dict.fromkeys(SERVICES, settings)
        self._envs: dict[str, dict[str, str]] = {}  # per service: every start of it (restarts too) uses its own
        self._reserved: dict[str, socket.socket] = {}
        self._lock = threading.RLock()
        self._busy: set[str] = set()  # restarted on purpose right now: not the supervisor's to restart
        self._stopping = threading.Event()

    def __enter__(self) -> Sut:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def service_settings(self, name: str) -> Settings:
        """The settings ``name`` runs with: the shared ones plus its own from ``start_sut(service_settings=...)``."""
        return self._services[_known(name)]

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.processes.items()}

    def watch(self) -> list[str]:
        """The services that are down for good: dead and not being restarted (with ``supervise``: the ones the
        supervisor gave up on; without: every dead one). Cheap; call it every second or so."""
        if self.supervisor is not None:
            return [name for name in START_ORDER if name in self.supervisor.given_up]
        return [name for name in START_ORDER if name in self._dead()]

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_paths[name].read_text(encoding="utf-8", errors="replace")
        except (KeyError, OSError):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def kill(self, name: str) -> int | None:
        """SIGKILL ``name`` and wait until it is gone; returns its exit code. With ``supervise`` it comes back."""
        proc = self.processes[_known(name)]
        if proc.poll() is None:
            self._note(name, "killed", f"pid {proc.pid}")
            proc.kill()
            proc.wait()
        return proc.returncode

    def restart(self, name: str, timeout: float = HEALTH_TIMEOUT) -> int:
        """SIGTERM ``name`` (SIGKILL after RESTART_TIMEOUT), start it again on the same port and wait until it is
        healthy; returns the new pid. Also starts a service that is down (killed, crashed, given up on).
        Raises SutError when it does not become healthy within ``timeout`` (it is left running)."""
        with self._lock:
            if self._stopping.is_set():
                raise SutError(f"cannot restart {name}: the sut is stopping")
            self._busy.add(_known(name))
        try:
            code = procs.terminate(self.processes[name], RESTART_TIMEOUT)
            if not self._respawn(
                name, f"restart; the old one exited with {procs.describe_exit(code)}", deliberate=True
            ):
                raise SutError(f"cannot restart {name}: the sut is stopping")
            if self.supervisor is not None:
                self.supervisor.revive(name)
        finally:
            with self._lock:
                self._busy.discard(name)
        self._wait_healthy([name], timeout)
        return self.pids[name]

    def pause(self, name: str) -> str:
        """Freeze ``name`` (SIGSTOP) until ``unpause``: it answers nothing, and nothing of it ends or restarts."""
        proc = self.processes[_known(name)]
        proc.send_signal(signal.SIGSTOP)
        return f"pid={proc.pid} via=sigstop"

    def unpause(self, name: str) -> None:
        proc = self.processes[_known(name)]
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)

    def placement(self) -> dict[str, Any]:
        """Where each service runs, for the run folder (runspec.folder.RUNTIME) and the report's box."""
        services = {
            name: {"runs_as": "process", "pid": self.pids.get(name), "memory_limit_bytes": None} for name in START_ORDER
        }
        return {"runtime": "process", "services": dict(sorted(services.items()))}

    def describe(self) -> list[str]:
        """Lines on where the services run beyond their URLs and pids (``soak sut`` prints them): none for processes."""
        return []

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """SIGTERM every service, SIGKILL what is left after ``timeout``; returns the exit codes. Never restarts."""
        with self._lock:
            self._stopping.set()  # from here on nothing is started again
        if self.supervisor is not None:
            self.supervisor.close()
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        codes = {name: proc.returncode for name, proc in self.processes.items()}
        for sock in self._reserved.values():
            sock.close()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._own_log_dir:
            for path in self.log_paths.values():
                path.unlink(missing_ok=True)
            try:
                self.log_dir.rmdir()
            except OSError:
                pass
        return codes

    # --- the supervisor's side ---

    def _dead(self) -> dict[str, int]:
        """Exit codes of the services that are down and not being restarted on purpose."""
        with self._lock:
            if self._stopping.is_set():
                return {}
            codes = {name: proc.poll() for name, proc in self.processes.items() if name not in self._busy}
        return {name: code for name, code in codes.items() if code is not None}

    def _respawn(self, name: str, why: str, deliberate: bool) -> bool:
        """Start ``name`` again on its port, unless it runs (someone else restarted it), is being restarted on
        purpose (and this is not that), or the sut is stopping. Does not wait for health."""
        with self._lock:
            if self._stopping.is_set() or self.processes[name].poll() is None:
                return False
            if name in self._busy and not deliberate:
                return False
            with open(self.log_paths[name], "a", encoding="utf-8") as out:
                out.write(f"--- sut launcher: starting {name} again ({why}) ---\n")
            self._launch(name)
            self.restarts[name] += 1
        self._note(name, "restarted", f"pid {self.pids[name]}, restart {self.restarts[name]} ({why})")
        return True

    def _note(self, name: str, what: str, detail: str) -> None:
        self.history.append((time.time(), name, what, detail))
        # routine restarts are for on_event and history; giving up is the one the operator must see
        log.log(logging.WARNING if what == "gave_up" else logging.INFO, "sut %s %s: %s", name, what, detail)
        if self.on_event is not None:
            try:
                self.on_event(name, what, detail)
            except Exception:  # noqa: BLE001 - a broken listener must not stop restarts
                log.exception("sut: on_event failed")

    def _launch(self, name: str) -> None:
        """Start ``name`` on a fresh listening socket of its reserved port; the service holds the only copy."""
        sock = _bind(self.host, self.ports[name], listen=True)
        fd = sock.fileno()
        try:
            with open(self.log_paths[name], "ab") as log_file:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "sut", name, "--fd", str(fd)],
                    pass_fds=(fd,),
                    env=self._envs[name],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # a process group of its own: Ctrl-C in a terminal reaches the launcher, which stops them in order
                    start_new_session=True,
                )
        finally:
            sock.close()
        self.pids[name] = self.processes[name].pid

    def _wait_healthy(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names)
        last: dict[str, str] = {name: "no answer yet" for name in pending}
        while pending:
            for name in sorted(pending):
                if self._stopping.is_set():
                    raise SutError(f"{name}: the sut was stopped before it became healthy")
                code = self.processes[name].poll()
                if code is not None:
                    raise SutError(
                        f"{name} exited with {procs.describe_exit(code)} before it became healthy; "
                        f"its log:\n{self.log_tail(name)}"
                    )
                status, body = procs.http_get(self.urls[name] + "/health")
                if status == 200:
                    pending.discard(name)
                else:
                    last[name] = f"{status} {body}" if status else body
            if not pending:
                return
            if time.monotonic() > deadline:
                name = sorted(pending, key=START_ORDER.index)[-1]
                raise SutError(
                    f"{name} never became healthy within {timeout:g} s (last answer: {last[name]}); "
                    f"its log:\n{self.log_tail(name)}"
                )
            time.sleep(HEALTH_POLL)


def _known(name: str) -> str:
    if name not in SERVICES:
        raise SutError(f"unknown service {name!r} (known: {', '.join(SERVICES)})")
    return name


def _bind(host: str, port: int, listen: bool) -> socket.socket:
    try:
        return procs.bind(host, port, listen)
    except OSError as exc:
        raise SutError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def start_sut(
    config: SutConfig,
    host: str = "127.0.0.1",
    log_dir: str | Path | None = None,
    ports: dict[str, int] | None = None,
    timeout: float = HEALTH_TIMEOUT,
    settings: dict[str, Any] | None = None,
    service_settings: dict[str, dict[str, Any]] | None = None,
) -> Sut:
    """Start auth, backend and agent; return once every GET /health is 200, else stop them and raise SutError.

    ports: fixed ports per service (missing or 0 = a free one). log_dir: each service's output goes to
    ``<log_dir>/sut-<service>.log`` (None = a temporary folder, removed on stop). settings: extra service settings
    that are not scenario keys (sut.config.Settings fields, e.g. {"db_pool_timeout": 2.0}). service_settings:
    per service, Settings fields that differ from the shared ones, e.g. ``{"backend": {"redis_url":
    "redis://127.0.0.1:41234/0"}}`` (a proxy to the same Redis); ``jwt_secret`` and ``redis_prefix`` stay shared,
    and the backend and agent must agree on whether there is Redis. An unknown service or field is a SutError.
    """
    ports = ports or {}
    unknown = set(ports) - set(SERVICES)
    if unknown:
        raise SutError(f"unknown service {sorted(unknown)[0]!r} in ports (known: {', '.join(SERVICES)})")
    docker = config.runtime == "docker"
    if docker:
        from sut import containers

        client = containers.connect()  # before anything is bound or made: no engine, nothing to undo
    else:
        from sut.containers import check_runtime

        check_runtime(config)
    reserved: dict[str, socket.socket] = {}
    try:
        for name in START_ORDER:
            port = ports.get(name, 0)
            reserved[name] = containers.reserve(host, port) if docker else _bind(host, port, listen=False)
        bound = {name: sock.getsockname()[1] for name, sock in reserved.items()}
        url_host = f"[{host}]" if ":" in host else host
        extra = {
            "jwt_secret": secrets.token_hex(32),
            "redis_prefix": f"sut:{secrets.token_hex(4)}:",
            "agent_url": f"http://{url_host}:{bound['agent']}",
            # a container's process has no parent of ours to watch (it is PID 1 of its own namespace)
            "parent_pid": 0 if docker else os.getpid(),
            **(settings or {}),
        }
        resolved = settings_for(config, **extra)
        services = per_service(resolved, service_settings)
    except BaseException:
        for sock in reserved.values():
            sock.close()
        if docker:
            client.close()
        raise
    procs.sweep_stale()
    own = log_dir is None
    folder = procs.own_dir(procs.LOGS_PREFIX) if own else Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # the SQLite stand-ins' folder only when some service has no database_url (it is handed only to those)
    data_dir = None if all(s.database_url for s in services.values()) else procs.own_dir(procs.DATA_PREFIX)
    try:
        if docker:
            sut = containers.ContainerSut(
                host, resolved, folder, own, data_dir, client=client, limits=containers.memory_limits(config)
            )
        else:
            sut = Sut(host, resolved, folder, own, data_dir)
    except BaseException:
        for sock in reserved.values():
            sock.close()
        for made in (data_dir, folder if own else None):
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
        if docker:
            client.close()
        raise
    sut._reserved = reserved
    sut._services = services
    sut._envs = {name: service_env(services[name], data_dir) for name in SERVICES}
    try:
        for name in START_ORDER:
            sut.ports[name] = bound[name]
            sut.urls[name] = f"http://{url_host}:{bound[name]}"
            sut.log_paths[name] = folder / f"sut-{name}.log"
            sut.restarts[name] = 0
            sut._launch(name)
        sut._wait_healthy(list(START_ORDER), timeout)
    except BaseException:
        sut.stop()
        raise
    if resolved.supervise:
        from sut.supervisor import Supervisor

        sut.supervisor = Supervisor(sut)
        sut.supervisor.start()
    return sut
