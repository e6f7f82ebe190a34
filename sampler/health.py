"""Is a service up: ``health:URL`` (an HTTP GET; 200 = up) and ``tcp:HOST:PORT`` (a connect = up).

Every tick, per service: ``health_up`` (1 or 0) and ``health_latency_ms`` (the time to the answer; left out when
nothing answered: a refused connection or a timeout is a service down, not a fast one). A status other than 200, no
answer within HEALTH_TIMEOUT (2 s) or a refused connection is down, with a short reason: ``503 database`` when the
JSON body names its failing check (the contract's ``failing`` list, or a ``checks`` entry that says error/down),
else ``503 Service Unavailable``, ``connection refused``, ``no answer within 2 s``.

Up -> down writes ``service_down`` (detail ``service: reason``), down -> up writes ``service_up``, each once per
transition. A service found down at its first check counts as a transition too: a watch must see a service that
never came up. ``Sampler.down_since()`` tells since when each checked service has been down.

Each check runs in a thread of its own with its own 2 s timeout, and a tick waits for it only until the tick's
deadline: a hung service never holds up a tick, and its rows go on (the last state known) until the timeout says
it is down.

``wait_healthy(checks, timeout)`` is the runner's health-gated start: {service: spec} in, {service: why} out for
those still down at the timeout.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from runspec import folder
from sampler.sources import Source, Tick
from sampler.spec import HEALTH_KINDS, SourceSpec, SourceSpecError, parse_source, split_host_port

log = logging.getLogger("sampler")

HEALTH_TIMEOUT = 2.0  # seconds for one check: connect, send, answer
MAX_BODY = 65536  # bytes of a health page read to find its failing check
MAX_REASON = 120  # characters
TICK_MARGIN = 0.02  # seconds left to the tick after the wait for a check's answer
WAIT_POLL = 0.2  # seconds between checks of a service that is not up yet, in wait_healthy
BAD_WORDS = ("error", "fail", "down", "unhealthy", "critical", "degraded", "timeout", "unavailable")


@dataclass(frozen=True)
class Result:
    up: bool
    latency_ms: float | None  # None: nothing answered
    reason: str = ""  # why it is down; "" when up


def check(spec: SourceSpec, timeout: float = HEALTH_TIMEOUT) -> Result:
    """One check of a ``health`` or ``tcp`` spec; never raises."""
    started = time.perf_counter()
    try:
        if spec.kind == "tcp":
            host, port = split_host_port(spec.target)
            socket.create_connection((host, int(port)), timeout=timeout).close()
            status, body, phrase = 200, b"", ""
        else:
            status, body, phrase = _get(spec.target, timeout)
    except TimeoutError:
        return Result(False, None, f"no answer within {timeout:g} s")
    except ConnectionRefusedError:
        return Result(False, None, "connection refused")
    except http.client.RemoteDisconnected:
        return Result(False, None, "connection closed without an answer")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Result(False, None, _one_line(f"{type(exc).__name__}: {exc}"))
    ms = (time.perf_counter() - started) * 1000.0
    if ms > timeout * 1000.0:  # the timeout is per socket operation: a slow drip can outlast it
        return Result(False, ms, f"answered after {ms / 1000.0:.1f} s (limit {timeout:g} s)")
    if status == 200:
        return Result(True, ms)
    return Result(False, ms, _one_line(f"{status} {failing_checks(body) or phrase}".strip()))


def _get(url: str, timeout: float) -> tuple[int, bytes, str]:
    # plain http.client and a fresh connection per check: a health check a second through requests costs ~1 ms of
    # CPU, and a new connection also proves the service still accepts them
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = connection(parts.hostname or "", parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path, headers={"Accept": "application/json", "User-Agent": "soak-sampler"})
        response = conn.getresponse()
        body = response.read(MAX_BODY)
        return response.status, body, response.reason
    finally:
        conn.close()


def failing_checks(body: bytes) -> str:
    """The failing checks a health page names: ``database`` from the contract's ``{"failing": ["database"]}``, or
    from ``{"checks": {"database": "error: ..."}}`` (a string, or a table with a ``status``); "" if none is named."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    failing = data.get("failing")
    if isinstance(failing, list) and failing and all(isinstance(name, str) for name in failing):
        return ", ".join(failing)
    checks = data.get("checks", data.get("components"))
    if not isinstance(checks, dict):
        return ""
    return ", ".join(str(name) for name, value in checks.items() if _failing(value))


