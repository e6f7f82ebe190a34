"""``soak probe``: walk the contract against a target, step by step, in under a minute, before a night is spent on a
first-step error. Each step says ok, failed (with what came back, and which [protocol] key would fix it) or skipped
(a step it needs failed). ``preflight`` is the same walk, quiet, for ``soak run`` against ``--host``.

The probe speaks through the scenario's [protocol] (locustfiles/wire.py, the users' own reading of it), with
requests and a blocking websocket-client: no Locust, no gevent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from locustfiles.session import PASSWORD
from locustfiles.wire import Endpoint, Tokens, Wire
from runspec.protocol import read_sse
from soak.probe_ws import Failed, ProbeSocket, ProbeSocketError, WsSteps

EVENT_STREAM = "text/event-stream"
STEP_TIMEOUT = 5.0  # seconds for one answer (an HTTP call, an event)
DEADLINE = 50.0  # the whole walk: steps past it are skipped ("out of time"), no event is awaited beyond it
HISTORY_LIMIT = 20
STEPS = (
    "health",
    "login",
    "upgrade",
    "refresh",
    "thread",
    "history",
    "ws connect",
    "ping",
    "chat message",
    "sse stream",
    "upload",
    "ws refresh",
    "reconnect replay",
    "rate limit",
)
OPT_IN = ("sse stream",)  # `soak probe` walks these only for a scenario whose users need them
# step -> the steps it needs (skipped when one of them did not pass)
NEEDS = {
    "upgrade": ("login",),
    "refresh": ("login",),
    "thread": ("login",),
    "history": ("thread",),
    "ws connect": ("login",),
    "ping": ("ws connect",),
    "chat message": ("ws connect", "thread"),
    "sse stream": ("thread",),
    "upload": ("ws connect",),
    "ws refresh": ("ws connect",),
    "reconnect replay": ("chat message",),
    "rate limit": ("chat message",),
}


@dataclass
class Result:
    step: str
    status: str  # ok, failed, skipped
    detail: str
    fix: str = ""  # the [protocol] (or other) keys that would fix it
    ms: float = 0.0


class Probe(WsSteps):
    """One walk against one target; the WebSocket steps are WsSteps' (soak/probe_ws.py)."""

    def __init__(self, scenario: dict[str, Any], host: str, auth_host: str = "", timeout: float = STEP_TIMEOUT) -> None:
        self.scenario = scenario
        self.wire = Wire(scenario["protocol"])
        self.host = host.rstrip("/")
        self.auth_host = (auth_host or host).rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.tokens = Tokens()
        self.fresh_until = 0.0  # monotonic: refresh the access token before a step after this
        self.thread_id: Any = None
        self.socket: ProbeSocket | None = None
        self.message_id = ""
        self.ack_event_id: Any = None
        self.sockets: list[ProbeSocket] = []
        self.ends_at = 0.0  # monotonic: the walk's deadline

    # --- the walk ---

    def run(self, steps: tuple[str, ...] = STEPS, say: Callable[[Result], None] | None = None) -> list[Result]:
        results: dict[str, Result] = {}
        started = time.monotonic()
        self.ends_at = started + DEADLINE
        try:
            for step in steps:
                unmet = [need for need in NEEDS.get(step, ()) if need in results and results[need].status != "ok"]
                if unmet:
                    result = Result(step, "skipped", f"needs {unmet[0]}")
                elif time.monotonic() - started > DEADLINE:
                    result = Result(step, "skipped", f"out of time (the probe stops after {DEADLINE:g} s)")
                else:
                    result = self._one(step)
                results[step] = result
                if say is not None:
                    say(result)
        finally:
            for sock in self.sockets:
                sock.close()
            self.http.close()
        return list(results.values())

    def _one(self, step: str) -> Result:
        started = time.perf_counter()
        try:
            if step not in ("health", "login", "refresh") and self.tokens.access:
                self._keep_fresh()
            detail = getattr(self, "step_" + step.replace(" ", "_"))()
            status, fix = "ok", ""
        except Failed as exc:
            status, detail, fix = "failed", exc.detail, exc.fix
        except ProbeSocketError as exc:
            status, detail, fix = "failed", str(exc), ""
        except requests.RequestException as exc:
            status, detail, fix = "failed", f"{type(exc).__name__}: {str(exc)[:160]}", ""
        return Result(step, status, detail, fix, (time.perf_counter() - started) * 1000.0)

    # --- helpers ---

    def call(self, endpoint: Endpoint, base: str, key: str, fields: str, expect: tuple[int, ...] = (200,), **kw: Any):
        """One REST call; its JSON body, or Failed naming the endpoint's key (404, 405) or the request's fields."""
        url = endpoint.url(base, self.thread_id, HISTORY_LIMIT)
        response = self.http.request(endpoint.method, url, timeout=self.timeout, **kw)
        where = f"{endpoint.method} {url.removeprefix(base)}"
        if response.status_code not in expect:
            code = ""
            try:
                code = self.wire.error_code(response.json())
            except ValueError:
                pass
            detail = f"{where}: HTTP {response.status_code}{' ' + code if code else ''}"
            if response.status_code in (404, 405):
                raise Failed(detail, f"protocol.{key} (now {self._get(key)!r})")
            if response.status_code in (401, 403) and "auth_header" in fields:
                raise Failed(detail, f"protocol.auth_header, protocol.auth_scheme (now {self.wire.auth_header!r}, "
                             f"{self.wire.auth_scheme!r})")  # fmt: skip
            raise Failed(detail, fields)
        try:
            return response.json()
        except ValueError:
            raise Failed(f"{where}: {response.status_code}, but the answer is not JSON", f"protocol.{key}") from None

    def _keep_fresh(self) -> None:
        """A token about to expire is refreshed (or a new user logged in) first, so a step after a slow one does not
        fail on an expired token and blame the wrong key."""
        if time.monotonic() < self.fresh_until:
            return
        tokens = None
        if self.tokens.refresh:
            try:
                body = self.call(
                    self.wire.refresh,
                    self.auth_host,
                    "auth.refresh",
                    "",
                    **self.wire.refresh_request(self.tokens.refresh),
                )
                tokens = self.wire.read_tokens(body, "refresh", self.tokens)
            except (Failed, requests.RequestException):
                tokens = None
        if tokens is None or tokens.problem:
            tokens = self.login(f"probe-{os.urandom(4).hex()}@soak.test")
        self._take(tokens)

    def _take(self, tokens: Tokens) -> None:
        self.tokens = tokens
        life = tokens.lifetime if tokens.lifetime is not None else 1e9
        self.fresh_until = time.monotonic() + life - 3 * self.timeout

    def _get(self, key: str) -> Any:
        value: Any = self.scenario["protocol"]
        for part in key.split("."):
            value = value[part]
        return value

    def lacks(self, body: Any, key: str) -> Failed:
        held = sorted(body)[:8] if isinstance(body, dict) else type(body).__name__
        return Failed(f"the answer has {held}, no {self._get(key)!r}", f"protocol.{key}")

    def connect(self, last_event_id: Any = None) -> ProbeSocket:
        sock = ProbeSocket(self.wire, self.host, self.tokens.access, self.timeout, last_event_id, self.ends_at)
        self.sockets.append(sock)
        return sock

    def login(self, email: str) -> Tokens:
        wire = self.wire
        body = self.call(
            wire.login, self.auth_host, "auth.login", "protocol.auth.email, protocol.auth.password",
            json=wire.login_body(email, PASSWORD),
        )  # fmt: skip
        tokens = wire.read_tokens(body, "login")
        if tokens.problem:
            raise self.lacks(body, "auth.access_token")
        return tokens

    def assumed(self, tokens: Tokens, kind: str) -> str:
        notes = []
        auth = self.wire.auth
        if auth["refresh_token"] in tokens.assumed:
            notes.append(f"no {auth['refresh_token']}: " + ("none to refresh with" if kind == "login" else "kept"))
        if auth["expires_in"] in tokens.assumed:
            life = (
                "no exp either: never refreshed" if tokens.lifetime is None else f"JWT exp in {tokens.lifetime:.0f} s"
            )
            notes.append(f"no {auth['expires_in']}: {life}")
        if auth["tier"] in tokens.assumed:
            notes.append(f"no {auth['tier']}: assumed {tokens.tier}")
        return "; ".join(notes)

    # --- the steps (each returns its detail, or raises Failed) ---

    def step_health(self) -> str:
        path = self.wire.health
        parts = []
        for base in dict.fromkeys((self.host, self.auth_host)):
            response = self.http.get(f"{base}{path}", timeout=self.timeout)
            if response.status_code != 200:
                raise Failed(f"GET {base}{path}: HTTP {response.status_code}", f"protocol.health (now {path!r})")
            parts.append(f"{base}: 200")
        return f"GET {path}: " + ", ".join(parts)

    def step_login(self) -> str:
        self._take(self.login(f"probe-{os.urandom(4).hex()}@soak.test"))
        note = self.assumed(self.tokens, "login")
        return f"{self.wire.login.name}: {self.wire.auth['access_token']}" + (f"; {note}" if note else "")

    def step_upgrade(self) -> str:
        wire = self.wire
        body = self.call(wire.upgrade, self.auth_host, "auth.upgrade", "protocol.auth_header",
                         headers=wire.rest_headers(self.tokens.access))  # fmt: skip
        tokens = wire.read_tokens(body, "upgrade", self.tokens)
        if tokens.problem:
            raise self.lacks(body, "auth.access_token")
        if not wire.is_paid(tokens.tier):
            raise Failed(f"{wire.auth['tier']} is {tokens.tier!r} after the upgrade", "protocol.auth.paid")
        self._take(tokens)
        note = self.assumed(tokens, "upgrade")
        return f"{wire.upgrade.name}: {wire.auth['tier']} {tokens.tier}" + (f"; {note}" if note else "")

    def step_refresh(self) -> str:
        wire = self.wire
        if not self.tokens.refresh:
            raise Failed(f"login gave no {wire.auth['refresh_token']}", "protocol.auth.refresh_token")
        fields = "protocol.auth.refresh_token, protocol.auth.refresh_with"
        body = self.call(wire.refresh, self.auth_host, "auth.refresh", fields,
                         **wire.refresh_request(self.tokens.refresh))  # fmt: skip
        tokens = wire.read_tokens(body, "refresh", self.tokens)
        if tokens.problem:
            raise self.lacks(body, "auth.access_token")
        self._take(tokens)
        note = self.assumed(tokens, "refresh")
        return f"{wire.refresh.name}: a new {wire.auth['access_token']}" + (f"; {note}" if note else "")

    def step_thread(self) -> str:
        wire = self.wire
        headers = wire.rest_headers(self.tokens.access)
        body = self.call(wire.create_thread, self.host, "api.create_thread", "protocol.api.title, protocol.auth_header",
                         (200, 201), json={wire.api["title"]: "probe"}, headers=headers)  # fmt: skip
        if wire.thread_id(body) is None:
            raise self.lacks(body, "api.thread_id")
        self.thread_id = wire.thread_id(body)
        self.call(wire.threads, self.host, "api.threads", "protocol.auth_header", headers=headers)
        return f"{wire.create_thread.name}: {wire.api['thread_id']} {self.thread_id!r}; {wire.threads.name}: 200"

    def step_history(self) -> str:
        wire = self.wire
        self.call(wire.history, self.host, "api.history", "protocol.auth_header",
                  headers=wire.rest_headers(self.tokens.access))  # fmt: skip
        return f"{wire.history.name}: 200"

    def step_sse_stream(self) -> str:
        """One chat message over the Server-Sent Events endpoint: an event stream that ends with the reply."""
        wire, endpoint = self.wire, self.wire.sse_stream
        message_id = f"probe-{os.urandom(4).hex()}"
        url = endpoint.url(self.host, self.thread_id)
        where, sent = f"{endpoint.method} {url.removeprefix(self.host)}", time.perf_counter()
        body = wire.sse_body(message_id, self.thread_id, "probe: hello")
        headers = wire.rest_headers(self.tokens.access)
        timeout = (self.timeout, self.timeout * 2)
        with self.http.request(
            endpoint.method, url, json=body, headers=headers, stream=True, timeout=timeout
        ) as answer:
            if answer.status_code in (404, 405):
                raise Failed(f"{where}: HTTP {answer.status_code}", f"protocol.sse.stream (now {wire.sse['stream']!r})")
            if answer.status_code != 200:
                raise Failed(f"{where}: HTTP {answer.status_code}", "protocol.sse.content, sse.id, sse.thread")
            kind = answer.headers.get("content-type", "")
            if not kind.startswith(EVENT_STREAM):
                raise Failed(f"{where}: content-type {kind[:60]!r}, not {EVENT_STREAM}", "protocol.sse.stream")
            types: list[str] = []
            for sse in read_sse(answer.iter_lines()):
                try:
                    event = json.loads(sse.data)
                except ValueError:
                    raise Failed(f"{where}: an event's data is not JSON: {sse.data[:80]!r}", "") from None
                if not isinstance(event, dict):
                    continue
                event = wire.sse_event(event, sse.event, sse.id, message_id)
                etype = str(event.get(wire.type_key))
                types.append(etype)
                if etype == wire.error:
                    raise Failed(f"{where}: refused: {etype} {event.get(wire.code_key)!s:.40}", "protocol.sse")
                if etype == wire.final:
                    tokens = types.count(wire.token) if wire.token else 0
                    said = f", {tokens} {wire.token}" if tokens else ""
                    ms = (time.perf_counter() - sent) * 1000.0
                    return f"{where}: {len(types)} events{said}, {wire.final} after {ms:.0f} ms"
        got = ", ".join(dict.fromkeys(types)) or "no event"
        raise Failed(f"{where}: the stream ended without {wire.final!r} (got {got})", "protocol.events.final")


def steps_for(scenario: dict[str, Any]) -> tuple[str, ...]:
    """The steps a run of ``scenario`` relies on: uploads, the rate limit and the SSE stream only where a class uses
    them."""
    weighted = {name for name, table in scenario["users"].items() if table["weight"] > 0}
    skip = set()
    if "UploadingUser" not in weighted:
        skip.add("upload")
    if "RateLimitedUser" not in weighted:
        skip.add("rate limit")
    if "SseChattingUser" not in weighted:
        skip.add("sse stream")
    return tuple(step for step in STEPS if step not in skip)


def preflight(scenario: dict[str, Any], host: str, auth_host: str) -> list[str]:
    """For ``soak run`` against ``--host``: the probe's failed steps as one line each (empty = go ahead)."""
    results = Probe(scenario, host, auth_host).run(steps_for(scenario))
    return [
        f"probe {r.step}: {r.detail}" + (f" (fix: {r.fix})" if r.fix else "") for r in results if r.status == "failed"
    ]
