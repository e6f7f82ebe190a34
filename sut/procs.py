"""The launcher's dealings with the operating system: ports, processes, health probes, temporary folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

DATA_PREFIX = "sut-data-"  # + launcher pid + "-": the SQLite stand-ins' folder
LOGS_PREFIX = "sut-logs-"  # the same for the services' logs when no log_dir is given


def describe_exit(code: int | None) -> str:
    """``code 1``, ``SIGKILL``: how a service ended, for logs and messages."""
    if code is None:
        return "no exit yet"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def terminate(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM, SIGKILL after ``timeout``; returns the exit code (at once if it had exited already)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def http_get(url: str) -> tuple[int, str]:
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


def bind(host: str, port: int, listen: bool) -> socket.socket:
    """A socket bound to ``host:port``: the service's listening one (``listen``), or the launcher's reservation.

    Both have SO_REUSEPORT, which lets them share the port; the reservation has no SO_REUSEADDR, so no other
    program (without SO_REUSEPORT and our uid) can bind the port while the service is down. The listening one has
    SO_REUSEADDR too: the connections of the process before it may still be in TIME_WAIT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if listen:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(listen)
    return sock


def own_dir(prefix: str) -> Path:
    """A temporary folder named after this process, so that a later start can tell whether its owner is gone."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def sweep_stale() -> None:
    """Remove the temporary folders of launchers that are gone (SIGKILLed, say: their stop() never ran). The
    services remove the data folder themselves when they outlive the launcher; this catches the rest."""
    root = Path(tempfile.gettempdir())
    for prefix in (DATA_PREFIX, LOGS_PREFIX):
        for stale in root.glob(f"{prefix}*-*"):
            pid = stale.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
