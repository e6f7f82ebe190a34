"""A chat message answered with its reply as Server-Sent Events: ``POST /api/threads/{id}/messages/stream``.

Many platforms stream a reply over HTTP rather than a WebSocket. The message is taken exactly as a REST or WebSocket
one (the same rate limit, storage, de-duplication and agent job, sut/chat.py); the response is ``text/event-stream``
with that reply's events, each the WebSocket's JSON event as ``data``, its type as ``event`` and its ``event_id`` as
``id``: ``ack``, the agent's steps, its ``agent_token`` events, then ``agent_completed`` (or ``AGENT_UNAVAILABLE``),
and the stream ends. The same events still go to the user's WebSocket tabs and replay buffer.

A resend of the same client id resumes instead of running again: the stream starts with the ``duplicate`` ack, then
the reply's buffered events after ``Last-Event-ID`` (after the first ack without it), then the rest live. Refusals
come before the stream, as plain HTTP errors: 401, 404 ``UNKNOWN_THREAD``, 429 ``RATE_LIMITED`` with Retry-After, 503.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import StreamingResponse

from sut import web
from sut.chat import ChatRefused
from sut.deps import ERRORS, ErrorBody, Parts, User
from sut.threads import MessageIn, ThreadId
from sut.ws import REPLY_ENDS, Watched, reply_key

KEEPALIVE = 15.0  # seconds of silence before a comment line, so proxies do not close a stream that waits
END_GRACE = 5.0  # a stream outlives the job deadline (after which the backend sends AGENT_UNAVAILABLE) by this much
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold the events back

router = APIRouter()


def frame(item: Watched) -> bytes:
    """One event in the SSE wire format; the JSON text is one line (json.dumps escapes newlines)."""
    event_id, etype, text = item
    head = f"id: {event_id}\nevent: {etype}\n" if event_id is not None else f"event: {etype}\n"
    return f"{head}data: {text}\n\n".encode()


@router.post(
    "/api/threads/{thread_id}/messages/stream",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {"content": {MEDIA_TYPE: {}}, "description": "the reply's events, then the stream ends"},
        404: {"model": ErrorBody, "description": "UNKNOWN_THREAD"},
        429: {"model": ErrorBody, "description": "RATE_LIMITED, with Retry-After"},
    },
    tags=["threads"],
)
async def stream_message(
    body: MessageIn,
    thread_id: ThreadId,
    claims: User,
    parts: Parts,
    last_event_id: Annotated[int | None, Header(ge=0, description="resume after this event id")] = None,
) -> StreamingResponse:
    """A chat message whose reply streams back as Server-Sent Events (see sut/CONTRACT.md)."""
    key = reply_key(body.id) or uuid.uuid4().hex  # the stream is matched by client id: one is made when none is given
    hub = parts.hub
    queue = hub.watch(claims.user, key)  # before the send: the agent's first events may come before accept returns
    try:
        outcome = await parts.chat.accept(claims, key, thread_id, body.content)
    except ChatRefused as exc:
        hub.unwatch(claims.user, key, queue)
        headers = {"Retry-After": exc.retry_after_header} if exc.code == "RATE_LIMITED" else {}
        raise web.ApiError(exc.status, exc.code, exc.message, headers) from None
    except BaseException:
        hub.unwatch(claims.user, key, queue)
        raise
    first: list[Watched] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + parts.chat.job_timeout + END_GRACE
    after = outcome.event_id - 1 if outcome.duplicate and last_event_id is None else last_event_id
    if after is not None:
        notice = hub.truncation(claims.user, after)
        if notice is not None:  # events after it may be gone (a restarted backend runs the resend anew)
            first.append((None, notice["type"], json.dumps(notice)))
    if outcome.duplicate:
        ack = {"type": "ack", "reply_to": key, "thread_id": outcome.thread_id, "duplicate": True}
        first.append((None, "ack", json.dumps({**ack, "ack_event_id": outcome.event_id})))
        # no await since watch(): what the queue holds is in the buffer too, and the stream skips ids it sent
        first.extend(hub.replay_reply(claims.user, key, after))
        if any(etype in REPLY_ENDS for _, etype, _ in first):
            hub.unwatch(claims.user, key, queue)  # the whole reply is in the replay
        elif not parts.chat.running(claims.user, key):
            deadline = loop.time() + END_GRACE  # its end is being stored, or was dropped from the buffer
    events = reply_events(first, queue, deadline, lambda: hub.unwatch(claims.user, key, queue))
    return StreamingResponse(events, media_type=MEDIA_TYPE, headers=HEADERS)


async def reply_events(
    first: list[Watched], queue: asyncio.Queue[Watched], deadline: float, done: Callable[[], None]
) -> AsyncIterator[bytes]:
    """``first``, then the reply's live events, each once (by event id), until its end or ``deadline``."""
    loop = asyncio.get_running_loop()
    sent = -1
    try:
        for item in first:
            yield frame(item)
            if item[0] is not None:
                sent = max(sent, item[0])
            if item[1] in REPLY_ENDS:
                return
        while (left := deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(queue.get(), min(KEEPALIVE, left))
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item[0] <= sent:
                continue  # replayed already
            sent = item[0]
            yield frame(item)
            if item[1] in REPLY_ENDS:
                return
    finally:
        done()
