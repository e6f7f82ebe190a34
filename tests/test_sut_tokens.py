"""Short-lived access tokens: expiry mid-conversation, in-band refresh on the same connection, expired at connect."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from sut.client import Client
from sut.launcher import SutConfig, start_sut

TTL = 1.5


@pytest.fixture(scope="module")
def sut(tmp_path_factory):
    config = SutConfig(access_token_ttl=TTL, agent_step=0.0)
    with start_sut(config, log_dir=tmp_path_factory.mktemp("sut-tokens")) as running:
        yield running


def test_a_token_that_expires_mid_conversation_is_refreshed_in_band(sut):
    client = Client(sut.urls["auth"], sut.urls["backend"])
    assert client.login()["expires_in"] == TTL
    tab = client.tab()
    first = tab.chat("before expiry")
    tab.until_type("agent_completed", first)
    time.sleep(TTL + 0.2)
    late = tab.chat("after expiry")
    error = tab.until(lambda e: e.get("reply_to") == late)[-1]
    assert error["type"] == "error" and error["code"] == "TOKEN_EXPIRED"
    client.refresh()
    tab.send({"type": "refresh_token", "id": "r1", "token": client.access_token})
    refreshed = tab.until(lambda e: e.get("reply_to") == "r1")[-1]
    assert refreshed["type"] == "token_refreshed" and 0 < refreshed["expires_in"] <= TTL
    again = tab.chat("resent on the same connection")
    assert [e["type"] for e in tab.until_type("agent_completed", again)][0] == "ack"
    tab.close()


def test_a_refresh_with_someone_elses_or_a_bad_token_is_refused_and_the_old_one_kept(sut):
    alice, bob = Client(sut.urls["auth"], sut.urls["backend"]), Client(sut.urls["auth"], sut.urls["backend"])
    alice.login()
    bob.login()
    tab = alice.tab()
    for token in (bob.access_token, "garbage", alice.tokens["refresh_token"]):
        tab.send({"type": "refresh_token", "id": "r", "token": token})
        answer = tab.until(lambda e: e.get("reply_to") == "r")[-1]
        assert answer["type"] == "error" and answer["code"] == "BAD_TOKEN"
    msg = tab.chat("still alice")
    assert tab.until_type("agent_completed", msg)[0]["type"] == "ack"
    tab.close()


def test_an_expired_token_is_refused_at_connect_and_on_rest(sut):
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    time.sleep(TTL + 0.2)
    assert client.api("GET", "/api/threads").json()["code"] == "TOKEN_EXPIRED"
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        client.tab()
    assert caught.value.status_code == 401 and json.loads(caught.value.resp_body)["code"] == "TOKEN_EXPIRED"
    client.refresh()
    assert client.api("GET", "/api/threads").status_code == 200
