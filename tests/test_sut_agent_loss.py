"""An agent job whose events can no longer come is failed, not lost: the user gets AGENT_UNAVAILABLE after the ack
(at once when the backend's channel to the agent drops, after ``agent_job_timeout`` when the job just never
finishes), a resend with the same id runs again, late events are dropped and ``agent_tasks_inflight`` goes back to
0. On real processes, with the /bus socket (no Redis) and with the real Redis."""

from __future__ import annotations

import asyncio
import time

import requests

from sut import dedup
from sut.client import Client

AGENT_SEQUENCE = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def wait_for(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s"
        time.sleep(0.05)


def healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def failed(sut, reason: str) -> float:
    return metric(sut.urls["backend"], f'sut_agent_jobs_failed_total{{reason="{reason}"}}')


def is_error_for(msg: str):
    return lambda e: e.get("type") == "error" and e.get("reply_to") == msg


def started_then(sut, content: str):
    """A logged-in tab with one chat message under way (its agent_started received): (client, tab, msg id, when
    it was sent)."""
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    tab = client.tab()
    sent = time.monotonic()
    msg = tab.chat(content)
    tab.until_type("agent_started", msg)
    return client, tab, msg, sent


def resend_runs_again(sut, tab, msg: str) -> None:
    """The same client id once more: a new ack (no ``duplicate``) and the whole reply."""
    sut.restart("agent")
    wait_for(lambda: healthy(sut.urls["backend"]))  # the backend's bus to the agent is back
    tab.chat("once more", msg_id=msg)
    events = tab.until(lambda e: e.get("reply_to") == msg and e.get("type") in ("agent_completed", "error"))
    assert [e["type"] for e in events if e.get("reply_to") == msg] == AGENT_SEQUENCE, events
    assert "duplicate" not in events[0]
    assert metric(sut.urls["backend"], "agent_tasks_inflight") == 0.0


def test_an_agent_killed_mid_reply_behind_the_socket_bus_fails_the_job_at_once(sut_factory):
    sut = sut_factory(agent_step=0.5)
    assert sut.settings.redis_url == ""
    _client, tab, msg, _sent = started_then(sut, "the agent dies while I wait")
    assert metric(sut.urls["backend"], "agent_tasks_inflight") == 1.0
    sut.kill("agent")
    killed = time.monotonic()
    got = tab.until(is_error_for(msg), timeout=5)
    assert time.monotonic() - killed < 2.0  # the socket dropped: no waiting for agent_job_timeout (30 s)
    assert got[-1]["code"] == "AGENT_UNAVAILABLE" and got[-1]["message"].startswith("agent connection lost: ")
    assert "agent_completed" not in [e["type"] for e in got]
    mine = [e for e in tab.events if e.get("reply_to") == msg]
    assert mine[0]["type"] == "ack" and mine[-1]["type"] == "error"  # the error comes after the ack
    assert mine[-1]["event_id"] > mine[0]["event_id"]  # to every tab and the replay buffer, like the agent's events
    wait_for(lambda: metric(sut.urls["backend"], "agent_tasks_inflight") == 0.0, 5.0)
    assert failed(sut, "lost") == 1.0 and failed(sut, "timeout") == 0.0

    resend_runs_again(sut, tab, msg)
    tab.close()


def test_an_agent_killed_mid_reply_behind_redis_fails_the_job_after_its_deadline(sut_factory, redis_url):
    # a whole reply takes 5 x 0.3 s, well within the deadline: only the dead agent misses it
    sut = sut_factory(redis_url=redis_url, agent_step=0.3, settings={"agent_job_timeout": 3.0})
    _client, tab, msg, sent = started_then(sut, "the agent dies, Redis stays")
    sut.kill("agent")
    got = tab.until(is_error_for(msg), timeout=8)
    # the bus stayed up, so only the deadline can tell: 3 s after the send, plus at most one check interval
    assert 3.0 <= time.monotonic() - sent < 5.0
    assert got[-1]["code"] == "AGENT_UNAVAILABLE" and got[-1]["message"] == "agent did not finish within 3 s"
    wait_for(lambda: metric(sut.urls["backend"], "agent_tasks_inflight") == 0.0, 5.0)
    assert failed(sut, "timeout") == 1.0 and failed(sut, "lost") == 0.0

    resend_runs_again(sut, tab, msg)
    tab.close()


def test_events_that_come_after_the_deadline_are_dropped(sut_factory, redis_url):
    # an agent that is alive but slower than the deadline: it finishes, and nobody may see that any more
    sut = sut_factory(redis_url=redis_url, agent_step=0.6, settings={"agent_job_timeout": 1.5})
    client, tab, msg, _sent = started_then(sut, "too slow")
    got = tab.until(is_error_for(msg), timeout=5)
    assert got[-1]["code"] == "AGENT_UNAVAILABLE"
    late = tab.quiet(3.5)  # the agent's last steps (0.6 s apart) all come within this
    assert [e for e in late if e.get("reply_to") == msg] == []
    assert metric(sut.urls["agent"], "agent_tasks_inflight") == 0.0  # the agent did finish ...
    history = client.api("GET", "/api/threads").json()
    messages = client.api("GET", f"/api/threads/{history[0]['id']}/messages").json()
    assert [m["role"] for m in messages] == ["user"]  # ... and its reply was not stored either
    assert metric(sut.urls["backend"], "agent_tasks_inflight") == 0.0


def test_a_failed_job_forgets_its_own_send_of_the_id_and_no_later_one(monkeypatch):
    # a job fails long after its ack; by then its client id may have been evicted and sent anew (another ack)
    monkeypatch.setattr(dedup.metrics, "gauge", lambda *_args: None)  # no second registration of the gauge

    async def scenario() -> None:
        ids = dedup.Dedup()
        assert await ids.earlier("u", "m1") is None
        ids.accepted("u", "m1", dedup.Outcome(thread_id=1, event_id=100))
        ids.refused("u", "m1", event_id=99)  # the failed job was acked as 99: not this send
        assert await ids.earlier("u", "m1") == dedup.Outcome(1, 100, duplicate=True)
        ids.refused("u", "m1", event_id=100)
        assert await ids.earlier("u", "m1") is None  # forgotten: this send is a new try

    asyncio.run(scenario())
