"""The agent worker: turns a chat message into agent_started, agent_thinking, tool_executing, tool_completed,
agent_completed, one ``agent_step`` apart (``agent_latency`` more before the first: the startup).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from sut import bus, metrics, web
from sut.config import Settings

STEPS = ("agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed")
Emit = Callable[[dict[str, Any]], Awaitable[None]]


def step_payload(step: str, content: str) -> dict[str, Any]:
    digest = hashlib.sha256(content.encode()).hexdigest()[:12]
    if step == "agent_thinking":
        return {"content": f"thinking about {len(content)} characters"}
    if step == "tool_executing":
        return {"tool": "lookup", "input": digest}
    if step == "tool_completed":
        return {"tool": "lookup", "output": f"found {digest}"}
    if step == "agent_completed":
        return {"content": f"Reply to {content[:200]!r} ({digest})"}
    return {}


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inflight = 0
        self.tasks: set[asyncio.Task] = set()
        metrics.gauge("agent_tasks_inflight", "agent jobs being worked on", lambda: self.inflight)

    async def run_job(self, job: dict[str, Any], emit: Emit) -> None:
        self.inflight += 1
        try:
            content = str(job.get("content", ""))
            for index, step in enumerate(STEPS):
                delay = self.settings.agent_step + (self.settings.agent_latency if index == 0 else 0.0)
                if delay > 0:
                    await asyncio.sleep(delay)
                event = {"type": step, "reply_to": job.get("reply_to"), **step_payload(step, content)}
                await emit(
                    {"job": job.get("job"), "user": job["user"], "thread_id": job.get("thread_id"), "event": event}
                )
        except Exception:  # noqa: BLE001 - the backend went away mid-job; nobody is left to tell
            return
        finally:
            self.inflight -= 1


def create_app(settings: Settings) -> FastAPI:
    agent = Agent(settings)
    redis_client = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop_task = None
        if redis_client is not None:
            loop_task = asyncio.create_task(
                bus.serve_redis_jobs(redis_client, settings.redis_prefix, agent.run_job, agent.tasks)
            )
        yield
        if loop_task:
            loop_task.cancel()
        for task in list(agent.tasks):
            task.cancel()
        await asyncio.gather(*agent.tasks, *([loop_task] if loop_task else []), return_exceptions=True)
        if redis_client is not None:
            await redis_client.aclose()

    app = FastAPI(title="sut agent", version="1", lifespan=lifespan)

    async def check_redis() -> str:
        if redis_client is None:
            return "not configured (jobs over the /bus WebSocket)"
        await redis_client.ping()
        return "ok"

    web.install(app, "agent", {"redis": check_redis}, rest_latency=0.0)

    @app.websocket("/bus")
    async def job_socket(ws: WebSocket) -> None:
        """The backend's channel when there is no Redis: jobs in, events out."""
        await ws.accept()
        send_lock = asyncio.Lock()

        async def emit(event: dict[str, Any]) -> None:
            async with send_lock:
                await ws.send_text(json.dumps(event))

        tasks: set[asyncio.Task] = set()
        try:
            while True:
                job = json.loads(await ws.receive_text())
                task = asyncio.create_task(agent.run_job(job, emit))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (WebSocketDisconnect, json.JSONDecodeError, KeyError):
            pass
        finally:
            for task in list(tasks):
                task.cancel()

    return app
