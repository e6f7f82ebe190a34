"""HTTP plumbing shared by the three services: /health, /metrics, error bodies, the REST latency fault."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from sut import metrics, tokens
from sut.config import Settings

CHECK_TIMEOUT = 3.0
UNTIMED_PATHS = ("/health", "/metrics", "/openapi.json", "/docs", "/redoc")

Check = Callable[[], Awaitable[str]]  # returns "ok" (or another word for fine, e.g. "not configured") or raises


class ApiError(Exception):
    """An error response ``{"code", "message"}`` with an HTTP status (and headers such as Retry-After)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bearer_claims(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> tokens.Claims:
    """The caller of a REST endpoint from ``Authorization: Bearer``; 401 BAD_TOKEN / TOKEN_EXPIRED otherwise."""
    if credentials is None:
        raise ApiError(401, "BAD_TOKEN", "missing Authorization: Bearer <access token>")
    try:
        return tokens.decode(settings, credentials.credentials)
    except tokens.TokenError as exc:
        raise ApiError(401, exc.code, exc.message) from None


def error_body(code: str, message: str) -> dict[str, Any]:
    # "detail" as well, so clients written for FastAPI's own errors still find a message
    return {"code": code, "message": message, "detail": message}


def install(app: FastAPI, service: str, checks: dict[str, Check], rest_latency: float) -> None:
    """Add /health, /metrics, the error handlers and the REST latency fault to ``app``."""

    @app.get("/health", tags=["ops"])
    async def health() -> JSONResponse:
        results: dict[str, str] = {}
        failing: list[str] = []
        for name, check in checks.items():
            try:
                results[name] = await asyncio.wait_for(check(), CHECK_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - any failure of a dependency is "degraded", named
                results[name] = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
                failing.append(name)
        body = {
            "status": "degraded" if failing else "healthy",
            "service": service,
            "checks": results,
            "failing": failing,
            "timestamp": time.time(),
        }
        return JSONResponse(body, status_code=503 if failing else 200)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        """Prometheus text format."""
        return metrics.response()

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(PoolTimeoutError)
    async def pool_exhausted(_request: Request, exc: PoolTimeoutError) -> JSONResponse:
        return JSONResponse(error_body("DB_POOL_EXHAUSTED", str(exc).splitlines()[0]), status_code=503)

    @app.exception_handler(OperationalError)
    async def database_down(_request: Request, exc: OperationalError) -> JSONResponse:
        return JSONResponse(error_body("DATABASE_UNAVAILABLE", str(exc.orig).splitlines()[0][:300]), status_code=503)

    if rest_latency > 0:
        app.add_middleware(RestLatency, seconds=rest_latency)


class RestLatency:
    """The ``rest_latency`` fault: every REST call (not /health, /metrics) waits this long first."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(UNTIMED_PATHS):
            await asyncio.sleep(self.seconds)
        await self.app(scope, receive, send)
