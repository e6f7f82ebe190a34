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

QUEUE_MAX = 1000  # events waiting for one connection (beyond its replay); above it the client is too slow
CLOSE_TOO_SLOW = 1013  # "try again later": the client may reconnect at once and resume
TOO_SLOW_REASON = "client too slow: reconnect with last_event_id"  # a close reason fits 123 bytes
SWEEP_INTERVAL = 30.0

REPLY_ENDS = ("agent_completed", "error")  # the events after which a reply has nothing more
Watched = tuple[int, Any, str]  # (event_id, type, JSON text) of an event a reply stream waits for

_conn_ids = itertools.count(1)
_CLOSE = object()  # queued in place of the events a too-slow client will not get: the writer closes with 1013


@dataclass(eq=False)
class Connection:
    """One WebSocket: frames are queued by ``push`` and sent, one at a time, by ``write_loop``."""

    ws: WebSocket
    claims: Claims
    limit: int = QUEUE_MAX
    id: int = field(default_factory=lambda: next(_conn_ids))
    # unbounded on purpose: push() enforces ``limit``, which a resume's replay raises (see replay())
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    closed: bool = False
    closing: bool = False  # a close for being too slow is under way

    @property
    def user(self) -> str:
        return self.claims.user

    def push(self, text: str) -> bool:
        """Queue a frame; False when the connection is closed or closing.

        A full queue means the client reads more slowly than its events come: it is closed with 1013 rather than
        buffered without bound or, worse, sent a stream with silent holes in it. It can resume with last_event_id.
        """
        if self.closed or self.closing:
            return False
        if self.queue.qsize() >= self.limit:
            self.close_too_slow()
            return False
        self.queue.put_nowait(text)
        return True

    def replay(self, text: str) -> None:
        """Queue a replayed frame: it does not count against the limit (a resume may replay a whole buffer)."""
        self.queue.put_nowait(text)
        self.limit += 1

    def close_too_slow(self) -> None:
        self.closing = True
        metrics.WS_CLOSED_SLOW_CONSUMER.inc()
        # what is queued is dropped (the user's replay buffer still has it) and frees its memory now
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSE)

    async def write_loop(self) -> None:
        """Send queued frames until None arrives, the close for a slow client is sent, or the socket fails.

        The close goes through here too, so it follows the frame being sent rather than racing it.
        """
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if item is _CLOSE:
                await self.ws.close(CLOSE_TOO_SLOW, TOO_SLOW_REASON)
                return
            await self.ws.send_text(item)


@dataclass(eq=False)
class UserState:
    next_id: int
    connections: set[Connection] = field(default_factory=set)
    buffer: deque[tuple[int, str, str | None]] = field(default_factory=deque)  # (event_id, text, reply key)
    buffer_bytes: int = 0
    evicted_through: int = 0  # highest event id this state cannot replay: pushed out, or from before it existed
    idle_since: float = field(default_factory=time.monotonic)


