"""OtherChat's chat service: conversations, history, files, and the ``/v1/stream`` WebSocket, in memory.

Per user: an increasing ``seq`` (starting at the unix time in ms, so it keeps increasing after a restart), a bounded
replay buffer (``?after=N`` replays what came after N, then live), the message refs it accepted (a resend is
answered ``{"kind": "received", "re", "repeat": true}``, never run twice), every open connection (tabs: each event
goes to all of them; answers to a heartbeat and failures go to the asking one). The free plan gets ``rate_limit``
messages per ``rate_window`` seconds; a message on a connection whose token has expired is refused with
``STALE_TOKEN``: the client reconnects with a new token. The agent is a task per message: ``run.start``,
``run.step``, ``run.typing`` (a type the contract does not know), ``run.end``, ``step`` seconds apart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import OrderedDict, deque
from typing import Annotated, Any

from fastapi import FastAPI, File, Header, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tests.otherchat import tokens

SETTINGS: dict[str, float] = {"rate_limit": 3, "rate_window": 3.0, "step": 0.01, "leak_bytes_per_message": 0}
BUFFER_MAX = 500  # events kept per user for a resume
REFS_MAX = 1000  # accepted message refs remembered per user (resends)
HISTORY_MAX = 100  # messages kept per conversation
MAX_CONVERSATIONS = 100_000
IDLE_TTL = 120.0  # a user without a connection for this long is forgotten
UPLOAD_MAX = 10 * 1024 * 1024
HELLO_TIMEOUT = 5.0
STEPS = ("run.start", "run.step", "run.typing", "run.end")

app = FastAPI(title="otherchat chat")
LEAKED: list[bytes] = []  # --leak-bytes-per-message: what a leaking backend keeps
conversation_ids = itertools.count(1)
conversations: OrderedDict[int, dict[str, Any]] = OrderedDict()


class User:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = int(time.time() * 1000)
        self.buffer: deque[tuple[int, str]] = deque(maxlen=BUFFER_MAX)
        self.dropped = 0  # the newest seq no longer in the buffer
        self.conns: set[Conn] = set()
        self.refs: OrderedDict[str, bool] = OrderedDict()
        self.sends: deque[float] = deque()
        self.idle_since = time.monotonic()

    def publish(self, event: dict[str, Any]) -> None:
        self.seq += 1
        event["seq"] = self.seq
        text = json.dumps(event)
        if len(self.buffer) == BUFFER_MAX:
            self.dropped = self.buffer[0][0]
        self.buffer.append((self.seq, text))
        for conn in self.conns:
            conn.queue.put_nowait(text)


class Conn:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def tell(self, event: dict[str, Any]) -> None:
        self.queue.put_nowait(json.dumps(event))

    async def write_loop(self) -> None:
        try:
            while True:
                await self.ws.send_text(await self.queue.get())
        except Exception:  # noqa: BLE001 - the connection went; the reader notices too
            return


users: dict[str, User] = {}


def user_of(name: str) -> User:
    now = time.monotonic()
    for other in [u for u in users.values() if not u.conns and now - u.idle_since > IDLE_TTL]:
        del users[other.name]
    user = users.get(name)
    if user is None:
        user = users[name] = User(name)
    return user


def refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"reason": reason}, status_code=status)


def session(x_session: str) -> tuple[dict | None, JSONResponse | None]:
    claims = tokens.read(x_session, "access")
    if claims is None:
        stale = tokens.read(x_session, "access", verify_exp=False)
        return None, refuse(401, "STALE_TOKEN" if stale else "BAD_SESSION")
    return claims, None


class NewConversation(BaseModel):
    name: str


@app.get("/health")
def health() -> dict:
    return {"status": "healthy", "service": "chat", "checks": {"users": str(len(users))}}


@app.post("/v1/conversations", status_code=201, response_model=None)
def create_conversation(body: NewConversation, x_session: str = Header(default="")) -> Any:
    claims, refused = session(x_session)
    if refused:
        return refused
    cid = next(conversation_ids)
    conversations[cid] = {"owner": claims["sub"], "name": body.name, "messages": deque(maxlen=HISTORY_MAX)}
    if len(conversations) > MAX_CONVERSATIONS:
        conversations.popitem(last=False)
    return {"conversation_id": cid, "name": body.name}


@app.get("/v1/conversations", response_model=None)
def list_conversations(x_session: str = Header(default="")) -> Any:
    claims, refused = session(x_session)
    if refused:
        return refused
    mine = [(cid, c) for cid, c in conversations.items() if c["owner"] == claims["sub"]]
    return [{"conversation_id": cid, "name": c["name"]} for cid, c in mine[-100:]]


@app.get("/v1/conversations/{cid}/history", response_model=None)
def history(cid: int, x_session: str = Header(default="")) -> Any:
    claims, refused = session(x_session)
    if refused:
        return refused
    conversation = conversations.get(cid)
    if conversation is None or conversation["owner"] != claims["sub"]:
        return refuse(404, "NO_SUCH_CONVERSATION")
    return list(conversation["messages"])


@app.post("/v1/files", status_code=202, response_model=None)
async def upload_file(upload: Annotated[UploadFile, File()], x_session: str = Header(default="")) -> Any:
    claims, refused = session(x_session)
    if refused:
        return refused
    data = await upload.read()
    if len(data) > UPLOAD_MAX:
        return refuse(413, "TOO_BIG")
    file_id = f"f{next(conversation_ids)}-{int(time.time() * 1000)}"
    user = user_of(claims["sub"])

    async def processed() -> None:
        await asyncio.sleep(SETTINGS["step"])
        user.publish({"kind": "file_ready", "file_id": file_id, "bytes": len(data)})

    asyncio.get_running_loop().create_task(processed())
    return {"file_id": file_id}


async def agent(user: User, ref: str, conversation: dict[str, Any], text: str) -> None:
    for kind in STEPS:
        await asyncio.sleep(SETTINGS["step"])
        event: dict[str, Any] = {"kind": kind, "re": ref}
        if kind == "run.end":
            event["text"] = f"Reply to {text[:40]}"
            conversation["messages"].append({"from": "agent", "text": event["text"], "re": ref})
        user.publish(event)


def handle(user: User, conn: Conn, claims: dict, text: str) -> None:
    try:
        msg = json.loads(text)
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        conn.tell({"kind": "failure", "reason": "BAD_FRAME", "re": None})
        return
    kind, ref = msg.get("kind"), msg.get("ref")
    if kind == "heartbeat":
        conn.tell({"kind": "heartbeat.ok", "re": ref})
        return
    if kind != "say" or not isinstance(ref, str):
        conn.tell({"kind": "failure", "reason": "WHAT", "re": ref})
        return
    if claims["exp"] < time.time():
        conn.tell({"kind": "failure", "reason": "STALE_TOKEN", "re": ref})
        return
    if ref in user.refs:
        conn.tell({"kind": "received", "re": ref, "repeat": True})
        return
    conversation = conversations.get(msg.get("conversation"))
    if conversation is None or conversation["owner"] != user.name:
        conn.tell({"kind": "failure", "reason": "NO_SUCH_CONVERSATION", "re": ref})
        return
    now = time.monotonic()
    limit, window = int(SETTINGS["rate_limit"]), SETTINGS["rate_window"]
    if claims["plan"] == "free" and limit:
        while user.sends and now - user.sends[0] >= window:
            user.sends.popleft()
        if len(user.sends) >= limit:
            conn.tell({"kind": "failure", "reason": "SLOW_DOWN", "wait": window - (now - user.sends[0]), "re": ref})
            return
        user.sends.append(now)
    user.refs[ref] = True
    if len(user.refs) > REFS_MAX:
        user.refs.popitem(last=False)
    if SETTINGS["leak_bytes_per_message"]:
        LEAKED.append(b"x" * int(SETTINGS["leak_bytes_per_message"]))
    content = str(msg.get("text", ""))
    conversation["messages"].append({"from": "user", "text": content, "ref": ref})
    user.publish({"kind": "received", "re": ref, "conversation": msg.get("conversation")})
    asyncio.get_running_loop().create_task(agent(user, ref, conversation, content))


async def hello(ws: WebSocket) -> dict | None:
    """No token in the query: the first message must be ``{"kind": "hello", "token"}``."""
    try:
        first = json.loads(await asyncio.wait_for(ws.receive_text(), HELLO_TIMEOUT))
    except (TimeoutError, ValueError, WebSocketDisconnect):
        return None
    if not isinstance(first, dict) or first.get("kind") != "hello":
        return None
    return tokens.read(str(first.get("token", "")), "access")


@app.websocket("/v1/stream")
async def stream(ws: WebSocket, access_token: str = "", after: int | None = None) -> None:
    if access_token:
        claims = tokens.read(access_token, "access")
        if claims is None:
            await ws.close(code=4401)  # before the accept: the handshake is refused (HTTP 403)
            return
        await ws.accept()
    else:
        await ws.accept()
        claims = await hello(ws)
        if claims is None:
            await ws.close(code=4401)
            return
        await ws.send_text(json.dumps({"kind": "hello.ok"}))
    user = user_of(claims["sub"])
    conn = Conn(ws)
    conn.tell({"kind": "welcome", "server": "otherchat"})
    if after is not None:
        if user.dropped > after:
            conn.tell({"kind": "gap", "after": after})
        for seq, text in user.buffer:
            if seq > after:
                conn.queue.put_nowait(text)
    user.conns.add(conn)
    writer = asyncio.get_running_loop().create_task(conn.write_loop())
    try:
        while True:
            handle(user, conn, claims, await ws.receive_text())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        user.conns.discard(conn)
        user.idle_since = time.monotonic()
        writer.cancel()
