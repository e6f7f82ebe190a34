"""Fault switches (all off by default), so the suite can prove it catches what it claims to catch.

| setting | flag / env | what it does | where |
|---|---|---|---|
| leak_bytes_per_message | --leak-bytes-per-message / SUT_LEAK_BYTES_PER_MESSAGE | keeps N written bytes per accepted chat message in a module list, forever | backend (here) |
| leak_connections | --leak-connections / SUT_LEAK_CONNECTIONS | a closed WebSocket's state stays registered and counted in ws_connections_active | backend, sut/ws.py |
| leak_pool | --leak-pool / SUT_LEAK_POOL | every REST call and chat message checks out a DB connection and never returns it | backend, sut/storage.py |
| rest_latency | --rest-latency / SUT_REST_LATENCY | seconds added before every REST call (not /health, /metrics) | auth + backend, sut/web.py |
| agent_latency | --agent-latency / SUT_AGENT_LATENCY | seconds added to the agent's first step | agent, sut/agent.py |
| cross_talk | --cross-talk / SUT_CROSS_TALK | every event also goes to one other connected user | backend, sut/ws.py |
| drop_replay | --drop-replay / SUT_DROP_REPLAY | no replay buffer: a resume with last_event_id gets nothing back | backend, sut/ws.py |
| skip_dedup | --skip-dedup / SUT_SKIP_DEDUP | a resent chat message (same client id) is run again | backend, sut/chat.py |
| stall_tokens_every | --stall-tokens-every / SUT_STALL_TOKENS_EVERY | a streamed reply pauses stall_for after every N tokens | agent, sut/agent.py |
| drop_token_every | --drop-token-every / SUT_DROP_TOKEN_EVERY | a streamed reply leaves out the token after every N (seq N, 2N, ...: skipped) | agent, sut/agent.py |
| repeat_token_every | --repeat-token-every / SUT_REPEAT_TOKEN_EVERY | a streamed reply sends the token after every N twice (same seq, two event ids) | agent, sut/agent.py |
| freeze_for | --freeze-for / SUT_FREEZE_FOR | the event loop is blocked (a stop-the-world pause) this long every freeze_every | backend (here) |
"""

from __future__ import annotations

import asyncio
import threading
import time

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


async def freeze_loop(freeze_for: float, every: float) -> None:
    """FAULT freeze_for: hold the event loop (time.sleep, not asyncio.sleep) for ``freeze_for`` every ``every``
    seconds. Every request and socket waits, as a stop-the-world GC pause or a blocking call would make them wait:
    the stall coordinated omission hides from a closed-model client."""
    while True:
        await asyncio.sleep(every)
        time.sleep(freeze_for)
        metrics.LOOP_FREEZES.inc()
