"""Start and stop the three services as OS processes, from Python (the runner, tests) or ``soak sut``.

    with start_sut(SutConfig(**resolved_scenario["sut"]), host="127.0.0.1") as sut:
        sut.urls["backend"], sut.pids["backend"], sut.ports["backend"]

The launcher binds each listening socket itself (port 0 = a free port) and hands it to the service process, so
there is no window in which another program can take the port. Each service gets a random JWT secret shared with
its siblings, and a Redis key prefix of its own, so two suts on one Redis never see each other's keys.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from sut.config import SERVICES, Settings, SutConfig, to_env

HEALTH_TIMEOUT = 60.0
HEALTH_POLL = 0.1
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 15
START_ORDER = ("agent", "auth", "backend")  # the backend connects to the agent


class SutError(RuntimeError):
    """The sut could not be started (the message says which service and why, with the end of its log)."""


def _resolve_url(value: str, variable: str) -> str:
    if value != "env":
        return value
    url = os.environ.get(variable, "")
    if not url:
        raise SutError(f"{variable.lower()} = 'env' but ${variable} is not set")
    return url


def settings_for(config: SutConfig, **extra: Any) -> Settings:
    """The service settings for ``config``: URLs resolved, plus plumbing (secret, Redis prefix, ...) in ``extra``."""
    values = asdict(config)
    values["redis_url"] = _resolve_url(config.redis_url, "REDIS_URL")
    values["database_url"] = _resolve_url(config.database_url, "DATABASE_URL")
    return Settings(**values, **extra)


class Sut:
    """Three running services. Use as a context manager, or call stop()."""

    def __init__(self, host: str, settings: Settings, log_dir: Path, own_log_dir: bool) -> None:
        self.host = host
        self.settings = settings
        self.log_dir = log_dir
        self._own_log_dir = own_log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.urls: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.log_paths: dict[str, Path] = {}

    def __enter__(self) -> Sut:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.processes.items()}

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_paths[name].read_text(encoding="utf-8", errors="replace")
        except (KeyError, OSError):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """SIGTERM every service, SIGKILL what is left after ``timeout``; returns the exit codes."""
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
        if self._own_log_dir:
            for path in self.log_paths.values():
                path.unlink(missing_ok=True)
            try:
                self.log_dir.rmdir()
            except OSError:
                pass
        return codes

    def _launch(self, name: str, sock: socket.socket, env: dict[str, str]) -> None:
        path = self.log_dir / f"sut-{name}.log"
        self.log_paths[name] = path
        fd = sock.fileno()
        with open(path, "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "sut", name, "--fd", str(fd)],
                pass_fds=(fd,),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # a process group of its own: Ctrl-C in a terminal reaches the launcher, which stops them in order
                start_new_session=True,
            )
        self.pids[name] = self.processes[name].pid

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.processes)
        last: dict[str, str] = {name: "no answer yet" for name in pending}
        while pending:
            for name in sorted(pending):
                code = self.processes[name].poll()
                if code is not None:
                    raise SutError(
                        f"{name} exited with code {code} before it became healthy; its log:\n{self.log_tail(name)}"
                    )
                status, body = _get(self.urls[name] + "/health")
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


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        body = exc.read(2000).decode(errors="replace")
        try:
            body = json.dumps(json.loads(body).get("checks", body))
        except (ValueError, AttributeError):
            pass
        return exc.code, body
    except (OSError, ValueError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SutError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def start_sut(
    config: SutConfig,
    host: str = "127.0.0.1",
    log_dir: str | Path | None = None,
    ports: dict[str, int] | None = None,
    timeout: float = HEALTH_TIMEOUT,
    settings: dict[str, Any] | None = None,
) -> Sut:
    """Start auth, backend and agent; return once every GET /health is 200, else stop them and raise SutError.

    ports: fixed ports per service (missing or 0 = a free one). log_dir: each service's output goes to
    ``<log_dir>/sut-<service>.log`` (None = a temporary folder, removed on stop). settings: extra service settings
    that are not scenario keys (sut.config.Settings fields, e.g. {"db_pool_timeout": 2.0}).
    """
    ports = ports or {}
    unknown = set(ports) - set(SERVICES)
    if unknown:
        raise SutError(f"unknown service {sorted(unknown)[0]!r} in ports (known: {', '.join(SERVICES)})")
    sockets = {name: _bind(host, ports.get(name, 0)) for name in START_ORDER}
    try:
        bound = {name: sock.getsockname()[1] for name, sock in sockets.items()}
        url_host = f"[{host}]" if ":" in host else host
        extra = {
            "jwt_secret": secrets.token_hex(32),
            "redis_prefix": f"sut:{secrets.token_hex(4)}:",
            "agent_url": f"http://{url_host}:{bound['agent']}",
            "parent_pid": os.getpid(),
            **(settings or {}),
        }
        resolved = settings_for(config, **extra)
        own = log_dir is None
        folder = Path(tempfile.mkdtemp(prefix="sut-logs-")) if own else Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        sut = Sut(host, resolved, folder, own)
        env = _service_env(resolved)
        for name in START_ORDER:
            sut.ports[name] = bound[name]
            sut.urls[name] = f"http://{url_host}:{bound[name]}"
            sut._launch(name, sockets[name], env)
    finally:
        for sock in sockets.values():
            sock.close()
    try:
        sut._wait_healthy(timeout)
    except BaseException:
        sut.stop()
        raise
    return sut


def _service_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUT_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(to_env(settings))
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def config_fields() -> list[str]:
    return [f.name for f in fields(SutConfig)]
