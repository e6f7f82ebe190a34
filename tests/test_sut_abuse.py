"""Clients that misbehave, against the real sut: JSON nested too deep, a chunked upload above the limit, a client
that floods and never reads. Each must get its documented answer, and nobody else may suffer."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
import requests
import websocket

from sut.client import Client
from sut.launcher import SutConfig, start_sut

UPLOAD_MAX = 100_000
CHUNK = 16 * 1024
FLOOD_BATCH = 500  # pings between two looks at /metrics
FLOOD_MAX = 200_000  # pings; bounded, whatever the machine's socket buffers are
FLOOD_SECONDS = 60.0
ID_PAD = "p" * 180  # a pong echoes the id: bigger pongs fill the pipe with fewer pings
REPLAY_MAX = 1000  # the backend's replay_max_events (default), which equals its slow-client queue limit
REPLAY_CHATS = 170  # six events each: more than the replay buffer holds


@pytest.fixture(scope="module")
def sut(tmp_path_factory):
    config = SutConfig(agent_step=0.01, rate_limit=0, upload_max_bytes=UPLOAD_MAX)
    with start_sut(config, log_dir=tmp_path_factory.mktemp("sut-abuse")) as running:
        yield running


def user(sut) -> Client:
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    return client


def metric(sut, name: str) -> float:
    """A sample of the backend's /metrics; 0 when absent (as a counter that never moved would be)."""
    for line in requests.get(sut.urls["backend"] + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 5000 + "]" * 5000,
        '{"type": "chat_message", "id": "deep", "content": ' + '{"a": ' * 5000 + "1" + "}" * 5001,
    ],
    ids=["list", "object"],
)
def test_json_nested_5000_deep_is_a_bad_message_and_the_connection_lives_on(sut, frame):
    tab = user(sut).tab()
    tab.ws.send(frame)
    answer = tab.recv()
    assert (answer["type"], answer["code"], answer["reply_to"]) == ("error", "BAD_MESSAGE", None)
    assert "nested" in answer["message"]
    msg = tab.chat("still works")
    assert tab.until_type("agent_completed", msg)[0]["type"] == "ack"
    tab.close()


def multipart(size: int, boundary: str = "soak-boundary"):
    """A multipart body with one ``size``-byte file, yielded in pieces: requests then sends it chunked."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    left = size
    while left > 0:
        yield b"x" * min(CHUNK, left)
        left -= CHUNK
    yield f"\r\n--{boundary}--\r\n".encode()


def test_a_chunked_upload_above_the_limit_gets_413_like_a_sized_one(sut):
    client = user(sut)
    headers = {**client.headers, "Content-Type": "multipart/form-data; boundary=soak-boundary"}
    chunked = client.api("POST", "/api/uploads", data=multipart(UPLOAD_MAX * 3), headers=headers)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in chunked.request.headers
    sized = client.api("POST", "/api/uploads", files={"file": ("big.bin", b"x" * (UPLOAD_MAX * 3))})
    assert sized.status_code == 413
    assert chunked.status_code == 413, chunked.text
    assert chunked.json() == sized.json()
    assert chunked.json()["code"] == "TOO_LARGE"
    # a chunked upload within the limit is still accepted, and the connection is still usable
    small = client.api("POST", "/api/uploads", data=multipart(UPLOAD_MAX), headers=headers)
    assert small.status_code == 202 and small.json()["size"] == UPLOAD_MAX


def test_a_client_that_floods_and_never_reads_is_closed_with_1013_and_counted(sut):
    client = user(sut)
    closed_before = metric(sut, "ws_closed_slow_consumer_total")
    active_before = metric(sut, "ws_connections_active")
    # a tiny receive buffer, so the pipe between us fills after a few MB rather than after the machine's default
    ws = websocket.create_connection(
        client.backend_url.replace("http", "ws", 1) + "/ws",
        header=[f"Authorization: Bearer {client.access_token}"],
        timeout=10,
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
    )
    sent = 0
    deadline = time.monotonic() + FLOOD_SECONDS
    while metric(sut, "ws_closed_slow_consumer_total") == closed_before:
        assert sent < FLOOD_MAX and time.monotonic() < deadline, f"{sent} pings unread and the client still open"
        for _ in range(FLOOD_BATCH):
            ws.send(json.dumps({"type": "ping", "id": f"{ID_PAD}{sent}"}))
            sent += 1
    assert metric(sut, "ws_closed_slow_consumer_total") == closed_before + 1
    # now read: the pongs that were on their way, in order and none twice, then the close frame
    ws.settimeout(30)
    pongs = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        pongs.append(int(json.loads(data)["reply_to"][len(ID_PAD) :]))
    code, reason = struct.unpack("!H", data[:2])[0], data[2:].decode()
    assert code == 1013, (code, reason)
    assert "too slow" in reason and "last_event_id" in reason
    print(f"closed after {sent} unread pings; {len(pongs)} pongs were on their way")
    assert pongs == list(range(len(pongs))) and 0 < len(pongs) < sent
    ws.close()
    end = time.monotonic() + 10
    while metric(sut, "ws_connections_active") > active_before and time.monotonic() < end:
        time.sleep(0.1)
    assert metric(sut, "ws_connections_active") == active_before  # deregistered, not left behind
    # the same user is welcome back at once, and a reader that keeps up is never closed
    tab = client.tab()
    for n in range(50):
        tab.send({"type": "ping", "id": n})
        assert tab.recv()["reply_to"] == n
    tab.close()


def test_a_resume_that_replays_a_full_buffer_is_not_taken_for_a_slow_client(sut):
    client = user(sut)
    tab = client.tab()
    for n in range(REPLAY_CHATS):
        tab.chat(f"message {n}")
    while sum(e["type"] == "agent_completed" for e in tab.events) < REPLAY_CHATS:
        tab.recv()
    tab.close()
    event_ids = [e["event_id"] for e in tab.events]
    assert len(event_ids) == 6 * REPLAY_CHATS > REPLAY_MAX
    # the notice plus a whole buffer is queued before the writer starts: one more frame than the live limit
    resumed = client.tab(last_event_id=event_ids[0] - 1)
    notice = resumed.recv()
    assert notice["type"] == "replay_truncated" and notice["oldest_event_id"] == event_ids[-REPLAY_MAX]
    assert [resumed.recv()["event_id"] for _ in range(REPLAY_MAX)] == event_ids[-REPLAY_MAX:]
    resumed.send({"type": "ping", "id": "still open"})
    assert resumed.recv()["reply_to"] == "still open"
    resumed.close()
