"""The reconnecting tab against a scripted WebSocket server in this process (gevent): the heartbeat notices silence,
attempts per outage are bounded, a message without an ack is resent with the same id, an acked one is resumed with
last_event_id, and close() ends the reader wherever it is. Fast and exact where the real sut (test_locust_faults)
cannot be told when to fail.

Both ends run on gevent's sockets in one hub; the socket module is patched lazily, by a fixture: collecting this
file in the other pytest run must patch nothing, and Locust's full patch (ssl included) would come after other test
files imported ssl. The tests run in the pytest process of the Locust-importing tests (locust_inprocess).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from types import SimpleNamespace

import gevent
import pytest
from websocket import ABNF
from websocket._abnf import frame_buffer

pytestmark = pytest.mark.locust_inprocess

CHAT = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 0.2, "reconnect_base": 0.01, "reconnect_cap": 0.05}


class Recorder:
    """Stands in for Locust's environment: what the tab fires, as 'name' or 'name: message'."""

    def __init__(self) -> None:
        self.fired: list[str] = []
        self.events = SimpleNamespace(request=SimpleNamespace(fire=self.fire))

    def fire(self, request_type, name, response_time, response_length, exception, context):  # noqa: ANN001
        self.fired.append(name if exception is None else f"{name}: {exception}")


class Peer:
    """One server side of a connection: the path it was opened with, frames in and out."""

    def __init__(self, sock, path: str) -> None:  # noqa: ANN001
        self.sock = sock
        self.path = path
        self.frames = frame_buffer(self._recv, skip_utf8_validation=True)

    def _recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        if not data:  # frame_buffer would ask again, and again: a busy loop that starves every greenlet
            raise ConnectionError("closed by the client")
        return data

    def recv(self) -> dict:
        while True:
            frame = self.frames.recv_frame()
            if frame.opcode == ABNF.OPCODE_TEXT:
                return json.loads(frame.data)
            if frame.opcode == ABNF.OPCODE_CLOSE:
                raise ConnectionError("closed by the client")

    def send(self, event: dict) -> None:
        self.sock.sendall(ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, json.dumps(event).encode()).format())

    def reply(self, message_id: str, first_id: int, steps: list[str] = CHAT) -> None:
        for i, step in enumerate(steps):
            self.send({"type": step, "reply_to": message_id, "event_id": first_id + i})


class Server:
    """A WebSocket server on loopback; ``script(peer, n)`` runs connection n (1, 2, ...) after the handshake."""

    def __init__(self, script) -> None:  # noqa: ANN001
        from gevent.server import StreamServer

        self.script = script
        self.peers: list[Peer] = []
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()
        self.host = f"http://127.0.0.1:{self.server.server_port}"

    def _serve(self, sock, _address) -> None:  # noqa: ANN001
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = sock.recv(4096)
            if not chunk:
                return
            request += chunk
        key = re.search(rb"sec-websocket-key: *(\S+)", request, re.IGNORECASE).group(1)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        peer = Peer(sock, request.split(b" ")[1].decode())
        self.peers.append(peer)
        try:
            self.script(peer, len(self.peers))
        except (ConnectionError, OSError):
            pass

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture(autouse=True)
def gevent_sockets():
    from gevent import monkey

    monkey.patch_socket()  # websocket-client looks socket.socket up at each connect: it gets gevent's from here on


