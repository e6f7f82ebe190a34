"""OtherChat's accounts service: sessions, renewal, plan upgrade. Users are kept in memory (a name, a secret, a plan).

Its answers leave out what the contract's auth sends: no ``expires_in`` (the JWT's ``exp`` says it), no tier, and a
renewal keeps the old renew token.
"""

from __future__ import annotations

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tests.otherchat import tokens

SETTINGS = {"token_ttl": 60.0}
MAX_USERS = 100_000  # bounded: the oldest accounts are forgotten beyond this

app = FastAPI(title="otherchat accounts")
users: dict[str, dict[str, str]] = {}


class Login(BaseModel):
    username: str
    secret: str


class Renew(BaseModel):
    renew: str


def refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"reason": reason, "detail": reason.lower().replace("_", " ")}, status_code=status)


def access(user: str) -> str:
    return tokens.issue(user, users[user]["plan"], "access", SETTINGS["token_ttl"])


@app.get("/health")
def health() -> dict:
    return {"status": "healthy", "service": "accounts", "checks": {}}


@app.post("/v1/sessions")
def login(body: Login) -> JSONResponse:
    user = users.get(body.username)
    if user is None:
        if len(users) >= MAX_USERS:
            users.pop(next(iter(users)))
        user = users[body.username] = {"secret": body.secret, "plan": "free"}
    elif user["secret"] != body.secret:
        return refuse(401, "BAD_SECRET")
    renew = tokens.issue(body.username, user["plan"], "renew", tokens.RENEW_TTL)
    return JSONResponse({"token": access(body.username), "renew": renew})


@app.post("/v1/sessions/renew")
def renew(body: Renew) -> JSONResponse:
    claims = tokens.read(body.renew, "renew")
    if claims is None or claims["sub"] not in users:
        return refuse(401, "BAD_RENEW")
    return JSONResponse({"token": access(claims["sub"])})


@app.post("/v1/plan/upgrade")
def upgrade(x_session: str = Header(default="")) -> JSONResponse:
    claims = tokens.read(x_session, "access")
    if claims is None or claims["sub"] not in users:
        return refuse(401, "BAD_SESSION")
    users[claims["sub"]]["plan"] = "pro"
    return JSONResponse({"token": access(claims["sub"])})
