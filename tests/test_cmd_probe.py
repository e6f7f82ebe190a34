"""`soak probe` and a second platform (tests/otherchat) driven only through a scenario's [protocol].

OtherChat passes the probe, and a short `soak run` with every user class; its leak is named on its own service and its
clean twin passes, with nothing but tests/otherchat/scenario.toml. A wrong [protocol] key is named by the probe; bad
input is one line and exit 2. The reference sut passes the probe with the defaults: they are the contract.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.otherchat import SCENARIO, start

ROOT = Path(__file__).resolve().parent.parent


def soak(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soak", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def otherchat(tmp_path):
    """OtherChat with short tokens (refreshed by reconnecting mid-run) and 3 free messages per 3 s."""
    started = []

    def launch(**options: int | float):  # noqa: ANN202
        running = start(free_port(), free_port(), tmp_path / f"otherchat-{len(started)}", token_ttl=8, **options)
        started.append(running)
        return running

    yield launch
    for running in started:
        running.stop()


def target(running) -> list[str]:  # noqa: ANN001
    return ["--host", running.chat_url, "--auth-host", running.accounts_url]


def test_otherchat_passes_the_probe_through_its_protocol_table(otherchat):
    running = otherchat()
    done = soak("probe", str(SCENARIO), *target(running))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "13 steps: 13 ok, 0 failed, 0 skipped" in done.stdout
    for tolerated in ("no renew: kept", "no expires_in: JWT exp", "no plan: assumed pro", "ignored: run.typing"):
        assert tolerated in done.stdout, done.stdout
    assert "SLOW_DOWN with wait" in done.stdout and "after=" in done.stdout


def test_the_probe_names_the_key_that_would_fix_a_step(otherchat):
    running = otherchat()
    done = soak("probe", str(SCENARIO), *target(running), "--set", 'protocol.ws.reply_to="reply_to"')
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if "FAILED  chat message" in line)
    assert "the message id came back in 're', not 'reply_to'" in lines[failed]
    assert lines[failed + 1].strip() == "fix: protocol.ws.reply_to"
    assert "skipped reconnect replay needs chat message" in done.stdout

    done = soak("probe", *target(running))  # the contract's names: the first step that differs says so
    assert done.returncode == 1, done.stdout
    assert "FAILED  login            POST /auth/login: HTTP 404" in done.stdout
    assert "fix: protocol.auth.login (now 'POST /auth/login')" in done.stdout


def test_the_reference_sut_passes_the_probe_with_the_defaults(sut_factory):
    sut = sut_factory(rate_limit=2, rate_window=5.0)
    done = soak("probe", "--host", sut.urls["backend"], "--auth-host", sut.urls["auth"], "--set", "sut.rate_limit=2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "13 steps: 13 ok" in done.stdout and "RATE_LIMITED with retry_after" in done.stdout


def test_a_scenario_with_sse_users_has_the_probe_walk_the_stream_too(sut_factory):
    sut = sut_factory(agent_tokens=5, agent_token_interval=0.001)
    target = ["--host", sut.urls["backend"], "--auth-host", sut.urls["auth"]]
    done = soak("probe", "streaming", *target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "14 steps: 14 ok" in done.stdout
    line = next(line for line in done.stdout.splitlines() if "sse stream" in line)
    assert "5 agent_token, agent_completed after" in line, line
    done = soak("probe", "streaming", *target, "--set", 'protocol.sse.stream="POST /api/threads/{id}/stream"')
    assert done.returncode == 1 and "fix: protocol.sse.stream (now 'POST /api/threads/{id}/stream')" in done.stdout


def test_preflight_is_the_probe_quietly(otherchat):
    from runspec import load_scenario
    from soak.probe import preflight, steps_for

    running = otherchat()
    scenario = load_scenario(str(SCENARIO))
    assert preflight(scenario, running.chat_url, running.accounts_url) == []
    wrong = load_scenario(str(SCENARIO), ['protocol.api.thread_id="id"'])
    problems = preflight(wrong, running.chat_url, running.accounts_url)
    assert len(problems) == 1 and problems[0].startswith("probe thread: the answer has ['conversation_id', 'name']")
    assert problems[0].endswith("(fix: protocol.api.thread_id)")
    chatting_only = load_scenario("leak-check")
    assert "upload" not in steps_for(chatting_only) and "rate limit" not in steps_for(chatting_only)


def test_an_unreachable_target_is_a_failed_step_not_a_traceback():
    done = soak("probe", "--host", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "FAILED  health           ConnectionError" in done.stdout and "skipped login" not in done.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "no target: give --host URL"),
        (["--host", "not a url"], "--host 'not a url': expected http://HOST[:PORT]"),
        (["--host", "http://127.0.0.1:99999"], "not a valid port"),
        (["no-such-scenario", "--host", "http://127.0.0.1:1"], "no such scenario file or name"),
        (["--host", "http://127.0.0.1:1", "--set", 'protocol.ws.token="cookie"'], "protocol.ws.token: expected one of"),
        (
            ["--host", "http://127.0.0.1:1", "--set", 'protocol.events.startup="x"'],
            "protocol.events.startup: 'x' is not",
        ),
        (
            ["--host", "http://127.0.0.1:1", "--set", 'protocol.auth.login="/login"'],
            "protocol.auth.login: expected 'METHOD",
        ),
        (
            ["--host", "http://127.0.0.1:1", "--set", 'protocol.api.history="GET /h"'],
            "protocol.api.history: the path needs",
        ),
        (["--host", "http://127.0.0.1:1", "--set", "protocol.nope=1"], "protocol.nope: unknown key"),
        (["--host", "http://127.0.0.1:1", "--timeout", "0"], "--timeout 0: expected seconds"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected):
    done = soak("probe", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("soak probe: error: "), done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr


def run_otherchat(running, out: Path) -> tuple[subprocess.CompletedProcess, dict]:  # noqa: ANN001
    services = [
        f"target.services.chat={json.dumps(['port:' + running.chat_url.rsplit(':', 1)[1]])}",
        f"target.services.accounts={json.dumps(['port:' + running.accounts_url.rsplit(':', 1)[1]])}",
    ]
    args = ["run", str(SCENARIO), *target(running), "--out", str(out)]
    done = soak(*args, *(item for s in services for item in ("--set", s)), timeout=400)
    verdict = json.loads((out / "verdict.json").read_text()) if (out / "verdict.json").exists() else {}
    return done, verdict


def explain(done: subprocess.CompletedProcess, out: Path, verdict: dict) -> str:
    log = out / "locust.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    return f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}\n{tail}\n{json.dumps(verdict)[:3000]}"


def test_otherchat_leak_is_named_on_its_service_and_its_clean_twin_passes_every_user_class(otherchat, tmp_path):
    leaky = otherchat(leak_bytes_per_message=200_000)
    done, verdict = run_otherchat(leaky, tmp_path / "leaky")
    leaky.stop()
    assert done.returncode == 1, explain(done, tmp_path / "leaky", verdict)
    leaking = {(item["service"], item["metric"]) for item in verdict["leaks"] if item["leaking"]}
    assert ("chat", "mem_rss_bytes") in leaking, verdict["leaks"]
    assert not any(service in ("accounts", "locust") for service, _ in leaking), leaking

    clean = otherchat()
    out = tmp_path / "clean"
    done, verdict = run_otherchat(clean, out)
    assert done.returncode == 0, explain(done, out, verdict)
    assert verdict["errors"]["rate"] < 0.01 and verdict["errors"]["passed"]
    measured = {item["name"]: item for item in verdict["latency"] if item.get("scope", "overall") == "overall"}
    for name in ("api", "ws round trip", "agent startup"):
        assert measured[name]["value_ms"] is not None and measured[name]["passed"], measured[name]
    stats = (out / "locust_stats.csv").read_text()
    for name in (
        "fan-out lag",
        "upload processed",
        "rate limit",
        "reconnect replay",
        "ws token refresh",
        "ledger complete",
    ):
        assert f",{name}," in stats, f"no {name} requests"  # every user class ran, through OtherChat's names
