"""The backend service: REST threads, messages and uploads, and the /ws conversation (see sut/CONTRACT.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Path, Query, Request, UploadFile, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from sut import metrics, tokens, web
from sut.bus import RedisBus, SocketBus
from sut.chat import ChatRefused, ChatService
from sut.config import Settings
from sut.ratelimit import MemoryLimiter, RedisLimiter
from sut.storage import Store
from sut.ws import Connection, Hub

MAX_THREAD_ID = 2**31 - 1
UPLOAD_OVERHEAD = 64 * 1024  # multipart headers and boundaries on top of the file itself
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


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
    event_id: int


class UploadAccepted(BaseModel):
    upload_id: str
    size: int


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "BAD_TOKEN or TOKEN_EXPIRED"},
    503: {"model": ErrorBody, "description": "DB_POOL_EXHAUSTED or DATABASE_UNAVAILABLE"},
}


def safe_filename(name: str | None) -> str:
    """For display only: the upload's name is never used as a path."""
    cleaned = SAFE_NAME.sub("_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return cleaned[:100] or "upload"


def hash_file(fileobj: Any, limit: int) -> tuple[int, str]:
    """Size and sha256 of an uploaded file, reading at most limit + 1 bytes."""
    digest = hashlib.sha256()
    size = 0
    while size <= limit:
        chunk = fileobj.read(min(1024 * 1024, limit + 1 - size))
        if not chunk:
            break
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


class UploadLimit:
    """413 before the body is parsed: by Content-Length, and by counting bytes of a chunked body."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_body = max_bytes + UPLOAD_OVERHEAD

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/uploads":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            response = JSONResponse(
                web.error_body("TOO_LARGE", f"upload above the limit of {self.max_bytes} bytes"), 413
            )
            return await response(scope, receive, send)
        seen = 0

        async def counting_receive() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise web.ApiError(413, "TOO_LARGE", f"upload above the limit of {self.max_bytes} bytes")
            return message

        return await self.app(scope, counting_receive, send)


BEARER = HTTPBearer(auto_error=False)


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> tokens.Claims:
    """The caller of a REST endpoint, from ``Authorization: Bearer``; 401 BAD_TOKEN / TOKEN_EXPIRED otherwise."""
    settings: Settings = request.app.state.settings
    claims = web.bearer_claims(settings, credentials)
    if settings.leak_pool:
        await asyncio.to_thread(request.app.state.store.leak_connection)
    return claims


User = Annotated[tokens.Claims, Depends(current_user)]


def create_app(settings: Settings) -> FastAPI:
    store = Store(settings, "backend")
    metrics.pool_gauges(store)
    hub = Hub(settings)
    redis_client = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        limiter: Any = RedisLimiter(redis_client, settings.redis_prefix)
        agent_bus: Any = RedisBus(redis_client, settings.redis_prefix)
    else:
        limiter = MemoryLimiter()
        agent_bus = SocketBus(settings.agent_url)
    chat = ChatService(settings, store, hub, limiter, agent_bus)
    background: set[asyncio.Task] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(store.create_schema, ["threads", "messages", "uploads"])
        await agent_bus.start(chat.on_agent_event)
        spawn(hub.sweep_loop())
        yield
        await agent_bus.close()
        for task in list(background):
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if redis_client is not None:
            await redis_client.aclose()
        await asyncio.to_thread(store.close)

    app = FastAPI(
        title="sut backend",
        version="1",
        description="Threads, messages, uploads and the /ws conversation of the reference chat platform "
        "(see sut/CONTRACT.md for the WebSocket messages).",
        lifespan=lifespan,
    )

    async def check_database() -> str:
        stats = store.pool_stats()
        if stats["checked_out"] >= stats["capacity"]:
            raise RuntimeError(f"connection pool exhausted ({int(stats['checked_out'])} checked out)")
        await asyncio.to_thread(store.ping)
        return f"ok ({store.kind})"

    async def check_redis() -> str:
        if redis_client is None:
            return "not configured (in-memory rate limits)"
        await redis_client.ping()
        return "ok"

    checks = {"database": check_database, "redis": check_redis, "agent": agent_bus.check}
    app.state.settings = settings
    app.state.store = store
    web.install(app, "backend", checks, settings.rest_latency)
    app.add_middleware(UploadLimit, max_bytes=settings.upload_max_bytes)

    async def owned_thread(claims: tokens.Claims, thread_id: int) -> None:
        if await asyncio.to_thread(store.owned_thread, claims.user, thread_id) is None:
            raise web.ApiError(404, "UNKNOWN_THREAD", f"no thread {thread_id} of yours")

    @app.post("/api/threads", status_code=201, response_model=ThreadOut, responses=ERRORS, tags=["threads"])
    async def create_thread(body: ThreadIn, claims: User) -> Any:
        return await asyncio.to_thread(store.create_thread, claims.user, body.title)

    @app.get("/api/threads", response_model=list[ThreadOut], responses=ERRORS, tags=["threads"])
    async def list_threads(claims: User, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        """The caller's threads, newest first."""
        return await asyncio.to_thread(store.list_threads, claims.user, limit)

    @app.get("/api/threads/{thread_id}/messages", response_model=list[MessageOut], responses=ERRORS, tags=["threads"])
    async def thread_messages(
        thread_id: Annotated[int, Path(ge=1, le=MAX_THREAD_ID)],
        claims: User,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Any:
        """The thread's latest ``limit`` messages, oldest first."""
        await owned_thread(claims, thread_id)
        rows = await asyncio.to_thread(store.messages, thread_id, limit)
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

    @app.post(
        "/api/threads/{thread_id}/messages",
        status_code=202,
        response_model=Accepted,
        responses={**ERRORS, 429: {"model": ErrorBody, "description": "RATE_LIMITED, with Retry-After"}},
        tags=["threads"],
    )
    async def post_message(
        body: MessageIn,
        thread_id: Annotated[int, Path(ge=1, le=MAX_THREAD_ID)],
        claims: User,
    ) -> Any:
        """A chat message over REST: same limit and events as over /ws (the events arrive on the WebSocket)."""
        try:
            event_id = await chat.accept(claims, body.id, thread_id, body.content)
        except ChatRefused as exc:
            headers = {"Retry-After": exc.retry_after_header} if exc.code == "RATE_LIMITED" else {}
            raise web.ApiError(exc.status, exc.code, exc.message, headers) from None
        return Accepted(thread_id=thread_id, reply_to=body.id, event_id=event_id)

    @app.post(
        "/api/uploads",
        status_code=202,
        response_model=UploadAccepted,
        responses={**ERRORS, 413: {"model": ErrorBody, "description": "TOO_LARGE"}},
        tags=["uploads"],
    )
    async def upload(file: Annotated[UploadFile, File()], claims: User) -> Any:
        """Accepted at once; an ``upload_processed`` event follows on every connection of the user."""
        size, sha256 = await asyncio.to_thread(hash_file, file.file, settings.upload_max_bytes)
        if size > settings.upload_max_bytes:
            raise web.ApiError(413, "TOO_LARGE", f"upload above the limit of {settings.upload_max_bytes} bytes")
        upload_id = uuid.uuid4().hex
        metrics.UPLOADS.inc()
        spawn(process_upload(claims.user, upload_id, safe_filename(file.filename), size, sha256))
        return UploadAccepted(upload_id=upload_id, size=size)

    async def process_upload(user: str, upload_id: str, filename: str, size: int, sha256: str) -> None:
        await asyncio.sleep(settings.agent_step)
        try:
            await asyncio.to_thread(store.add_upload, upload_id, user, filename, size, sha256)
        except SQLAlchemyError as exc:
            hub.publish(user, {"type": "upload_failed", "upload_id": upload_id, "message": str(exc)[:200]})
            return
        event = {"type": "upload_processed", "upload_id": upload_id, "size": size, "sha256": sha256}
        hub.publish(user, {**event, "filename": filename})

    @app.websocket("/ws")
    async def conversation(ws: WebSocket) -> None:
        token = ws.query_params.get("token")
        header = ws.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
        last_event_id = ws.query_params.get("last_event_id")
        if last_event_id is not None and not last_event_id.isdigit():
            body = web.error_body("BAD_MESSAGE", "last_event_id must be a whole number")
            return await ws.send_denial_response(JSONResponse(body, 400))
        try:
            if not token:
                raise tokens.TokenError("BAD_TOKEN", "missing token (Authorization: Bearer or ?token=)")
            claims = tokens.decode(settings, token)
        except tokens.TokenError as exc:
            return await ws.send_denial_response(JSONResponse(web.error_body(exc.code, exc.message), 401))
        await ws.accept()
        conn = Connection(ws, claims)
        hub.attach(conn, int(last_event_id) if last_event_id is not None else None)
        writer = asyncio.create_task(conn.write_loop())
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is None:
                    conn.push(chat.error("BAD_MESSAGE", "binary frames are not accepted; send JSON text", None))
                    continue
                await chat.handle_frame(conn, message["text"])
        finally:
            hub.detach(conn)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    return app
