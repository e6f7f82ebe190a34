"""WsConnection's receive path against a scripted server (test_locust_tab's): frames read ahead in bursts parse as
websocket-client's own reads would, however the bytes are split across reads, with pings and fragments between
them and frames larger than one read; each reply is fired once, each ping answered.

Runs in the pytest process of the Locust-importing tests (locust_inprocess).
"""

from __future__ import annotations

import json

import gevent
import pytest
from test_locust_tab import CHAT, Peer, Recorder, gevent_sockets, served  # noqa: F401 - fixtures
from websocket import ABNF

pytestmark = pytest.mark.locust_inprocess

SPLITS = (1, 2, 3, 7, 125, 4095, 4097, 9000)  # cut points that fall in headers, lengths and payloads


def frame(opcode: int, data: bytes, fin: int = 1) -> bytes:
    return ABNF(fin, 0, 0, 0, opcode, 0, data).format()


def event(kind: str, reply_to: str, event_id: int, **fields) -> bytes:  # noqa: ANN003
    return json.dumps({"type": kind, "reply_to": reply_to, "event_id": event_id, **fields}).encode()


def replies(message_id: str, first_id: int) -> bytes:
    """A chat's six replies with a ping between two, one reply fragmented around a ping, one larger than a read."""
    ack, started, thinking, executing, completed, final = (
        event(kind, message_id, first_id + i) for i, kind in enumerate(CHAT)
    )
    executing = event(CHAT[3], message_id, first_id + 3, pad="x" * 20_000)
    text, cont, ping = ABNF.OPCODE_TEXT, ABNF.OPCODE_CONT, ABNF.OPCODE_PING
    return b"".join(
        [
            frame(text, ack),
            frame(ping, b"hb"),
            frame(text, started),
            frame(text, thinking[:10], fin=0),
            frame(ping, b"hb"),
            frame(cont, thinking[10:]),
            frame(text, executing),
            frame(text, completed),
            frame(text, final),
        ]
    )


def test_read_ahead_frames_parse_whole_however_they_are_split(served):  # noqa: F811
    from locustfiles.exchange import Reporter
    from locustfiles.wsclient import READ_AHEAD, WsConnection

    pongs: list[bytes] = []
    rounds = 2 + len(SPLITS)

    def receive(peer: Peer) -> dict:
        while True:
            got = peer.frames.recv_frame()
            if got.opcode == ABNF.OPCODE_PONG:
                pongs.append(got.data)
            elif got.opcode == ABNF.OPCODE_TEXT:
                return json.loads(got.data)
            elif got.opcode == ABNF.OPCODE_CLOSE:
                raise ConnectionError("closed by the client")

    def script(peer: Peer, n: int) -> None:
        for i in range(rounds):
            message = receive(peer)
            data = replies(message["id"], 10 * (i + 1))
            assert len(data) > 2 * READ_AHEAD
            cuts = [0] if i == 0 else [0, SPLITS[i - 2]] if i >= 2 else [0, *SPLITS]
            for start, end in zip(cuts, [*cuts[1:], len(data)], strict=True):
                peer.sock.sendall(data[start:end])
                gevent.sleep(0.01)  # each part its own read
        receive(peer)  # the pongs to the last replies, until the close

    server = served(script)
    env = Recorder()
    conn = WsConnection(f"ws://{server.host.removeprefix('http://')}/ws", "token", Reporter(env))
    try:
        assert conn.connect()
        for _ in range(rounds):
            exchange = conn.chat(7, "hi")
            assert exchange.wait(3.0), (exchange.problem, env.fired)
        gevent.sleep(0.2)
    finally:
        conn.close()
    timed = ["WS connect"] + ["ws round trip", "agent startup", "agent complete"] * rounds
    assert env.fired == timed
    assert pongs == [b"hb"] * (2 * rounds)


@pytest.mark.parametrize("length", [0, 1, 4, 5, 125, 126, 127, 65535, 65536, 70001])
def test_text_frame_is_websocket_clients_frame_with_the_same_mask(length):
    from locustfiles.wsclient import text_frame

    data = bytes(range(256)) * (length // 256 + 1)
    data = data[:length]
    frame = text_frame(data)
    key_at = 2 if length < 126 else 4 if length < 65536 else 10
    expected = ABNF.create_frame(data, ABNF.OPCODE_TEXT)
    expected.get_mask_key = lambda _n: frame[key_at : key_at + 4]
    assert frame == expected.format()
    assert text_frame(data)[key_at : key_at + 4] != frame[key_at : key_at + 4] or length == 0  # a new key per frame


def test_a_silent_socket_times_out_as_websocket_client_says_it(served):  # noqa: F811
    """The reader's wait for a readable socket keeps the socket's timeout (the tab's heartbeat clock)."""
    import time

    from websocket import WebSocketTimeoutException

    from locustfiles.exchange import Reporter
    from locustfiles.wsclient import WsConnection

    def script(peer: Peer, n: int) -> None:
        peer.sock.sendall(frame(ABNF.OPCODE_TEXT, b'{"type":"notice"}'))
        gevent.sleep(2.0)

    server = served(script)
    conn = WsConnection(f"ws://{server.host.removeprefix('http://')}/ws", "token", Reporter(Recorder()))
    assert conn._open_socket(3.0) is None
    try:
        conn.ws.settimeout(0.2)
        assert conn.ws.recv_data()[1] == b'{"type":"notice"}'  # the read that emptied the socket
        started = time.perf_counter()
        with pytest.raises(WebSocketTimeoutException):
            conn.ws.recv_data()  # waits for readable: nothing comes
        assert time.perf_counter() - started >= 0.15  # not at once: after the timeout
    finally:
        conn.close()
