"""The auth service: login (users created on first login, tier ``free``), refresh, upgrade to ``paid``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from sut import metrics, tokens, web
from sut.config import Settings
from sut.storage import PASSWORD_ITERATIONS, Store

BEARER = HTTPBearer(auto_error=False)
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,189}$"


class Login(BaseModel):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254, examples=["alice@example.com"])
    password: str = Field(min_length=1, max_length=256)


class Refresh(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: float
    tier: str


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: str


ERRORS = {401: {"model": ErrorBody, "description": "BAD_CREDENTIALS, BAD_TOKEN or TOKEN_EXPIRED"}}


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PASSWORD_ITERATIONS)
    return f"{salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    salt_hex, _, _digest = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored)


def parse_seed_users(text: str) -> list[tuple[str, str, str]]:
    users = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        email, _, rest = item.partition(":")
        password, _, tier = rest.partition(":")
        users.append((email, password, tier if tier in ("free", "paid") else "free"))
    return users


def create_app(settings: Settings) -> FastAPI:
    store = Store(settings, "auth")
    metrics.pool_gauges(store)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(store.create_schema, ["users"])
        for email, password, tier in parse_seed_users(settings.seed_users):
            if await asyncio.to_thread(store.get_user, email) is None:
                await asyncio.to_thread(store.create_user, email, hash_password(password), tier)
        yield
        store.close()

    app = FastAPI(
        title="sut auth",
        version="1",
        description="Login, token refresh and tier upgrade of the reference chat platform (see sut/CONTRACT.md).",
        lifespan=lifespan,
    )

    async def check_database() -> str:
        await asyncio.to_thread(store.ping)
        return f"ok ({store.kind})"

    web.install(app, "auth", {"database": check_database}, settings.rest_latency)

    @app.post("/auth/login", response_model=TokenPair, responses=ERRORS, tags=["auth"])
    async def login(body: Login) -> dict:
        email = body.email.lower()
        user = await asyncio.to_thread(store.get_user, email)
        if user is None:
            user = await asyncio.to_thread(store.create_user, email, hash_password(body.password))
            if user is None:  # a concurrent first login of the same email won
                user = await asyncio.to_thread(store.get_user, email)
        if user is None or not password_matches(body.password, user.password_hash):
            raise web.ApiError(401, "BAD_CREDENTIALS", "wrong password for this email")
        return tokens.issue(settings, user.email, user.tier)

    @app.post("/auth/refresh", response_model=TokenPair, responses=ERRORS, tags=["auth"])
    async def refresh(body: Refresh) -> dict:
        try:
            claims = tokens.decode(settings, body.refresh_token, kind="refresh")
        except tokens.TokenError as exc:
            raise web.ApiError(401, exc.code, exc.message) from None
        user = await asyncio.to_thread(store.get_user, claims.user)
        if user is None:
            raise web.ApiError(401, "BAD_TOKEN", "the token's user does not exist")
        return tokens.issue(settings, user.email, user.tier)

    @app.post("/auth/upgrade", response_model=TokenPair, responses=ERRORS, tags=["auth"])
    async def upgrade(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> dict:
        """Move the caller to the ``paid`` tier; returns fresh tokens that carry it."""
        claims = web.bearer_claims(settings, credentials)
        user = await asyncio.to_thread(store.set_tier, claims.user, "paid")
        if user is None:
            raise web.ApiError(401, "BAD_TOKEN", "the token's user does not exist")
        return tokens.issue(settings, user.email, user.tier)

    return app