def reply_key(reply_to: Any) -> str | None:
    """The key a reply's events are watched and replayed by: its client id as the backend keeps it (sut/chat.py)."""
    return None if reply_to is None else str(reply_to)[:200]


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.users: dict[str, UserState] = {}
        self.leaked: list[Connection] = []  # the leak_connections fault keeps closed connections here
        self.buffer_bytes = 0
        self.active = 0
        # Server-Sent Events streams (sut/sse.py), each watching one reply of one user: (user, reply key) -> queues
        self.watchers: dict[tuple[str, str], list[asyncio.Queue[Watched]]] = {}
        metrics.gauge("ws_connections_active", "WebSocket connections the backend holds", self.connection_count)
        metrics.gauge("ws_replay_buffer_bytes", "bytes held in all users' replay buffers", lambda: self.buffer_bytes)
        metrics.gauge("ws_users", "users with a replay state in memory", lambda: len(self.users))
        metrics.gauge("sse_streams_active", "Server-Sent Events streams open (one per reply streamed)", self.watching)

    def connection_count(self) -> float:
        return float(self.active + len(self.leaked))

    def _state(self, user: str) -> UserState:
        state = self.users.get(user)
        if state is None:
            first = int(time.time() * 1000)
            # a fresh state (the backend restarted, or forgot an idle user) cannot replay ids from before it: a
            # resume from one of those gets replay_truncated, so the client knows to resend what is incomplete
            state = self.users[user] = UserState(next_id=first, evicted_through=first - 1)
        return state

    def attach(self, conn: Connection, last_event_id: int | None) -> None:
        """Register ``conn``; with ``last_event_id`` first queue the buffered events after it (no gap, no repeat)."""
        state = self._state(conn.user)
        if last_event_id is not None and not self.settings.drop_replay:  # the fault: nothing replayed, no notice
            notice = self.truncation(conn.user, last_event_id)
            if notice is not None:
                conn.replay(json.dumps(notice))
            for event_id, text, _ in state.buffer:
                if event_id > last_event_id:
                    conn.replay(text)
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
        key = reply_key(event.get("reply_to"))
        if not self.settings.drop_replay:  # the fault: no replay buffer at all
            state.buffer.append((event_id, text, key))
            state.buffer_bytes += len(text)
            self.buffer_bytes += len(text)
        while state.buffer and (
            len(state.buffer) > self.settings.replay_max_events or state.buffer_bytes > self.settings.replay_max_bytes
        ):
            old_id, old_text, _ = state.buffer.popleft()
            state.buffer_bytes -= len(old_text)
            self.buffer_bytes -= len(old_text)
            state.evicted_through = old_id
        for conn in list(state.connections):
            self._deliver(conn, text)
        if self.settings.cross_talk:
            self._cross_talk(user, text)
        if self.watchers and key is not None:
            self._to_watchers(user, key, (event_id, event.get("type"), text))
        return event_id

    # --- Server-Sent Events: one reply's events to the stream that watches it (sut/sse.py) ---

    def watching(self) -> float:
        return float(sum(len(queues) for queues in self.watchers.values()))

    def watch(self, user: str, key: str) -> asyncio.Queue[Watched]:
        """A queue that gets every event of the user's reply ``key`` published from now on (before the send, so
        nothing of the reply is missed). Unwatched when the reply ends or by ``unwatch``, whichever comes first."""
        queue: asyncio.Queue[Watched] = asyncio.Queue()
        self.watchers.setdefault((user, key), []).append(queue)
        return queue

    def unwatch(self, user: str, key: str, queue: asyncio.Queue[Watched]) -> None:
        queues = self.watchers.get((user, key))
        if queues is not None and queue in queues:
            queues.remove(queue)
            if not queues:
                del self.watchers[(user, key)]

    def _to_watchers(self, user: str, key: str, item: Watched) -> None:
        queues = self.watchers.get((user, key))
        if not queues:
            return
        for queue in queues:
            queue.put_nowait(item)
        if item[1] in REPLY_ENDS:
            # the reply is over: a stream that never started reading (its client left at once) must not stay here
            del self.watchers[(user, key)]

    def replay_reply(self, user: str, key: str, after: int) -> list[Watched]:
        """The buffered events of the user's reply ``key`` with ids above ``after`` (a resumed stream's replay)."""
        state = self.users.get(user)
        if state is None:
            return []
        out = []
        for event_id, text, event_key in state.buffer:
            if event_id > after and event_key == key:
                out.append((event_id, json.loads(text).get("type"), text))
        return out

    def truncation(self, user: str, last_event_id: int) -> dict[str, Any] | None:
        """``replay_truncated`` for a resume after ``last_event_id`` when events after it may be gone; else None."""
        if self.settings.drop_replay:  # the fault says nothing either
            return None
        state = self._state(user)
        if last_event_id >= state.evicted_through:
            return None
        oldest = state.buffer[0][0] if state.buffer else state.next_id
        return {"type": "replay_truncated", "last_event_id": last_event_id, "oldest_event_id": oldest}

    def _deliver(self, conn: Connection, text: str) -> None:
        if conn.push(text):
            metrics.EVENTS_SENT.inc()

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
