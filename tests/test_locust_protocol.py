"""The users' [protocol]: what they tolerate where the contract does not insist, and what still fails where it must.

Tolerated, a test each: an auth answer without a new refresh token keeps the old one; a missing lifetime is read from
the JWT's ``exp``; a missing tier is assumed from the request; extra fields are ignored; event types the [protocol]
does not name are ignored and counted, never failures. Strict, a test each, on OtherChat's names (tests/otherchat):
foreign ids, event ids that do not increase, order, loss, duplicates, and the timed names the latency targets read.
The token's four places are checked on the wire against a scripted server, and the defaults are the contract.

Importing locustfiles imports Locust (gevent monkey-patching): these tests run in the locust_inprocess pytest process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import gevent
import jwt
import pytest
from test_locust_tab import GUID, Peer, Recorder, Server, gevent_sockets  # noqa: F401 - the fixture patches sockets

pytestmark = pytest.mark.locust_inprocess

OTHER_SCENARIO = Path(__file__).resolve().parent / "otherchat" / "scenario.toml"
OTHER_CHAT = ["received", "run.start", "run.step", "run.end"]


@pytest.fixture
def other():
    from locustfiles.wire import Wire
    from runspec import load_scenario

    return Wire(load_scenario(str(OTHER_SCENARIO))["protocol"])


@pytest.fixture
def env():
    return Recorder()


def jwt_with(**claims) -> str:  # noqa: ANN003
    return jwt.encode(claims, "a-secret-of-the-recommended-32-bytes", algorithm="HS256")


def exchange_on(env, wire, message_id="m1", inbox=None):  # noqa: ANN001
    from locustfiles.exchange import Exchange, Inbox, Reporter

    inbox = inbox or Inbox(Reporter(env), wire)
    exchange = Exchange(message_id, wire.chat_steps, wire.chat_names, Reporter(env))
    inbox.expect(exchange)
    return inbox, exchange


def feed(inbox, types, ref="m1", first=100):  # noqa: ANN001 - OtherChat's spelling of the events
    for i, kind in enumerate(types):
        inbox.handle({"kind": kind, "re": ref, "seq": first + i}, 1.0 + i)


# --- the defaults are the contract


def test_the_defaults_are_the_contract():
    from locustfiles import exchange
    from locustfiles.wire import DEFAULT

    assert exchange.CHAT_STEPS == (
        "ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed",
    )  # fmt: skip
    assert exchange.CHAT_NAMES == {
        "ack": "ws round trip",
        "agent_started": "agent startup",
        "agent_completed": "agent complete",
    }
    assert DEFAULT.chat_payload("m1", 7, "hi") == {"type": "chat_message", "id": "m1", "thread_id": 7, "content": "hi"}
    assert (
        DEFAULT.ws_url("http://h:1") == "ws://h:1/ws"
        and DEFAULT.ws_url("https://h/", 5) == "wss://h/ws?last_event_id=5"
    )
    assert DEFAULT.ws_handshake("T") == {"header": ["Authorization: Bearer T"]}
    assert DEFAULT.history.url("", 7, 20) == "/api/threads/7/messages?limit=20"
    assert DEFAULT.history.name == "GET /api/threads/{id}/messages"
    assert DEFAULT.refresh_request("R") == {"json": {"refresh_token": "R"}}


# --- tolerated


class FakeClient:
    """Stands in for Locust's HttpSession: answers each request with the next body, records the requests."""

    def __init__(self, *bodies: dict) -> None:
        self.bodies = list(bodies)
        self.requests: list[tuple[str, str, dict]] = []
        self.outcomes: list[str] = []

    def request(self, method, url, name, catch_response, **kwargs):  # noqa: ANN001, ANN003
        self.requests.append((method, url, kwargs))
        body = self.bodies.pop(0)
        client = self

        class Response:
            status_code = 200

            def json(self) -> dict:
                return body

            def success(self) -> None:
                client.outcomes.append("ok")

            def failure(self, message: str) -> None:
                client.outcomes.append(message)

            def __enter__(self):  # noqa: ANN204
                return self

            def __exit__(self, *exc) -> None:  # noqa: ANN002
                return None

        return Response()


