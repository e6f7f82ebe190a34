"""SseChattingUser: chats like ChattingUser, but each reply streams back over HTTP as Server-Sent Events.

Many platforms stream a reply as ``text/event-stream`` to the POST that sent the message rather than over a
WebSocket ([protocol.sse]; sut/CONTRACT.md). The events in the stream are the WebSocket's, so they go through the
same Inbox, Exchange, token Stream and delivery Ledger as a tab's (exchange.py, stream.py, ledger.py): ``agent
startup``, ``agent complete``, ``time to first token`` (from the send), ``token gap``, ``tokens per second``, ``token
stall`` and the ledger's verdicts mean here exactly what they mean over a WebSocket. The POST itself is Locust's HTTP
request (``POST /api/threads/{id}/messages/stream``, timed to the response's headers), so the ack is not timed again.

A stream that breaks before its reply's end is resumed as the contract says: the message is sent again with the same
client id and ``Last-Event-ID`` (``[protocol] sse.resume``), and the rest of the reply follows once, untimed (like a
tab's after a reconnect), counted as a ``ws resend``. Bounded: ``reconnect_attempts`` resends with backoff, all within
``event_timeout`` of the first send; then the reply is lost (the Exchange fails its steps, the ledger says ``ledger
lost``). An HTTP refusal (429, 401, 404, 503) is the reply's error event, as over a WebSocket.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from locust import task
from requests import RequestException

from locustfiles.exchange import EVENTS_NAME, Exchange, new_id
from locustfiles.ledger import Ledger, LedgerInbox
from locustfiles.reconnect import RESEND_NAME, backoff
from locustfiles.users import HISTORY_EVERY, MESSAGE, ChatUser
from locustfiles.wire import Wire
from locustfiles.wsclient import decode_event
from runspec.protocol import read_sse

CONNECT_TIMEOUT = 10.0
EVENT_STREAM = "text/event-stream"


class SseChattingUser(ChatUser):
    """Logs in, opens a thread and chats with no WebSocket: each message's reply is its POST's event stream."""

    ledger: Ledger | None = None
    streams = 0  # streams opened so far (the ledger's connection number)

    def begin(self) -> bool:
        """A new login is a new user: a ledger and an inbox of its own, as a tab of it would have."""
        self.ledger = Ledger(self.report, self.policy.lost_after, self.wire)
        self.inbox = LedgerInbox(self.report, self.ledger, self.wire)
        self.inbox.stall_ms = self.policy.stall_after * 1000.0
        return super().begin()

    def on_stop(self) -> None:
        super().on_stop()
        if self.ledger is not None:
            now = time.perf_counter()
            self.ledger.close(now, now)  # a reply cut off by the stop is left unjudged, as on a tab

    @property
    def tab_count(self) -> int:
        return 0

    @task
    def chat_over_sse(self) -> None:
        if not self.ready():
            return
        exchange = self.stream_chat(MESSAGE)
        self.judged(exchange)
        self.sent += 1
        if self.sent % HISTORY_EVERY == 0:
            self.load_history()

    def stream_chat(self, content: str) -> Exchange:
        """Send ``content`` and read its reply from the stream, resuming a broken one; the ended Exchange."""
        wire, policy = self.wire, self.policy
        message_id = new_id()
        exchange = Exchange(message_id, wire.chat_steps, wire.sse_names, self.report)
        payload = wire.sse_body(message_id, self.thread_id, content)
        entry = self.ledger.expect(message_id, payload, exchange.sent_at)
        if not self.inbox.expect(exchange):
            self.ledger.forget(message_id)
            return exchange
        deadline = exchange.sent_at + self.timeout
        broke = self.stream_once(exchange, payload, deadline, resume=False)
        attempt = 0
        while broke is not None and attempt < policy.attempts and wire.sse["resume"]:
            pause = backoff(attempt, policy.backoff_base, policy.backoff_cap)
            if time.perf_counter() + pause >= deadline:
                break
            gevent.sleep(pause)
            attempt += 1
            exchange.untime()  # the rest of the reply comes with the resume: its times would include the break
            self.report.success(RESEND_NAME, (time.perf_counter() - entry.first_sent) * 1000.0)
            broke = self.stream_once(exchange, payload, deadline, resume=True)
        if broke is not None:
            late = time.perf_counter() >= deadline
            reason = f"{{step}} not received within {self.timeout:g} s" if late else f"{broke} before {{step}}"
            exchange.fail(reason, time.perf_counter())
            why = f"within {self.timeout:g} s" if late else "(the stream broke and was not resumed)"
            self.ledger.give_up(message_id, f"no {wire.final} {why}")
        return exchange

    def stream_once(self, exchange: Exchange, payload: dict[str, Any], deadline: float, resume: bool) -> str | None:
        """One POST and its stream: None once the exchange has ended (its reply's end, an error, a refusal), else
        why the stream ended without it (to resume)."""
        wire = self.wire
        endpoint = wire.sse_stream
        headers = dict(self.session.headers)
        if resume and self.inbox.last_event_id is not None:
            headers[wire.sse["resume"]] = str(self.inbox.last_event_id)
        self.streams += 1
        entry = self.ledger.open.get(exchange.id)
        if entry is not None:
            entry.sent_on = self.streams
        read_timeout = max(deadline - time.perf_counter(), 0.1)
        try:
            with self.client.request(
                endpoint.method,
                endpoint.url("", self.thread_id),
                name=endpoint.name,
                catch_response=True,
                stream=True,
                json=payload,
                headers=headers,
                timeout=(CONNECT_TIMEOUT, read_timeout),  # a silent stream ends with the read timeout
            ) as response:
                try:
                    if not self.accepted(response, exchange):
                        return None if exchange.done.is_set() else "no response"
                    return self.read(response, exchange, deadline)
                finally:
                    if response.raw is not None:  # None: no response at all (Locust's stand-in for the error)
                        response.close()  # mid-stream (the reply ended, or we give up): never reused half-read
        except (RequestException, OSError) as exc:
            return f"stream broke ({type(exc).__name__})"

    def accepted(self, response: Any, exchange: Exchange) -> bool:
        """The response is an event stream (the POST a success); otherwise its failure, and a refusal with a status
        is the reply's error event (as over a WebSocket: its code fails the steps, the ledger counts it refused)."""
        wire = self.wire
        status = response.status_code
        if status == 0:  # no response at all: Locust's stand-in carries the exception
            response.failure(f"cannot connect: {type(response.error).__name__}")
            return False
        if status != 200:
            try:
                code = wire.error_code(response.json())
            except ValueError:
                code = ""
            response.failure(f"HTTP {status}{' ' + code if code else ''}")
            error = {wire.type_key: wire.error, wire.code_key: code or f"HTTP {status}", wire.reply_key: exchange.id}
            if status == 429 and response.headers.get("Retry-After", "").isdigit():
                error[wire.retry_after_key] = float(response.headers["Retry-After"])
            self.inbox.handle(error, time.perf_counter())
            return False
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith(EVENT_STREAM):
            response.failure(f"not an event stream (content-type {content_type[:60]!r})")
            exchange.fail("no event stream before {step}")
            self.ledger.give_up(exchange.id, f"no {wire.final}: the answer was not an event stream")
            return False
        response.success()
        return True

    def read(self, response: Any, exchange: Exchange, deadline: float) -> str | None:
        """Hand each event to the inbox (timings, checks, ledger) until the exchange ends; None then."""
        wire: Wire = self.wire
        inbox, report, clock, message_id = self.inbox, self.report, time.perf_counter, exchange.id
        for sse in read_sse(response.iter_lines()):
            now = clock()
            event = decode_event(sse.data, report)
            if event is None:
                continue
            event = wire.sse_event(event, sse.event, sse.id, message_id)
            if event.get(wire.type_key) == wire.replay_truncated:
                self.ledger.truncated(self.streams, now)  # events may be gone: the reply must come anew, in full
            try:
                inbox.handle(event, now)
            except Exception as exc:  # noqa: BLE001 - a client bug must show in the stats, not end the user
                report.failure(EVENTS_NAME, f"client error handling an event: {type(exc).__name__}")
            if exchange.done.is_set():
                return None
            if now >= deadline:
                return "stream too slow"
        return "stream ended"
