"""Fault switches (all off by default), so the suite can prove it catches what it claims to catch.

| setting | flag / env | what it does | where |
|---|---|---|---|
| leak_bytes_per_message | --leak-bytes-per-message / SUT_LEAK_BYTES_PER_MESSAGE | keeps N written bytes per accepted chat message in a module list, forever | backend (here) |
| leak_connections | --leak-connections / SUT_LEAK_CONNECTIONS | a closed WebSocket's state stays registered and counted in ws_connections_active | backend, sut/ws.py |
| leak_pool | --leak-pool / SUT_LEAK_POOL | every REST call and chat message checks out a DB connection and never returns it | backend, sut/storage.py |
| rest_latency | --rest-latency / SUT_REST_LATENCY | seconds added before every REST call (not /health, /metrics) | auth + backend, sut/web.py |
| agent_latency | --agent-latency / SUT_AGENT_LATENCY | seconds added to the agent's first step | agent, sut/agent.py |
| cross_talk | --cross-talk / SUT_CROSS_TALK | every event also goes to one other connected user | backend, sut/ws.py |
"""

from __future__ import annotations

import threading

from sut import metrics

# The leak must write its bytes: b"x" * n is resident; bytes(n) above 128 KiB is untouched zero pages RSS never sees.
_leaked: list[bytes] = []
_leaked_bytes = 0
_lock = threading.Lock()


def leak_message_bytes(n: int) -> None:
    global _leaked_bytes
    if n <= 0:
        return
    with _lock:
        _leaked.append(b"x" * n)
        _leaked_bytes += n


def leaked_bytes() -> float:
    return float(_leaked_bytes)


metrics.gauge("sut_leaked_bytes", "bytes kept by the leak_bytes_per_message fault", leaked_bytes)
