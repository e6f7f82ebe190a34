"""The simulated users: they chat, keep several tabs, upload, hit the rate limit and reconnect.

Each one logs in as a user of its own (so no two share events), keeps its token fresh and checks every server
event (see wsclient). Weights, think times and per-class keys come from the scenario's [users.<Class>] tables
through ``configure``, called from the init event (also on workers, and again at test start).
"""

from __future__ import annotations

import os
import time
from typing import Any

import gevent
from locust import HttpUser, between, constant, task

from locustfiles import options
from locustfiles.exchange import CHAT_NAMES, CHAT_STEPS, UPLOAD_NAMES, UPLOAD_STEPS, Exchange, Reporter, new_id
from locustfiles.session import AuthSession, rest
from locustfiles.wsclient import WsConnection, ws_url

MESSAGE = "Summarise the last three messages of this thread, please."
HISTORY_EVERY = 5  # ChattingUser reloads its thread's history every N messages
HISTORY_LIMIT = 20
RETRY_SLACK = 0.25  # seconds added to retry_after before the retry: the server's clock granularity
RATE_NAME = "rate limit"
FANOUT_NAME = "fan-out lag"
RECONNECT_NAME = "reconnect replay"
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
        self.report = Reporter(self.environment)
        self.connections: list[WsConnection] = []
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
        self.session = AuthSession(self.client, auth_host, email)
        if not self.session.login():
            self.session = None
            return False
        if self.paid and not self.session.upgrade():
            self.session = None
            return False
        headers = self.session.headers
        rest(self.client, "GET", "/api/threads", "GET /api/threads", headers=headers)
        thread = rest(
            self.client,
            "POST",
            "/api/threads",
            "POST /api/threads",
            (200, 201),
            json={"title": "soak"},
            headers=headers,
        )
        if not isinstance(thread, dict) or thread.get("id") is None:
            return False
        self.thread_id = thread["id"]
        self.load_history()
        for _ in range(self.tab_count):
            self.connections.append(self.connect())
        return all(conn.open for conn in self.connections)

    def connect(self, last_event_id: int | None = None, previous: WsConnection | None = None) -> WsConnection:
        url = ws_url(self.host, last_event_id)
        conn = WsConnection(url, self.session.access_token, self.report, previous.inbox if previous else None)
        conn.connect()
        return conn

    def end_connections(self) -> None:
        for conn in self.connections:
            conn.close()
        self.connections = []

    def ready(self) -> bool:
        """Logged in, token fresh, every connection open (a connection the server closed is opened anew)."""
        if self.session is None or self.thread_id is None:
            return self.begin()
        self.keep_fresh()
        for i, conn in enumerate(self.connections):
            if not conn.open:
                conn.close()
                self.connections[i] = self.connect()
        return all(conn.open for conn in self.connections)

    def keep_fresh(self) -> None:
        """Refresh the access token before it expires: over REST, then in-band on every open connection."""
        if not self.session.expiring:
            return
        # a refresh token can expire too over a long soak: then log in again as the same user
        if not self.session.refresh() and not self.session.login():
            return
        for conn in self.connections:
            if conn.open:
                conn.refresh_token(self.session.access_token, self.timeout)

    def load_history(self) -> None:
        rest(
            self.client,
            "GET",
            f"/api/threads/{self.thread_id}/messages?limit={HISTORY_LIMIT}",
            "GET /api/threads/{id}/messages",
            headers=self.session.headers,
        )


