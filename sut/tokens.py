"""JWTs (HS256, PyJWT): issued by auth, checked by the backend with the same secret, no call between them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from sut.config import Settings

ALGORITHM = "HS256"
ISSUER = "sut-auth"


class TokenError(Exception):
    """code is TOKEN_EXPIRED or BAD_TOKEN (the contract's error codes)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Claims:
    user: str
    tier: str
    expires_at: float


def _encode(settings: Settings, email: str, tier: str, kind: str, ttl: float) -> str:
    now = time.time()
    payload = {
        "sub": email,
        "tier": tier,
        "type": kind,
        "iss": ISSUER,
        "iat": int(now),
        # float exp: lifetimes of a second or two must not round to zero
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, settings.jwt_secret, algorithm=ALGORITHM)


def issue(settings: Settings, email: str, tier: str) -> dict[str, Any]:
    """The login/refresh/upgrade response body."""
    return {
        "access_token": _encode(settings, email, tier, "access", settings.access_token_ttl),
        "refresh_token": _encode(settings, email, tier, "refresh", settings.refresh_token_ttl),
        "token_type": "bearer",
        "expires_in": settings.access_token_ttl,
        "tier": tier,
    }


def decode(settings: Settings, token: str, kind: str = "access") -> Claims:
    try:
        payload = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "type"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("TOKEN_EXPIRED", f"{kind} token expired") from None
    except jwt.PyJWTError as exc:
        raise TokenError("BAD_TOKEN", f"invalid {kind} token: {exc}") from None
    if payload.get("type") != kind:
        raise TokenError("BAD_TOKEN", f"not an {kind} token" if kind == "access" else f"not a {kind} token")
    tier = payload.get("tier") if payload.get("tier") in ("free", "paid") else "free"
    return Claims(user=str(payload["sub"]), tier=tier, expires_at=float(payload["exp"]))
