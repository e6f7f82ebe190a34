"""The checks can fail: a rate limit that does not hold and events pushed to the wrong user are caught, and a bad
scenario is a one-line error with exit code 2. Real sut processes, Locust as a subprocess.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

from test_locust_users import FAST_WAIT, LOCUST, ROOT, SHAPED, failures, locust_stats, run_locust, write_scenario


def test_rate_limit_that_does_not_hold_fails_rate_limited_user(sut_factory, tmp_path):
    # the scenario promises 3 messages per window to the free tier; this sut lets 1000 through
    sut = sut_factory(rate_limit=1000, rate_window=3.0, agent_step=0.01)
    users = {"RateLimitedUser": {"weight": 1, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 1, "spawn_rate": 5.0, "duration": 6.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {"rate_limit": 3, "rate_window": 3.0})

    result = run_locust(sut, scenario, tmp_path / "run")

    assert result.returncode == 1, result.stdout[-3000:]
    assert "rate limit: EventCheckFailed('free tier accepted a message over its limit')" in failures(tmp_path / "run")


def test_events_of_another_user_are_foreign(sut_factory, tmp_path):
    sut = sut_factory(cross_talk=True, agent_step=0.01)
    users = {"ChattingUser": {"weight": 1, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 3, "spawn_rate": 10.0, "duration": 6.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {})

    result = run_locust(sut, scenario, tmp_path / "run")

    assert result.returncode == 1, result.stdout[-3000:]
    found = failures(tmp_path / "run")
    expected = "ws event: EventCheckFailed('foreign event: agent_completed for a message this user did not send')"
    assert expected in found, found
    # the victims' own conversations still count as they should: the check is about the extra events only
    assert locust_stats(tmp_path / "run")[("WS", "agent complete")][0] > 0


def test_a_sut_that_follows_the_contract_gives_no_foreign_events(sut_factory, tmp_path):
    # the same run as above without the fault: the foreign-event check is not just always failing
    sut = sut_factory(agent_step=0.01)
    users = {"ChattingUser": {"weight": 1, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 3, "spawn_rate": 10.0, "duration": 4.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {})

    result = run_locust(sut, scenario, tmp_path / "run")

    assert result.returncode == 0, result.stdout[-3000:]
    assert failures(tmp_path / "run") == []


def run_bad(tmp_path, scenario_text: str | None) -> subprocess.CompletedProcess:
    scenario = tmp_path / "scenario.toml"
    if scenario_text is not None:
        scenario.write_text(scenario_text, encoding="utf-8")
    unused = SimpleNamespace(urls={"backend": "http://127.0.0.1:9", "auth": "http://127.0.0.1:9"})  # never contacted
    command = [
        str(LOCUST), "-f", str(SHAPED), "--headless", "--host", unused.urls["backend"],
        "--soak-scenario", str(scenario), "--soak-run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_bad_scenario_is_one_line_and_exit_2(tmp_path):
    missing = run_bad(tmp_path, None)
    assert missing.returncode == 2
    assert "error: --soak-scenario" in missing.stderr and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad_kind = run_bad(tmp_path, '[shape]\nkind = "zigzag"\n')
    assert bad_kind.returncode == 2
    assert "shape.kind" in bad_kind.stderr and "'zigzag'" in bad_kind.stderr
    assert "Traceback" not in bad_kind.stderr

    bad_wait = run_bad(tmp_path, '[users.ChattingUser]\nweight = 1\nwait_min = "soon"\n')
    assert bad_wait.returncode == 2
    assert "users.ChattingUser.wait_min" in bad_wait.stderr
