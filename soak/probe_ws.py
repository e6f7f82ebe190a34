"""The probe's WebSocket half: a blocking socket that opens with the token where [protocol] puts it and reads events
until one matches, keeping what came for the diagnosis (plain websocket-client, no gevent: the probe runs outside
Locust), and the steps that use it (WsSteps, mixed into soak.probe.Probe, whose REST helpers and state they use)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import websocket
from websocket import WebSocketBadStatusException, WebSocketException, WebSocketTimeoutException

from locustfiles.wire import Wire

MAX_SEEN = 200  # events kept per socket for the diagnosis
UPLOAD_BYTES = 1024


class Failed(Exception):
    """A step that did not pass: what came back, and the keys that would fix it."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


class ProbeSocketError(Exception):
    """The socket could not be opened or was lost; the message says how (one line)."""


class ProbeSocket:
    def __init__(
        self, wire: Wire, host: str, token: str, timeout: float, last_event_id: Any = None, ends_at: float = 0.0
    ) -> None:
        self.wire = wire
        self.timeout = timeout
        self.ends_at = ends_at or time.monotonic() + 3600.0  # no wait goes past this (the probe's deadline)
        self.url = wire.ws_url(host, last_event_id, token)
        self.seen: list[dict[str, Any]] = []  # every event read, in order (bounded)
        self.ignored: list[str] = []  # types the [protocol] does not name
        try:
            self.ws = websocket.create_connection(self.url, timeout=timeout, **wire.ws_handshake(token))
        except WebSocketBadStatusException as exc:
            raise ProbeSocketError(f"handshake refused with HTTP {exc.status_code}") from None
        except (OSError, WebSocketException) as exc:
            raise ProbeSocketError(f"cannot connect: {type(exc).__name__}: {exc}"[:200]) from None
        first = wire.ws_auth_message(token)
        if first is not None:
            self.send(first)
            accept = wire.ws["auth_reply"]
            if accept and self.until(lambda e: e.get(wire.type_key) in (accept, wire.error)) is None:
                raise ProbeSocketError(f"no {accept!r} after the token message ({self.summary()})")
            if accept and self.seen and self.seen[-1].get(wire.type_key) == wire.error:
                raise ProbeSocketError(f"token message refused: {self.describe(self.seen[-1])}")

    def send(self, payload: dict[str, Any]) -> None:
        try:
            self.ws.send(json.dumps(payload))
        except (OSError, WebSocketException) as exc:
            raise ProbeSocketError(f"send failed: {type(exc).__name__}") from None

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float | None = None) -> dict[str, Any] | None:
        """Read events until ``done(event)``; that event, or None after ``timeout`` seconds (or a close)."""
        deadline = min(time.monotonic() + (self.timeout if timeout is None else timeout), self.ends_at)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.ws.settimeout(left)
            try:
                opcode, data = self.ws.recv_data()
            except WebSocketTimeoutException:
                return None
            except (OSError, WebSocketException) as exc:
                raise ProbeSocketError(f"connection lost: {type(exc).__name__}") from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                raise ProbeSocketError(f"closed by the server with code {code}")
            try:
                event = json.loads(data)
            except ValueError:
                event = {"(not JSON)": data[:60].decode(errors="replace")}
            if not isinstance(event, dict):
                event = {"(not an object)": str(event)[:60]}
            if len(self.seen) < MAX_SEEN:
                self.seen.append(event)
            etype = event.get(self.wire.type_key)
            if etype not in self.wire.known and len(self.ignored) < MAX_SEEN:
                self.ignored.append(str(etype))
            if done(event):
                return event

    def describe(self, event: dict[str, Any]) -> str:
        wire = self.wire
        etype = event.get(wire.type_key)
        if etype == wire.error:
            return f"{etype} {event.get(wire.code_key)!s:.40}"
        return json.dumps(event)[:120]

    def summary(self, limit: int = 8) -> str:
        """What came, by type (or the raw fields where the type field is missing)."""
        if not self.seen:
            return "nothing came"
        wire, parts = self.wire, []
        for event in self.seen[-limit:]:
            etype = event.get(wire.type_key)
            parts.append(str(etype) if etype is not None else "{" + ", ".join(list(event)[:6]) + "}")
        return "got " + ", ".join(parts)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (OSError, WebSocketException):
            pass


def field_holding(events: list[dict[str, Any]], value: Any) -> str | None:
    """The name of a field whose value is ``value`` in any event (to name the reply_to / upload id field)."""
    for event in events:
        for key, held in event.items():
            if held == value:
                return key
    return None


