"""The simulated users: they chat, keep several tabs, upload, hit the rate limit and reconnect.

Each one logs in as a user of its own (so no two share events), keeps its token fresh and checks every server
event (see wsclient). Its WebSockets are tabs that reconnect, resume and resend by themselves, each with a delivery
ledger (see reconnect.py, ledger.py). Paths, fields, event names and the token's place are the scenario's [protocol]
(a Wire, see wire.py). Weights, think times and per-class keys come from the scenario's [users.<Class>] tables
through ``userclasses.configure``, called from the init event (also on workers, and again at test start).
"""

from __future__ import annotations

import os
import time
from typing import Any

import gevent
from locust import HttpUser, between, task

from locustfiles import options
from locustfiles.arrival import OpenChat
from locustfiles.exchange import Exchange, Reporter, new_id
from locustfiles.reconnect import Policy, Tab, tabs_ready
from locustfiles.session import AuthSession, rest

MESSAGE = "Summarise the last three messages of this thread, please."
HISTORY_EVERY = 5  # ChattingUser reloads its thread's history every N messages
HISTORY_LIMIT = 20
RETRY_SLACK = 0.25  # seconds added to retry_after before the retry: the server's clock granularity
RATE_NAME = "rate limit"
FANOUT_NAME = "fan-out lag"
RECONNECT_NAME = "reconnect replay"
UPLOAD_STATUSES = (200, 201, 202)  # the contract says 202; any of these means the upload was taken
THREAD_STATUSES = (200, 201)
MAX_BLOBS = 8  # upload payloads kept in memory, one per distinct size

_blobs: dict[int, bytes] = {}


def upload_payload(size: int) -> bytes:
    """Random (incompressible) bytes of ``size``, made once per size and process."""
    blob = _blobs.get(size)
    if blob is None:
        blob = os.urandom(size)
        if len(_blobs) < MAX_BLOBS:
            _blobs[size] = blob
    return blob


class ChatUser(HttpUser):
    """Login (paid tier unless ``paid`` is False), one thread, ``tab_count`` WebSocket connections."""

    abstract = True
    wait_time = between(1, 3)
    paid = True  # upgraded after login, so the free tier's rate limit does not throttle the load

    def on_start(self) -> None:
        self.cfg = options.current.user(type(self).__name__)
        self.wire = options.current.wire
        self.report = Reporter(self.environment)
        self.policy = Policy.for_user(self.cfg)
        self.connections: list[Tab] = []
        self.session: AuthSession | None = None
        self.thread_id: Any = None
        self.sent = 0
        self.begin()

    def on_stop(self) -> None:
        self.end_connections()

    @property
    def tab_count(self) -> int:
        return 1

    @property
    def timeout(self) -> float:
        return self.cfg["event_timeout"]

    def begin(self) -> bool:
        """Log in as a new user, open a thread and the connections; False (failures recorded) if a step failed."""
        self.end_connections()
        self.thread_id = None
        auth_host = options.current.auth_host or self.host
        email = f"{type(self).__name__.lower()}-{new_id()}@soak.test"
        wire = self.wire
        self.session = AuthSession(self.client, auth_host, email, wire=wire)
        if not self.session.login():
            self.session = None
            return False
        if self.paid and not self.session.upgrade():
            self.session = None
            return False
        headers = self.session.headers
        threads, create = wire.threads, wire.create_thread
        rest(self.client, threads.method, threads.url(""), threads.name, wire=wire, headers=headers)
        thread = rest(
            self.client,
            create.method,
            create.url(""),
            create.name,
            THREAD_STATUSES,
            wire=wire,
            require=wire.api["thread_id"],
            json={wire.api["title"]: "soak"},
            headers=headers,
        )
        if thread is None:
            return False
        self.thread_id = wire.thread_id(thread)
        self.load_history()
        for _ in range(self.tab_count):
            self.connections.append(self.connect())
        return all(conn.open for conn in self.connections)

    def connect(self) -> Tab:
        tab = Tab(self.host, self.access_token, self.report, self.policy, self.wire)
        tab.connect()  # refused: the next ready() has it reconnect
        return tab

    def access_token(self) -> str:
        return self.session.access_token if self.session is not None else ""

    def end_connections(self) -> None:
        for conn in self.connections:
            conn.close()
        self.connections = []

    def ready(self) -> bool:
        """Logged in, token fresh, every tab connected (waiting up to the event timeout for tabs that reconnect)."""
        if self.session is None or self.thread_id is None:
            return self.begin()
        self.keep_fresh()
        return tabs_ready(self.connections, self.timeout)

    def keep_fresh(self) -> None:
        """Refresh the access token before it expires: over REST, then in-band on every open connection."""
        if not self.session.expiring:
            return
        # a refresh token can expire too over a long soak: then log in again as the same user
        if not self.session.refresh() and not self.session.login():
            return
        for tab in self.connections:
            tab.refresh_token(self.session.access_token, self.timeout)  # a tab that is down takes it at its reconnect

    def load_history(self) -> None:
        history = self.wire.history
        url = history.url("", self.thread_id, HISTORY_LIMIT)
        rest(self.client, history.method, url, history.name, wire=self.wire, headers=self.session.headers)

    def judged(self, exchange: Exchange) -> None:
        """After a reply: a token the server calls expired is refreshed before the next message."""
        error = exchange.error
        if error is not None and error.get(self.wire.code_key) == self.wire.token_expired and self.session:
            self.session.expired()


