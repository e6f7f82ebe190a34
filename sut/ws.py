"""The backend's WebSocket side: who is connected, per-user event ids, fan-out to tabs, the replay buffer.

Every event for a user gets the next ``event_id`` of that user, is kept in the user's bounded replay buffer and
queued to each of the user's connections. Each connection has its own queue and writer task, so one slow tab
cannot stall the others. Ids of a fresh user state start at the current unix time in milliseconds, so they keep
increasing even after an idle user's state was dropped or the backend restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from sut import metrics
from sut.config import Settings
from sut.tokens import Claims

QUEUE_MAX = 1000  # events waiting for one connection; above it the client is too slow and is closed
CLOSE_TOO_SLOW = 1013  # "try again later"
SWEEP_INTERVAL = 30.0

_conn_ids = itertools.count(1)


@dataclass(eq=False)
class Connection:
    ws: WebSocket
    claims: Claims
    id: int = field(default_factory=lambda: next(_conn_ids))
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    closed: bool = False
    closing: bool = False  # a close for being too slow is under way

    @property
    def user(self) -> str:
        return self.claims.user

    def push(self, text: str) -> bool:
        """Queue a frame; False when the connection is closed or its queue is full."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def write_loop(self) -> None:
        """Send queued frames until None arrives or the socket fails."""
        while True:
            text = await self.queue.get()
            if text is None:
                return
            await self.ws.send_text(text)


@dataclass(eq=False)
class UserState:
    next_id: int
    connections: set[Connection] = field(default_factory=set)
    buffer: deque[tuple[int, str]] = field(default_factory=deque)
    buffer_bytes: int = 0
    evicted_through: int = 0  # highest event id pushed out of the buffer
    idle_since: float = field(default_factory=time.monotonic)


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.users: dict[str, UserState] = {}
        self.leaked: list[Connection] = []  # the leak_connections fault keeps closed connections here
        self._closing: set[asyncio.Task] = set()
        self.buffer_bytes = 0
        self.active = 0
        metrics.gauge("ws_connections_active", "WebSocket connections the backend holds", self.connection_count)
        metrics.gauge("ws_replay_buffer_bytes", "bytes held in all users' replay buffers", lambda: self.buffer_bytes)
        metrics.gauge("ws_users", "users with a replay state in memory", lambda: len(self.users))

    def connection_count(self) -> float:
        return float(self.active + len(self.leaked))

    def _state(self, user: str) -> UserState:
        state = self.users.get(user)
        if state is None:
            state = self.users[user] = UserState(next_id=int(time.time() * 1000))
        return state

    def attach(self, conn: Connection, last_event_id: int | None) -> None:
        """Register ``conn``; with ``last_event_id`` first queue the buffered events after it (no gap, no repeat)."""
        state = self._state(conn.user)
        if last_event_id is not None:
            if last_event_id < state.evicted_through:
                oldest = state.buffer[0][0] if state.buffer else state.next_id
                notice = {"type": "replay_truncated", "last_event_id": last_event_id, "oldest_event_id": oldest}
                conn.push(json.dumps(notice))
            for event_id, text in state.buffer:
                if event_id > last_event_id:
                    conn.push(text)
        # no await between the replay above and this line: nothing published in between is missed
        state.connections.add(conn)
        self.active += 1

    def detach(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.active -= 1
        state = self.users.get(conn.user)
        if self.settings.leak_connections:
            self.leaked.append(conn)  # the fault: state of a closed connection kept, and still counted
            return
        if state is not None:
            state.connections.discard(conn)
            if not state.connections:
                state.idle_since = time.monotonic()

    def publish(self, user: str, event: dict[str, Any]) -> int:
        """Give ``event`` the user's next event id, buffer it and queue it to every connection of the user."""
        state = self._state(user)
        event_id = state.next_id
        state.next_id += 1
        event["event_id"] = event_id
        text = json.dumps(event)
        state.buffer.append((event_id, text))
        state.buffer_bytes += len(text)
        self.buffer_bytes += len(text)
        while state.buffer and (
            len(state.buffer) > self.settings.replay_max_events or state.buffer_bytes > self.settings.replay_max_bytes
        ):
            old_id, old_text = state.buffer.popleft()
            state.buffer_bytes -= len(old_text)
            self.buffer_bytes -= len(old_text)
            state.evicted_through = old_id
        for conn in list(state.connections):
            self._deliver(conn, text)
        if self.settings.cross_talk:
            self._cross_talk(user, text)
        return event_id

    def _deliver(self, conn: Connection, text: str) -> None:
        if conn.push(text):
            metrics.EVENTS_SENT.inc()
        elif not conn.closed and not conn.closing:
            # too slow to keep up: close it rather than buffer without bound; it can resume with last_event_id
            conn.closing = True
            task = asyncio.get_running_loop().create_task(conn.ws.close(CLOSE_TOO_SLOW, "client too slow"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _cross_talk(self, user: str, text: str) -> None:
        """The cross_talk fault: the same event also goes to one other connected user."""
        others = [u for u, s in self.users.items() if u != user and any(not c.closed for c in s.connections)]
        if others:
            for conn in list(self.users[random.choice(others)].connections):
                self._deliver(conn, text)

    def sweep(self) -> None:
        """Forget users idle (no connection) for longer than replay_idle_ttl: the buffer must not be a leak."""
        cutoff = time.monotonic() - self.settings.replay_idle_ttl
        for user in [u for u, s in self.users.items() if not s.connections and s.idle_since < cutoff]:
            state = self.users.pop(user)
            self.buffer_bytes -= state.buffer_bytes

    async def sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL, max(self.settings.replay_idle_ttl, 1.0)))
            self.sweep()
