"""Users through real faults, against the real sut (Redis, Postgres): they notice the outage, reconnect with backoff,
resume, resend what got no ack with the same id, and their delivery ledgers count nothing lost and nothing twice;
and the ledger check fails when the sut drops its replay buffer or runs a resend twice.

Locust runs as a subprocess (it monkey-patches with gevent); the sut runs as its three processes.
"""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import requests
from test_locust_users import FAST_WAIT, failures, locust_stats, run_locust, write_scenario

LEDGER_FAILURES = ("ledger lost", "ledger duplicate", "ledger order")
AGENT_STEP = 0.05  # a reply takes five steps: long enough for a fault to land mid-reply


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def failure_counts(run_dir) -> Counter:
    """'name: message' -> occurrences, from Locust's failures table."""
    import csv

    with open(run_dir / "locust_failures.csv", newline="") as file:
        return Counter({f"{row['Name']}: {row['Error']}": int(row["Occurrences"]) for row in csv.DictReader(file)})


def requests_of(stats: dict, name: str) -> tuple[int, int]:
    return stats.get(("WS", name), (0, 0))


def test_backend_killed_mid_chat_users_recover_and_lose_nothing(sut_factory, redis_url, database_url, tmp_path):
    sut = sut_factory(redis_url=redis_url, database_url=database_url, supervise=True, agent_step=AGENT_STEP)
    users = {
        "ChattingUser": {"weight": 2, **FAST_WAIT},
        "MultiTabUser": {"weight": 1, "tabs": 2, "reopen_every": 1000, **FAST_WAIT},
        "ReconnectingUser": {"weight": 1, "drop_every": 2, **FAST_WAIT},
    }
    shape = {"kind": "steady", "users": 4, "spawn_rate": 10.0, "duration": 25.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {"agent_step": AGENT_STEP})
    run_dir = tmp_path / "run"
    killed = []

    def kill_the_backend() -> None:
        time.sleep(5.0)  # users are chatting by now
        killed.append(sut.pids["backend"])
        sut.kill("backend")  # SIGKILL: no close frame, no grace; the supervisor starts it again

    result = run_locust(sut, scenario, run_dir, during=kill_the_backend)

    assert sut.restarts["backend"] == 1 and sut.pids["backend"] != killed[0], sut.history
    stats = locust_stats(run_dir)
    found = failure_counts(run_dir)
    print(result.stdout[-2500:], stats, found, sep="\n")
    # every user noticed, with a cause (not a hang), and came back: one timed recovery per outage
    outages, _ = requests_of(stats, "ws outage")
    recovered, gave_up = requests_of(stats, "ws recovery")
    assert outages >= 4 and gave_up == 0 and recovered == outages, (outages, recovered, found)
    assert all(
        message.startswith("ws outage: EventCheckFailed('") and ("Exception" in message or "Error" in message)
        for message in found
        if message.startswith("ws outage")
    ), found
    # the tabs tried again while the backend was down, and each attempt said why it failed
    reconnects, refused = requests_of(stats, "ws reconnect")
    assert refused > 0 and reconnects - refused >= outages, stats
    assert {m for m in found if m.startswith("ws reconnect")} <= {
        "ws reconnect: EventCheckFailed('cannot connect: ConnectionRefusedError')",
        "ws reconnect: EventCheckFailed('handshake refused with HTTP 503')",
    }, found
    assert requests_of(stats, "WS connect")[1] == 0  # every tab's first connect was before the kill
    # nothing lost, nothing twice, nothing out of order: across the kill, the resends and the resumes
    assert not [m for m in found if m.split(":")[0] in LEDGER_FAILURES], found
    assert requests_of(stats, "ledger complete")[0] > 20
    assert not [m for m in found if m.startswith("ws event")], found
    # the messages that got no ack were resent with the same id: the backend (since its restart) answered
    # ReconnectingUser's resends from the first send, as duplicates
    assert requests_of(stats, "ws resend")[0] > 0
    assert metric(sut.urls["backend"], "sut_chat_duplicates_total") > 0
    # the reply to a message in flight never hung past the event timeout
    assert not [m for m in found if "not received within" in m], found


