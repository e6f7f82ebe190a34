"""REST threads and their messages: create and list threads, read a thread's history, post a chat message."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from sut import tokens, web
from sut.chat import ChatRefused, ChatService
from sut.deps import ERRORS, ErrorBody, Parts, User
from sut.storage import Store

MAX_THREAD_ID = 2**31 - 1  # an INTEGER column: larger ids would be a database error, not a 404

router = APIRouter()


class ThreadIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class ThreadOut(BaseModel):
    id: int
    title: str
    created_at: float


class MessageOut(BaseModel):
    id: int
    thread_id: int
    role: str
    content: str
    reply_to: str | None
    created_at: float


class MessageIn(BaseModel):
    content: str = Field(min_length=1, max_length=ChatService.MAX_CONTENT)
    id: str | None = Field(default=None, max_length=200, description="client id, echoed as reply_to")


class Accepted(BaseModel):
    thread_id: int
    reply_to: str | None
    event_id: int = Field(description="the ack's event id (of the first send, for a resend)")
    duplicate: bool = Field(default=False, description="a resend of an id already accepted: not run again")


ThreadId = Annotated[int, Path(ge=1, le=MAX_THREAD_ID)]
Limit = Annotated[int, Query(ge=1, le=1000)]


async def owned_thread(store: Store, claims: tokens.Claims, thread_id: int) -> None:
    if await asyncio.to_thread(store.owned_thread, claims.user, thread_id) is None:
        raise web.ApiError(404, "UNKNOWN_THREAD", f"no thread {thread_id} of yours")


@router.post("/api/threads", status_code=201, response_model=ThreadOut, responses=ERRORS, tags=["threads"])
async def create_thread(body: ThreadIn, claims: User, parts: Parts) -> Any:
    return await asyncio.to_thread(parts.store.create_thread, claims.user, body.title)


@router.get("/api/threads", response_model=list[ThreadOut], responses=ERRORS, tags=["threads"])
async def list_threads(claims: User, parts: Parts, limit: Limit = 100) -> Any:
    """The caller's threads, newest first."""
    return await asyncio.to_thread(parts.store.list_threads, claims.user, limit)


@router.get("/api/threads/{thread_id}/messages", response_model=list[MessageOut], responses=ERRORS, tags=["threads"])
async def thread_messages(thread_id: ThreadId, claims: User, parts: Parts, limit: Limit = 100) -> Any:
    """The thread's latest ``limit`` messages, oldest first."""
    await owned_thread(parts.store, claims, thread_id)
    rows = await asyncio.to_thread(parts.store.messages, thread_id, limit)
    return [
        MessageOut(
            id=r.id,
            thread_id=r.thread_id,
            role=r.role,
            content=r.content,
            reply_to=r.client_id,
            created_at=r.created_at,
        )
        for r in rows
    ]


@router.post(
    "/api/threads/{thread_id}/messages",
    status_code=202,
    response_model=Accepted,
    responses={**ERRORS, 429: {"model": ErrorBody, "description": "RATE_LIMITED, with Retry-After"}},
    tags=["threads"],
)
async def post_message(body: MessageIn, thread_id: ThreadId, claims: User, parts: Parts) -> Any:
    """A chat message over REST: same limit and events as over /ws (the events arrive on the WebSocket)."""
    try:
        outcome = await parts.chat.accept(claims, body.id, thread_id, body.content)
    except ChatRefused as exc:
        headers = {"Retry-After": exc.retry_after_header} if exc.code == "RATE_LIMITED" else {}
        raise web.ApiError(exc.status, exc.code, exc.message, headers) from None
    return Accepted(
        thread_id=outcome.thread_id, reply_to=body.id, event_id=outcome.event_id, duplicate=outcome.duplicate
    )