def test_an_answer_without_a_new_refresh_token_keeps_the_old_one():
    from locustfiles.session import AuthSession

    full = {"access_token": "a1", "refresh_token": "r1", "expires_in": 900, "tier": "free"}
    client = FakeClient(full, {"access_token": "a2", "expires_in": 900, "tier": "paid"}, {"access_token": "a3"})
    session = AuthSession(client, "http://auth", "u@x")
    assert session.login() and session.upgrade()  # issue 13: the upgrade kept the old refresh token and failed
    assert (session.access_token, session.refresh_token, session.tier) == ("a2", "r1", "paid")
    assert session.refresh() and session.refresh_token == "r1" and session.access_token == "a3"
    assert client.requests[2][2] == {"json": {"refresh_token": "r1"}}
    assert client.outcomes == ["ok", "ok", "ok"]


def test_a_missing_expires_in_is_read_from_the_jwt_exp():
    from locustfiles.session import REFRESH_AHEAD, AuthSession

    token = jwt_with(sub="u", exp=int(time.time()) + 100)
    session = AuthSession(FakeClient({"access_token": token, "refresh_token": "r"}), "http://auth", "u@x")
    assert session.login()
    left = session.refresh_at - time.perf_counter()
    assert 100 * (1 - REFRESH_AHEAD) - 2 < left <= 100 * (1 - REFRESH_AHEAD)
    assert "expires_in" in session.tokens.assumed

    no_exp = AuthSession(FakeClient({"access_token": "opaque", "refresh_token": "r"}), "http://auth", "u@x")
    assert no_exp.login() and not no_exp.expiring  # neither lifetime nor exp: never refreshed on a timer


def test_a_missing_tier_is_assumed_from_the_request():
    from locustfiles.session import AuthSession

    client = FakeClient({"access_token": "a1", "refresh_token": "r"}, {"access_token": "a2"}, {"access_token": "a3"})
    session = AuthSession(client, "http://auth", "u@x")
    assert session.login() and session.tier == "free"
    assert session.upgrade() and session.tier == "paid"
    assert session.refresh() and session.tier == "paid"  # unchanged by a refresh
    claimed = AuthSession(FakeClient({"access_token": jwt_with(tier="paid"), "refresh_token": "r"}), "h", "u@x")
    assert claimed.login() and claimed.tier == "paid"  # the JWT's claim, where it has one


def test_extra_fields_are_ignored(env, other):
    extra = {"access_token": "a", "refresh_token": "r", "expires_in": 60, "tier": "free", "scope": ["x"], "nonce": 1}
    session_client = FakeClient(extra)
    from locustfiles.session import AuthSession

    assert AuthSession(session_client, "h", "u@x").login() and session_client.outcomes == ["ok"]
    inbox, exchange = exchange_on(env, other)
    for i, kind in enumerate(OTHER_CHAT):
        inbox.handle({"kind": kind, "re": "m1", "seq": 10 + i, "trace": {"span": i}, "model": "m"}, 1.0 + i)
    assert exchange.ok and env.fired == ["ws round trip", "agent startup", "agent complete"]


def test_unknown_event_types_are_ignored_and_counted(env, other):
    fired: list[tuple[str, float | None, object]] = []
    env.events = SimpleNamespace(request=SimpleNamespace(fire=lambda **kw: fired.append(
        (kw["name"], kw["response_time"], kw["exception"]))))  # fmt: skip
    inbox, exchange = exchange_on(env, other)
    inbox.handle({"kind": "welcome", "server": "x"}, 0.5)  # no reply id at all
    feed(inbox, ["received", "run.start", "run.typing", "run.step", "run.typing", "run.end"])
    assert exchange.ok and exchange.problem is None
    ignored = [f for f in fired if f[0].startswith("ws ignored ")]
    assert ignored == [("ws ignored welcome", None, None)] + [("ws ignored run.typing", None, None)] * 2
    assert [f[0] for f in fired if f[2] is not None] == []  # counted (untimed), not failures


