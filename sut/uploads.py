"""Uploads: size-limited before the body is parsed, hashed (never stored), then an ``upload_processed`` event."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from sut import metrics, web
from sut.deps import ERRORS, Backend, ErrorBody, Parts, User

UPLOAD_PATH = "/api/uploads"
UPLOAD_OVERHEAD = 64 * 1024  # multipart headers and boundaries on top of the file itself
READ_CHUNK = 1024 * 1024
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

router = APIRouter()


class UploadAccepted(BaseModel):
    upload_id: str
    size: int


def safe_filename(name: str | None) -> str:
    """For display only: the upload's name is never used as a path."""
    cleaned = SAFE_NAME.sub("_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return cleaned[:100] or "upload"


def hash_file(fileobj: Any, limit: int) -> tuple[int, str]:
    """Size and sha256 of an uploaded file, reading at most limit + 1 bytes."""
    digest = hashlib.sha256()
    size = 0
    while size <= limit:
        chunk = fileobj.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def too_large(max_bytes: int) -> web.ApiError:
    return web.ApiError(413, "TOO_LARGE", f"upload above the limit of {max_bytes} bytes")


class BodyTooLarge(Exception):
    """Raised into the app's body parser when a body without Content-Length passes the limit."""


class UploadLimit:
    """413 before the body is parsed: by Content-Length, and by counting bytes of a chunked body.

    A chunked body is cut by raising from ``receive``; FastAPI turns any error of its body parser into
    ``400 There was an error parsing the body``, so the app's answer is swallowed and the 413 sent in its place.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_body = max_bytes + UPLOAD_OVERHEAD

    async def refuse(self, scope: Any, receive: Any, send: Any) -> None:
        error = too_large(self.max_bytes)
        await JSONResponse(web.error_body(error.code, error.message), error.status)(scope, receive, send)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != UPLOAD_PATH:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            return await self.refuse(scope, receive, send)
        seen = 0
        cut = False
        started = False

        async def counting_receive() -> Any:
            nonlocal seen, cut
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                cut = True
                raise BodyTooLarge(f"body above {self.max_body} bytes")
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if cut:
                return  # the app's answer to a body we cut off: the 413 below replaces it
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await self.refuse(scope, receive, send)


@router.post(
    UPLOAD_PATH,
    status_code=202,
    response_model=UploadAccepted,
    responses={**ERRORS, 413: {"model": ErrorBody, "description": "TOO_LARGE"}},
    tags=["uploads"],
)
async def upload(file: Annotated[UploadFile, File()], claims: User, parts: Parts) -> Any:
    """Accepted at once; an ``upload_processed`` event follows on every connection of the user."""
    limit = parts.settings.upload_max_bytes
    size, sha256 = await asyncio.to_thread(hash_file, file.file, limit)
    if size > limit:
        raise too_large(limit)
    upload_id = uuid.uuid4().hex
    metrics.UPLOADS.inc()
    parts.spawn(process_upload(parts, claims.user, upload_id, safe_filename(file.filename), size, sha256))
    return UploadAccepted(upload_id=upload_id, size=size)


async def process_upload(parts: Backend, user: str, upload_id: str, filename: str, size: int, sha256: str) -> None:
    await asyncio.sleep(parts.settings.agent_step)
    try:
        await asyncio.to_thread(parts.store.add_upload, upload_id, user, filename, size, sha256)
    except SQLAlchemyError as exc:
        parts.hub.publish(user, {"type": "upload_failed", "upload_id": upload_id, "message": str(exc)[:200]})
        return
    event = {"type": "upload_processed", "upload_id": upload_id, "size": size, "sha256": sha256}
    parts.hub.publish(user, {**event, "filename": filename})