def test_a_silent_network_is_noticed_by_the_heartbeat(sut_factory, redis_url, tmp_path):
    from soak.proxy import Proxy

    sut = sut_factory(redis_url=redis_url, agent_step=AGENT_STEP)
    users = {"ChattingUser": {"weight": 1, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 3, "spawn_rate": 10.0, "duration": 22.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {"agent_step": AGENT_STEP})
    run_dir = tmp_path / "run"
    with Proxy(("127.0.0.1", sut.ports["backend"])) as proxy:
        target = SimpleNamespace(urls={"backend": f"http://127.0.0.1:{proxy.port}", "auth": sut.urls["auth"]})

        def blackhole() -> None:
            time.sleep(4.0)
            proxy.cut("blackhole")  # packets go nowhere: no reset, no close frame, only silence
            time.sleep(6.0)  # longer than a heartbeat interval and timeout together
            proxy.restore()

        result = run_locust(target, scenario, run_dir, during=blackhole)

    stats = locust_stats(run_dir)
    found = failure_counts(run_dir)
    print(result.stdout[-1500:], stats, found, sep="\n")
    outages, _ = requests_of(stats, "ws outage")
    recovered, gave_up = requests_of(stats, "ws recovery")
    silence = "ws outage: EventCheckFailed('no pong within 2.5 s')"  # reconnect.HEARTBEAT_TIMEOUT
    assert outages == 3 and found[silence] == 3, found  # each user's tab noticed the silence by itself
    assert recovered == 3 and gave_up == 0, stats
    assert not [m for m in found if m.split(":")[0] in LEDGER_FAILURES], found
    assert not [m for m in found if "not received within" in m], found  # no reply hung past the event timeout
    assert requests_of(stats, "ledger complete")[0] > 10


def test_dropped_replay_buffer_fails_the_ledger_as_lost(sut_factory, tmp_path):
    sut = sut_factory(drop_replay=True, agent_step=AGENT_STEP)
    users = {"ReconnectingUser": {"weight": 1, "drop_every": 1, "event_timeout": 3.0, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 2, "spawn_rate": 10.0, "duration": 15.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {"agent_step": AGENT_STEP})

    result = run_locust(sut, scenario, tmp_path / "run")

    assert result.returncode == 1, result.stdout[-3000:]
    found = failure_counts(tmp_path / "run")
    lost = {m: n for m, n in found.items() if m.startswith("ledger lost")}
    assert lost, found
    assert not [m for m in found if m.startswith("ledger duplicate")], found


def test_a_resend_run_twice_fails_the_ledger_as_duplicate(sut_factory, tmp_path):
    sut = sut_factory(skip_dedup=True, agent_step=AGENT_STEP)
    users = {"ReconnectingUser": {"weight": 1, "drop_every": 1, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 2, "spawn_rate": 10.0, "duration": 12.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {"agent_step": AGENT_STEP})

    result = run_locust(sut, scenario, tmp_path / "run")

    assert result.returncode == 1, result.stdout[-3000:]
    found = failure_counts(tmp_path / "run")
    assert [m for m in found if m.startswith("ledger duplicate")], found
    assert requests_of(locust_stats(tmp_path / "run"), "ws resend")[0] > 0
    assert metric(sut.urls["backend"], "sut_chat_duplicates_total") == 0  # the fault: nothing was de-duplicated


def test_the_same_losses_on_a_clean_sut_lose_nothing(sut_factory, tmp_path):
    # the two runs above without their faults: the ledger does not just always fail
    sut = sut_factory(agent_step=AGENT_STEP)
    users = {"ReconnectingUser": {"weight": 1, "drop_every": 1, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 2, "spawn_rate": 10.0, "duration": 12.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {"agent_step": AGENT_STEP})

    result = run_locust(sut, scenario, tmp_path / "run")

    assert result.returncode == 0, result.stdout[-3000:]
    assert failures(tmp_path / "run") == []
    stats = locust_stats(tmp_path / "run")
    assert requests_of(stats, "ws resend")[0] > 0 and requests_of(stats, "reconnect replay")[0] > 2
    assert requests_of(stats, "ledger complete")[0] > 5
    assert metric(sut.urls["backend"], "sut_chat_duplicates_total") == requests_of(stats, "ws resend")[0]