class WsSteps:
    """The probe's WebSocket steps; each returns its detail or raises Failed. Needs Probe's ``wire``, ``scenario``,
    ``host``, ``tokens``, ``thread_id``, ``timeout``, ``call``, ``connect``, ``lacks``, ``step_thread``, ``login``."""

    wire: Wire
    socket: ProbeSocket | None

    def _chat_reply(self, sock: ProbeSocket, message_id: str) -> list[dict[str, Any]]:
        return [e for e in sock.seen if e.get(self.wire.reply_key) == message_id]

    def step_ws_connect(self) -> str:
        wire = self.wire
        place = f"ws.path {wire.ws_path!r}, ws.token {wire.token_place!r}"
        try:
            self.socket = self.connect()
        except ProbeSocketError as exc:
            raise Failed(
                f"{wire.ws_url(self.host)}: {exc}", f"protocol.ws.path, ws.token, ws.token_param (now {place})"
            ) from None
        return f"{wire.ws_url(self.host)} (token: {wire.token_place})"

    def step_ping(self) -> str:
        wire, sock = self.wire, self.socket
        ping_id = f"probe-ping-{os.urandom(3).hex()}"
        sock.send(wire.ping_payload(ping_id))
        if sock.until(lambda e: e.get(wire.reply_key) == ping_id and e.get(wire.type_key) == wire.pong) is None:
            holder = field_holding(sock.seen, ping_id)
            if holder and holder != wire.reply_key:
                raise Failed(f"the ping's id came back in {holder!r}, not {wire.reply_key!r}", "protocol.ws.reply_to")
            raise Failed(
                f"no {wire.pong!r} answering a {wire.ping!r} ({sock.summary()})", "protocol.ws.ping, events.pong"
            )
        return f"{wire.ping} -> {wire.pong}"

    def step_chat_message(self) -> str:
        wire, sock = self.wire, self.socket
        self.message_id = message_id = f"probe-{os.urandom(4).hex()}"
        sent = time.perf_counter()
        sock.send(wire.chat_payload(message_id, self.thread_id, "probe: hello"))
        times: dict[str, float] = {}

        def done(event: dict[str, Any]) -> bool:
            etype = event.get(wire.type_key)
            if event.get(wire.reply_key) == message_id and etype not in times:
                times[str(etype)] = (time.perf_counter() - sent) * 1000.0
            return event.get(wire.reply_key) == message_id and etype in (wire.final, wire.error)

        last = sock.until(done, self.timeout * 2)
        replies = self._chat_reply(sock, message_id)
        types = [e.get(wire.type_key) for e in replies]
        if last is None:
            if not replies:
                holder = field_holding(sock.seen, message_id)
                if holder:
                    raise Failed(
                        f"the message id came back in {holder!r}, not {wire.reply_key!r}", "protocol.ws.reply_to"
                    )
                raise Failed(f"no reply to the message ({sock.summary()})",
                             "protocol.ws.type, ws.chat, ws.id, ws.thread, ws.content")  # fmt: skip
            raise Failed(f"no {wire.final!r} within {self.timeout * 2:g} s (got {', '.join(map(str, types))})",
                         "protocol.events.final, events.steps")  # fmt: skip
        if last.get(wire.type_key) == wire.error:
            raise Failed(f"refused: {sock.describe(last)}", "protocol.ws.chat, ws.thread, ws.content, ws.id")
        known = [t for t in types if t in wire.chat_steps]
        if known != list(wire.chat_steps):
            raise Failed(f"events {', '.join(map(str, known))}; [protocol] expects {', '.join(wire.chat_steps)}",
                         "protocol.events.ack, events.steps, events.final")  # fmt: skip
        ids = [e.get(wire.event_id_key) for e in replies if e.get(wire.type_key) in wire.chat_steps]
        if not all(isinstance(i, int | float) and not isinstance(i, bool) for i in ids):
            raise Failed(f"events lack a numeric {wire.event_id_key!r} (they have {sorted(replies[0])[:8]})",
                         "protocol.ws.event_id")  # fmt: skip
        if any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
            raise Failed(f"{wire.event_id_key} does not increase: {ids}", "")
        self.ack_event_id = ids[0]
        ignored = sorted({t for t in map(str, types) if t not in wire.known})
        timing = ", ".join(f"{wire.chat_names[s]} {times[s]:.0f} ms" for s in (wire.ack, wire.startup, wire.final))
        return f"{' -> '.join(map(str, types))}; {timing}" + (f"; ignored: {', '.join(ignored)}" if ignored else "")

    def step_upload(self) -> str:
        wire, sock = self.wire, self.socket
        body = self.call(wire.upload, self.host, "api.upload", "protocol.api.file, protocol.auth_header", (200, 201, 202),
                         files={wire.api["file"]: ("probe.bin", os.urandom(UPLOAD_BYTES), "application/octet-stream")},
                         headers=wire.rest_headers(self.tokens.access))  # fmt: skip
        upload_id = wire.upload_id(body)
        if upload_id is None:
            raise self.lacks(body, "api.upload_id")
        event = sock.until(
            lambda e: e.get(wire.upload_id_key) == upload_id and e.get(wire.type_key) in wire.upload_types
        )
        if event is None:
            holder = field_holding(sock.seen, upload_id)
            fix = f"protocol.events.upload_id (the id came in {holder!r})" if holder else "protocol.events.upload_done"
            raise Failed(f"no {wire.upload_steps[0]!r} for the upload ({sock.summary()})", fix)
        if event.get(wire.type_key) != wire.upload_steps[0]:
            raise Failed(f"the upload failed: {sock.describe(event)}", "")
        if event.get(wire.upload_size_key) != UPLOAD_BYTES:
            raise Failed(f"{wire.upload_size_key} is {event.get(wire.upload_size_key)!r}, sent {UPLOAD_BYTES}",
                         "protocol.events.upload_size")  # fmt: skip
        return f"{wire.upload.name}: {wire.api['upload_id']}; {wire.upload_steps[0]} with {UPLOAD_BYTES} bytes"

    def step_ws_refresh(self) -> str:
        wire = self.wire
        if wire.refresh_by_reconnect:
            sock = self.connect(self.ack_event_id)
            self._ping_on(sock)
            return "reconnect with the new token, resumed; ping answered"
        refresh_id = f"probe-refresh-{os.urandom(3).hex()}"
        self.socket.send(wire.refresh_payload(refresh_id, self.tokens.access))
        event = self.socket.until(lambda e: e.get(wire.reply_key) == refresh_id)
        if event is None or event.get(wire.type_key) != wire.token_refreshed:
            got = self.socket.describe(event) if event else self.socket.summary()
            raise Failed(f"no {wire.token_refreshed!r} ({got})",
                         "protocol.ws.refresh_message, ws.refresh_field, events.token_refreshed; "
                         "or ws.refresh = 'reconnect'")  # fmt: skip
        return f"{wire.refresh_type} -> {wire.token_refreshed}"

    def _ping_on(self, sock: ProbeSocket) -> None:
        wire = self.wire
        ping_id = f"probe-ping-{os.urandom(3).hex()}"
        sock.send(wire.ping_payload(ping_id))
        if sock.until(lambda e: e.get(wire.reply_key) == ping_id) is None:
            raise Failed(f"no answer to a ping on the new connection ({sock.summary()})", "protocol.ws.ping")

    def step_reconnect_replay(self) -> str:
        wire = self.wire
        try:
            sock = self.connect(self.ack_event_id)
        except ProbeSocketError as exc:
            raise Failed(f"resume refused: {exc}", f"protocol.ws.resume (now {wire.ws['resume']!r})") from None
        message_id = self.message_id
        sock.until(lambda e: e.get(wire.reply_key) == message_id and e.get(wire.type_key) == wire.final)
        replayed = [e.get(wire.type_key) for e in self._chat_reply(sock, message_id)]
        expected = list(wire.chat_steps[1:])
        if [t for t in replayed if t in wire.chat_steps] != expected:
            raise Failed(f"after {wire.ws['resume']}={self.ack_event_id} got {replayed or 'nothing'}, "
                         f"expected {', '.join(expected)}", "protocol.ws.resume, ws.event_id")  # fmt: skip
        return f"{wire.ws['resume']}={self.ack_event_id}: {len(expected)} events replayed"

    def step_rate_limit(self) -> str:
        wire = self.wire
        limit = int(self.scenario["sut"]["rate_limit"])
        if limit <= 0:
            return "not checked: [sut] rate_limit is 0 (no limit expected)"
        self._take(self.login(f"probe-free-{os.urandom(4).hex()}@soak.test"))  # a new user: an empty window
        self.step_thread()
        sock = self.connect()
        for i in range(limit + 1):
            message_id = f"probe-rl-{os.urandom(3).hex()}"
            sock.send(wire.chat_payload(message_id, self.thread_id, "probe: burst"))
            event = sock.until(
                lambda e, m=message_id: e.get(wire.reply_key) == m and e.get(wire.type_key) in (wire.ack, wire.error)
            )
            if event is None:
                raise Failed(f"message {i + 1} of the burst got no {wire.ack!r} or {wire.error!r}", "")
            if event.get(wire.type_key) == wire.ack and i == limit:
                raise Failed(f"message {limit + 1} accepted: the free tier was not limited at {limit}",
                             "[sut] rate_limit, rate_window (what the platform allows)")  # fmt: skip
            if event.get(wire.type_key) == wire.error:
                code = event.get(wire.code_key)
                if i < limit:
                    raise Failed(f"message {i + 1} refused ({code}) below the limit of {limit}", "[sut] rate_limit")
                if code != wire.rate_limited:
                    raise Failed(f"refused with {code!r}, not {wire.rate_limited!r}", "protocol.events.rate_limited")
                wait = event.get(wire.retry_after_key)
                if isinstance(wait, bool) or not isinstance(wait, int | float) or wait <= 0:
                    raise Failed(f"{code} without a positive {wire.retry_after_key!r} (has {sorted(event)[:8]})",
                                 "protocol.events.retry_after")  # fmt: skip
                return f"{limit} accepted, then {code} with {wire.retry_after_key} {wait:.1f} s"
        raise Failed("unreachable", "")
