"""The sampler as a Locust plugin (locustfiles/sampling.py): with `--processes 2` it runs once, on the master, from
the test's start through the drain, and writes the phase events. Real sut, Locust as a subprocess."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import tomli_w

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
