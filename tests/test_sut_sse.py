"""The reply as Server-Sent Events on the real sut (sut/sse.py): the same events as the WebSocket's, in order, each
once; a broken stream resumed by resending the same id with Last-Event-ID; refusals as HTTP errors before any
stream; no stream left registered afterwards."""

from __future__ import annotations

import requests

from sut.client import Client

TOKENS = 6
REPLY = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed"]


def user(sut, paid: bool = True) -> tuple[Client, int]:
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    if paid:
        client.upgrade()
    return client, client.create_thread()


def streams_open(sut) -> float:
    text = requests.get(sut.urls["backend"] + "/metrics", timeout=10).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("sse_streams_active "))


def test_stream_carries_the_reply_and_every_tab_still_gets_it(sut_factory):
    sut = sut_factory(agent_step=0.0, agent_tokens=TOKENS, agent_token_interval=0.002, agent_token_jitter=0.0)
    client, thread = user(sut)
    tab = client.tab()
    events = client.stream(thread, "stream it", msg_id="s1")  # checks each event: and id: line against its data
    types = [e["type"] for e in events]
    assert types == REPLY + ["agent_token"] * TOKENS + ["agent_completed"]
    assert [e["seq"] for e in events if e["type"] == "agent_token"] == list(range(TOKENS))
    assert all(e["reply_to"] == "s1" for e in events) and events[-1]["tokens"] == TOKENS
    ids = [e["event_id"] for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert tab.until_type("agent_completed", "s1") == events  # the same events, with the same ids
    tab.close()
    assert streams_open(sut) == 0


def test_a_broken_stream_resumes_with_last_event_id_each_event_once(sut_factory):
    sut = sut_factory(agent_step=0.0, agent_tokens=TOKENS, agent_token_interval=0.01, agent_token_jitter=0.0)
    client, thread = user(sut)
    head = client.stream(thread, "resume me", msg_id="r1", limit=3)  # the connection drops mid-reply
    tail = client.stream(thread, "resume me", msg_id="r1", last_event_id=head[-1]["event_id"])
    assert tail[0]["type"] == "ack" and tail[0]["duplicate"] is True and "event_id" not in tail[0]
    whole = head + tail[1:]
    assert [e["type"] for e in whole] == REPLY + ["agent_token"] * TOKENS + ["agent_completed"]
    ids = [e["event_id"] for e in whole]
    assert ids == sorted(set(ids))  # nothing twice, nothing missing
    # a resend without Last-Event-ID (nothing was read) gets the whole reply again, not a second run
    again = client.stream(thread, "resume me", msg_id="r1")
    assert again[0].get("duplicate") is True and again[1:] == whole
    assert streams_open(sut) == 0


def test_refusals_are_http_errors_before_any_stream(sut_factory):
    sut = sut_factory(agent_step=0.0, rate_limit=2, rate_window=60.0)  # the 404 counts against it too
    client, thread = user(sut, paid=False)
    url = f"{sut.urls['backend']}/api/threads/{thread}/messages/stream"
    assert requests.post(url, json={"content": "x"}, timeout=10).status_code == 401
    unknown = client.api("POST", f"/api/threads/{thread + 1000}/messages/stream", json={"content": "x"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "UNKNOWN_THREAD"
    assert [e["type"] for e in client.stream(thread, "first")][-1] == "agent_completed"
    limited = client.api("POST", f"/api/threads/{thread}/messages/stream", json={"content": "second"})
    assert limited.status_code == 429 and limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["Retry-After"]) >= 1
    assert streams_open(sut) == 0
