"""The one Server-Sent Events reader (runspec.protocol.read_sse) that the reference client and the Locust user share:
the WHATWG parsing rules a platform's stream may lean on."""

from __future__ import annotations

from runspec.protocol import SseEvent, read_sse


def test_read_sse_follows_the_event_stream_rules():
    body = (
        b": a comment, e.g. a keep-alive\n"
        b"\n"
        b"id: 7\n"
        b"event: ack\n"
        b'data: {"type": "ack"}\n'
        b"\n"
        b"data:no space after the colon\n"
        b"data:  two spaces keep one\n"
        b"retry: 100\n"
        b"\n"
        b"event: empty\n"  # no data: not dispatched
        b"\n"
        b"event: tail\n"
        b"data: cut off by the stream's end"  # no blank line after it: dropped
    )
    assert list(read_sse(body.split(b"\n"))) == [
        SseEvent("ack", "7", b'{"type": "ack"}'),
        SseEvent("", None, b"no space after the colon\n two spaces keep one"),  # its own id only, not the one before
    ]
