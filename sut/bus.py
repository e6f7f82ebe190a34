"""The backend <-> agent channel. The agent is its own OS process in both modes.

- With Redis: jobs go on a list (``<prefix>agent:jobs``, RPUSH / BLPOP, so several agents share the work) and the
  agent publishes events on the channel ``<prefix>agent:events`` (pub/sub) that the backend subscribes to.
- Without Redis: the agent serves a WebSocket at ``/bus``; the backend connects to it, sends jobs and reads events
  on the same socket (and reconnects if the agent restarts).

A job: ``{"job", "kind": "chat", "user", "reply_to", "thread_id", "content"}``. An event:
``{"job", "user", "thread_id", "event": {"type": ..., "reply_to": ..., ...}}``; the backend adds the event id.

The backend's side calls ``on_lost(reason)`` when the channel it had goes away (the Redis subscription fails, the
socket to the agent drops): the events of the jobs in flight are gone with it (pub/sub keeps nothing for a
subscriber that is away; the agent cancels a socket's jobs when it closes), so the owner fails them at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.client import connect

log = logging.getLogger("sut.bus")

RECONNECT_DELAY = 0.5
BLPOP_TIMEOUT = 1  # seconds; how soon the agent notices it should stop
# A subscription only reads, so a connection that died in silence (packets dropped, or a reset that reached only the
# far side) looks idle for ever: ping it when it has been quiet this long, and give it up when the pong is this late.
LISTEN_TICK = 0.5
PING_IDLE = 2.0
PONG_TIMEOUT = 3.0
REDIS_COMMAND_TIMEOUT = 5.0  # socket_timeout of the sut's Redis clients: a dropped packet is an error, not a hang


class SubscriptionDead(Exception):
    """The subscription's connection stopped answering, or a command on a sibling connection failed."""


EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
LostHandler = Callable[[str], None]


class BusUnavailable(Exception):
    """The agent cannot be reached right now."""


def _tell(on_lost: LostHandler | None, reason: str) -> None:
    if on_lost is None:
        return
    try:
        on_lost(reason)
    except Exception:  # noqa: BLE001 - a broken owner must not stop the bus from reconnecting
        log.exception("on_lost(%r) failed", reason)


def jobs_key(prefix: str) -> str:
    return f"{prefix}agent:jobs"


def events_channel(prefix: str) -> str:
    return f"{prefix}agent:events"


