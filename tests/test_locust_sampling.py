"""The sampler as a Locust plugin (locustfiles/sampling.py): with `--processes 2` it runs once, on the master, from
the test's start through the drain, and writes the phase events; in the web UI, tests started and stopped by hand
share one phase sequence. Real sut, Locust as a subprocess."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests
import tomli_w
from conftest import free_port

from runspec import folder

ROOT = Path(__file__).resolve().parent.parent
DRAIN_S = 4.0


def test_plugin_samples_once_on_the_master_through_the_drain(sut_factory, tmp_path):
    sut = sut_factory(rate_limit=0)
    run = tmp_path / "run"
    run.mkdir()
    scenario = {
        "name": "plugin",
        "target": {
            "services": {"backend": [f"port:{sut.ports['backend']}", f"prometheus:{sut.urls['backend']}/metrics"]}
        },
        "users": {"ChattingUser": {"weight": 1, "wait_min": 0.5, "wait_max": 1.0}},
        "phases": {"warmup": 2.0, "drain": DRAIN_S},
        "sampler": {"interval": 0.5},
    }
    (run / "scenario.toml").write_text(tomli_w.dumps(scenario))
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chat.py"), "--headless"]
    command += ["--host", sut.urls["backend"], "--auth-host", sut.urls["auth"], "-u", "4", "-r", "4", "-t", "12s"]
    command += ["--processes", "2", "--soak-scenario", str(run / "scenario.toml"), "--soak-run-dir", str(run)]
    command += ["--soak-sampler", "on", "ChattingUser"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    with (run / "events.csv").open() as fh:
        events = [(float(row["ts"]), row["event"]) for row in csv.DictReader(fh)]
    names = [name for _, name in events]
    # once, not once per process: the workers never start a sampler or write phase events
    for phase in ("load_start", "warmup_end", "load_stop", "drain_end"):
        assert names.count(phase) == 1, names
    times = dict((name, ts) for ts, name in events)
    assert times["drain_end"] - times["load_stop"] >= DRAIN_S - 0.5  # quitting waited for the drain

    with (run / "samples.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    keys = Counter((row["ts"], row["service"], row["metric"]) for row in rows)
    assert max(keys.values()) == 1, "two samplers wrote the same tick"
    services = {row["service"] for row in rows}
    assert {"backend", "locust"} <= services
    after_stop = [row for row in rows if row["service"] == "backend" and float(row["ts"]) > times["load_stop"] + 1]
    assert after_stop, "no backend samples during the drain"
    assert any(row["metric"] == "ws_connections_active" for row in rows)


def test_web_ui_test_restarted_in_its_drain_gets_one_phase_sequence(sut_factory, tmp_path):
    # The web UI's way: tests start and stop at the user's click. A test started again within the drain goes on as
    # load (no drain_end between), the drain after the second stop ends the sampling, health rows on the way.
    sut = sut_factory(rate_limit=0, agent_step=0.01)
    run = tmp_path / "run"
    run.mkdir()
    scenario = {
        "target": {"services": {"backend": [f"health:{sut.urls['backend']}/health"]}},
        "users": {"ChattingUser": {"weight": 1, "wait_min": 0.5, "wait_max": 1.0}},
        "phases": {"warmup": 1.0, "drain": 3.0},
        "sampler": {"interval": 0.5},
    }
    (run / "scenario.toml").write_text(tomli_w.dumps(scenario))
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chat.py")]
    command += ["--host", sut.urls["backend"], "--auth-host", sut.urls["auth"], "--web-host", "127.0.0.1"]
    command += ["--web-port", str(port), "--soak-scenario", str(run / "scenario.toml"), "--soak-run-dir", str(run)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: get(web + "/") is not None, 60)
        swarm = {"user_count": "2", "spawn_rate": "2", "host": sut.urls["backend"]}
        assert requests.post(web + "/swarm", data=swarm, timeout=10).json()["success"]
        wait_until(lambda: "warmup_end" in phase_events(run), 20)
        rows = wait_until(lambda: services_tab(web) if {"backend", "locust"} <= services_tab(web).keys() else None, 20)
        assert rows["locust"]["rss_mb"] and rows["backend"]["service"] == "backend"
        requests.post(web + "/stop", timeout=10)
        wait_until(lambda: "load_stop" in phase_events(run), 10)
        time.sleep(1.0)  # within the 3 s drain
        assert requests.post(web + "/swarm", data=swarm, timeout=10).json()["success"]
        time.sleep(2.5)  # the first test's drain would have ended by now
        requests.post(web + "/stop", timeout=10)
        wait_until(lambda: "drain_end" in phase_events(run), 10)
        time.sleep(1.5)  # the sampler has stopped: nothing more is written until the next test
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-3000:]
    assert phase_events(run) == ["load_start", "warmup_end", "load_stop", "load_start", "load_stop", "drain_end"]
    with (run / "events.csv").open() as fh:
        drain_end = max(float(row["ts"]) for row in csv.DictReader(fh) if row["event"] == "drain_end")
    with (run / "samples.csv").open() as fh:
        health = [row for row in csv.DictReader(fh) if row["metric"] == "health_up"]
    assert health and {row["value"] for row in health} == {"1"}
    assert max(float(row["ts"]) for row in health) <= drain_end + 0.5


def get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


def services_tab(web: str) -> dict[str, dict[str, str]]:
    payload = requests.get(web + "/stats/requests", timeout=10).json()
    tables = {table["key"]: table["data"] for table in payload.get("extended_stats", [])}
    return {row["service"]: row for row in tables.get("soak-services", [])}


def phase_events(run: Path) -> list[str]:
    path = run / "events.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return [row["event"] for row in csv.DictReader(fh) if row["event"] in folder.PHASES]


def wait_until(condition, limit: float):  # noqa: ANN001, ANN201 - a test helper
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {limit} s")
