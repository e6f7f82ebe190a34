"""OtherChat: a second, small chat platform, written for the tests, that keeps the contract's promises in its own words.

It is not ``sut/`` and shares no code with it. Its paths, field names, event names, token placement (the query
string, or a first message) and refresh mechanism (reconnect with the new token) all differ from the contract, so the
suite can only drive it through a scenario's [protocol] table (``tests/otherchat/scenario.toml``):

| | the contract | OtherChat |
|---|---|---|
| login | `POST /auth/login {"email", "password"}` | `POST /v1/sessions {"username", "secret"}` -> `{"token", "renew"}` (no `expires_in`, no tier) |
| refresh | `POST /auth/refresh {"refresh_token"}` | `POST /v1/sessions/renew {"renew"}` -> `{"token"}` (the old refresh token stays) |
| upgrade | `POST /auth/upgrade` | `POST /v1/plan/upgrade` -> `{"token"}` (plan `pro`, not in the answer) |
| REST token | `Authorization: Bearer T` | `X-Session: T` |
| threads | `/api/threads`, `{"title"}` -> `{"id"}` | `/v1/conversations`, `{"name"}` -> `{"conversation_id"}`; history `/v1/conversations/{id}/history` |
| uploads | `/api/uploads`, field `file` -> `{"upload_id"}` | `/v1/files`, field `upload` -> `{"file_id"}`; event `file_ready {"file_id", "bytes"}` |
| WebSocket | `/ws`, token in a header | `/v1/stream?access_token=T` (or a first message `{"kind": "hello", "token"}`), resume `?after=N` |
| messages | `{"type": "chat_message", "id", "thread_id", "content"}` | `{"kind": "say", "ref", "conversation", "text"}` |
| events | `ack`, `agent_started` ... `agent_completed`, `reply_to`, `event_id` | `received`, `run.start`, `run.step`, `run.end`, `re`, `seq`; plus `welcome` and `run.typing`, which the contract does not know |
| errors | `error`, `code`, `RATE_LIMITED` + `retry_after`, `TOKEN_EXPIRED` | `failure`, `reason`, `SLOW_DOWN` + `wait`, `STALE_TOKEN` |
| token refresh on a socket | in-band `refresh_token` message | none: reconnect with the new token (and `?after=`) |

Two processes, ``accounts`` (auth) and ``chat`` (REST + WebSocket), sharing a JWT secret. ``--leak-bytes-per-message
N`` makes the chat process keep N written bytes per accepted message, forever: the leak a leak check must name.

    python -m tests.otherchat --accounts-port 8101 --chat-port 8102 [--leak-bytes-per-message 300000]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent.parent
SCENARIO = Path(__file__).resolve().parent / "scenario.toml"
START_TIMEOUT = 30.0


@dataclass
class OtherChat:
    """The two running processes; ``stop()`` ends them."""

    accounts_url: str
    chat_url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.processes.items()}

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start(
    accounts_port: int, chat_port: int, log_dir: Path, secret: str = "", **chat_options: float | int
) -> OtherChat:
    """Both services as their own processes on loopback, healthy; ``chat_options`` become the chat's flags
    (``token_ttl``, ``rate_limit``, ``rate_window``, ``leak_bytes_per_message``, ``step``)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OTHERCHAT_SECRET": secret or os.urandom(16).hex()}
    running = OtherChat(f"http://127.0.0.1:{accounts_port}", f"http://127.0.0.1:{chat_port}")
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in chat_options.items()]
    for name, port, extra in (("accounts", accounts_port, flags), ("chat", chat_port, flags)):
        with (log_dir / f"{name}.log").open("ab") as log:
            running.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "tests.otherchat.serve", name, "--port", str(port), *extra],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    deadline = time.monotonic() + START_TIMEOUT
    for name, url in (("accounts", running.accounts_url), ("chat", running.chat_url)):
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if running.processes[name].poll() is not None or time.monotonic() > deadline:
                running.stop()
                raise RuntimeError(f"otherchat {name} did not start; see {log_dir / (name + '.log')}")
            time.sleep(0.1)
    return running
