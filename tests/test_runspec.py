"""One schema, one error: every part that reads a scenario gives the same one-line message for the same mistake,
and the run folder's vocabulary (files, events, phases, statuses) is defined once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runspec import ScenarioError, folder, load_scenario, resolve, units
from runspec.scenario import SCHEMA, SUT_SCHEMA, Key

ROOT = Path(__file__).resolve().parent.parent

BAD = {
    "unknown key": ("[shape]\nusers = 5\nuserz = 6\n", "shape.userz: unknown key"),
    "wrong type": ("[shape]\nusers = 'many'\n", "shape.users: expected a whole number >= 0, got 'many'"),
}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL
    )


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_part_refuses_a_bad_scenario_with_the_same_line(kind, tmp_path):
    text, expected = BAD[kind]
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(bad))
    message = str(caught.value)
    assert message == f"{bad}: {expected}" or message.startswith(f"{bad}: {expected}")

    # The same file handed to the runner, the sut command and Locust (through the plugin's --soak-scenario) ...
    lines = {
        "soak run": one_line(cli("-m", "soak", "run", str(bad), "--out", str(tmp_path / "run"))),
        "soak sut": one_line(cli("-m", "soak", "sut", "--scenario", str(bad))),
        "locust": one_line(
            cli("-m", "locust", "-f", "locustfiles/shaped.py", "--headless", "--soak-scenario", str(bad), "-t", "1")
        ),
    }
    # ... and as the scenario.toml of a run folder handed to the analysis.
    run = tmp_path / "folder"
    run.mkdir()
    (run / folder.SCENARIO).write_text(text)
    (run / folder.SAMPLES).write_text(folder.SAMPLES_HEADER + "1700000000.000,backend,mem_rss_bytes,1000\n")
    lines["soak analyze"] = one_line(cli("-m", "soak", "analyze", str(run)))
    for part, line in lines.items():
        assert line.endswith(message.split(": ", 1)[1]), f"{part}: {line!r} is not {message!r}"


def test_a_resolved_scenario_resolves_to_itself():
    scenario = load_scenario("smoke")
    assert resolve(scenario, "again") == scenario


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("shape.users=0", "shape.users: must be above 0"),
        ("shape.duration=inf", "shape.duration: not a finite duration"),
        ("shape.duration=nan", "shape.duration: not a finite duration"),
        ("shape.spawn_rate=inf", "shape.spawn_rate: expected a finite number"),
        ('name="../escape"', "name: '../escape' is not a folder name"),
        ("health.down_max=0", "health.down_max: must be above 0"),
        ("sampler.interval=0", "sampler.interval: must be above 0"),
        ("arrival.rest_rate=5", "arrival.rest_rate: 5 needs arrival.rate above 0 (the open model)"),
    ],
)
def test_values_are_checked_before_anything_starts(override, expected):
    with pytest.raises(ScenarioError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_scenario("smoke", [override])


def test_every_key_has_a_doc_and_a_default_of_its_type():
    def walk(table):
        for key in table.values():
            if isinstance(key, dict):
                yield from walk(key)
            elif isinstance(key, Key):
                yield key

    for key in [*walk(SCHEMA), *SUT_SCHEMA.values()]:
        assert key.doc, key
        if key.kind in ("int", "float", "duration") and key.positive:
            assert key.default > 0, key


def test_phases_and_statuses_are_one_vocabulary():
    assert folder.PHASES == ("load_start", "warmup_end", "load_stop", "drain_end")
    assert sorted(folder.EXIT_CODES.values()) == [0, 1, 3, 4]
    assert folder.EXIT_BAD_INPUT not in folder.EXIT_CODES.values()
    assert units.MB == 2**20


def test_one_memory_slope_through_the_progress_line_the_web_ui_tab_and_the_verdict(tmp_path):
    """The same series, three readers, one number: MB is 2**20 bytes everywhere."""
    import json

    import numpy as np

    from analysis import analyze_and_write
    from locustfiles.servicetab import service_rows
    from sampler.trend import Trend
    from soak.progress import memory_slopes

    start, hours, growth_mb_h = 1_700_000_000.0, 2.0, 40.0
    ts = start + np.arange(0, hours * 3600, 5.0)
    values = 200 * units.MB + growth_mb_h * units.MB * (ts - start) / 3600

    run = tmp_path / "run"
    run.mkdir()
    (run / folder.SCENARIO).write_text("[phases]\nwarmup = 0\ndrain = 0\n[leaks]\nmemory_mb_per_hour = 1.0\n")
    rows = "".join(f"{t:.3f},backend,mem_rss_bytes,{int(v)}\n" for t, v in zip(ts, values, strict=True))
    (run / folder.SAMPLES).write_text(folder.SAMPLES_HEADER + rows)
    end = ts[-1]
    (run / folder.EVENTS).write_text(
        folder.EVENTS_HEADER
        + "".join(f"{t:.3f},{event},\n" for t, event in zip((start, start, end, end), folder.PHASES, strict=True))
    )
    analyze_and_write(run, report=False)
    verdict = json.loads((run / folder.VERDICT).read_text())
    (entry,) = [e for e in verdict["leaks"] if e["service"] == "backend" and e["metric"] == "mem_rss_bytes"]

    trend = Trend()
    for t, v in zip(ts, values, strict=True):
        trend.add({("backend", "mem_rss_bytes"): (float(t), float(v))})
    progress = memory_slopes(trend)["backend"]
    tab = service_rows({("backend", "mem_rss_bytes"): (float(end), float(values[-1]))}, trend, float(end))[0]

    shown = {
        "verdict": f"{entry['slope_per_hour'] / units.MB:+.1f}",
        "progress line": f"{progress:+.1f}",
        "web UI tab": tab["slope_mb_per_hour"].split()[0],
    }
    assert set(shown.values()) == {f"{growth_mb_h:+.1f}"}, shown
