"""The contract, spoken to the real three processes over real sockets (in-process stand-ins: SQLite, memory)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
import websocket

from sut.client import Client
from sut.launcher import SutConfig, start_sut

AGENT_SEQUENCE = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
UPLOAD_MAX = 100_000


@pytest.fixture(scope="module")
def sut(tmp_path_factory):
    config = SutConfig(agent_step=0.01, upload_max_bytes=UPLOAD_MAX)
    with start_sut(config, log_dir=tmp_path_factory.mktemp("sut-contract")) as running:
        yield running


def user(sut) -> Client:
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    return client


def conversation(events: list[dict], reply_to: str) -> list[str]:
    return [e["type"] for e in events if e.get("reply_to") == reply_to]


def wait_completed(tab, ids: list[str]) -> None:
    """Receive until every message in ``ids`` has its agent_completed (in whatever order they finish)."""
    while any("agent_completed" not in conversation(tab.events, msg) for msg in ids):
        tab.recv()


def test_every_service_is_healthy_and_exports_its_metrics(sut):
    for name in ("auth", "backend", "agent"):
        health = requests.get(sut.urls[name] + "/health", timeout=5)
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "healthy" and body["service"] == name and body["failing"] == []
        text = requests.get(sut.urls[name] + "/metrics", timeout=5).text
        assert "process_resident_memory_bytes" in text
    backend = requests.get(sut.urls["backend"] + "/metrics", timeout=5).text
    for gauge in ("ws_connections_active", "ws_replay_buffer_bytes", "db_pool_size", "db_pool_checked_out"):
        assert f"\n{gauge} " in backend
    assert "\ndb_pool_overflow " in backend and "\nagent_tasks_inflight " in backend
    assert "\nagent_tasks_inflight " in requests.get(sut.urls["agent"] + "/metrics", timeout=5).text
    assert "\ndb_pool_size 5.0" in requests.get(sut.urls["auth"] + "/metrics", timeout=5).text


def test_login_refresh_upgrade(sut):
    client = Client(sut.urls["auth"], sut.urls["backend"])
    first = client.login()
    assert first["token_type"] == "bearer" and first["tier"] == "free" and first["expires_in"] == 900.0
    wrong = requests.post(
        sut.urls["auth"] + "/auth/login", json={"email": client.email, "password": "not it"}, timeout=5
    )
    assert wrong.status_code == 401 and wrong.json()["code"] == "BAD_CREDENTIALS"
    assert client.refresh()["access_token"] != first["access_token"]
    assert client.upgrade()["tier"] == "paid"
    assert client.refresh()["tier"] == "paid"  # the tier lives in the user, not only in the old token
    bad = requests.post(sut.urls["auth"] + "/auth/refresh", json={"refresh_token": first["access_token"]}, timeout=5)
    assert bad.status_code == 401 and bad.json()["code"] == "BAD_TOKEN"  # an access token is not a refresh token


def test_threads_and_history_over_rest(sut):
    alice, bob = user(sut), user(sut)
    thread = alice.create_thread("plans")
    assert [t["title"] for t in alice.api("GET", "/api/threads").json()] == ["plans"]
    assert bob.api("GET", "/api/threads").json() == []
    assert bob.api("GET", f"/api/threads/{thread}/messages").status_code == 404
    assert alice.api("GET", "/api/threads", headers={}).status_code == 401
    tab = alice.tab()
    msg = tab.chat("what is up", thread_id=thread)
    tab.until_type("agent_completed", msg)
    history = alice.api("GET", f"/api/threads/{thread}/messages").json()
    assert [(m["role"], m["reply_to"]) for m in history] == [("user", msg), ("assistant", msg)]
    assert history[0]["content"] == "what is up"
    tab.close()


def test_events_come_in_order_with_reply_to_and_increasing_ids(sut):
    tab = user(sut).tab()
    first, second = tab.chat("one"), tab.chat("two")
    wait_completed(tab, [first, second])
    assert conversation(tab.events, first) == AGENT_SEQUENCE
    assert conversation(tab.events, second) == AGENT_SEQUENCE
    ids = [e["event_id"] for e in tab.events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    tab.close()


def test_two_users_never_see_each_others_events(sut):
    alice, bob = user(sut), user(sut)
    tabs = {"alice": alice.tab(), "bob": bob.tab()}
    sent: dict[str, list[str]] = {"alice": [], "bob": []}
    for _ in range(2):
        for name, tab in tabs.items():
            sent[name].append(tab.chat(f"from {name}"))
    for name, tab in tabs.items():
        wait_completed(tab, sent[name])
        tab.quiet(0.2)
        assert {e["reply_to"] for e in tab.events} == set(sent[name])
        tab.close()


def test_every_tab_gets_every_event_and_closing_one_leaves_the_others_working(sut):
    client = user(sut)
    tabs = [client.tab(), client.tab(), client.tab(query_token=True)]
    msg = tabs[0].chat("to all tabs")
    for tab in tabs:
        tab.until_type("agent_completed", msg)
        assert conversation(tab.events, msg) == AGENT_SEQUENCE
    assert len({tuple(e["event_id"] for e in tab.events) for tab in tabs}) == 1  # identical streams
    tabs[1].close()
    msg = tabs[2].chat("after one tab closed")
    for tab in (tabs[0], tabs[2]):
        tab.until_type("agent_completed", msg)
        assert conversation(tab.events, msg) == AGENT_SEQUENCE
        tab.close()


def test_reconnect_with_last_event_id_replays_what_was_missed_exactly_once(sut):
    client = user(sut)
    tab = client.tab()
    msg = tab.chat("long answer")
    ack = tab.until_type("ack", msg)[-1]
    tab.close()  # drops before the agent's events
    time.sleep(0.3)  # the five agent steps (10 ms each) finish while nobody listens
    again = client.tab(last_event_id=ack["event_id"])
    replayed = again.until_type("agent_completed", msg)
    assert [e["type"] for e in replayed] == AGENT_SEQUENCE[1:]
    assert [e["event_id"] for e in replayed] == list(range(ack["event_id"] + 1, ack["event_id"] + 6))
    after = again.chat("and live again")
    live = again.until_type("agent_completed", after)
    assert [e["type"] for e in live] == AGENT_SEQUENCE  # nothing replayed twice before the live events
    again.close()
    fresh = client.tab()  # no last_event_id: live only, no replay
    assert fresh.quiet(0.2) == []
    fresh.close()


def test_upload_comes_back_as_an_event_and_an_oversized_one_gets_413(sut):
    client = user(sut)
    tab = client.tab()
    data = b"hello upload" * 100
    response = client.api("POST", "/api/uploads", files={"file": ("../../etc/passwd", data)})
    assert response.status_code == 202
    upload_id = response.json()["upload_id"]
    event = tab.until(lambda e: e["type"] == "upload_processed")[-1]
    assert event["upload_id"] == upload_id and event["size"] == len(data)
    assert event["filename"] == "passwd"  # the name is shown cleaned, never used as a path
    too_big = client.api("POST", "/api/uploads", files={"file": ("big.bin", b"x" * (UPLOAD_MAX + 1))})
    assert too_big.status_code == 413 and too_big.json()["code"] == "TOO_LARGE"
    way_too_big = client.api("POST", "/api/uploads", files={"file": ("huge.bin", b"x" * (UPLOAD_MAX * 3))})
    assert way_too_big.status_code == 413  # refused by Content-Length, before the body is read
    tab.close()


def test_a_websocket_without_a_valid_token_gets_401_before_the_upgrade(sut):
    url = sut.urls["backend"].replace("http", "ws") + "/ws"
    for suffix, code in (("", "BAD_TOKEN"), ("?token=not.a.jwt", "BAD_TOKEN")):
        with pytest.raises(websocket.WebSocketBadStatusException) as caught:
            websocket.create_connection(url + suffix, timeout=5)
        assert caught.value.status_code == 401
        assert json.loads(caught.value.resp_body)["code"] == code


def test_a_message_from_a_rest_call_reaches_the_websocket(sut):
    client = user(sut)
    thread = client.create_thread()
    tab = client.tab()
    response = client.api("POST", f"/api/threads/{thread}/messages", json={"content": "via rest", "id": "r1"})
    assert response.status_code == 202
    tab.until_type("agent_completed", "r1")
    assert conversation(tab.events, "r1") == AGENT_SEQUENCE
    tab.close()


def test_concurrent_users_all_get_answers(sut):
    errors: list[BaseException] = []

    def chat_once() -> None:
        try:
            tab = user(sut).tab()
            msg = tab.chat("concurrent")
            assert conversation(tab.until_type("agent_completed", msg), msg) == AGENT_SEQUENCE
            tab.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=chat_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def test_the_replay_buffer_is_bounded_says_what_it_dropped_and_is_forgotten_when_idle(sut_factory):
    small = sut_factory(agent_step=0.0, settings={"replay_max_events": 4, "replay_idle_ttl": 1.0})
    client = user(small)
    tab = client.tab()
    msg = tab.chat("six events, four kept")
    ack = tab.until_type("agent_completed", msg)[0]
    tab.close()
    again = client.tab(last_event_id=ack["event_id"])
    notice = again.recv()
    assert notice["type"] == "replay_truncated" and notice["oldest_event_id"] == ack["event_id"] + 2
    assert [e["type"] for e in again.until_type("agent_completed", msg)] == AGENT_SEQUENCE[2:]
    assert metric(small.urls["backend"], "ws_users") == 1.0
    assert 0 < metric(small.urls["backend"], "ws_replay_buffer_bytes") < 2000
    again.close()
    deadline = time.monotonic() + 10
    while metric(small.urls["backend"], "ws_users") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(small.urls["backend"], "ws_users") == 0.0  # an idle user's buffer is dropped: no leak
    assert metric(small.urls["backend"], "ws_replay_buffer_bytes") == 0.0
