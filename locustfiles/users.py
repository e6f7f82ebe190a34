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

from locust import HttpUser, between, task

from locustfiles import options
from locustfiles.arrival import INTENDED, OpenChat, OpenRest
from locustfiles.exchange import Exchange, Reporter, new_id
from locustfiles.reconnect import Policy, Tab, tabs_ready
from locustfiles.session import AuthSession, rest

MESSAGE = "Summarise the last three messages of this thread, please."
HISTORY_EVERY = 5  # ChattingUser reloads its thread's history every N messages
HISTORY_LIMIT = 20
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

    def load_history(self, intended: float | None = None) -> None:
        """The thread's history; ``intended`` (the open model's REST schedule): the call was due then."""
        session, history = self.session, self.wire.history
        if session is None:
            return  # logged out since the open model scheduled it; its schedule waits for the next login
        url = history.url("", self.thread_id, HISTORY_LIMIT)
        judge_intended = options.current.scenario["arrival"]["judge"] == INTENDED
        rest(
            self.client,
            history.method,
            url,
            history.name,
            wire=self.wire,
            headers=session.headers,
            intended=intended,
            judge_intended=judge_intended,
        )

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
        users = options.current.shape["users"]
        self.open_chat = OpenChat(arrival, users) if arrival["rate"] > 0 else None
        self.open_rest: OpenRest | None = None
        super().on_start()
        if self.open_chat is not None and arrival["rest_rate"] > 0:
            self.open_rest = OpenRest(arrival, users, self.load_history, self.logged_in)
            self.open_rest.start()

    def on_stop(self) -> None:
        if self.open_chat is not None:
            self.open_chat.close()
        if self.open_rest is not None:
            self.open_rest.close()
        super().on_stop()

    def logged_in(self) -> bool:
        return self.session is not None and self.thread_id is not None

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