@pytest.fixture
def served():
    servers = []

    def start(script) -> Server:  # noqa: ANN001
        servers.append(Server(script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def tab_for(host: str, env: Recorder, **keys):  # noqa: ANN003
    from locustfiles.exchange import Reporter
    from locustfiles.reconnect import Policy, Tab

    table = {"event_timeout": 5.0, **FAST, **keys}
    return Tab(host, lambda: "token", Reporter(env), Policy.for_user(table))


def answer_pings(peer: Peer, got: list[dict], until: float = 2.0) -> None:
    """Serve a connection for ``until`` seconds: answer pings, record in ``got`` everything else it gets."""
    with gevent.Timeout(until, False):
        while True:
            message = peer.recv()
            if message["type"] == "ping":
                peer.send({"type": "pong", "reply_to": message["id"], "ts": 0})
            else:
                got.append(message)


def test_silence_is_noticed_and_attempts_per_outage_are_bounded(served):
    def silent(peer: Peer, n: int) -> None:  # accepts, reads, never answers
        with gevent.Timeout(5.0, False):
            while True:
                peer.recv()

    server = served(silent)
    env = Recorder()
    tab = tab_for(server.host, env, reconnect_attempts=3)
    try:
        assert tab.connect()
        exchange = tab.chat(1, "hello")
        assert not exchange.wait(3.0)  # released when the tab gives up, well before 5 s of event timeout
        assert exchange.problem == "gave up reconnecting (no pong within 0.2 s) before agent_completed"
        outcome = [name for name in env.fired if name not in ("WS connect", "ws reconnect")]
        # one outage, noticed by the heartbeat; reconnects that open but never answer spend the same outage
        assert outcome == [
            "ws outage: no pong within 0.2 s",
            "ws resend",
            "ws resend",
            "ws resend",
            "ws recovery: gave up after 3 attempts (no pong within 0.2 s)",
        ], env.fired
        assert env.fired.count("ws reconnect") == 3 and env.fired.count("WS connect") == 1
        assert len(server.peers) == 4 and not tab.open and tab.reader.dead
    finally:
        tab.close()


def test_a_message_without_an_ack_is_resent_with_the_same_id(served):
    received: list[list[dict]] = [[], []]

    def script(peer: Peer, n: int) -> None:
        if n == 1:
            received[0].append(peer.recv())  # the message arrives, and the connection dies before any answer
            peer.sock.close()
            return
        message = peer.recv()
        received[1].append(message)
        if message["type"] == "chat_message":
            peer.reply(message["id"], 100)
        answer_pings(peer, received[1])

    server = served(script)
    env = Recorder()
    tab = tab_for(server.host, env)
    try:
        assert tab.connect()
        exchange = tab.chat(7, "hello")
        assert exchange.wait(3.0)
        gevent.sleep(0.1)
        first, resent = received[0][0], received[1][0]
        assert resent == first and first["type"] == "chat_message"  # same id, same payload
        assert server.peers[1].path == "/ws"  # nothing seen before: nothing to resume from
        fired = [name for name in env.fired if name not in ("WS connect", "ws reconnect")]
        assert fired[0].startswith("ws outage: ") and "ws resend" in fired and "ws recovery" in fired
        assert fired.count("ledger complete") == 1 and not [f for f in fired if f.startswith("ledger ")][1:]
        assert tab.ledger.counts["complete"] == 1 and tab.ledger.open == {}
    finally:
        tab.close()


def test_an_acked_message_is_resumed_not_resent(served):
    received: list[dict] = []
    sent: list[str] = []

    def script(peer: Peer, n: int) -> None:
        if n == 1:
            sent.append(peer.recv()["id"])
            peer.reply(sent[0], 41, CHAT[:2])  # ack, agent_started, then the connection dies
            gevent.sleep(0.1)
            peer.sock.close()
            return
        peer.reply(sent[0], 43, CHAT[2:])  # what a resume from 42 replays
        answer_pings(peer, received)

    server = served(script)
    env = Recorder()
    tab = tab_for(server.host, env)
    try:
        assert tab.connect()
        assert tab.chat(7, "hello").wait(3.0)
        gevent.sleep(0.1)
        assert server.peers[1].path == "/ws?last_event_id=42"
        assert received == []  # acked: not resent
        assert "ws resend" not in env.fired and "ws recovery" in env.fired
        assert env.fired.count("ledger complete") == 1 and tab.ledger.counts["complete"] == 1
        # timed before the loss, untimed after it: the outage is not in the latency figures
        assert env.fired.count("ws round trip") == 1 and "agent complete" not in env.fired
    finally:
        tab.close()


def test_close_ends_the_reader_while_it_waits_to_reconnect():
    from conftest import free_port

    env = Recorder()
    tab = tab_for(f"http://127.0.0.1:{free_port()}", env, reconnect_base=5.0, reconnect_cap=5.0)
    assert not tab.connect()  # nothing listens: refused
    tab.revive()
    gevent.sleep(0.05)
    reader = tab.reader
    assert env.fired[-1] == "ws outage: ConnectionRefusedError" and not reader.dead  # sleeping its backoff
    tab.close()
    assert reader.dead and tab.ws is None and tab.reader is None
