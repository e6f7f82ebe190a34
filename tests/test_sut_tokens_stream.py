"""The agent streams its answer as agent_token events on the real sut: in order, paced, replayed, and stalled by
the stall_tokens_every fault."""

from __future__ import annotations

import time

from sut.client import Client

TOKENS = 12


def login(sut) -> Client:
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    return client


def test_tokens_stream_in_order_between_started_and_completed_and_replay(sut_factory):
    sut = sut_factory(agent_step=0.0, agent_tokens=TOKENS, agent_token_interval=0.004, agent_token_jitter=0.002)
    client = login(sut)
    tab = client.tab()
    msg = tab.chat("stream this please")
    events = tab.until_type("agent_completed", msg)
    types = [e["type"] for e in events]
    tokens = [e for e in events if e["type"] == "agent_token"]
    assert [t["seq"] for t in tokens] == list(range(TOKENS))
    assert all(t["reply_to"] == msg and t["text"] for t in tokens)
    assert types.index("agent_started") < types.index("agent_token")
    assert types[-1] == "agent_completed" and events[-1]["tokens"] == TOKENS
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    tab.close()
    # a resume from the ack replays the tokens too, each once, in order
    again = client.tab(last_event_id=events[0]["event_id"])
    replayed = again.until_type("agent_completed", msg)
    assert [e["seq"] for e in replayed if e["type"] == "agent_token"] == list(range(TOKENS))
    again.close()


def test_stall_fault_holds_the_stream_every_n_tokens(sut_factory):
    sut = sut_factory(
        agent_step=0.0,
        agent_tokens=8,
        agent_token_interval=0.002,
        agent_token_jitter=0.0,
        stall_tokens_every=4,
        stall_for=0.15,
    )
    tab = login(sut).tab()
    msg = tab.chat("stall")
    arrivals = []
    while True:
        event = tab.recv()
        if event["type"] == "agent_token":
            arrivals.append(time.perf_counter())
        if event["type"] == "agent_completed" and event["reply_to"] == msg:
            break
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) == 7
    assert gaps[3] >= 0.14 and gaps[6] < 0.1  # the stall before seq 4 only (seq 8 would be the next)
    tab.close()


def test_no_tokens_by_default(sut_factory):
    tab = login(sut_factory(agent_step=0.0)).tab()
    msg = tab.chat("plain")
    events = tab.until_type("agent_completed", msg)
    assert "agent_token" not in [e["type"] for e in events] and "tokens" not in events[-1]
    tab.close()


def test_drop_and_repeat_faults_skip_or_send_twice_a_token_every_n(sut_factory):
    sut = sut_factory(
        agent_step=0.0,
        agent_tokens=8,
        agent_token_interval=0.001,
        agent_token_jitter=0.0,
        drop_token_every=3,
        repeat_token_every=4,
    )
    tab = login(sut).tab()
    msg = tab.chat("faulty")
    events = tab.until_type("agent_completed", msg)
    # seq 3 and 6 left out, seq 4 twice (each copy an event of its own), and the count still says what was made
    assert [e["seq"] for e in events if e["type"] == "agent_token"] == [0, 1, 2, 4, 4, 5, 7]
    ids = [e["event_id"] for e in events]
    assert ids == sorted(set(ids)) and events[-1]["tokens"] == 8
    tab.close()