class ChattingUser(ChatUser):
    """Loads its thread's history, then chats: send, wait for agent_completed, think, repeat."""

    @task
    def chat(self) -> None:
        if not self.ready():
            return
        self.connections[0].chat(self.thread_id, MESSAGE).wait(self.timeout)
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
        sender = self.sent % len(tabs)
        message_id = new_id()
        exchanges = [
            Exchange(message_id, CHAT_STEPS, CHAT_NAMES, self.report, timed=i == sender) for i in range(len(tabs))
        ]
        for i, tab in enumerate(tabs):
            if i != sender:
                tab.inbox.expect(exchanges[i])  # before the send: the other tabs' events may come first
        payload = {"type": "chat_message", "id": message_id, "thread_id": self.thread_id, "content": MESSAGE}
        tabs[sender].start(exchanges[sender], payload)
        for exchange in exchanges:
            exchange.wait(self.timeout)
        self.report_fan_out(exchanges, sender)
        self.sent += 1
        if self.cfg["reopen_every"] and self.sent % self.cfg["reopen_every"] == 0 and len(tabs) > 1:
            reopen = (sender + 1) % len(tabs)
            tabs[reopen].close()
            tabs[reopen] = self.connect()

    def report_fan_out(self, exchanges: list[Exchange], sender: int) -> None:
        for i, exchange in enumerate(exchanges):
            if not exchange.ok:
                where = "sending tab" if i == sender else "another tab"
                self.report.failure(FANOUT_NAME, f"{where}: {exchange.problem or 'error event'}")
                return
        arrivals = [exchange.times["agent_completed"] for exchange in exchanges]
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
        try:
            body = rest(
                self.client,
                "POST",
                "/api/uploads",
                "POST /api/uploads",
                (202,),
                files={"file": ("soak.bin", upload_payload(size), "application/octet-stream")},
                headers=self.session.headers,
            )
            if isinstance(body, dict) and body.get("upload_id"):
                exchange = Exchange(str(body["upload_id"]), UPLOAD_STEPS, UPLOAD_NAMES, self.report)
                exchange.sent_at = started
                exchange.expect_fields = {"size": size}
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
            gevent.sleep(float(refusals[-1].error["retry_after"]) + RETRY_SLACK)
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

    def burst(self, conn: WsConnection, count: int, limit: int | None) -> tuple[list, list, str | None]:
        """Send ``count`` messages, each after the reply to the one before; ``limit`` None = paid, never refused."""
        accepted: list[Exchange] = []
        refusals: list[Exchange] = []
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
            code = str(exchange.error.get("code") or "?")[:40]
            if limit is None:
                return accepted, refusals, f"paid tier refused ({code})"
            if code != "RATE_LIMITED":
                return accepted, refusals, f"error {code} instead of RATE_LIMITED"
            if i < limit:
                return accepted, refusals, "free tier refused below its limit"
            retry_after = exchange.error.get("retry_after")
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after <= 0:
                return accepted, refusals, "RATE_LIMITED without a positive retry_after"
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
    """Drops its connection mid-conversation every ``drop_every`` messages and resumes with ``last_event_id``.

    The resumed exchange must complete with every event once: a lost or repeated event fails ``reconnect replay``.
    """

    @task
    def chat_and_drop(self) -> None:
        if not self.ready():
            return
        self.sent += 1
        conn = self.connections[0]
        exchange = conn.chat(self.thread_id, MESSAGE)
        drop_every = self.cfg["drop_every"]
        if not drop_every or self.sent % drop_every:
            exchange.wait(self.timeout)
            return
        if not exchange.wait_for("agent_started", self.timeout) or exchange.done.is_set():
            exchange.wait(self.timeout)
            return
        conn.drop()  # the reader is stopped first: last_event_id is the last event handled
        exchange.untime()  # the times from here on would include the reconnect
        resumed = time.perf_counter()
        new_conn = self.connect(conn.inbox.last_event_id, previous=conn)
        self.connections[0] = new_conn
        if not new_conn.open:
            exchange.fail("reconnect refused before {step}")
            self.report.failure(RECONNECT_NAME, "reconnect refused")
            return
        if exchange.wait(self.timeout):
            self.report.success(RECONNECT_NAME, (exchange.times["agent_completed"] - resumed) * 1000.0)
        else:
            self.report.failure(RECONNECT_NAME, exchange.problem or "error event")


USER_CLASSES: dict[str, type[ChatUser]] = {
    cls.__name__: cls for cls in (ChattingUser, MultiTabUser, UploadingUser, RateLimitedUser, ReconnectingUser)
}


def configure(environment: Any, settings: options.Settings, drop_unweighted: bool) -> None:
    """Weights and think times from the scenario; with ``drop_unweighted`` classes of weight 0 never spawn.

    A class named on Locust's command line (``locust -f chat.py MultiTabUser``) runs even where the scenario, or the
    default scenario (ChattingUser only), gives it no weight: the command line is the more specific wish.
    """
    named = set(getattr(environment.parsed_options, "user_classes", None) or [])
    for name, cls in USER_CLASSES.items():
        table = settings.users.get(name)
        cls.weight = table["weight"] if table else 0
        if name in named:
            cls.weight = max(cls.weight, 1)
        cfg = table or options.USER_DEFAULTS
        if cfg["wait_max"] > 0:
            cls.wait_time = between(cfg["wait_min"], cfg["wait_max"])
        else:
            cls.wait_time = constant(0)
    if drop_unweighted:
        ours = set(USER_CLASSES.values())
        kept = [cls for cls in environment.user_classes if cls not in ours or cls.weight > 0 or cls.fixed_count]
        if not kept:
            raise options.ScenarioFileError("no user class to run: every class has weight 0 in the scenario")
        environment.user_classes[:] = kept