class ChattingUser(ChatUser):
    """Loads its thread's history, then chats: send, wait for agent_completed, think, repeat. With [arrival] rate
    (the open model) it sends on its schedule instead, replies or not (arrival.py)."""

    def on_start(self) -> None:
        arrival = options.current.scenario["arrival"]
        self.open_chat = OpenChat(arrival, options.current.shape["users"]) if arrival["rate"] > 0 else None
        super().on_start()

    def on_stop(self) -> None:
        if self.open_chat is not None:
            self.open_chat.close()
        super().on_stop()

    @task
    def chat(self) -> None:
        if self.open_chat is not None:
            self.open_chat.step(self, MESSAGE)
            return
        if not self.ready():
            return
        exchange = self.connections[0].chat(self.thread_id, MESSAGE)
        exchange.wait(self.timeout)
        self.judged(exchange)
        self.sent += 1
        if self.sent % HISTORY_EVERY == 0:
            self.load_history()


class MultiTabUser(ChatUser):
    """One login, several tabs: every event of a message must reach every tab; tabs are closed and reopened."""

    @property
    def tab_count(self) -> int:
        return max(1, self.cfg["tabs"])

    @task
    def chat_in_tabs(self) -> None:
        if not self.ready():
            return
        tabs = self.connections
        losses = [tab.losses for tab in tabs]
        sender = self.sent % len(tabs)
        message_id = new_id()
        wire = self.wire
        exchanges = [
            Exchange(message_id, wire.chat_steps, wire.chat_names, self.report, timed=i == sender)
            for i in range(len(tabs))
        ]
        for i, tab in enumerate(tabs):
            if i != sender:
                tab.expect(exchanges[i])  # before the send: the other tabs' events may come first
        tabs[sender].start(exchanges[sender], wire.chat_payload(message_id, self.thread_id, MESSAGE))
        for exchange in exchanges:
            exchange.wait(self.timeout)
        self.judged(exchanges[sender])
        if [tab.losses for tab in tabs] == losses:  # across a reconnect the times mean little: the ledgers judge
            self.report_fan_out(exchanges, sender)
        self.sent += 1
        reopen = (sender + 1) % len(tabs)
        if self.cfg["reopen_every"] and self.sent % self.cfg["reopen_every"] == 0 and len(tabs) > 1:
            if tabs[reopen].ledger.open:
                return  # a reply still due there: reopening would leave it unjudged
            tabs[reopen].close()
            tabs[reopen] = self.connect()

    def report_fan_out(self, exchanges: list[Exchange], sender: int) -> None:
        for i, exchange in enumerate(exchanges):
            if not exchange.ok:
                where = "sending tab" if i == sender else "another tab"
                self.report.failure(FANOUT_NAME, f"{where}: {exchange.problem or 'error event'}")
                return
        arrivals = [exchange.times[self.wire.final] for exchange in exchanges]
        self.report.success(FANOUT_NAME, (max(arrivals) - min(arrivals)) * 1000.0)


class UploadingUser(ChatUser):
    """Uploads files of the configured sizes (generated in memory) and waits for each result event."""

    @task
    def upload(self) -> None:
        if not self.ready():
            return
        sizes = self.cfg["sizes"] or [1024]
        size = sizes[self.sent % len(sizes)]
        self.sent += 1
        inbox = self.connections[0].inbox
        started = time.perf_counter()
        inbox.uploads_in_flight += 1
        wire, upload = self.wire, self.wire.upload
        try:
            body = rest(
                self.client,
                upload.method,
                upload.url(""),
                upload.name,
                UPLOAD_STATUSES,
                wire=wire,
                require=wire.api["upload_id"],
                files={wire.api["file"]: ("soak.bin", upload_payload(size), "application/octet-stream")},
                headers=self.session.headers,
            )
            upload_id = wire.upload_id(body)
            if upload_id is not None:
                exchange = Exchange(str(upload_id), wire.upload_steps, wire.upload_names, self.report)
                exchange.sent_at = started
                exchange.expect_fields = {wire.upload_size_key: size}
                inbox.expect(exchange)
                exchange.wait(self.timeout)
        finally:
            inbox.uploads_in_flight -= 1
            inbox.settle_uploads()


