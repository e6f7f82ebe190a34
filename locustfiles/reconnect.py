"""A WebSocket tab that behaves like a real client through an outage.

A heartbeat notices a dead or silent connection: after HEARTBEAT_INTERVAL seconds without a frame the tab sends a
``ping``, and HEARTBEAT_TIMEOUT more seconds without one end the connection (a blackholed network never says so).
The tab then reconnects by itself, with exponential backoff and jitter, at most ``attempts`` times per outage,
resumes with ``last_event_id`` and resends the chat messages that got no ``ack`` with the same client id (the
server de-duplicates them), and after ``replay_truncated`` those whose reply is incomplete. Its ledger (ledger.py)
judges what arrived. The reader greenlet does all of it, so a user waiting for a reply simply gets it, late.

Request events (type WS), per tab:
- ``ws outage``: a failure when an outage is noticed, saying how (``close code 1012``, an exception class such as
  ``ConnectionResetError``, ``no pong within 2.5 s``); not timed. Each is followed by one ``ws recovery``, unless
  the test stops first.
- ``ws recovery``: a success timed from the outage noticed to the first good round trip (a ping answered) on the
  new connection; or a failure, timed to the moment the tab gave up after ``attempts`` reconnects. A tab that gave up
  tries again at the user's next task, as a new outage.
- ``ws reconnect``: each attempt's handshake, timed; a failure says why (``HTTP 503``, ``ConnectionRefusedError``, a
  timeout while the network is blackholed). Part of the recovery, not a request the user waits on: the user was told
  by ``ws outage`` already. (The first connect of a tab is ``WS connect``.)
- ``ws resend``: a success per message resent, timed from its first send.
A loss the user makes on purpose (ReconnectingUser) fires no outage and no recovery.
- ``ws token refresh``: with ``[protocol] ws.refresh = "reconnect"`` a new token is taken by a planned reconnect
  (resume with ``last_event_id``, resend what got no ack), timed as the new handshake; otherwise in-band (wsclient).

Bounded: attempts per outage (each at most BACKOFF_CAP + RECONNECT_TIMEOUT seconds); an outage ends only with a
round trip, so a socket that dies again at once spends the same outage's attempts. ``close`` (the user's on_stop)
kills the reader wherever it is (reading, sleeping, connecting) and closes the socket.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import Event
from websocket import ABNF, WebSocketException, WebSocketTimeoutException

from locustfiles.exchange import EVENTS_NAME, Exchange, Reporter, new_id
from locustfiles.ledger import Entry, Ledger, LedgerInbox
from locustfiles.wire import DEFAULT, REFRESH_NAME, Wire
from locustfiles.wsclient import CONNECT_NAME, WsConnection, decode_event
from runspec import folder
from runspec.scenario import USER_SCHEMA

# The defaults are the scenario's ([users.<Class>] in runspec): with the timeout, well inside an event timeout;
# about 40 s of trying per outage, then the user waits for its next task.
HEARTBEAT_INTERVAL = USER_SCHEMA["heartbeat_interval"].default
HEARTBEAT_TIMEOUT = USER_SCHEMA["heartbeat_timeout"].default
BACKOFF_BASE = USER_SCHEMA["reconnect_base"].default
BACKOFF_CAP = USER_SCHEMA["reconnect_cap"].default
RECONNECT_ATTEMPTS = USER_SCHEMA["reconnect_attempts"].default
TOKEN_STALL = USER_SCHEMA["token_stall"].default
RECONNECT_TIMEOUT = 5.0  # one reconnect's handshake: a blackholed port would hold it for CONNECT_TIMEOUT
LOST_AFTER = 10.0  # the ledger's lost deadline when the user table has no event_timeout
UNREAD_SETTLE = 0.2  # chat_unread: seconds for the server to take the message before the connection goes
OUTAGE_NAME = folder.WS_OUTAGE
RECOVERY_NAME = folder.WS_RECOVERY
RECONNECT_NAME = folder.WS_RECONNECT
RESEND_NAME = folder.WS_RESEND


@dataclass(frozen=True)
class Policy:
    """How a tab watches and recovers its connection."""

    heartbeat_interval: float = HEARTBEAT_INTERVAL  # 0 = no heartbeat (only a closed socket is noticed)
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    attempts: int = RECONNECT_ATTEMPTS
    lost_after: float = LOST_AFTER
    stall_after: float = TOKEN_STALL  # seconds: a longer gap between streamed tokens is a stall

    @classmethod
    def for_user(cls, table: dict[str, Any]) -> Policy:
        """From a resolved [users.<Class>] table; keys it does not have take the defaults above."""
        return cls(
            heartbeat_interval=float(table.get("heartbeat_interval", HEARTBEAT_INTERVAL)),
            heartbeat_timeout=float(table.get("heartbeat_timeout", HEARTBEAT_TIMEOUT)),
            backoff_base=float(table.get("reconnect_base", BACKOFF_BASE)),
            backoff_cap=float(table.get("reconnect_cap", BACKOFF_CAP)),
            attempts=int(table.get("reconnect_attempts", RECONNECT_ATTEMPTS)),
            lost_after=float(table.get("event_timeout", LOST_AFTER)),
            stall_after=float(table.get("token_stall", TOKEN_STALL)),
        )


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 = the first): base * 2**attempt, at most ``cap``, jittered
    over its upper half, so users that lost their connections together do not all come back at once."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    return ceiling * (0.5 + 0.5 * rand())


class Tab(WsConnection):
    """One browser tab's WebSocket: it reconnects, resumes and resends by itself (see the module's doc)."""

    def __init__(
        self, host: str, token: Callable[[], str], report: Reporter, policy: Policy, wire: Wire = DEFAULT
    ) -> None:
        self.ledger = Ledger(report, policy.lost_after, wire)
        super().__init__(wire.ws_url(host), token(), report, LedgerInbox(report, self.ledger, wire), wire)
        self.inbox.stall_ms = policy.stall_after * 1000.0
        self.host = host
        self.token_source = token  # the session's current access token, read at every (re)connect
        self.policy = policy
        self.connection = 0  # sockets opened so far; a message remembers the one it was last sent on
        self.connected_at = 0.0
        self.losses = 0
        self.up = Event()  # set while a socket is open
        self.outage_at: float | None = None  # when the current outage was noticed
        self.attempt = 0  # reconnect attempts in the current outage
        self.cause = ""  # why the connection went, or the last attempt failed
        self.quiet = False  # the current outage is the user's doing: no outage or recovery events
        self.ping_out = False

    # --- the user's side ---

    def start(self, exchange: Exchange, payload: dict) -> Exchange:
        """Send a message; a chat message goes in the ledger first, and while the tab is down it waits there for
        the reconnect (untimed: its times would include the outage)."""
        if payload.get(self.wire.type_key) != self.wire.chat:
            return super().start(exchange, payload)
        entry = self.ledger.expect(exchange.id, payload, exchange.sent_at)
        if not self.inbox.expect(exchange):
            self.ledger.forget(exchange.id)
        elif self.send(payload):
            entry.sent_on = self.connection
        else:
            exchange.untime()
        return exchange

    def expect(self, exchange: Exchange) -> bool:
        """Expect the reply to a message another tab of the user sends (before it is sent)."""
        self.ledger.expect(exchange.id, None, exchange.sent_at)
        if not self.inbox.expect(exchange):
            self.ledger.forget(exchange.id)
            return False
        if not self.open:
            exchange.untime()
        return True

    def refresh_token(self, token: str, timeout: float) -> bool:
        if not self.open:
            return True  # the reconnect authenticates with the session's current token
        if self.wire.refresh_by_reconnect:
            return self.reconnect_now()
        return super().refresh_token(token, timeout)

    def reconnect_now(self) -> bool:
        """A planned reconnect with the session's current token (``ws.refresh = "reconnect"``): close politely,
        resume after the last event handled, resend what got no ack. Timed as ``ws token refresh``; if it fails the
        tab recovers as from an outage."""
        self._stop_reader()  # first, so last_event_id is the last event handled
        if self.ws is not None:
            try:
                self.ws.send_close()
            except (OSError, WebSocketException):
                pass
        self._close_socket()
        if self.closing:
            return False
        self.up.clear()
        for exchange in list(self.inbox.pending.values()):
            exchange.untime()  # a reply in flight comes with the resume; its times would include the reconnect
        failed = self._open_socket(RECONNECT_TIMEOUT, REFRESH_NAME)
        if failed is None:
            now = time.perf_counter()
            self._resend(self.ledger.unacked(self.connection, now), now)
        else:
            self._lost(failed)
        self.reader = gevent.spawn(self._read)
        return failed is None

    def wait_up(self, timeout: float) -> bool:
        """True once a socket is open (now, or after a reconnect within ``timeout`` seconds)."""
        return self.up.wait(max(timeout, 0.0)) and self.open

    def revive(self) -> None:
        """A tab that gave up (or never connected) starts a new outage: a new round of attempts."""
        if self.closing or self.open or (self.reader is not None and not self.reader.dead):
            return
        self._close_socket()
        self._lost(self.cause or "not connected")
        self.reader = gevent.spawn(self._read)

    def lose(self) -> None:
        """Lose the connection as a network failure would (no close frame); the tab recovers quietly."""
        self._stop_reader()  # first, so last_event_id is the last event handled
        if self.ws is not None and self.ws.sock is not None:
            try:
                self.ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._close_socket()
        if self.closing:
            return
        if self.outage_at is None:
            self.quiet = True
        self._lost("lost on purpose")
        self.reader = gevent.spawn(self._read)

    def chat_unread(self, thread_id: Any, content: str) -> Exchange:
        """Send a chat message and lose the connection before its ack is read: the tab resends it."""
        self._stop_reader()  # the ack will wait in a socket nobody reads
        exchange = self.chat(thread_id, content)
        exchange.untime()
        gevent.sleep(UNREAD_SETTLE)
        self.lose()
        return exchange

    def close(self) -> None:
        super().close()
        self.up.clear()
        self.ledger.close(time.perf_counter(), self.connected_at)

    # --- the reader greenlet ---

    def _open_socket(self, timeout: float, name: str = CONNECT_NAME) -> str | None:
        self.url = self.wire.ws_url(self.host, self.inbox.last_event_id)
        self.token = self.token_source()
        failed = super()._open_socket(timeout, name)
        if failed is not None:
            self.cause = failed
            return failed
        self.connection += 1
        self.connected_at = time.perf_counter()
        self.close_reason = None
        self.up.set()
        return None

    def _read(self) -> None:
        """Read; when the connection fails, reconnect (bounded: see _recover) and read on."""
        while not self.closing:
            if self.ws is None and not self._recover():
                return
            cause = self._read_until_lost()
            self._close_socket()
            if self.closing:
                return
            self._lost(cause)

    def _read_until_lost(self) -> str:
        ws, report, handle, clock, wire = self.ws, self.report, self.inbox.handle, time.perf_counter, self.wire
        recv_data, opcode_close = ws.recv_data, ABNF.OPCODE_CLOSE
        interval = self.policy.heartbeat_interval or None
        patience = self.policy.heartbeat_timeout or None
        ws.settimeout(patience if self.ping_out else interval)  # a receive's timeout is the heartbeat's clock
        while True:
            try:
                opcode, data = recv_data()  # answers the server's pings itself
            except WebSocketTimeoutException:
                if self.ping_out:
                    return f"no pong within {self.policy.heartbeat_timeout:g} s"
                self.ledger.sweep(clock(), self.connected_at)
                self._ping()
                ws.settimeout(patience)
                continue
            except (OSError, WebSocketException) as exc:
                return type(exc).__name__
            if opcode == opcode_close:
                return f"close code {int.from_bytes(data[:2], 'big') if len(data) >= 2 else 1005}"
            now = clock()
            event = decode_event(data, report)
            if event is None:
                continue
            etype = event.get(wire.type_key)
            if etype == wire.pong:  # only the heartbeat pings on a tab
                if self.ping_out:
                    self.ping_out = False
                    ws.settimeout(interval)
                self._recovered(now)
                continue
            if etype == wire.replay_truncated:  # comes first on a resume, before any replayed event
                self._resend(self.ledger.truncated(self.connection, now), now)
            try:
                handle(event, now)
            except Exception as exc:  # noqa: BLE001 - a client bug must show in the stats, not kill the reader
                report.failure(EVENTS_NAME, f"client error handling an event: {type(exc).__name__}")

    def _ping(self) -> None:
        self.ping_out = True
        self.send(self.wire.ping_payload(new_id()))  # a failed send shows as the next receive's error

    def _lost(self, cause: str) -> None:
        self.up.clear()
        self.ping_out = False
        self.cause = cause
        self.losses += 1
        if self.outage_at is None:
            self.outage_at = time.perf_counter()
            self.attempt = 0
            if not self.quiet:
                self.report.failure(OUTAGE_NAME, cause)
        for exchange in list(self.inbox.pending.values()):
            exchange.untime()  # their times would include the outage; the ledger judges their delivery

    def _recover(self) -> bool:
        """Reconnect with backoff, resume, resend; at most ``attempts`` per outage. False once given up."""
        policy = self.policy
        while self.attempt < policy.attempts:
            gevent.sleep(backoff(self.attempt, policy.backoff_base, policy.backoff_cap))
            self.attempt += 1
            if self.closing:
                return False
            if self._open_socket(RECONNECT_TIMEOUT, RECONNECT_NAME) is None:
                now = time.perf_counter()
                self._resend(self.ledger.unacked(self.connection, now), now)
                self._ping()  # the first round trip on the new connection: its pong ends the outage
                return True
        now = time.perf_counter()
        if not self.quiet:
            message = f"gave up after {self.attempt} attempts ({self.cause})"
            self.report.failure(RECOVERY_NAME, message, (now - self.outage_at) * 1000.0)
        self.close_reason = f"gave up reconnecting ({self.cause})"
        self.outage_at = None
        self.quiet = False
        self.inbox.fail_all(self.close_reason + " before {step}")  # waiting users go on (untimed: nothing fired)
        return False

    def _recovered(self, now: float) -> None:
        if self.outage_at is None:
            return
        if not self.quiet:
            self.report.success(RECOVERY_NAME, (now - self.outage_at) * 1000.0)
        self.outage_at = None
        self.attempt = 0
        self.quiet = False

    def _resend(self, entries: list[Entry], now: float) -> None:
        for entry in entries:
            if not self.send(entry.payload):
                return  # the reader notices the loss and resends after the next reconnect
            self.report.success(RESEND_NAME, (now - entry.first_sent) * 1000.0)


def tabs_ready(tabs: list[Tab], timeout: float) -> bool:
    """Every tab connected, waiting up to ``timeout`` seconds for those reconnecting; those that gave up start again.
    Open tabs' ledgers judge their overdue messages here too."""
    now = time.perf_counter()
    for tab in tabs:
        if tab.open:
            tab.ledger.sweep(now, tab.connected_at)
        else:
            tab.revive()
    deadline = now + timeout
    return all(tab.wait_up(deadline - time.perf_counter()) for tab in tabs)