def _failing(value: object) -> bool:
    if isinstance(value, dict):
        value = value.get("status", value.get("state", ""))
    if isinstance(value, bool):
        return not value
    return str(value).strip().lower().startswith(BAD_WORDS)


def _one_line(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


class _Pending:
    """One check running in a thread of its own (a hung service must not hold up the tick that asked)."""

    def __init__(self, spec: SourceSpec) -> None:
        self.result: Result | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(spec,), name=f"health {spec.text}", daemon=True).start()

    def _run(self, spec: SourceSpec) -> None:
        self.result = check(spec)
        self.done.set()


class HealthSource(Source):
    def __init__(self, service: str, spec: SourceSpec) -> None:
        super().__init__(service, spec)
        if spec.kind not in HEALTH_KINDS:
            raise ValueError(f"not a health check: {spec.text}")
        self.up: bool | None = None  # None: no answer yet
        self.reason = ""
        self._pending: _Pending | None = None

    def read(self, tick: Tick) -> dict[str, float]:
        if self._pending is None:
            self._pending = _Pending(self.spec)
        wait = min(tick.deadline - time.monotonic() - TICK_MARGIN, HEALTH_TIMEOUT + 1.0)
        if not self._pending.done.wait(max(wait, 0.0)):
            # still within its own timeout: not known to be down yet, so the state stays what it was
            return {} if self.up is None else {"health_up": float(self.up)}
        result, self._pending = self._pending.result, None
        assert result is not None
        self._update(result, tick.ts)
        out = {"health_up": 1.0 if result.up else 0.0}
        if result.latency_ms is not None:
            out["health_latency_ms"] = round(result.latency_ms, 3)
        return out

    def _update(self, result: Result, ts: float) -> None:
        if result.up:
            if self.up is False and self.down_since is not None:
                self.events.append((folder.SERVICE_UP, f"{self.service}: up after {ts - self.down_since:.1f} s down"))
                log.info("sampler: %s is up again (%s)", self.service, self.spec.text)
            self.up, self.reason, self.down_since = True, "", None
            return
        if self.up is not False:
            self.events.append((folder.SERVICE_DOWN, f"{self.service}: {result.reason}"))
            self.down_since = ts
            log.warning("sampler: %s is down (%s): %s", self.service, self.spec.text, result.reason)
        self.up, self.reason = False, result.reason


def wait_healthy(checks: Mapping[str, str], timeout: float) -> dict[str, str]:
    """Check each service (name -> ``health:URL`` or ``tcp:HOST:PORT``) until all are up or ``timeout`` seconds pass.

    Returns {service: the reason of its last failed check} for those still down at the timeout; {} when all are up.
    Services are checked side by side (a hung one does not hold up the others); a check under way at the timeout is
    waited for, so it returns within ``timeout`` + HEALTH_TIMEOUT. A spec of another kind raises SourceSpecError.
    """
    specs: dict[str, SourceSpec] = {}
    for service, text in checks.items():
        spec = parse_source(text)
        if spec.kind not in HEALTH_KINDS:
            raise SourceSpecError(f"service {service!r}: {text!r} is not a health check (health:URL or tcp:HOST:PORT)")
        specs[service] = spec
    if not specs:
        return {}
    deadline = time.monotonic() + timeout

    def until_up(spec: SourceSpec) -> str | None:
        while True:
            result = check(spec)
            if result.up:
                return None
            if time.monotonic() + WAIT_POLL > deadline:
                return result.reason
            time.sleep(WAIT_POLL)

    with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="wait_healthy") as pool:
        futures = {service: pool.submit(until_up, spec) for service, spec in specs.items()}
        reasons = {service: future.result() for service, future in futures.items()}
    return {service: reason for service, reason in reasons.items() if reason is not None}
