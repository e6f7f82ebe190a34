"""What the plugin does to a real Locust process that is not a scenario setting: a Locust that will not stop says
where it is stuck (SIGUSR1 prints every thread's stack), and the runner asks for that before it kills one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from soak.runner import Run

ROOT = Path(__file__).resolve().parent.parent


def idle_locust(log: Path) -> subprocess.Popen:
    """A real Locust with the plugin (no users: it only waits), its output into ``log``; returned once it is up."""
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chat.py"), "--headless"]
    command += ["-u", "0", "-t", "60", "--host", "http://127.0.0.1:9", "--soak-sampler", "off"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "Starting Locust" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, log.read_text()[-2000:]
    time.sleep(0.5)  # past the locustfile's import: the plugin's handler is in place before Locust logs its start
    return proc


def test_sigusr1_prints_the_stacks_and_locust_runs_on(tmp_path):
    log = tmp_path / "locust.log"
    proc = idle_locust(log)
    try:
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "most recent call first" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None  # a dump, not an end
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    text = log.read_text()
    assert "Current thread" in text and 'File "' in text, text[-2000:]


def test_the_runner_kills_a_hung_locust_after_its_stacks(tmp_path):
    log = tmp_path / "locust.log"
    proc = idle_locust(log)
    try:
        Run._kill_hung_locust(SimpleNamespace(locust=proc))  # only what it uses of a Run: the Locust process
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert "most recent call first" in log.read_text()
