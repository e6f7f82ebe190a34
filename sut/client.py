"""A small blocking client of the contract (requests + websocket-client), for tests and for checking that a
platform of your own speaks the same protocol. Not for load: the Locust users in locustfiles/ are.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
import websocket

from runspec.protocol import read_sse

RECV_TIMEOUT = 10.0


class ContractError(AssertionError):
    """The server did not answer as the contract says (or not in time)."""


class Client:
    """One user: tokens from the auth service, REST and WebSocket tabs on the backend."""

    def __init__(self, auth_url: str, backend_url: str, email: str | None = None, password: str = "secret") -> None:
        self.auth_url = auth_url.rstrip("/")
        self.backend_url = backend_url.rstrip("/")
        self.email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        self.password = password
        self.session = requests.Session()
        self.tokens: dict[str, Any] = {}

    @property
    def access_token(self) -> str:
        return self.tokens["access_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def _token_call(self, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.session.post(self.auth_url + path, timeout=10, **kwargs)
        if response.status_code != 200:
            raise ContractError(f"POST {path}: {response.status_code} {response.text[:200]}")
        self.tokens = response.json()
        return self.tokens

    def login(self) -> dict[str, Any]:
        return self._token_call("/auth/login", json={"email": self.email, "password": self.password})

    def refresh(self) -> dict[str, Any]:
        return self._token_call("/auth/refresh", json={"refresh_token": self.tokens["refresh_token"]})

    def upgrade(self) -> dict[str, Any]:
        return self._token_call("/auth/upgrade", headers=self.headers)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", self.headers)
        return self.session.request(method, self.backend_url + path, timeout=30, **kwargs)

    def create_thread(self, title: str = "test") -> int:
        response = self.api("POST", "/api/threads", json={"title": title})
        if response.status_code != 201:
            raise ContractError(f"POST /api/threads: {response.status_code} {response.text[:200]}")
        return response.json()["id"]

    def stream(
        self,
        thread_id: int,
        content: str = "hello",
        msg_id: str | None = None,
        last_event_id: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """A chat message whose reply streams back as Server-Sent Events: each event's JSON, checked against its
        ``event:`` and ``id:`` lines, until the stream ends; after ``limit`` events the connection is dropped
        instead (a resend of ``msg_id`` with ``last_event_id`` then resumes it). Raises ContractError otherwise."""
        headers = dict(self.headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        body = {"content": content, **({"id": msg_id} if msg_id is not None else {})}
        path = f"/api/threads/{thread_id}/messages/stream"
        events: list[dict[str, Any]] = []
        with self.session.post(
            self.backend_url + path, json=body, headers=headers, stream=True, timeout=RECV_TIMEOUT
        ) as response:
            if response.status_code != 200:
                raise ContractError(f"POST {path}: {response.status_code} {response.text[:200]}")
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise ContractError(f"POST {path}: content-type {response.headers.get('content-type')!r}")
            for sse in read_sse(response.iter_lines()):
                event = json.loads(sse.data)
                own_id = str(event["event_id"]) if "event_id" in event else None
                if sse.event != event.get("type") or sse.id != own_id:
                    raise ContractError(f"event: {sse.event!r} id: {sse.id!r} do not match the data {sse.data[:200]}")
                events.append(event)
                if limit is not None and len(events) >= limit:
                    break  # leaving the with-block closes the connection mid-stream
        return events

    def tab(self, last_event_id: int | None = None, query_token: bool = False) -> Tab:
        url = self.backend_url.replace("http", "ws", 1) + "/ws"
        params = []
        if query_token:
            params.append(f"token={self.access_token}")
        if last_event_id is not None:
            params.append(f"last_event_id={last_event_id}")
        if params:
            url += "?" + "&".join(params)
        header = [] if query_token else [f"Authorization: Bearer {self.access_token}"]
        return Tab(websocket.create_connection(url, header=header, timeout=RECV_TIMEOUT))


class Tab:
    """One WebSocket connection; every received event is kept in ``events`` (in arrival order)."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def chat(self, content: str = "hello", thread_id: int | None = None, msg_id: str | None = None) -> str:
        msg_id = msg_id or uuid.uuid4().hex[:12]
        message: dict[str, Any] = {"type": "chat_message", "id": msg_id, "content": content}
        if thread_id is not None:
            message["thread_id"] = thread_id
        self.send(message)
        return msg_id

    def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        self.ws.settimeout(timeout)
        try:
            text = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise ContractError(f"no event within {timeout:g} s (got so far: {self.events[-5:]})") from None
        if not text:
            raise ContractError("the server closed the connection")
        event = json.loads(text)
        self.events.append(event)
        return event

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = RECV_TIMEOUT) -> list[dict[str, Any]]:
        """Receive until ``done(event)``; returns the events received by this call, the matching one last."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            event = self.recv(max(deadline - time.monotonic(), 0.01))
            got.append(event)
            if done(event):
                return got

    def until_type(self, kind: str, reply_to: Any = None, timeout: float = RECV_TIMEOUT) -> list[dict[str, Any]]:
        return self.until(
            lambda e: e.get("type") == kind and (reply_to is None or e.get("reply_to") == reply_to), timeout
        )

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives within ``seconds`` (proves that nothing else comes)."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.recv(left))
            except ContractError:
                break
        return got

    def close(self) -> None:
        self.ws.close()
