"""Chat messages: the WebSocket frames a client sends, the rate limit, storage, the agent job and its events.

A job sent to the agent stays in ``ChatService.pending`` until its ``agent_completed``. When its events cannot come
any more (the bus lost its channel to the agent, or the job outlived ``agent_job_timeout``: an agent killed mid-job
behind Redis) the user gets ``AGENT_UNAVAILABLE`` for it, after its ack, and may resend the same client id: the
failure is not remembered as a send, so the resend runs again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from sut import faults, metrics, tokens
from sut.bus import BusUnavailable
from sut.config import Settings
from sut.dedup import Dedup, Outcome
from sut.ratelimit import ChatLimiter, Limiter, limit_for
from sut.storage import Store
from sut.ws import Connection, Hub

log = logging.getLogger("sut.chat")

PENDING_TIMEOUT = 300.0  # the job deadline when agent_job_timeout is 0: pending must stay bounded all the same
DEADLINE_TICK = 1.0  # seconds between looks for jobs past their deadline (one cheap scan, no task per job)


@dataclass(slots=True, eq=False)
class PendingJob:
    """A job sent to the agent and not completed: enough to tell its user when it fails."""

    sent: float  # time.monotonic()
    user: str
    reply_to: Any
    ack_event_id: int
    submitting: bool = True  # accept() is still handing it to the bus (and owns its dedup entry meanwhile)
    failed: bool = False


class ChatRefused(Exception):
    def __init__(self, code: str, message: str, status: int, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, int(self.retry_after + 0.999)))


class ChatService:
    MAX_CONTENT = 64 * 1024

    def __init__(self, settings: Settings, store: Store, hub: Hub, limiter: Limiter, agent_bus: Any) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.limits = ChatLimiter(settings, limiter)
        self.bus = agent_bus
        # job id -> job, in the order sent (so the deadline scan stops at the first one still in time)
        self.pending: dict[str, PendingJob] = {}
        self.job_timeout = settings.agent_job_timeout or PENDING_TIMEOUT
        self.dedup = Dedup()
        self._tasks: set[asyncio.Task] = set()
        metrics.gauge(
            "agent_tasks_inflight", "chat jobs sent to the agent, neither completed nor failed", self.inflight
        )

    def inflight(self) -> float:
        return float(len(self.pending))

    def running(self, user: str, reply_key: str) -> bool:
        """Whether a job of ``user`` answering client id ``reply_key`` is still with the agent (a resumed stream)."""
        return any(j.user == user and _client_id(j.reply_to) == reply_key for j in self.pending.values())

    def fail_job(self, job_id: str, reason: str, message: str) -> bool:
        """Give up on a pending job: AGENT_UNAVAILABLE to its user, its client id forgotten (a resend runs again),
        its late events dropped from now on. False when it is no longer pending (completed or failed already)."""
        job = self.pending.pop(job_id, None)
        if job is None:
            return False
        job.failed = True
        metrics.AGENT_JOBS_FAILED.labels(reason).inc()
        # to every tab and the replay buffer, like the agent's events; the ack was published before the job was sent
        error = {"type": "error", "code": "AGENT_UNAVAILABLE", "message": message, "reply_to": job.reply_to}
        self.hub.publish(job.user, error)
        key = None if self.settings.skip_dedup else _client_id(job.reply_to)
        if key is not None and not job.submitting:  # while submitting, accept() settles the dedup entry itself
            self.dedup.refused(job.user, key, job.ack_event_id)
        return True

    def agent_lost(self, reason: str) -> None:
        """The bus lost its channel to the agent (its on_lost): the events of every job in flight went with it."""
        for job_id in list(self.pending):
            self.fail_job(job_id, "lost", reason)

    def expire(self, now: float | None = None) -> int:
        """Fail the jobs older than the deadline (an agent that died with them, a channel that went silent)."""
        cutoff = (time.monotonic() if now is None else now) - self.job_timeout
        overdue = []
        for job_id, job in self.pending.items():
            if job.sent >= cutoff:
                break
            overdue.append(job_id)
        for job_id in overdue:
            self.fail_job(job_id, "timeout", f"agent did not finish within {self.job_timeout:g} s")
        return len(overdue)

    async def deadline_loop(self) -> None:
        while True:
            await asyncio.sleep(DEADLINE_TICK)
            try:
                self.expire()
            except Exception:  # noqa: BLE001 - one bad job must not end every deadline after it
                log.exception("failing overdue agent jobs")

    @staticmethod
    def error(code: str, message: str, reply_to: Any, **extra: Any) -> str:
        return json.dumps({"type": "error", "code": code, "message": message, "reply_to": reply_to, **extra})

    async def accept(self, claims: tokens.Claims, reply_to: Any, thread_id: int | None, content: str) -> Outcome:
        """Limit, store, ack (to every tab) and hand to the agent.

        A resend of a client id already accepted is answered from the first send (``duplicate``): no second ack to
        the tabs, no second agent run, nothing counted against the rate limit. Off with the skip_dedup fault.
        """
        key = None if self.settings.skip_dedup else _client_id(reply_to)
        if key is not None:
            earlier = await self.dedup.earlier(claims.user, key)
            if earlier is not None:
                metrics.CHAT_DUPLICATES.inc()
                return earlier
        try:
            outcome, agent_ok = await self._accept(claims, reply_to, thread_id, content)
        except BaseException:
            if key is not None:
                self.dedup.refused(claims.user, key)  # refused: sending it again is a new try
            raise
        if key is not None:
            if agent_ok:
                self.dedup.accepted(claims.user, key, outcome)
            else:
                self.dedup.refused(claims.user, key)  # the user got AGENT_UNAVAILABLE: a resend retries
        return outcome

    async def _accept(
        self, claims: tokens.Claims, reply_to: Any, thread_id: int | None, content: str
    ) -> tuple[Outcome, bool]:
        decision = await self.limits.check(claims.user, claims.tier)
        if not decision.allowed:
            metrics.RATE_LIMITED.inc()
            raise ChatRefused(
                "RATE_LIMITED",
                f"{claims.tier} tier: at most {limit_for(self.settings, claims.tier)} messages"
                f" per {self.settings.rate_window:g} s",
                429,
                round(decision.retry_after, 3),
            )
        faults.leak_message_bytes(self.settings.leak_bytes_per_message)
        try:
            if self.settings.leak_pool:
                await asyncio.to_thread(self.store.leak_connection)
            stored = await asyncio.to_thread(
                self.store.add_message, claims.user, thread_id, "user", content, _client_id(reply_to)
            )
        except PoolTimeoutError as exc:
            raise ChatRefused("DB_POOL_EXHAUSTED", str(exc).splitlines()[0], 503) from None
        except SQLAlchemyError as exc:
            raise ChatRefused("DATABASE_UNAVAILABLE", str(exc).splitlines()[0][:300], 503) from None
        if stored is None:
            raise ChatRefused("UNKNOWN_THREAD", f"no thread {thread_id} of yours", 404)
        metrics.CHAT_MESSAGES.inc()
        event_id = self.hub.publish(claims.user, {"type": "ack", "reply_to": reply_to, "thread_id": stored})
        job_id = uuid.uuid4().hex
        job = {"job": job_id, "kind": "chat", "user": claims.user, "reply_to": reply_to, "thread_id": stored}
        # pending before the submit: the agent's first events may arrive before submit() returns
        entry = self.pending[job_id] = PendingJob(time.monotonic(), claims.user, reply_to, event_id)
        try:
            await self.bus.submit({**job, "content": content})
        except BusUnavailable as exc:
            # the error after the ack on purpose: the ack must precede the agent's events, so it goes first
            self.fail_job(job_id, "unreachable", str(exc))  # nothing more if the channel's loss failed it already
        finally:
            entry.submitting = False
        return Outcome(stored, event_id), not entry.failed

    async def on_agent_event(self, message: dict[str, Any]) -> None:
        event = message.get("event") or {}
        user = message.get("user")
        if not user or not event.get("type"):
            return
        if str(message.get("job")) not in self.pending:
            # a job this process did not send (or gave up on): the events of a backend that died, arriving on the
            # Redis channel after its restart. Passing them on would interleave a half reply with the full one the
            # user gets by resending (a resume from before this process says replay_truncated, so it does).
            return
        if event["type"] != "agent_completed":
            self.hub.publish(user, event)
            return
        self.pending.pop(str(message.get("job")), None)
        task = asyncio.create_task(self._complete(user, message.get("thread_id"), event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(self, user: str, thread_id: int | None, event: dict[str, Any]) -> None:
        """Store the agent's reply first, so a client that got agent_completed finds it in the history."""
        try:
            await asyncio.to_thread(
                self.store.add_message,
                user,
                thread_id,
                "assistant",
                str(event.get("content", "")),
                _client_id(event.get("reply_to")),
            )
        except SQLAlchemyError:
            pass  # the reply still reaches the client; the history misses it (the pool-leak fault does this)
        self.hub.publish(user, event)

    async def handle_frame(self, conn: Connection, text: str) -> None:
        """One text frame from a client; every mistake is an error event and the connection stays open."""
        try:
            msg = json.loads(text)
        except ValueError:
            conn.push(self.error("BAD_MESSAGE", "not valid JSON", None))
            return
        except RecursionError:
            # the decoder recurses once per level: a small frame of 5000 "[" is enough, and it is the client's fault
            conn.push(self.error("BAD_MESSAGE", "JSON nested too deeply", None))
            return
        if not isinstance(msg, dict):
            conn.push(self.error("BAD_MESSAGE", "expected a JSON object with a 'type'", None))
            return
        reply_to = msg.get("id")
        if not (reply_to is None or isinstance(reply_to, int | float | str)) or len(str(reply_to)) > 200:
            conn.push(self.error("BAD_MESSAGE", "'id' must be a string or number (at most 200 characters)", None))
            return
        kind = msg.get("type")
        if kind == "chat_message":
            await self._chat_frame(conn, msg, reply_to)
        elif kind == "refresh_token":
            self._refresh_frame(conn, msg, reply_to)
        elif kind == "ping":
            conn.push(json.dumps({"type": "pong", "reply_to": reply_to, "ts": time.time()}))
        else:
            known = "chat_message, refresh_token, ping"
            conn.push(self.error("UNKNOWN_TYPE", f"unknown message type {str(kind)[:50]!r} (known: {known})", reply_to))

    async def _chat_frame(self, conn: Connection, msg: dict[str, Any], reply_to: Any) -> None:
        content = msg.get("content")
        if not isinstance(content, str) or not content or len(content) > self.MAX_CONTENT:
            conn.push(
                self.error("BAD_MESSAGE", f"'content' must be a string of 1-{self.MAX_CONTENT} characters", reply_to)
            )
            return
        thread_id = msg.get("thread_id")
        if isinstance(thread_id, str) and thread_id.isdigit():
            thread_id = int(thread_id)
        if thread_id is not None and (isinstance(thread_id, bool) or not isinstance(thread_id, int)):
            conn.push(self.error("BAD_MESSAGE", "'thread_id' must be a thread id (a whole number) or absent", reply_to))
            return
        if thread_id is not None and not 0 < thread_id < 2**31:
            conn.push(self.error("UNKNOWN_THREAD", f"no thread {thread_id} of yours", reply_to))
            return
        if time.time() >= conn.claims.expires_at:
            message = "access token expired; send refresh_token with a new one, then resend"
            conn.push(self.error("TOKEN_EXPIRED", message, reply_to))
            return
        try:
            outcome = await self.accept(conn.claims, reply_to, thread_id, content)
        except ChatRefused as exc:
            extra = {"retry_after": exc.retry_after} if exc.code == "RATE_LIMITED" else {}
            conn.push(self.error(exc.code, exc.message, reply_to, **extra))
            return
        if outcome.duplicate:
            # to this connection only and without an event_id (like a pong): the first ack and the agent's events
            # already went to every tab and the replay buffer; this one only says "got it, once"
            ack = {"type": "ack", "reply_to": reply_to, "thread_id": outcome.thread_id, "duplicate": True}
            conn.push(json.dumps({**ack, "ack_event_id": outcome.event_id}))

    def _refresh_frame(self, conn: Connection, msg: dict[str, Any], reply_to: Any) -> None:
        token = msg.get("token")
        if not isinstance(token, str):
            conn.push(self.error("BAD_TOKEN", "'token' must be a new access token", reply_to))
            return
        try:
            claims = tokens.decode(self.settings, token)
        except tokens.TokenError as exc:
            conn.push(self.error(exc.code, exc.message, reply_to))
            return
        if claims.user != conn.user:
            conn.push(self.error("BAD_TOKEN", "the new token belongs to another user", reply_to))
            return
        conn.claims = claims
        expires_in = round(claims.expires_at - time.time(), 3)
        conn.push(json.dumps({"type": "token_refreshed", "reply_to": reply_to, "expires_in": expires_in}))


def _client_id(reply_to: Any) -> str | None:
    return None if reply_to is None else str(reply_to)[:200]
