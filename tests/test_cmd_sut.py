"""``soak sut``: one command starts all three, prints URLs and pids, and stops them all on SIGTERM or Ctrl-C."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from runspec.scenario import SUT_SCHEMA
from soak.cli import main
from sut.launcher import SutConfig

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(auth|backend|agent)\s+(http://\S+)\s+pid (\d+)$")


def test_sut_config_has_exactly_the_scenario_keys_and_defaults():
    schema = {name: key.default for name, key in SUT_SCHEMA.items()}
    config = dataclasses.asdict(SutConfig())
    assert config == schema


def start(*flags: str) -> tuple[dict[str, tuple[str, int]], subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "soak", "sut", *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    services: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        match = LINE.match(line.strip())
        if match:
            services[match[1]] = (match[2], int(match[3]))
        if line.startswith("healthy") or time.monotonic() > deadline:
            break
    return services, proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_soak_sut_starts_three_healthy_services_and_stops_them_all(sig):
    services, proc = start("--agent-step", "0.01")
    try:
        assert sorted(services) == ["agent", "auth", "backend"], proc.stdout.read() if proc.poll() is not None else ""
        for url, pid in services.values():
            assert requests.get(url + "/health", timeout=5).status_code == 200
            assert psutil.Process(pid).ppid() == proc.pid
    finally:
        proc.send_signal(sig)
        code = proc.wait(30)
    output = proc.stdout.read()
    assert code == 0, output
    assert "stopped" in output
    for _url, pid in services.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_flags_reach_the_services():
    services, proc = start("--rate-limit", "1", "--agent-step", "0", "--access-token-ttl", "2m")
    try:
        from sut.client import Client

        client = Client(services["auth"][0], services["backend"][0])
        assert client.login()["expires_in"] == 120.0
        tab = client.tab()
        first, second = tab.chat("one"), tab.chat("two")
        refused = tab.until(lambda e: e.get("reply_to") == second and e["type"] == "error")[-1]
        assert refused["code"] == "RATE_LIMITED"
        assert first in {e.get("reply_to") for e in tab.events}
        tab.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rate-limit", "-1"], "--rate-limit: expected a whole number >= 0"),
        (["--rate-window", "inf"], "--rate-window: not a finite duration"),
        (["--access-token-ttl", "0"], "--access-token-ttl: must be above 0"),
        (["--agent-step", "soon"], "--agent-step: not a duration"),
        (["--upload-max-bytes", "1.5"], "--upload-max-bytes: expected a whole number"),
        (["--scenario", "no-such-scenario"], "no-such-scenario"),
        (["--backend-port", "70000"], "ports must be between 0 and 65535"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(flags, message, capsys):
    assert main(["sut", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_taken_port_is_reported_not_a_traceback(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sut", "--auth-port", str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_service_processes_reject_bad_environment_values():
    env = {**os.environ, "SUT_RATE_LIMIT": "lots"}
    result = subprocess.run(
        [sys.executable, "-m", "sut", "backend", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "sut backend: error: SUT_RATE_LIMIT: expected a whole number >= 0, got 'lots'"
