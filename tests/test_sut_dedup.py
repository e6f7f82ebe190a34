"""Idempotent sends and the two fault switches that break a client's delivery ledger (skip_dedup, drop_replay),
on the running sut: in memory and on the real Redis."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from sut.client import Client

AGENT_SEQUENCE = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
QUIET = 0.5  # seconds of silence that prove no second reply comes (the agent takes 5 x 0.05 s)


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def user(sut) -> Client:
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    return client


def replies(events: list[dict], msg: str) -> list[dict]:
    """The events for ``msg`` that carry an event id: what a client's ledger counts."""
    return [e for e in events if e.get("reply_to") == msg and "event_id" in e]


@pytest.fixture(params=["memory", "redis"])
def bus(request) -> str:
    return "" if request.param == "memory" else request.getfixturevalue("redis_url")


def test_a_resend_on_another_connection_is_acked_as_duplicate_and_runs_once(sut_factory, bus):
    sut = sut_factory(redis_url=bus, agent_step=0.05, rate_limit=0)
    client = user(sut)
    first = client.tab()
    first.chat("only once", msg_id="m-1")
    ack = first.until_type("ack", "m-1")[-1]
    # the reconnect of a client that never saw that ack: resume from before it, resend with the same id
    second = client.tab(last_event_id=ack["event_id"] - 1)
    second.chat("only once", msg_id="m-1")
    second.until_type("agent_completed", "m-1")
    first.until_type("agent_completed", "m-1")
    for tab in (first, second):
        tab.events += tab.quiet(QUIET)
    duplicates = [e for e in second.events if e.get("duplicate")]
    assert duplicates == [
        {
            "type": "ack",
            "reply_to": "m-1",
            "thread_id": ack["thread_id"],
            "duplicate": True,
            "ack_event_id": ack["event_id"],
        }
    ]
    for tab in (first, second):
        got = replies(tab.events, "m-1")
        assert [e["type"] for e in got] == AGENT_SEQUENCE  # each event once: replayed or live, never twice
        assert [e["event_id"] for e in got] == list(range(ack["event_id"], ack["event_id"] + 6))
    assert [e for e in first.events if e.get("duplicate")] == []  # the duplicate ack goes to the resender only

    # and over REST too: the first send's ack, not a new run
    thread = ack["thread_id"]
    again = client.api("POST", f"/api/threads/{thread}/messages", json={"content": "only once", "id": "m-1"})
    assert again.status_code == 202
    assert again.json() == {"thread_id": thread, "reply_to": "m-1", "event_id": ack["event_id"], "duplicate": True}
    assert second.quiet(QUIET) == []
    assert metric(sut.urls["agent"], "sut_agent_jobs_total") == 1.0
    assert metric(sut.urls["backend"], "sut_chat_messages_total") == 1.0
    assert metric(sut.urls["backend"], "sut_chat_duplicates_total") == 2.0
    history = client.api("GET", f"/api/threads/{thread}/messages").json()
    assert [m["role"] for m in history] == ["user", "assistant"]
    first.close()
    second.close()


def test_two_sends_of_one_id_at_the_same_moment_are_one(sut_factory):
    sut = sut_factory(agent_step=0.05, rate_limit=0)
    client = user(sut)
    tabs = [client.tab() for _ in range(4)]
    go = threading.Barrier(len(tabs))

    def send(tab) -> None:
        go.wait()
        tab.chat("raced", msg_id="same")

    senders = [threading.Thread(target=send, args=(tab,)) for tab in tabs]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    for tab in tabs:
        tab.until_type("agent_completed", "same")
        tab.events += tab.quiet(QUIET)
        assert [e["type"] for e in replies(tab.events, "same")] == AGENT_SEQUENCE
    assert sum(e.get("duplicate") is True for tab in tabs for e in tab.events) == len(tabs) - 1
    assert metric(sut.urls["agent"], "sut_agent_jobs_total") == 1.0
    for tab in tabs:
        tab.close()


def test_a_refused_send_is_forgotten_so_its_resend_is_a_new_try(sut_factory):
    sut = sut_factory(agent_step=0.0, rate_limit=1, rate_window=1.0)
    tab = user(sut).tab()
    tab.chat("one", msg_id="a")
    tab.until_type("agent_completed", "a")
    tab.chat("two", msg_id="b")
    refused = tab.until_type("error", "b")[-1]
    assert refused["code"] == "RATE_LIMITED"
    time.sleep(refused["retry_after"] + 0.1)
    tab.chat("two", msg_id="b")
    assert [e["type"] for e in replies(tab.until_type("agent_completed", "b"), "b")] == AGENT_SEQUENCE
    tab.close()


def test_skip_dedup_switch_runs_a_resent_message_again(sut_factory):
    sut = sut_factory(agent_step=0.05, rate_limit=0, skip_dedup=True)
    client = user(sut)
    first = client.tab()
    first.chat("twice", msg_id="m-1")
    ack = first.until_type("ack", "m-1")[-1]
    second = client.tab(last_event_id=ack["event_id"] - 1)
    second.chat("twice", msg_id="m-1")
    for tab in (first, second):
        while sum(e["type"] == "agent_completed" for e in replies(tab.events, "m-1")) < 2:
            tab.recv()
        got = [e["type"] for e in replies(tab.events, "m-1")]
        assert got.count("ack") == 2 and got.count("agent_completed") == 2  # what the ledger must flag
    assert not any(e.get("duplicate") for e in second.events)
    assert metric(sut.urls["agent"], "sut_agent_jobs_total") == 2.0
    first.close()
    second.close()


def test_drop_replay_switch_makes_a_resume_replay_nothing(sut_factory):
    clean = sut_factory(agent_step=0.0)
    faulty = sut_factory(agent_step=0.0, drop_replay=True)
    for sut in (clean, faulty):
        client = user(sut)
        tab = client.tab()
        msg = tab.chat("missed")
        ack = tab.until_type("ack", msg)[-1]
        tab.close()  # gone before the agent's events
        time.sleep(0.3)
        again = client.tab(last_event_id=ack["event_id"])
        got = again.quiet(QUIET)
        if sut is clean:
            assert [e["type"] for e in got] == AGENT_SEQUENCE[1:]
        else:
            assert got == []  # nothing, not even replay_truncated: a silent loss the ledger must catch
            assert metric(sut.urls["backend"], "ws_replay_buffer_bytes") == 0.0
        live = again.chat("live still works")
        assert [e["type"] for e in again.until_type("agent_completed", live)] == AGENT_SEQUENCE
        again.close()


def test_a_resume_from_before_the_users_state_says_events_may_be_lost(sut_factory):
    sut = sut_factory(agent_step=0.0)
    client = user(sut)
    tab = client.tab(last_event_id=12345)  # ids from an earlier backend process (or a forgotten idle user)
    notice = tab.recv()
    assert notice["type"] == "replay_truncated" and notice["last_event_id"] == 12345
    msg = tab.chat("after the notice")
    events = tab.until_type("agent_completed", msg)
    assert events[0]["event_id"] == notice["oldest_event_id"]
    tab.close()
