"""What the backend's routers share: its parts (on ``app.state.backend``), the REST caller, the error bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from sut import tokens, web
from sut.chat import ChatService
from sut.config import Settings
from sut.storage import Store
from sut.ws import Hub


@dataclass(eq=False)
class Backend:
    """The backend's long-lived parts, built once by ``create_app`` and shared by every request and socket."""

    settings: Settings
    store: Store
    hub: Hub
    chat: ChatService
    agent_bus: Any
    redis: Any = None  # redis.asyncio.Redis when redis_url is set
    tasks: set[asyncio.Task] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background; held here so it is not garbage-collected, and cancelled at shutdown."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def backend(conn: HTTPConnection) -> Backend:
    # async: FastAPI runs a plain def dependency in a worker thread. HTTPConnection, so /ws can depend on it too
    return conn.app.state.backend


Parts = Annotated[Backend, Depends(backend)]

BEARER = HTTPBearer(auto_error=False)


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> tokens.Claims:
    """The caller of a REST endpoint, from ``Authorization: Bearer``; 401 BAD_TOKEN / TOKEN_EXPIRED otherwise."""
    parts: Backend = request.app.state.backend
    claims = web.bearer_claims(parts.settings, credentials)
    if parts.settings.leak_pool:
        await asyncio.to_thread(parts.store.leak_connection)
    return claims


User = Annotated[tokens.Claims, Depends(current_user)]


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "BAD_TOKEN or TOKEN_EXPIRED"},
    503: {"model": ErrorBody, "description": "DB_POOL_EXHAUSTED or DATABASE_UNAVAILABLE"},
}
