"""What the sut's fault switches do, in numbers: backend RSS after N chat messages with the leak switch on vs off,
db_pool_checked_out under the pool-leak switch, and chat throughput (clean is the baseline, same run); and how long
the supervisor takes to bring a SIGKILLed backend back (against the cold start of the same sut as the baseline).

    .venv/bin/python bench/bench_sut.py [--messages 2000] [--leak-bytes 100000] [--kills 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time

import psutil
import requests

from sut.client import Client
from sut.launcher import SutConfig, start_sut

BATCH = 50


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def chat_many(sut, count: int) -> float:
    """Send ``count`` messages, each answered to agent_completed; returns the seconds it took."""
    client = Client(sut.urls["auth"], sut.urls["backend"])
    client.login()
    tab = client.tab()
    began = time.perf_counter()
    for start in range(0, count, BATCH):
        waiting = {tab.chat("bench") for _ in range(min(BATCH, count - start))}
        while waiting:
            event = tab.recv()
            if event["type"] == "error":
                raise RuntimeError(event)
            if event["type"] == "agent_completed":
                waiting.discard(event["reply_to"])
        tab.events.clear()
    elapsed = time.perf_counter() - began
    tab.close()
    return elapsed


def rss_run(messages: int, leak_bytes: int) -> tuple[float, float]:
    """(RSS growth in MB, messages per second) of the backend over ``messages`` after a warm-up."""
    with start_sut(SutConfig(agent_step=0.0, rate_limit=0, leak_bytes_per_message=leak_bytes)) as sut:
        backend = psutil.Process(sut.pids["backend"])
        chat_many(sut, 200)
        before = backend.memory_info().rss
        elapsed = chat_many(sut, messages)
        return (backend.memory_info().rss - before) / 1e6, messages / elapsed


def pool_run(requests_made: int) -> list[float]:
    config = SutConfig(leak_pool=True, db_pool_size=5, db_max_overflow=10)
    with start_sut(config, settings={"db_pool_timeout": 0.5}) as sut:
        client = Client(sut.urls["auth"], sut.urls["backend"])
        client.login()
        seen = [metric(sut.urls["backend"], "db_pool_checked_out")]
        for _ in range(requests_made):
            client.api("GET", "/api/threads")
            seen.append(metric(sut.urls["backend"], "db_pool_checked_out"))
        return seen


def healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def recovery_run(kills: int) -> tuple[float, list[float], list[float]]:
    """(cold start s, [s from SIGKILL to healthy], [s from SIGKILL to a chat answered to the end]) per kill."""
    began = time.perf_counter()
    with start_sut(SutConfig(supervise=True, agent_step=0.0, rate_limit=0)) as sut:
        cold = time.perf_counter() - began
        client = Client(sut.urls["auth"], sut.urls["backend"])
        client.login()
        to_healthy, to_chat = [], []
        for _ in range(kills):
            old = sut.pids["backend"]
            killed = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            deadline = killed + 60
            while (sut.pids["backend"] == old or not healthy(sut.urls["backend"])) and time.perf_counter() < deadline:
                time.sleep(0.01)
            to_healthy.append(time.perf_counter() - killed)
            tab = client.tab()
            tab.until_type("agent_completed", tab.chat("back?"))
            to_chat.append(time.perf_counter() - killed)
            tab.close()
            time.sleep(1.0)
        return cold, to_healthy, to_chat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--leak-bytes", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of the supervised backend")
    args = parser.parse_args()

    clean_mb, clean_rate = rss_run(args.messages, 0)
    leak_mb, leak_rate = rss_run(args.messages, args.leak_bytes)
    expected_mb = args.messages * args.leak_bytes / 1e6
    print(f"backend RSS growth over {args.messages} chat messages (after 200 warm-up):")
    print(f"  leak switch off            {clean_mb:8.1f} MB   {clean_rate:7.0f} msg/s  (baseline)")
    print(f"  leak {args.leak_bytes:>7} B/message    {leak_mb:8.1f} MB   {leak_rate:7.0f} msg/s")
    ratio = (leak_mb - clean_mb) / expected_mb
    print(
        f"  leak minus baseline        {leak_mb - clean_mb:8.1f} MB = {ratio:.2f} x the configured {expected_mb:.1f} MB"
    )
    print(f"  throughput ratio leak/clean {leak_rate / clean_rate:.2f}")

    seen = pool_run(16)
    print("db_pool_checked_out with leak_pool (pool 5 + overflow 10), one GET /api/threads at a time:")
    print("  " + " ".join(f"{v:.0f}" for v in seen))

    cold, to_healthy, to_chat = recovery_run(args.kills)
    print(f"supervised backend, {args.kills} x SIGKILL (restart backoff 0.5 s, then 1 s, ... within a minute):")
    print(f"  cold start of the whole sut   {cold:6.2f} s  (baseline)")
    for label, values in (("kill -> /health 200", to_healthy), ("kill -> a chat answered", to_chat)):
        median = statistics.median(values)
        print(f"  {label:28s}  {median:6.2f} s median, {max(values):.2f} s max = {median / cold:.2f} x cold start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
