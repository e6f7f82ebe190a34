"""The agent worker: turns a chat message into agent_started, agent_thinking, tool_executing, tool_completed,
agent_completed, one ``agent_step`` apart (``agent_latency`` more before the first: the startup).

With ``agent_tokens`` > 0 the answer is streamed before agent_completed as that many ``agent_token`` events
(``seq`` 0, 1, ... and ``text``), ``agent_token_interval`` apart give or take ``agent_token_jitter``; the
``stall_tokens_every`` fault holds the stream for ``stall_for`` after every N tokens, ``drop_token_every`` leaves
one out and ``repeat_token_every`` sends one twice. agent_completed then says how many tokens there were
(``tokens``), so a client can tell a stream that lost its tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
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


def fault_turn(every: int, seq: int) -> bool:
    """A token fault's turn (sut/faults.py): after every ``every`` tokens, i.e. seq N, 2N, ...; 0 = off."""
    return every > 0 and seq > 0 and seq % every == 0


def token_texts(content: str, count: int) -> list[str]:
    """``count`` token texts of the reply: words of it, repeated as needed (the content is the user's)."""
    words = f"Reply to {content[:200]}".split() or ["Reply"]
    return [words[i % len(words)] + " " for i in range(count)]


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inflight = 0
        self.tasks: set[asyncio.Task] = set()
        metrics.gauge("agent_tasks_inflight", "agent jobs being worked on", lambda: self.inflight)

    async def run_job(self, job: dict[str, Any], emit: Emit) -> None:
        metrics.AGENT_JOBS.inc()
        self.inflight += 1
        try:
            content = str(job.get("content", ""))
            envelope = {"job": job.get("job"), "user": job["user"], "thread_id": job.get("thread_id")}
            for index, step in enumerate(STEPS):
                if step == "agent_completed" and self.settings.agent_tokens > 0:
                    await self.stream(job, content, envelope, emit)
                delay = self.settings.agent_step + (self.settings.agent_latency if index == 0 else 0.0)
                if delay > 0:
                    await asyncio.sleep(delay)
                event = {"type": step, "reply_to": job.get("reply_to"), **step_payload(step, content)}
                if step == "agent_completed" and self.settings.agent_tokens > 0:
                    event["tokens"] = self.settings.agent_tokens
                await emit({**envelope, "event": event})
        except Exception:  # noqa: BLE001 - the backend went away mid-job; nobody is left to tell
            return
        finally:
            self.inflight -= 1

    async def stream(self, job: dict[str, Any], content: str, envelope: dict[str, Any], emit: Emit) -> None:
        """The answer as ``agent_tokens`` token events, paced like a model's output (see the module's doc)."""
        s = self.settings
        words = token_texts(content, s.agent_tokens)
        for seq, text in enumerate(words):
            delay = s.agent_token_interval + random.uniform(-s.agent_token_jitter, s.agent_token_jitter)
            if fault_turn(s.stall_tokens_every, seq):
                delay += s.stall_for  # the fault: a model server that stutters every N tokens
            await asyncio.sleep(max(delay, 0.0))
            if fault_turn(s.drop_token_every, seq):
                continue  # the fault: a token lost on its way (a lossy bus, a dropped chunk)
            event = {"type": "agent_token", "reply_to": job.get("reply_to"), "seq": seq, "text": text}
            await emit({**envelope, "event": event})
            if fault_turn(s.repeat_token_every, seq):
                await emit({**envelope, "event": dict(event)})  # the fault: the same token delivered twice


def create_app(settings: Settings) -> FastAPI:
    agent = Agent(settings)
    redis_client = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=bus.REDIS_COMMAND_TIMEOUT
        )

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
