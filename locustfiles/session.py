"""Auth: login, keep the access token fresh (before it expires, over REST and then in-band on every socket).

REST calls are recorded under stable names (``name=``), never per id, so Locust's stats stay bounded.
"""

from __future__ import annotations

import time
from typing import Any

REFRESH_AHEAD = 0.25  # refresh once less than this share of the token's lifetime is left ...
REFRESH_AHEAD_MAX = 60.0  # ... or less than this many seconds, whichever comes first
PASSWORD = "soak-password"


def rest(client: Any, method: str, url: str, name: str, expect: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
    """One REST call under ``name``; the JSON body, or None after recording a failure that says why."""
    with client.request(method, url, name=name, catch_response=True, **kwargs) as response:
        if response.status_code not in expect:
            code = ""
            try:
                code = str(response.json().get("code") or "")[:40]
            except (ValueError, AttributeError):
                pass
            response.failure(f"HTTP {response.status_code}{' ' + code if code else ''}")
            return None
        try:
            body = response.json()
        except ValueError:
            response.failure("response is not JSON")
            return None
        response.success()
        return body


class AuthSession:
    """The tokens of one simulated user and when to refresh them."""

    def __init__(self, client: Any, auth_host: str, email: str, password: str = PASSWORD) -> None:
        self.client = client
        self.auth_host = auth_host.rstrip("/")
        self.email = email
        self.password = password
        self.access_token = ""
        self.refresh_token = ""
        self.tier = ""
        self.refresh_at = 0.0  # perf_counter deadline

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def _auth_call(self, path: str, name: str, **kwargs: Any) -> bool:
        with self.client.post(f"{self.auth_host}{path}", name=name, catch_response=True, **kwargs) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return False
            try:
                body = response.json()
            except ValueError:
                response.failure("response is not JSON")
                return False
            fields = ("access_token", "refresh_token", "expires_in")
            if not isinstance(body, dict) or not all(body.get(key) for key in fields):
                response.failure(f"response lacks one of {', '.join(fields)}")
                return False
            lifetime = float(body["expires_in"])
            self.access_token = body["access_token"]
            self.refresh_token = body["refresh_token"]
            self.tier = body.get("tier") or self.tier
            ahead = min(lifetime * REFRESH_AHEAD, REFRESH_AHEAD_MAX)
            self.refresh_at = time.perf_counter() + max(lifetime - ahead, 0.0)
            response.success()
            return True

    def login(self) -> bool:
        return self._auth_call("/auth/login", "POST /auth/login", json={"email": self.email, "password": self.password})

    def refresh(self) -> bool:
        return self._auth_call("/auth/refresh", "POST /auth/refresh", json={"refresh_token": self.refresh_token})

    def upgrade(self) -> bool:
        """Move to the paid tier; the response carries tokens with the new tier."""
        ok = self._auth_call("/auth/upgrade", "POST /auth/upgrade", headers=self.headers)
        return ok and self.tier == "paid"

    @property
    def expiring(self) -> bool:
        return time.perf_counter() >= self.refresh_at
