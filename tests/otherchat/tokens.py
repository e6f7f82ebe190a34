"""OtherChat's tokens: HS256 JWTs with ``sub``, ``plan`` (free or pro), ``typ`` (access or renew) and ``exp``."""

from __future__ import annotations

import os
import time

import jwt

ALGORITHM = "HS256"
RENEW_TTL = 24 * 3600.0


def secret() -> str:
    return os.environ.get("OTHERCHAT_SECRET", "otherchat-development-secret")


def issue(user: str, plan: str, typ: str, ttl: float) -> str:
    claims = {"sub": user, "plan": plan, "typ": typ, "exp": int(time.time() + ttl)}
    return jwt.encode(claims, secret(), algorithm=ALGORITHM)


def read(token: str, typ: str, verify_exp: bool = True) -> dict | None:
    """The claims of a valid token of type ``typ``; None otherwise."""
    try:
        claims = jwt.decode(token, secret(), algorithms=[ALGORITHM], options={"verify_exp": verify_exp})
    except jwt.PyJWTError:
        return None
    return claims if claims.get("typ") == typ and isinstance(claims.get("sub"), str) else None
