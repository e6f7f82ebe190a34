"""The ``/ws`` conversation: authenticate before the upgrade, then read frames while a writer task sends events."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse

from sut import tokens, web
from sut.deps import Parts
from sut.ws import Connection

CLOSE_GRACE = 10.0  # seconds a client closed for reading too slowly gets to read up to the close frame

router = APIRouter()


def ws_token(ws: WebSocket) -> str | None:
    """``Authorization: Bearer`` wins over ``?token=`` (which exists because browsers cannot set headers)."""
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return ws.query_params.get("token")


@router.websocket("/ws")
async def conversation(ws: WebSocket, parts: Parts) -> None:
    token = ws_token(ws)
    last_event_id = ws.query_params.get("last_event_id")
    if last_event_id is not None and not last_event_id.isdigit():
        body = web.error_body("BAD_MESSAGE", "last_event_id must be a whole number")
        return await ws.send_denial_response(JSONResponse(body, 400))
    try:
        if not token:
            raise tokens.TokenError("BAD_TOKEN", "missing token (Authorization: Bearer or ?token=)")
        claims = tokens.decode(parts.settings, token)
    except tokens.TokenError as exc:
        # refused before the upgrade, so a client sees a plain 401 rather than a socket that opens and closes
        return await ws.send_denial_response(JSONResponse(web.error_body(exc.code, exc.message), 401))
    await ws.accept()
    conn = Connection(ws, claims)
    parts.hub.attach(conn, int(last_event_id) if last_event_id is not None else None)
    writer = asyncio.create_task(conn.write_loop())
    try:
        while not conn.closing:  # closing: it reads too slowly; what it sends meanwhile is not handled
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is None:
                conn.push(parts.chat.error("BAD_MESSAGE", "binary frames are not accepted; send JSON text", None))
                continue
            await parts.chat.handle_frame(conn, message["text"])
    finally:
        parts.hub.detach(conn)
        if conn.closing:
            # the close frame waits behind what the client has not read yet: give it a while to get through
            await asyncio.wait([writer], timeout=CLOSE_GRACE)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
