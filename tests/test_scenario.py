"""Scenario files: every shipped scenario resolves; each kind of mistake is one line naming the file and key."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from runspec.scenario import SCENARIO_DIR, ScenarioError, load_scenario, parse_duration
from soak.scenario import write_resolved

SHIPPED = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def test_the_issue_scenarios_are_shipped():
    wanted = {"smoke", "load", "spike", "soak-1h", "soak-24h", "leak-check", "leak-check-clean", "demo"}
    assert wanted <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_resolves_and_round_trips(name, tmp_path):
    scenario = load_scenario(name)
    assert scenario["name"] == name
    assert scenario["shape"]["duration"] > 0
    assert any(table["weight"] > 0 for table in scenario["users"].values())
    path = tmp_path / "scenario.toml"
    write_resolved(scenario, path)
    assert tomllib.loads(path.read_text()) == scenario
    assert load_scenario(str(path)) == scenario  # the resolved copy is itself a valid scenario


def test_leak_check_pair_differs_only_in_the_leak_switch():
    leaky, clean = load_scenario("leak-check"), load_scenario("leak-check-clean")
    assert leaky["sut"]["leak_bytes_per_message"] > 0
    assert clean["sut"]["leak_bytes_per_message"] == 0
    for key in ("users", "shape", "phases", "leaks", "targets"):
        assert leaky[key] == clean[key]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("24h", 86400.0),
        ("0.5s", 0.5),
        ("150ms", 0.15),
        ("1s500ms", 1.5),
        ("90", 90.0),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "-5", -1, True, "1d", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_overrides_apply_and_are_typed():
    scenario = load_scenario("smoke", ["shape.users=42", "sut.leak_pool=true", "phases.drain=5s", 'target.host="x"'])
    assert scenario["shape"]["users"] == 42
    assert scenario["sut"]["leak_pool"] is True
    assert scenario["phases"]["drain"] == 5.0
    assert scenario["target"]["host"] == "x"


BAD = {
    "not toml": ("shape = [", "not valid TOML"),
    "unknown top key": ("colour = 'blue'", "colour: unknown key"),
    "unknown nested key": ("[shape]\nusers = 5\nuserz = 6", "shape.userz: unknown key"),
    "wrong type": ("[shape]\nusers = 'many'", "shape.users: expected a whole number"),
    "bad duration": ("[phases]\nwarmup = 'a while'", "phases.warmup: not a duration"),
    "unknown user class": ("[users.SleepyUser]\nweight = 1", "users.SleepyUser: unknown user class"),
    "no weight": ("[users.ChattingUser]\nweight = 0", "every user class has weight 0"),
    "unknown shape": ("[shape]\nkind = 'zigzag'", "shape.kind: expected one of"),
    "bad latency target": ("[[targets.latency]]\nname = 'api'\nmax_ms = 100\npercentile = 101", "percentile"),
    "latency target key": ("[[targets.latency]]\nname = 'api'\nmax = 100", "targets.latency[0]: unknown key"),
    "bad service spec": ("[target.services]\nbackend = 8001", "target.services.backend"),
    "wait order": ("[users.ChattingUser]\nweight = 1\nwait_min = 5\nwait_max = 1", "wait_min"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_scenario_is_one_line_naming_file_and_key(kind, tmp_path):
    text, expected = BAD[kind]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and expected in message


def test_missing_scenario_names_the_known_ones():
    with pytest.raises(ScenarioError, match="known names: .*smoke"):
        load_scenario("no-such-scenario")


@pytest.mark.parametrize("kind", ["unknown nested key", "wrong type", "not toml"])
def test_soak_run_with_bad_scenario_exits_2_without_traceback(kind, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD[kind][0])
    done = subprocess.run(
        [sys.executable, "-m", "soak", "run", str(path), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert str(path) in done.stderr
    assert not (tmp_path / "run").exists()  # nothing was started for a bad scenario


def test_bad_override_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "soak", "run", "smoke", "--set", "shape.users=-3", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "shape.users" in done.stderr and "Traceback" not in done.stderr


def test_scenario_dir_is_the_repo_folder():
    assert SCENARIO_DIR == Path(__file__).resolve().parent.parent / "scenarios"
