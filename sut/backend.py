"""The backend service: REST threads, messages and uploads, and the /ws conversation (see sut/CONTRACT.md).

``create_app`` only assembles: the parts live on ``app.state.backend`` (sut/deps.py), the endpoints in their
routers (sut/threads.py, sut/uploads.py, sut/conversation.py, sut/sse.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from sut import conversation, faults, metrics, sse, threads, uploads, web
from sut.bus import REDIS_COMMAND_TIMEOUT, RedisBus, SocketBus
from sut.chat import ChatService
from sut.config import Settings
from sut.deps import Backend
from sut.ratelimit import MemoryLimiter, RedisLimiter
from sut.storage import Store
from sut.ws import Hub

TABLES = ["threads", "messages", "uploads"]


def build(settings: Settings) -> Backend:
    """The long-lived parts: storage, the connection hub, the rate limiter and the agent bus (Redis or a socket)."""
    store = Store(settings, "backend")
    metrics.pool_gauges(store)
    hub = Hub(settings)
    redis_client = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=REDIS_COMMAND_TIMEOUT
        )
        limiter: Any = RedisLimiter(redis_client, settings.redis_prefix)
        agent_bus: Any = RedisBus(redis_client, settings.redis_prefix)
    else:
        limiter = MemoryLimiter()
        agent_bus = SocketBus(settings.agent_url)
    chat = ChatService(settings, store, hub, limiter, agent_bus)
    return Backend(settings, store, hub, chat, agent_bus, redis_client)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    parts: Backend = app.state.backend
    await asyncio.to_thread(parts.store.create_schema, TABLES)
    await parts.agent_bus.start(parts.chat.on_agent_event, parts.chat.agent_lost)
    parts.spawn(parts.hub.sweep_loop())
    parts.spawn(parts.chat.dedup.sweep_loop())
    parts.spawn(parts.chat.deadline_loop())
    if parts.settings.freeze_for > 0:
        parts.spawn(faults.freeze_loop(parts.settings.freeze_for, parts.settings.freeze_every))
    yield
    await parts.agent_bus.close()
    for task in list(parts.tasks):
        task.cancel()
    await asyncio.gather(*parts.tasks, return_exceptions=True)
    if parts.redis is not None:
        await parts.redis.aclose()
    await asyncio.to_thread(parts.store.close)


def health_checks(parts: Backend) -> dict[str, web.Check]:
    async def database() -> str:
        stats = parts.store.pool_stats()
        if stats["checked_out"] >= stats["capacity"]:
            # a leaked-out pool answers a ping only after db_pool_timeout: name the cause at once instead
            raise RuntimeError(f"connection pool exhausted ({int(stats['checked_out'])} checked out)")
        await asyncio.to_thread(parts.store.ping)
        return f"ok ({parts.store.kind})"

    async def redis() -> str:
        if parts.redis is None:
            return "not configured (in-memory rate limits)"
        await parts.redis.ping()
        return "ok"

    return {"database": database, "redis": redis, "agent": parts.agent_bus.check}


def create_app(settings: Settings) -> FastAPI:
    parts = build(settings)
    app = FastAPI(
        title="sut backend",
        version="1",
        description="Threads, messages, uploads and the /ws conversation of the reference chat platform "
        "(see sut/CONTRACT.md for the WebSocket messages).",
        lifespan=lifespan,
    )
    app.state.backend = parts
    web.install(app, "backend", health_checks(parts), settings.rest_latency)
    app.add_middleware(uploads.UploadLimit, max_bytes=settings.upload_max_bytes)
    app.include_router(threads.router)
    app.include_router(uploads.router)
    app.include_router(conversation.router)
    app.include_router(sse.router)
    return app