# --- strict, on OtherChat's names


def test_strict_foreign_ids_fail(env, other):
    inbox, _ = exchange_on(env, other)
    inbox.handle({"kind": "run.start", "re": "someone-else", "seq": 1}, 1.0)
    inbox.handle({"kind": "file_ready", "file_id": "f9", "seq": 2}, 1.0)
    assert env.fired == [
        "ws event: foreign event: run.start for a message this user did not send",
        "ws event: foreign event: file_ready for an upload this user did not make",
    ]


def test_strict_event_ids_must_increase(env, other):
    inbox, exchange = exchange_on(env, other)
    inbox.handle({"kind": "received", "re": "m1", "seq": 7}, 1.0)
    inbox.handle({"kind": "run.start", "re": "m1", "seq": 7}, 2.0)
    assert exchange.problem == "run.start repeated or out of order (event_id did not increase)"


def test_strict_order(env, other):
    inbox, _ = exchange_on(env, other)
    feed(inbox, ["run.start", "received"])
    assert env.fired == ["agent startup", "ws round trip: received after run.start (out of order)"]


def test_strict_loss(env, other):
    inbox, exchange = exchange_on(env, other)
    feed(inbox, ["received", "run.start", "run.end"])  # run.step lost
    assert not exchange.ok and env.fired[-1] == "agent complete: run.step missing before run.end"

    env.fired.clear()
    inbox, exchange = exchange_on(env, other, "m2")
    feed(inbox, ["received"], "m2")
    assert not exchange.wait(0.05)
    assert env.fired[1:] == [
        "agent startup: run.start not received within 0.05 s",
        "agent complete: run.end not received within 0.05 s",
    ]


def test_strict_duplicates(env, other):
    inbox, _ = exchange_on(env, other)
    feed(inbox, ["received", "received", "run.start", "run.step", "run.end"])
    assert env.fired[-1] == "agent complete: duplicate received"

    inbox, _ = exchange_on(env, other, "m2")
    feed(inbox, OTHER_CHAT, "m2", 200)
    feed(inbox, ["run.end"], "m2", 500)  # after a clean end: repeated
    assert env.fired[-1] == "ws event: run.end after its exchange had ended (duplicate or late)"


def test_strict_ledger_on_other_names(env, other):
    from locustfiles.exchange import Reporter
    from locustfiles.ledger import Ledger, LedgerInbox

    ledger = Ledger(Reporter(env), 10.0, other)
    inbox = LedgerInbox(Reporter(env), ledger, other)
    for ref in ("a", "b", "c"):
        ledger.expect(ref, {"kind": "say", "ref": ref})
    feed(inbox, OTHER_CHAT, "a", 10)
    feed(inbox, ["received", "run.start", "run.end"], "b", 20)
    inbox.handle({"kind": "received", "re": "c", "repeat": True}, 1.0)  # a resend acked from its first send
    feed(inbox, OTHER_CHAT, "a", 30)  # a second reply to a
    assert env.fired == [
        "ledger complete",
        "ledger lost: run.step missing before run.end",
        "ledger duplicate: received after the reply was complete (a second reply)",
    ]
    assert ledger.open["c"].acked


def test_strict_targets_read_the_timed_names(env, other):
    """Whatever the platform calls its events, the latency targets' names are fired: they are always measured."""
    inbox, exchange = exchange_on(env, other)
    feed(inbox, OTHER_CHAT)
    assert exchange.ok and env.fired == ["ws round trip", "agent startup", "agent complete"]
    from runspec import SCHEMA
    from runspec.protocol import TOKEN_FIRST, TOKEN_GAP

    # "api" is every HTTP request; the stream targets are timed by the token events (test_locust_stream.py)
    targets = {t["name"] for t in SCHEMA["targets"]["latency"].default} - {"api", TOKEN_FIRST, TOKEN_GAP}
    assert targets and targets <= set(other.chat_names.values())