class RateLimitedUser(ChatUser):
    """A free-tier user bursting past the limit: refused exactly over it, accepted after retry_after and when paid.

    Every cycle is a new free user (an empty window). The limit it expects is the scenario's [sut] rate_limit per
    rate_window; a server that refuses early, accepts over the limit, leaves out retry_after, refuses after the wait
    or refuses a paid user fails the ``rate limit`` check.
    """

    paid = False

    @task
    def hit_the_limit(self) -> None:
        if not self.begin():
            return
        limit = int(options.current.sut["rate_limit"])
        burst = self.cfg["burst"] or limit + 1
        conn = self.connections[0]
        accepted, refusals, problem = self.burst(conn, burst, limit)
        if problem is None and burst > limit and not refusals:
            problem = "free tier accepted a message over its limit"
        if problem:
            self.report.failure(RATE_NAME, problem)
        elif refusals:
            self.report.success(RATE_NAME, refusals[0].replied_ms)
        for exchange in accepted:
            exchange.wait(self.timeout)
        if problem:
            return
        if refusals:
            gevent.sleep(float(refusals[-1].error[self.wire.retry_after_key]) + RETRY_SLACK)
            self.keep_fresh()
            exchange = conn.chat(self.thread_id, MESSAGE, refusable=True)
            if not self.judge_single(exchange, "refused again after waiting retry_after"):
                return
            exchange.wait(self.timeout)
        if not self.session.upgrade():
            self.report.failure(RATE_NAME, "upgrade to the paid tier failed")
            return
        if not conn.refresh_token(self.session.access_token, self.timeout):
            return
        accepted, refusals, problem = self.burst(conn, burst, limit=None)
        if problem:
            self.report.failure(RATE_NAME, problem)
        else:
            self.report.success(RATE_NAME, accepted[-1].replied_ms if accepted else 0.0)
        for exchange in accepted:
            exchange.wait(self.timeout)

    def burst(self, conn: Tab, count: int, limit: int | None) -> tuple[list, list, str | None]:
        """Send ``count`` messages, each after the reply to the one before; ``limit`` None = paid, never refused."""
        accepted: list[Exchange] = []
        refusals: list[Exchange] = []
        wire = self.wire
        for i in range(count):
            exchange = conn.chat(self.thread_id, MESSAGE, refusable=True)
            if not exchange.replied.wait(self.timeout) or exchange.replied_at is None:
                exchange.fail(f"{{step}} not received within {self.timeout:g} s")
                return accepted, refusals, "no reply to a message of the burst"
            if exchange.error is None:
                accepted.append(exchange)
                if limit is not None and i >= limit:
                    return accepted, refusals, "free tier accepted a message over its limit"
                continue
            code = str(exchange.error.get(wire.code_key) or "?")[:40]
            if limit is None:
                return accepted, refusals, f"paid tier refused ({code})"
            if code != wire.rate_limited:
                return accepted, refusals, f"error {code} instead of {wire.rate_limited}"
            if i < limit:
                return accepted, refusals, "free tier refused below its limit"
            retry_after = exchange.error.get(wire.retry_after_key)
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after <= 0:
                return accepted, refusals, f"{wire.rate_limited} without a positive {wire.retry_after_key}"
            refusals.append(exchange)
        return accepted, refusals, None

    def judge_single(self, exchange: Exchange, refused_message: str) -> bool:
        if not exchange.replied.wait(self.timeout) or exchange.replied_at is None:
            exchange.fail(f"{{step}} not received within {self.timeout:g} s")
            self.report.failure(RATE_NAME, "no reply to the retry")
            return False
        if exchange.error is not None:
            self.report.failure(RATE_NAME, refused_message)
            return False
        self.report.success(RATE_NAME, exchange.replied_ms)
        return True


class ReconnectingUser(ChatUser):
    """Loses its connection every ``drop_every`` messages, as a network failure would, and its tab recovers by itself:
    alternately mid-reply (the rest comes with the resume from ``last_event_id``) and right after a send, before the
    ack was read (the tab resends it with the same id; the server must answer it once).

    The reply must still complete, each event once: ``reconnect replay`` times its end from the loss, and the tab's
    ledger checks the delivery.
    """

    @task
    def chat_and_drop(self) -> None:
        if not self.ready():
            return
        self.sent += 1
        tab = self.connections[0]
        drop_every = self.cfg["drop_every"]
        if not drop_every or self.sent % drop_every:
            exchange = tab.chat(self.thread_id, MESSAGE)
            exchange.wait(self.timeout)
            self.judged(exchange)
            return
        if (self.sent // drop_every) % 2:
            exchange = tab.chat(self.thread_id, MESSAGE)
            if not exchange.wait_for(self.wire.startup, self.timeout) or exchange.done.is_set():
                exchange.wait(self.timeout)
                self.judged(exchange)
                return
            tab.lose()
        else:
            exchange = tab.chat_unread(self.thread_id, MESSAGE)
        lost_at = time.perf_counter()
        if exchange.wait(self.timeout):
            self.report.success(RECONNECT_NAME, (exchange.times[self.wire.final] - lost_at) * 1000.0)
        else:
            self.report.failure(RECONNECT_NAME, exchange.problem or "error event")
