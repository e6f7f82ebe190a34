"""The [protocol] table as the clients use it: names looked up once, requests and messages built, answers read.

One ``Wire`` per resolved [protocol] table (``wire_for``); ``DEFAULT`` is the contract. Used by the Locust users and
by ``soak probe``, so this module imports neither Locust nor gevent (standard library and runspec only).

Liberal where the contract does not insist (an auth answer without a new refresh token keeps the old one, a missing
lifetime is read from the JWT's ``exp``, a missing tier is assumed from the request); strict elsewhere: the checks on
ids, order, loss and duplicates stay in exchange.py and ledger.py, on the names given here.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from runspec.protocol import endpoint_name, parse_endpoint, protocol_defaults

CHAT_NAMES = ("ws round trip", "agent startup", "agent complete")  # what the ack, startup and final events time
REFRESH_NAME = "ws token refresh"
UPLOAD_NAME = "upload processed"
MAX_WIRES = 8  # distinct [protocol] tables remembered (one per scenario in a process; more is a caller's bug)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    name: str  # the request name in Locust's stats: no ids, so the stats stay bounded

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        method, path = parse_endpoint(text)
        return cls(method, path, endpoint_name(text))

    def url(self, base: str, thread_id: Any = None, limit: int = 0) -> str:
        path = self.path.replace("{id}", quote(str(thread_id), safe="")).replace("{limit}", str(limit))
        return f"{base.rstrip('/')}{path}" if base else path


@dataclass
class Tokens:
    """What an auth answer gave, after the tolerances: ``problem`` is set when it cannot be used."""

    access: str = ""
    refresh: str = ""
    lifetime: float | None = None  # seconds; None: the token says of no expiry
    tier: str = ""
    problem: str = ""
    assumed: tuple[str, ...] = ()  # the fields that were missing and taken from elsewhere (kept, JWT, request)


def jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (only to read ``exp``); {} for anything that is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, TypeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


class Wire:
    """One [protocol] table, resolved into what the hot paths look up (attributes, frozensets, tuples)."""

    def __init__(self, protocol: dict[str, Any]) -> None:
        self.table = protocol
        auth, api, ws, ev = protocol["auth"], protocol["api"], protocol["ws"], protocol["events"]
        self.health = protocol["health"]
        self.auth_header = protocol["auth_header"]
        self.auth_scheme = protocol["auth_scheme"]
        self.login, self.refresh, self.upgrade = (Endpoint.parse(auth[k]) for k in ("login", "refresh", "upgrade"))
        self.auth = auth
        self.threads, self.create_thread, self.history, self.upload = (
            Endpoint.parse(api[k]) for k in ("threads", "create_thread", "history", "upload")
        )
        self.api = api
        self.ws = ws
        self.ws_path = ws["path"]
        self.token_place = ws["token"]
        self.refresh_by_reconnect = ws["refresh"] == "reconnect"
        self.type_key, self.id_key, self.reply_key, self.event_id_key = (
            ws["type"],
            ws["id"],
            ws["reply_to"],
            ws["event_id"],
        )
        self.chat, self.ping, self.refresh_type = ws["chat"], ws["ping"], ws["refresh_message"]
        self.ack, self.final, self.startup = ev["ack"], ev["final"], ev["startup"]
        # a streamed reply's token events ('' = none): timed by the Exchange (stream.py), judged by the ledger
        self.token, self.token_seq_key, self.token_count_key = ev["token"], ev["token_seq"], ev["token_count"]
        self.chat_steps: tuple[str, ...] = (ev["ack"], *ev["steps"], ev["final"])
        self.chat_names = dict(zip((ev["ack"], ev["startup"], ev["final"]), CHAT_NAMES, strict=True))
        # over Server-Sent Events the ack comes with the response, whose own time Locust records: not a ws round trip
        self.sse_names = {step: name for step, name in self.chat_names.items() if step != ev["ack"]}
        self.sse = protocol["sse"]
        self.sse_stream = Endpoint.parse(self.sse["stream"])
        self.pong, self.token_refreshed = ev["pong"], ev["token_refreshed"]
        self.refresh_steps: tuple[str, ...] = (ev["token_refreshed"],)
        self.refresh_names = {ev["token_refreshed"]: REFRESH_NAME}
        self.upload_steps: tuple[str, ...] = (ev["upload_done"],)
        self.upload_names = {ev["upload_done"]: UPLOAD_NAME}
        self.upload_types = frozenset({ev["upload_done"], ev["upload_failed"]})  # matched by upload id
        self.upload_id_key, self.upload_size_key = ev["upload_id"], ev["upload_size"]
        self.error = ev["error"]
        self.error_types = frozenset({ev["error"], ev["upload_failed"]})
        self.code_key, self.retry_after_key = ev["code"], ev["retry_after"]
        self.rate_limited, self.token_expired = ev["rate_limited"], ev["token_expired"]
        self.duplicate_key = ev["duplicate"]
        self.replay_truncated = ev["replay_truncated"]
        # Pushed by the server without belonging to a message; not a failure on their own.
        self.notices = frozenset(
            {ev["replay_truncated"], ev["pong"], *((ws["auth_reply"],) if ws["auth_reply"] else ())}
        )
        # Anything else is a type this client does not know: ignored and counted (a platform may say more).
        self.known = (
            frozenset(self.chat_steps)
            | self.error_types
            | self.upload_types
            | self.notices
            | {ev["token_refreshed"]}
            | ({self.token} if self.token else set())
        )

    # --- REST ---

    def auth_value(self, token: str) -> str:
        return f"{self.auth_scheme} {token}" if self.auth_scheme else token

    def rest_headers(self, token: str) -> dict[str, str]:
        return {self.auth_header: self.auth_value(token)}

    def login_body(self, email: str, password: str) -> dict[str, str]:
        return {self.auth["email"]: email, self.auth["password"]: password}

    def refresh_request(self, refresh_token: str) -> dict[str, Any]:
        """The keyword arguments of the refresh request: the token in the body or in the auth header."""
        if self.auth["refresh_with"] == "header":
            return {"headers": self.rest_headers(refresh_token)}
        return {"json": {self.auth["refresh_token"]: refresh_token}}

    def read_tokens(self, body: Any, kind: str, previous: Tokens | None = None) -> Tokens:
        """An auth answer (``kind`` login, refresh or upgrade) after the tolerances; ``problem`` set if unusable.

        Only the access token is required. A missing refresh token keeps the previous one (a login must give one
        unless its access token is all there is); a missing lifetime comes from the JWT's ``exp``; a missing tier is
        taken from the JWT's claims or assumed from the request (login: free, upgrade: paid, refresh: unchanged).
        """
        if not isinstance(body, dict):
            return Tokens(problem="response is not a JSON object")
        auth = self.auth
        access = body.get(auth["access_token"])
        if not isinstance(access, str) or not access:
            return Tokens(problem=f"response lacks {auth['access_token']}")
        assumed: list[str] = []
        refresh = body.get(auth["refresh_token"])
        if not isinstance(refresh, str) or not refresh:
            refresh = previous.refresh if previous is not None else ""
            assumed.append(auth["refresh_token"])
        lifetime = _number(body.get(auth["expires_in"]))
        claims: dict[str, Any] | None = None
        if lifetime is None:
            claims = jwt_claims(access)
            exp = _number(claims.get("exp"))
            if exp is not None:
                lifetime = max(exp - time.time(), 0.0)
            assumed.append(auth["expires_in"])
        tier = body.get(auth["tier"])
        if not isinstance(tier, str) or not tier:
            if kind == "upgrade":
                tier = auth["paid"]
            elif kind == "refresh" and previous is not None and previous.tier:
                tier = previous.tier
            else:
                claims = jwt_claims(access) if claims is None else claims
                tier = claims.get(auth["tier"]) if isinstance(claims.get(auth["tier"]), str) else "free"
            assumed.append(auth["tier"])
        return Tokens(access, refresh, lifetime, tier, assumed=tuple(assumed))

    def is_paid(self, tier: str) -> bool:
        return tier == self.auth["paid"]

    def thread_id(self, body: Any) -> Any:
        return body.get(self.api["thread_id"]) if isinstance(body, dict) else None

    def upload_id(self, body: Any) -> Any:
        return body.get(self.api["upload_id"]) if isinstance(body, dict) else None

    def error_code(self, body: Any) -> str:
        """A REST error body's code, or a WebSocket error event's."""
        if isinstance(body, dict):
            code = body.get(self.code_key)
            if code is None and isinstance(body.get("detail"), dict):  # FastAPI's HTTPException wraps it
                code = body["detail"].get(self.code_key)
            return str(code or "")[:40]
        return ""

    # --- WebSocket ---

    def ws_url(self, http_base: str, last_event_id: Any = None, token: str = "") -> str:
        """The WebSocket URL from the backend's HTTP base: ``ws.path``, resuming after ``last_event_id`` if given,
        and the token in the query when that is its place."""
        parts = urlsplit(http_base.rstrip("/"))
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        query = []
        if token and self.token_place == "query":
            query.append((self.ws["token_param"], token))
        if last_event_id is not None:
            query.append((self.ws["resume"], str(last_event_id)))
        path = parts.path + self.ws_path
        return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))

    def ws_handshake(self, token: str) -> dict[str, Any]:
        """websocket-client's create_connection keywords for the token's place (header, subprotocol)."""
        if self.token_place == "header":
            return {"header": [f"{self.auth_header}: {self.auth_value(token)}"]}
        if self.token_place == "subprotocol":
            first = self.ws["subprotocol"]
            return {"subprotocols": [first, token] if first else [token]}
        return {}

    def ws_auth_message(self, token: str) -> dict[str, Any] | None:
        """token = message: the first message; None for the other places."""
        if self.token_place != "message":
            return None
        return {self.type_key: self.ws["auth_message"], self.ws["token_param"]: token}

    def chat_payload(self, message_id: str, thread_id: Any, content: str) -> dict[str, Any]:
        return {
            self.type_key: self.chat,
            self.id_key: message_id,
            self.ws["thread"]: thread_id,
            self.ws["content"]: content,
        }

    # --- Server-Sent Events ---

    def sse_body(self, message_id: str, thread_id: Any, content: str) -> dict[str, Any]:
        """The stream request's body; the thread goes in it only when the path has no ``{id}`` for it."""
        body = {self.sse["content"]: content, self.sse["id"]: message_id}
        if "{id}" not in self.sse_stream.path:
            body[self.sse["thread"]] = thread_id
        return body

    def sse_event(self, event: dict[str, Any], name: str, event_id: str | None, message_id: str) -> dict[str, Any]:
        """An event's JSON read from a stream, liberally: the type, event id and reply id its data leaves out are the
        stream's (its ``event:`` and ``id:`` lines, and the message it answers, notices aside): the stream is the
        reply."""
        if self.type_key not in event and name:
            event[self.type_key] = name
        if self.event_id_key not in event and event_id is not None and event_id.isdigit():
            event[self.event_id_key] = int(event_id)
        if self.reply_key not in event and event.get(self.type_key) not in self.notices:
            event[self.reply_key] = message_id
        return event

    def ping_payload(self, message_id: str) -> dict[str, Any]:
        return {self.type_key: self.ping, self.id_key: message_id}

    def refresh_payload(self, message_id: str, token: str) -> dict[str, Any]:
        return {self.type_key: self.refresh_type, self.id_key: message_id, self.ws["refresh_field"]: token}


_wires: dict[int, tuple[dict[str, Any], Wire]] = {}


def wire_for(protocol: dict[str, Any] | None) -> Wire:
    """The Wire of a resolved [protocol] table (None: the contract), made once per table."""
    if protocol is None:
        return DEFAULT
    held = _wires.get(id(protocol))
    if held is not None and held[0] is protocol:
        return held[1]
    wire = Wire(protocol)
    if len(_wires) < MAX_WIRES:
        _wires[id(protocol)] = (protocol, wire)
    return wire


DEFAULT = Wire(protocol_defaults())
