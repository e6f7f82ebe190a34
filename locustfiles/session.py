"""Auth: login, keep the access token fresh (before it expires, over REST and then on every socket).

REST calls are recorded under stable names (``name=``), never per id, so Locust's stats stay bounded. Paths, fields
and the token's header come from the scenario's [protocol] (locustfiles/wire.py); what an auth answer may leave out
(a new refresh token, its lifetime, the tier) is taken from elsewhere there, and says so in ``assumed``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from locustfiles.timings import record_timing
from locustfiles.wire import DEFAULT, Endpoint, Tokens, Wire
from runspec.folder import FROM_INTENDED, FROM_SEND

REFRESH_AHEAD = 0.25  # refresh once less than this share of the token's lifetime is left ...
REFRESH_AHEAD_MAX = 60.0  # ... or less than this many seconds, whichever comes first
PASSWORD = "soak-password"


def rest(
    client: Any,
    method: str,
    url: str,
    name: str,
    expect: tuple[int, ...] = (200,),
    wire: Wire = DEFAULT,
    require: str = "",
    intended: float | None = None,
    judge_intended: bool = True,
    **kwargs: Any,
) -> Any:
    """One REST call under ``name``; the JSON body (an object with ``require`` if given), or None after recording a
    failure that says why. ``intended`` (perf_counter; the open model): the call was due then, before it left."""
    sent = time.perf_counter()
    with client.request(method, url, name=name, catch_response=True, **kwargs) as response:
        if intended is not None:
            time_from(response.request_meta, intended, sent, judge_intended)
        if response.status_code not in expect:
            code = ""
            try:
                code = wire.error_code(response.json())
            except ValueError:
                pass
            response.failure(f"HTTP {response.status_code}{' ' + code if code else ''}")
            return None
        try:
            body = response.json()
        except ValueError:
            response.failure("response is not JSON")
            return None
        if require and (not isinstance(body, dict) or body.get(require) in (None, "")):
            response.failure(f"response lacks {require}")
            return None
        response.success()
        return body


def time_from(meta: dict[str, Any], intended: float, sent: float, judge_intended: bool) -> None:
    """The open model's two views of one call, as exchange.Exchange.time_from gives a message's: Locust's request
    (and the targets) get the judged one, the record gets the other under its suffix."""
    measured = meta.get("response_time")
    if measured is None:
        return
    late_ms = max(0.0, sent - intended) * 1000.0
    if judge_intended:
        meta["response_time"] = measured + late_ms
        record_timing(meta["request_type"], meta["name"] + FROM_SEND, measured)
    else:
        record_timing(meta["request_type"], meta["name"] + FROM_INTENDED, measured + late_ms)


class AuthSession:
    """The tokens of one simulated user and when to refresh them."""

    def __init__(self, client: Any, auth_host: str, email: str, password: str = PASSWORD, wire: Wire = DEFAULT) -> None:
        self.client = client
        self.auth_host = auth_host.rstrip("/")
        self.email = email
        self.password = password
        self.wire = wire
        self.tokens = Tokens()
        self.refresh_at = 0.0  # perf_counter deadline

    @property
    def access_token(self) -> str:
        return self.tokens.access

    @property
    def refresh_token(self) -> str:
        return self.tokens.refresh

    @property
    def tier(self) -> str:
        return self.tokens.tier

    @property
    def headers(self) -> dict[str, str]:
        return self.wire.rest_headers(self.tokens.access)

    def _auth_call(self, endpoint: Endpoint, kind: str, **kwargs: Any) -> bool:
        url = endpoint.url(self.auth_host)
        with self.client.request(endpoint.method, url, name=endpoint.name, catch_response=True, **kwargs) as response:
            if response.status_code != 200:
                code = ""
                try:
                    code = self.wire.error_code(response.json())
                except ValueError:
                    pass
                response.failure(f"HTTP {response.status_code}{' ' + code if code else ''}")
                return False
            try:
                body = response.json()
            except ValueError:
                response.failure("response is not JSON")
                return False
            tokens = self.wire.read_tokens(body, kind, self.tokens)
            if tokens.problem:
                response.failure(tokens.problem)
                return False
            self.tokens = tokens
            self.expire_in(tokens.lifetime)
            response.success()
            return True

    def expire_in(self, lifetime: float | None) -> None:
        """Refresh ahead of a token that lives ``lifetime`` seconds more (None: it does not expire)."""
        if lifetime is None:
            self.refresh_at = math.inf
            return
        ahead = min(lifetime * REFRESH_AHEAD, REFRESH_AHEAD_MAX)
        self.refresh_at = time.perf_counter() + max(lifetime - ahead, 0.0)

    def login(self) -> bool:
        wire = self.wire
        return self._auth_call(wire.login, "login", json=wire.login_body(self.email, self.password))

    def refresh(self) -> bool:
        if not self.tokens.refresh:
            return False  # no refresh token was ever given: the caller logs in again
        return self._auth_call(self.wire.refresh, "refresh", **self.wire.refresh_request(self.tokens.refresh))

    def upgrade(self) -> bool:
        """Move to the paid tier; the response carries tokens with the new tier."""
        ok = self._auth_call(self.wire.upgrade, "upgrade", headers=self.headers)
        return ok and self.wire.is_paid(self.tier)

    def expired(self) -> None:
        """The server said the token expired (clocks differ, or it lives shorter than it said): refresh next."""
        self.refresh_at = 0.0

    @property
    def expiring(self) -> bool:
        return time.perf_counter() >= self.refresh_at
