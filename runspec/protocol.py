"""The [protocol] table: how a platform spells the contract (sut/CONTRACT.md). Its defaults are the contract.

Every user class and ``soak probe`` read it: endpoint paths and methods, request and response field names, where the
access token goes on the WebSocket, the message types and their id field, the event names (which one acknowledges
a message, which one is "agent startup", which one ends a reply), the error codes, and how a connection takes a new
token. A platform that differs from the contract is described here, in a scenario file, not adapted in code.
The Server-Sent Events stream of a reply (``[protocol.sse]``) has its endpoint and request fields here; the events in
it are the WebSocket's JSON events, so ``ws.*`` and ``events.*`` name their fields on both.

Endpoints are written ``"METHOD /path"``; ``{id}`` in a path is a thread's id and ``{limit}`` a page size. Standard
library only, like all of runspec: ``runspec.keys`` puts PROTOCOL_SCHEMA in the schema, ``runspec.scenario`` calls
``check_protocol`` on every resolved scenario.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from runspec.keys import Key

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
WS_TOKEN_PLACES = ("header", "query", "subprotocol", "message")
WS_REFRESH_MODES = ("message", "reconnect")
REFRESH_WITH = ("body", "header")
ENDPOINT_PATTERN = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) (/[^\s]*)$")
FIELD_PATTERN = re.compile(r"^[^\s]{1,100}$")  # a JSON field, a message type, an event name: no spaces, not empty

# The request names a streamed reply is measured under (latency.csv and Locust's stats; type WS). Here, in the leaf
# package, because the users write them and the analysis reads them back.
TOKEN_FIRST = "time to first token"  # message sent -> its first token event
TOKEN_GAP = "token gap"  # between two token events of one reply, one timing per gap
TOKEN_STALL = "token stall"  # a failure per gap above the user's token_stall (timed: the gap)
TOKEN_RATE = "tokens per second"  # per reply with 2+ tokens: (tokens - 1) / (last - first); NOT milliseconds
STREAM_NAMES = (TOKEN_FIRST, TOKEN_GAP, TOKEN_STALL, TOKEN_RATE)

PROTOCOL_SCHEMA: dict[str, Any] = {
    "health": Key("str", "/health", "every service: the health check's path (GET; 200 = healthy)"),
    "auth_header": Key("str", "Authorization", "the header that carries the access token (REST; ws.token = header)"),
    "auth_scheme": Key("str", "Bearer", "written before the token in that header; '' = the token alone"),
    "auth": {
        "login": Key("str", "POST /auth/login", "log in (on the auth host): 'METHOD /path'"),
        "refresh": Key("str", "POST /auth/refresh", "a new access token for the refresh token"),
        "upgrade": Key("str", "POST /auth/upgrade", "move the user to the paid tier (with the access token)"),
        "email": Key("str", "email", "login request: the user's name field"),
        "password": Key("str", "password", "login request: the password field"),
        "access_token": Key("str", "access_token", "answers: the access token's field"),
        "refresh_token": Key(
            "str",
            "refresh_token",
            "answers and refresh request: the refresh token's field; an answer without it keeps the old",
        ),
        "refresh_with": Key(
            "str",
            "body",
            "refresh request: the refresh token in the JSON body or in the auth header",
            choices=REFRESH_WITH,
        ),
        "expires_in": Key("str", "expires_in", "answers: the access token's lifetime (s); missing = the JWT's exp"),
        "tier": Key("str", "tier", "answers: the user's tier; missing = login free, upgrade paid, refresh unchanged"),
        "paid": Key("str", "paid", "the tier value of a paid user"),
    },
    "api": {
        "threads": Key("str", "GET /api/threads", "list the user's threads"),
        "create_thread": Key("str", "POST /api/threads", "create a thread (answer 200 or 201)"),
        "history": Key("str", "GET /api/threads/{id}/messages?limit={limit}", "a thread's messages; {id} = the thread"),
        "upload": Key("str", "POST /api/uploads", "upload a file (multipart; answer 200, 201 or 202)"),
        "title": Key("str", "title", "create thread request: the title field"),
        "thread_id": Key("str", "id", "create thread answer: the thread's id field"),
        "file": Key("str", "file", "upload request: the multipart field of the file"),
        "upload_id": Key("str", "upload_id", "upload answer: the upload's id field"),
    },
    "ws": {
        "path": Key("str", "/ws", "the WebSocket's path on the backend host"),
        "token": Key(
            "str",
            "header",
            "where the access token goes: header (auth_header), query (?token_param=), subprotocol, message (the first)",
            choices=WS_TOKEN_PLACES,
        ),
        "token_param": Key("str", "token", "token = query: the parameter; token = message: the first message's field"),
        "subprotocol": Key("str", "", "token = subprotocol: offered before the token ('' = the token alone)"),
        "auth_message": Key("str", "auth", "token = message: the first message's type"),
        "auth_reply": Key("str", "", "token = message: the event that accepts it ('' = none is awaited)"),
        "resume": Key("str", "last_event_id", "query parameter to resume after an event id (replay, then live)"),
        "refresh": Key(
            "str",
            "message",
            "how an open connection takes a new token: message (in-band) or reconnect (resume with the new token)",
            choices=WS_REFRESH_MODES,
        ),
        "type": Key("str", "type", "messages and events: the type field"),
        "id": Key("str", "id", "messages: the client id field (events answer it in reply_to)"),
        "reply_to": Key("str", "reply_to", "events: the field that names the message they answer"),
        "event_id": Key("str", "event_id", "events: the increasing event id (resume point; order and duplicates)"),
        "chat": Key("str", "chat_message", "the chat message's type"),
        "thread": Key("str", "thread_id", "chat message: the thread field"),
        "content": Key("str", "content", "chat message: the text field"),
        "ping": Key("str", "ping", "an application-level ping's type (the heartbeat)"),
        "refresh_message": Key("str", "refresh_token", "refresh = message: the in-band refresh's type"),
        "refresh_field": Key("str", "token", "refresh = message: the new token's field"),
    },
    "sse": {
        "stream": Key(
            "str",
            "POST /api/threads/{id}/messages/stream",
            "a chat message answered with its reply as Server-Sent Events (text/event-stream); {id} = the thread",
        ),
        "content": Key("str", "content", "stream request body: the text field"),
        "id": Key("str", "id", "stream request body: the client id field (events answer it in ws.reply_to)"),
        "thread": Key("str", "thread_id", "stream request body: the thread field, sent only when the path has no {id}"),
        "resume": Key(
            "str",
            "Last-Event-ID",
            "header of a resend (same client id) that resumes a broken stream after an event id ('' = no resume)",
        ),
    },
    "events": {
        "ack": Key("str", "ack", "acknowledges a chat message (ws round trip); the first event of a reply"),
        "steps": Key(
            "str_list",
            ["agent_started", "agent_thinking", "tool_executing", "tool_completed"],
            "the reply's events between the ack and the final one, in order, each once",
        ),
        "final": Key("str", "agent_completed", "ends a reply (agent complete)"),
        "startup": Key("str", "agent_started", "the step that times agent startup (one of steps)"),
        "token": Key(
            "str",
            "agent_token",
            "a streamed token of the reply, between startup and final ('' = the platform does not stream)",
        ),
        "token_seq": Key("str", "seq", "token events: the sequence number field (0, 1, 2, ... per reply)"),
        "token_text": Key("str", "text", "token events: the text field"),
        "token_count": Key("str", "tokens", "final event: the number of tokens streamed ('' = not said)"),
        "duplicate": Key("str", "duplicate", "ack field: true when a resent message was answered from its first send"),
        "pong": Key("str", "pong", "the answer to a ping"),
        "token_refreshed": Key("str", "token_refreshed", "refresh = message: confirms an in-band refresh"),
        "upload_done": Key("str", "upload_processed", "an upload's result event"),
        "upload_failed": Key("str", "upload_failed", "an upload's failure event"),
        "upload_id": Key("str", "upload_id", "upload events: the upload's id field"),
        "upload_size": Key("str", "size", "upload result: the size field (checked against the bytes sent)"),
        "replay_truncated": Key("str", "replay_truncated", "a resume whose events were partly dropped"),
        "error": Key("str", "error", "the error event's type"),
        "code": Key("str", "code", "error events and REST error bodies: the code field"),
        "retry_after": Key("str", "retry_after", "rate limit error: the seconds-to-wait field"),
        "rate_limited": Key("str", "RATE_LIMITED", "the rate limit's error code"),
        "token_expired": Key("str", "TOKEN_EXPIRED", "the expired token's error code"),
    },
}

# Keys whose value may be empty ("" = none); every other string is a field, a type, a path or an endpoint.
OPTIONAL = {"auth_scheme", "ws.subprotocol", "ws.auth_reply", "events.token", "events.token_count", "sse.resume"}
ENDPOINTS = {
    "auth.login",
    "auth.refresh",
    "auth.upgrade",
    "api.threads",
    "api.create_thread",
    "api.history",
    "api.upload",
    "sse.stream",
}
PATHS = {"health", "ws.path"}


class ProtocolError(ValueError):
    """A [protocol] value that cannot work; the message names the key (runspec.scenario adds the file)."""


def parse_endpoint(text: str) -> tuple[str, str]:
    """``"POST /auth/login"`` -> ("POST", "/auth/login"); ValueError otherwise."""
    match = ENDPOINT_PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"expected 'METHOD /path' (METHOD one of {', '.join(METHODS)}), got {text!r}")
    return match.group(1), match.group(2)


def endpoint_name(text: str) -> str:
    """The request name Locust records an endpoint under: method and path without its query (ids stay ``{id}``)."""
    method, path = parse_endpoint(text)
    return f"{method} {path.split('?', 1)[0]}"


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def check_protocol(protocol: dict[str, Any], where: str = "protocol") -> None:
    """What one key's type cannot say: endpoints parse, names are names, the reply's events are distinct and the
    startup event is one of its steps. Raises ProtocolError naming the key."""
    flat = _flat(protocol)
    for name, value in flat.items():
        at = f"{where}.{name}"
        if name in ENDPOINTS:
            try:
                parse_endpoint(value)
            except ValueError as exc:
                raise ProtocolError(f"{at}: {exc}") from None
        elif name in PATHS:
            if not value.startswith("/") or any(c.isspace() for c in value):
                raise ProtocolError(f"{at}: expected a path starting with '/', got {value!r}")
        elif isinstance(value, str) and not (value == "" and name in OPTIONAL):
            if not FIELD_PATTERN.match(value):
                raise ProtocolError(f"{at}: expected a name without spaces, got {value!r}")
    if "{id}" not in parse_endpoint(protocol["api"]["history"])[1]:
        raise ProtocolError(
            f"{where}.api.history: the path needs {{id}} (the thread), got {protocol['api']['history']!r}"
        )
    events = protocol["events"]
    for i, step in enumerate(events["steps"]):
        if not FIELD_PATTERN.match(step):
            raise ProtocolError(f"{where}.events.steps[{i}]: expected an event name without spaces, got {step!r}")
    reply = [events["ack"], *events["steps"], events["final"]]
    seen: set[str] = set()
    for name in reply:
        if name in seen:
            raise ProtocolError(f"{where}.events: {name!r} is named twice among ack, steps and final")
        seen.add(name)
    if events["startup"] not in events["steps"]:
        raise ProtocolError(
            f"{where}.events.startup: {events['startup']!r} is not one of events.steps ({', '.join(events['steps'])})"
        )
    others = {
        events[k]
        for k in ("pong", "token_refreshed", "upload_done", "upload_failed", "replay_truncated", "error", "token")
        if events[k]
    }
    clash = sorted(others & seen)
    if clash:
        raise ProtocolError(f"{where}.events: {clash[0]!r} is both a reply event and another event")


class SseEvent(NamedTuple):
    """One Server-Sent Event: its ``event:`` name ('' = none given), its own ``id:`` (None = none) and its ``data``
    (bytes, UTF-8: JSON parses them as they are)."""

    event: str
    id: str | None
    data: bytes


def read_sse(lines: Iterable[bytes]) -> Iterator[SseEvent]:
    """The events of a ``text/event-stream`` body, from its lines (requests' ``iter_lines()``), as the WHATWG spec
    parses them: ``data:`` lines joined by newlines, one optional space after the colon dropped, comments (``:``) and
    other fields ignored, an event without data not dispatched, a last event cut off by the stream's end dropped.
    Unlike a browser's EventSource, an event's ``id`` is only the one it carries (not inherited from the one before):
    a client checks each event's own id."""
    name, event_id, data = "", None, []
    for line in lines:
        if not line:
            if data:
                yield SseEvent(name, event_id, b"\n".join(data))
            name, event_id, data = "", None, []
            continue
        field, colon, value = line.partition(b":")
        if not field and colon:
            continue  # a comment, e.g. a keep-alive
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"id" and b"\0" not in value:
            event_id = value.decode("utf-8", "replace")


def protocol_defaults(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The [protocol] table with every key at its default: the contract."""
    schema = PROTOCOL_SCHEMA if schema is None else schema
    return {
        name: protocol_defaults(spec)
        if isinstance(spec, dict)
        else (list(spec.default) if isinstance(spec.default, list) else spec.default)
        for name, spec in schema.items()
    }
