"""Chat messages: the WebSocket frames a client sends, the rate limit, storage, the agent job and its events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from sut import faults, metrics, tokens
from sut.bus import BusUnavailable
from sut.config import Settings
from sut.ratelimit import ChatLimiter, Limiter, limit_for
from sut.storage import Store
from sut.ws import Connection, Hub

PENDING_TIMEOUT = 300.0  # a job whose agent never finished is forgotten after this long


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
        self.pending: dict[str, float] = {}  # job id -> when it was sent
        self._tasks: set[asyncio.Task] = set()
        metrics.gauge("agent_tasks_inflight", "chat jobs sent to the agent and not completed", self.inflight)

    def inflight(self) -> float:
        cutoff = time.monotonic() - PENDING_TIMEOUT
        for job in [j for j, sent in self.pending.items() if sent < cutoff]:
            del self.pending[job]
        return float(len(self.pending))

    @staticmethod
    def error(code: str, message: str, reply_to: Any, **extra: Any) -> str:
        return json.dumps({"type": "error", "code": code, "message": message, "reply_to": reply_to, **extra})

    async def accept(self, claims: tokens.Claims, reply_to: Any, thread_id: int | None, content: str) -> int:
        """Limit, store, ack (to every tab) and hand to the agent; returns the ack's event id."""
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
        self.pending[job_id] = time.monotonic()
        try:
            await self.bus.submit({**job, "content": content})
        except BusUnavailable as exc:
            self.pending.pop(job_id, None)
            # after the ack on purpose: the ack must precede the agent's events, so it goes first
            self.hub.publish(
                claims.user, {"type": "error", "code": "AGENT_UNAVAILABLE", "message": str(exc), "reply_to": reply_to}
            )
        return event_id

    async def on_agent_event(self, message: dict[str, Any]) -> None:
        event = message.get("event") or {}
        user = message.get("user")
        if not user or not event.get("type"):
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
            await self.accept(conn.claims, reply_to, thread_id, content)
        except ChatRefused as exc:
            extra = {"retry_after": exc.retry_after} if exc.code == "RATE_LIMITED" else {}
            conn.push(self.error(exc.code, exc.message, reply_to, **extra))

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