class RedisBus:
    """Backend side, through Redis."""

    kind = "redis"

    def __init__(self, client, prefix: str) -> None:  # noqa: ANN001 - a redis.asyncio.Redis
        self.client = client
        self.prefix = prefix
        self._task: asyncio.Task | None = None
        self.subscribed = asyncio.Event()
        # set by a failed submit: the subscription went through the same network, so it is suspect too
        self._suspect = asyncio.Event()

    async def start(self, on_event: EventHandler, on_lost: LostHandler | None = None) -> None:
        # no waiting here: with Redis down the backend still starts, and /health names redis as failing
        self._task = asyncio.create_task(self._listen(on_event, on_lost))

    async def _listen(self, on_event: EventHandler, on_lost: LostHandler | None) -> None:
        warned = False
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(events_channel(self.prefix))
                self._suspect.clear()
                self.subscribed.set()
                if warned:
                    log.warning("event subscription restored")
                    warned = False
                await self._read(pubsub, on_event)
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # noqa: BLE001 - Redis went away: say so, retry
                had = self.subscribed.is_set()
                self.subscribed.clear()
                if had:
                    _tell(
                        on_lost, f"agent connection lost: Redis event subscription failed ({type(exc).__name__}: {exc})"
                    )
                if not warned:  # once per outage, not every retry: a day-long outage must not fill the disk
                    log.warning("event subscription lost (%s); retrying every %s s", exc, RECONNECT_DELAY)
                    warned = True
                await pubsub.aclose()
                await asyncio.sleep(RECONNECT_DELAY)

    async def _read(self, pubsub, on_event: EventHandler) -> None:  # noqa: ANN001 - a redis.asyncio PubSub
        loop = asyncio.get_running_loop()
        heard = loop.time()
        ping_sent: float | None = None
        while True:
            message = await pubsub.get_message(timeout=LISTEN_TICK)
            now = loop.time()
            if self._suspect.is_set():
                raise SubscriptionDead("a command on another connection to Redis failed")
            if message is not None:
                heard, ping_sent = now, None
                if message.get("type") == "message":
                    await on_event(json.loads(message["data"]))
                continue
            if ping_sent is not None and now - ping_sent > PONG_TIMEOUT:
                raise SubscriptionDead(f"no pong within {PONG_TIMEOUT:g} s")
            if ping_sent is None and now - heard > PING_IDLE:
                await pubsub.ping()
                ping_sent = now

    async def submit(self, job: dict[str, Any]) -> None:
        if not self.subscribed.is_set():
            raise BusUnavailable("not subscribed to agent events (Redis down?)")
        try:
            await self.client.rpush(jobs_key(self.prefix), json.dumps(job))
        except Exception as exc:  # noqa: BLE001
            self._suspect.set()
            raise BusUnavailable(f"redis: {exc}") from None

    async def check(self) -> str:
        if not self.subscribed.is_set():
            raise BusUnavailable("not subscribed to agent events")
        return "ok (redis)"

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class SocketBus:
    """Backend side, over a WebSocket to the agent's /bus (no Redis)."""

    kind = "websocket"

    def __init__(self, agent_url: str) -> None:
        self.url = agent_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/") + "/bus"
        self._ws: Any = None
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self.last_error = "not connected yet"

    async def start(self, on_event: EventHandler, on_lost: LostHandler | None = None) -> None:
        self._task = asyncio.create_task(self._run(on_event, on_lost))

    async def _run(self, on_event: EventHandler, on_lost: LostHandler | None) -> None:
        while True:
            had = False
            try:
                async with connect(self.url, max_size=2**24, ping_interval=20, ping_timeout=60) as ws:
                    self._ws = ws
                    had = True
                    self.connected.set()
                    async for frame in ws:
                        await on_event(json.loads(frame))
                self.last_error = "the agent closed the connection"
            except asyncio.CancelledError:
                raise  # shutting down: nobody is left to tell
            except (OSError, websockets.WebSocketException, json.JSONDecodeError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
                self.connected.clear()
            if had:  # a connection that never opened carried no jobs
                _tell(on_lost, f"agent connection lost: {self.last_error}")
            await asyncio.sleep(RECONNECT_DELAY)

    async def submit(self, job: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise BusUnavailable(f"agent at {self.url} not connected ({self.last_error})")
        try:
            await ws.send(json.dumps(job))
        except websockets.WebSocketException as exc:
            raise BusUnavailable(f"agent connection lost: {exc}") from None

    async def check(self) -> str:
        if self._ws is None:
            raise BusUnavailable(f"agent at {self.url} not connected ({self.last_error})")
        return "ok (websocket)"

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# --- the agent's side ---

JobHandler = Callable[[dict[str, Any], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


async def serve_redis_jobs(client, prefix: str, handle: JobHandler, tasks: set[asyncio.Task]) -> None:  # noqa: ANN001
    """Agent: take jobs off the Redis list and publish their events, until cancelled."""
    channel = events_channel(prefix)

    async def emit(event: dict[str, Any]) -> None:
        await client.publish(channel, json.dumps(event))

    warned = False
    while True:
        try:
            item = await client.blpop([jobs_key(prefix)], timeout=BLPOP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis away: wait and retry, /health says degraded meanwhile
            if not warned:
                log.warning("taking jobs failed (%s); retrying every %s s", exc, RECONNECT_DELAY)
                warned = True
            await asyncio.sleep(RECONNECT_DELAY)
            continue
        if warned:
            log.warning("taking jobs again")
            warned = False
        if item is None:
            continue
        task = asyncio.create_task(handle(json.loads(item[1]), emit))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