# --- where the token goes, on the wire


class HandshakeServer(Server):
    """The scripted server, also answering a subprotocol and keeping each handshake request."""

    def __init__(self, script) -> None:  # noqa: ANN001
        self.requests: list[str] = []
        super().__init__(script)

    def _serve(self, sock, _address) -> None:  # noqa: ANN001
        request = b""
        while b"\r\n\r\n" not in request:
            request += sock.recv(4096)
        self.requests.append(request.decode())
        key = re.search(rb"sec-websocket-key: *(\S+)", request, re.IGNORECASE).group(1)
        proto = re.search(rb"sec-websocket-protocol: *([^,\r]+)", request, re.IGNORECASE)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept + (b"\r\nSec-WebSocket-Protocol: " + proto.group(1).strip() if proto else b"") + b"\r\n\r\n"
        )  # fmt: skip
        peer = Peer(sock, request.split(b" ")[1].decode())
        self.peers.append(peer)
        try:
            self.script(peer, len(self.peers))
        except (ConnectionError, OSError):
            pass


@pytest.mark.parametrize(
    "place, keys, seen",
    [
        ("header", {"protocol.auth_header": "X-Session", "protocol.auth_scheme": ""}, "x-session: tok"),
        ("query", {"protocol.ws.token_param": "access_token"}, "GET /ws?access_token=tok "),
        ("subprotocol", {"protocol.ws.subprotocol": "bearer"}, "sec-websocket-protocol: bearer,tok"),
        ("message", {"protocol.ws.auth_reply": "hello.ok"}, '{"type":"auth","token":"tok"}'),
    ],
)
def test_the_token_goes_where_the_protocol_says(place, keys, seen, env):
    from locustfiles.exchange import Reporter
    from locustfiles.wire import Wire
    from locustfiles.wsclient import WsConnection
    from runspec import load_scenario

    overrides = [f"protocol.ws.token={json.dumps(place)}", *(f"{k}={json.dumps(v)}" for k, v in keys.items())]
    wire = Wire(load_scenario("smoke", overrides)["protocol"])
    firsts: list[dict] = []

    def script(peer: Peer, n: int) -> None:
        if place == "message":
            firsts.append(peer.recv())
            peer.send({"type": "hello.ok"})
        message = peer.recv()
        peer.reply(message["id"], 10)
        gevent.sleep(1.0)

    server = HandshakeServer(script)
    try:
        conn = WsConnection(wire.ws_url(server.host), "tok", Reporter(env), wire=wire)
        assert conn.connect(), env.fired
        assert conn.chat(7, "hi").wait(3.0), env.fired
        conn.close()
        handshake = server.requests[0].replace("\r\n", "\n").lower() if place != "query" else server.requests[0]
        if place == "message":
            assert json.dumps(firsts[0], separators=(",", ":")) == seen and "authorization" not in handshake
        else:
            assert seen.lower() in handshake.lower(), handshake
        if place != "header":
            assert "authorization:" not in handshake.lower()
    finally:
        server.stop()


def test_a_refused_token_message_fails_the_connect(env):
    from locustfiles.exchange import Reporter
    from locustfiles.wire import Wire
    from locustfiles.wsclient import WsConnection
    from runspec import load_scenario

    wire = Wire(
        load_scenario("smoke", ['protocol.ws.token="message"', 'protocol.ws.auth_reply="hello.ok"'])["protocol"]
    )

    def script(peer: Peer, n: int) -> None:
        peer.recv()
        peer.send({"type": "error", "code": "BAD_TOKEN", "reply_to": None})
        gevent.sleep(0.5)

    server = HandshakeServer(script)
    try:
        conn = WsConnection(wire.ws_url(server.host), "tok", Reporter(env), wire=wire)
        assert not conn.connect()
        assert env.fired == ["WS connect: token refused: error BAD_TOKEN"]
    finally:
        server.stop()
