"""The WebSocket client's cost, against the real sut, next to a bare websocket-client loop measured in the same run.

1. Round trips per second and per CPU second of this (the load-generating) process: our client (reader greenlet,
   id matching, order checks, timings into real Locust stats and the exact timing record) against a
   bare loop under gevent that sends and reads frames with no bookkeeping at all (the ceiling for this stack).
   A third loop, the bare one plus its timings into Locust's stats and the exact record (through the Reporter, as
   ours: batched, see locustfiles/reporting.py), shows what the stats cost on their own.
   Two kinds of round trip: ``ping`` -> ``pong`` (cheap on the server, so the client is the limit) and
   ``chat_message`` -> ``agent_completed`` (six events per message). Goal: at least 0.8 of the bare loop.
   The three loops run at the same time, each in a process of its own with its own users, on one core (the sut on
   the others), ``--rounds`` times; a round's ratios compare loops that saw the same moment and the figure is their
   median. Run one after the other, as before, the bare loop's round trips per CPU second moved between 19,600 and
   32,500 within a minute on this machine, and a round's ratio between 0.6 and 1.5: more than the effect measured.
2. Idle-ish users: N users, each an HTTP session (used once) and a WebSocket sending one message every 10 s
   (``ping``: a chat message to each would measure the sut's agent, not the client), held for a while: failures,
   exact p50/p99, and the client RSS per user. Goal: 5,000 users per worker at most 64 KiB each.

    .venv/bin/python bench/bench_ws.py [--connections 50] [--seconds 8] [--rounds 3] [--idle-users 1000,2500,5000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import gevent
import locust  # noqa: F401, I001 - first: gevent monkey-patching
import psutil
import requests
import websocket
from gevent.pool import Pool
from locust import events
from locust.clients import HttpSession
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locustfiles import gcwatch, plugin  # noqa: E402
from locustfiles.exchange import Exchange, Reporter, new_id  # noqa: E402
from locustfiles.gcwatch import GcPauses  # noqa: E402
from locustfiles.timings import TimingRecord  # noqa: E402
from locustfiles.wsclient import WsConnection, ws_url  # noqa: E402
from sut.launcher import SutConfig, start_sut  # noqa: E402

PING_STEPS, PING_NAMES = ("pong",), {"pong": "ws ping"}
CHAT_REPLIES = 6  # ack, agent_started, agent_thinking, tool_executing, tool_completed, agent_completed
IDLE_EVERY = 10.0  # seconds between an idle user's messages
CONNECT_CONCURRENCY = 50
FDS_PER_USER = 2  # its HTTP keep-alive socket and its WebSocket
FD_RESERVE = 200
GOAL_RATIO, GOAL_USERS, GOAL_BYTES = 0.8, 5000, 64 * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pin_apart(sut_pids) -> str:
    """This process (and the loop processes it starts) on one core, the sut's processes on the others: the loops
    compete for their core only with each other, never with the sut they measure against."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "client and sut share the only core"
    os.sched_setaffinity(0, {cores[0]})
    for pid in sut_pids:
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            proc.cpu_affinity(cores[1:])
    return f"client pinned to core {cores[0]}, the sut to {', '.join(map(str, cores[1:]))}"


def login(auth: str, backend: str, email: str) -> tuple[str, int]:
    token = requests.post(f"{auth}/auth/login", json={"email": email, "password": "bench"}, timeout=10).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    thread = requests.post(f"{backend}/api/threads", json={"title": "bench"}, headers=headers, timeout=10).json()
    return token["access_token"], thread["id"]


def bare_loop(url: str, token: str, kind: str, thread_id: int, deadline: float, done: list[int], report=None) -> None:
    """Send, read the replies, repeat; with ``report``, also hand the timed replies (1st, 2nd and last of a chat),
    unparsed, to the Reporter as ours does: what Locust's stats and the exact record cost on top of the bare loop."""
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], skip_utf8_validation=True)
    ws.settimeout(None)
    if kind == "ping":
        payload, replies, timed = '{"type":"ping","id":"bare"}', 1, {0: "ws ping"}
    else:
        # A fresh client id per message (and per run: the users are the same in every run): the sut de-duplicates
        # resends by id and would answer a repeat with one ack, and this loop would wait for the rest forever.
        prefix = f"bare-{new_id()}-"
        template = f'{{{{"type":"chat_message","id":"{prefix}{{}}","thread_id":{thread_id},"content":"hi"}}}}'
        payload, replies = template, 6
        timed = {0: "ws round trip", 1: "agent startup", 5: "agent complete"}
    sent = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        sent += 1
        ws.send(payload.format(sent) if kind != "ping" else payload)
        for i in range(replies):
            ws.recv()
            if report is not None and i in timed:
                report.success(timed[i], (time.perf_counter() - started) * 1000.0)
        done[0] += 1
    ws.close()


def our_loop(url: str, token: str, kind: str, thread_id: int, deadline: float, done: list[int], report) -> None:
    conn = WsConnection(url, token, report)
    conn.connect()
    while time.perf_counter() < deadline:
        if kind == "ping":
            exchange = Exchange(new_id(), PING_STEPS, PING_NAMES, report)
            conn.start(exchange, {"type": "ping", "id": exchange.id})
        else:
            exchange = conn.chat(thread_id, "hi")
        if exchange.wait(10.0):
            done[0] += 1
    conn.close()


LOOPS = {"bare": (bare_loop, False), "+stats": (bare_loop, True), "ours": (our_loop, True)}  # loop, reports
LAUNCH_SLACK = 5.0  # seconds for the three loop processes to import Locust before they start together


def run_loop(label: str, kind: str, backend: str, identities: list, seconds: float, start_at: float) -> dict:
    """One loop's round trips and this process's CPU seconds over ``seconds``, from ``start_at`` (unix time)."""
    loop, reports = LOOPS[label]
    extra = ()
    if reports:
        env = Environment(events=events)
        env.create_local_runner()  # Locust's stats listen to the request events, as in a real run
        plugin.keep_record(env)  # the exact timing record, as on a worker
        extra = (Reporter(env),)
    gevent.sleep(max(0.0, start_at - time.time()))
    done = [0]
    deadline = time.perf_counter() + seconds
    cpu, started = cpu_seconds(), time.perf_counter()
    greenlets = [
        gevent.spawn(loop, ws_url(backend), token, kind, thread_id, deadline, done, *extra)
        for token, thread_id in identities
    ]
    gevent.joinall(greenlets, raise_error=True)
    return {"done": done[0], "elapsed": time.perf_counter() - started, "cpu": cpu_seconds() - cpu}


def concurrent_round(kind: str, backend: str, identities: dict[str, list], seconds: float) -> dict[str, tuple]:
    """The three loops at the same time, each in a process of its own on this process's core, each with its own
    users: the machine's drift and the sut's pace are the same for all three. Per loop: (per s, per CPU s)."""
    start_at = time.time() + LAUNCH_SLACK
    procs = {
        label: subprocess.Popen(
            [sys.executable, __file__, "--loop", label, "--kinds", kind, "--backend", backend]
            + ["--seconds", str(seconds), "--start-at", str(start_at), "--identities", json.dumps(identities[label])],
            stdout=subprocess.PIPE,
            text=True,
        )
        for label in LOOPS
    }
    figures = {}
    for label, proc in procs.items():
        output, _ = proc.communicate(timeout=LAUNCH_SLACK + seconds + 120)
        if proc.returncode != 0:
            raise SystemExit(f"bench_ws: the {label} loop failed (exit code {proc.returncode})")
        result = json.loads(output.strip().splitlines()[-1])
        figures[label] = (result["done"] / result["elapsed"], result["done"] / result["cpu"])
        print(f"  {label:<6} {kind:<5} {figures[label][0]:9.0f} round trips/s  {figures[label][1]:9.0f} per CPU s")
    return figures


def idle_users(count: int, token: str, backend: str, seconds: float, env: Environment, record: TimingRecord) -> dict:
    stats = env.runner.stats
    stats.reset_all()
    record.take_all()
    report = Reporter(env)
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    connections: list[WsConnection] = []
    sessions: list[HttpSession] = []

    def open_one(_: int) -> None:
        # what a worker holds per user: its HTTP session (used once, as a user loads its threads) and its socket
        session = HttpSession(backend, env.events.request, None)
        session.get("/api/threads", headers={"Authorization": f"Bearer {token}"}, name="GET /api/threads")
        sessions.append(session)
        conn = WsConnection(ws_url(backend), token, report)
        if conn.connect():
            connections.append(conn)

    Pool(CONNECT_CONCURRENCY).map(open_one, range(count))
    stop_at = time.perf_counter() + seconds

    def ping(conn: WsConnection) -> None:  # a Locust task: its exchange goes when it returns, before the wait
        exchange = Exchange(new_id(), PING_STEPS, PING_NAMES, report)
        conn.start(exchange, {"type": "ping", "id": exchange.id})
        exchange.wait(10.0)

    def chat(conn: WsConnection) -> None:  # sleeps as a Locust user does between tasks, with the plugin loaded
        gcwatch.sleep(random.uniform(0, IDLE_EVERY))
        while time.perf_counter() < stop_at:
            ping(conn)
            gcwatch.sleep(IDLE_EVERY)

    users = [gevent.spawn(chat, conn) for conn in connections]
    gevent.sleep(0)
    gc.collect()
    gc.freeze()  # as the plugin does once the users are spawned
    pauses = GcPauses()  # this process's own GC pauses while it measures: tail latency that is the client's own
    pauses.install()
    cpu, started = cpu_seconds(), time.perf_counter()
    gevent.joinall(users)
    cpu, elapsed = cpu_seconds() - cpu, time.perf_counter() - started
    pauses.uninstall()
    gc_max = max((values[0] for values in pauses.intervals.values()), default=0.0)
    rss_after = psutil.Process().memory_info().rss
    pings = stats.get("ws ping", "WS")
    values = sorted(ms for row in record.take_all() for ms in [row[3]] * row[4])
    for conn in connections:
        conn.close()
    for session in sessions:
        session.close()
    gc.unfreeze()
    return {
        "users": len(connections),
        "failed_connects": stats.get("WS connect", "WS").num_failures,
        "pings": pings.num_requests,
        "failures": pings.num_failures,
        "p50": values[len(values) // 2] if values else float("nan"),
        "p99": values[int(len(values) * 0.99)] if values else float("nan"),
        "cpu_percent": 100 * cpu / elapsed,
        "gc_max_ms": gc_max,
        "rss_per_conn": (rss_after - rss_before) / max(len(connections), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections for the round-trip runs")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per round-trip run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three loops per kind")
    parser.add_argument("--kinds", default="ping,chat", help="round-trip kinds to compare ('' = none)")
    parser.add_argument("--idle-users", default="1000,2500,5000,9000", help="idle-ish user counts to try, in order")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="seconds to hold each idle-ish count")
    parser.add_argument("--loop", choices=list(LOOPS), help=argparse.SUPPRESS)  # a round's loop process
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--identities", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop:
        result = run_loop(args.loop, args.kinds, args.backend, json.loads(args.identities), args.seconds, args.start_at)
        print(json.dumps(result))
        return 0

    env = Environment(events=events)
    env.create_local_runner()  # Locust's stats listen to the request events, as in a real run
    plugin.keep_record(env)  # the exact timing record, as on a worker
    record = plugin.record
    config = SutConfig(rate_limit=1_000_000, agent_step=0.0, access_token_ttl=3600.0)
    with start_sut(config, settings={"ws_ping_interval": 0.0}) as sut:
        auth, backend = sut.urls["auth"], sut.urls["backend"]
        identities = {
            label: [login(auth, backend, f"bench-{i}-{new_id()}@soak.test") for i in range(args.connections)]
            for label in LOOPS
        }
        print(pin_apart(sut.pids.values()))
        print(
            f"round trips, {args.connections} connections per loop, the three loops at once, {args.rounds} rounds of"
            f" {args.seconds:g} s (the figure is the median of the rounds' ratios):"
        )
        ratios = {}
        for kind in [k for k in args.kinds.split(",") if k]:
            rounds = []
            for _ in range(args.rounds):
                figures = concurrent_round(kind, backend, identities, args.seconds)
                bare, stats, ours = figures["bare"], figures["+stats"], figures["ours"]
                rounds.append((ours[0] / bare[0], ours[1] / bare[1], stats[1] / bare[1]))
            per_second, per_cpu, stats_alone = (statistics.median(column) for column in zip(*rounds, strict=True))
            ratios[kind] = (per_second, per_cpu)
            print(f"  ratio  {kind:<5} {per_second:9.2f} of bare per s {per_cpu:9.2f} of bare per CPU s (median)")
            print(f"         per CPU s, each round: {' '.join(f'{r[1]:.2f}' for r in rounds)}")
            print(f"  (bare loop + Locust stats alone: {stats_alone:.2f} of bare per CPU s)")

        print(f"idle-ish users (one ping every {IDLE_EVERY:g} s), {args.idle_seconds:g} s each:")
        held, per_conn = 0, float("nan")
        token = identities["ours"][0][0]
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        for count in [int(n) for n in args.idle_users.split(",") if n]:
            if FDS_PER_USER * count + FD_RESERVE > fd_limit:
                print(f"  {count:6d} users: skipped, needs {FDS_PER_USER * count} file descriptors (limit {fd_limit})")
                break
            result = idle_users(count, token, backend, args.idle_seconds, env, record)
            print(
                f"  {result['users']:6d} users: {result['pings']:6d} pings, {result['failures']} failed,"
                f" {result['failed_connects']} connects failed, p50 {result['p50']:.3g} ms, p99 {result['p99']:.3g} ms,"
                f" client CPU {result['cpu_percent']:.0f}%, client GC pause max {result['gc_max_ms']:.1f} ms,"
                f" RSS {result['rss_per_conn'] / 1024:.1f} KiB/connection"
            )
            if result["failures"] or result["failed_connects"] or result["users"] < count:
                break
            held, per_conn = result["users"], result["rss_per_conn"]

    print("goals:")
    for kind, (per_second, per_cpu) in ratios.items():
        print(
            f"  {kind}: ratio to the bare loop >= {GOAL_RATIO}: {per_second:.2f} per s {ok(per_second >= GOAL_RATIO)},"
        )
        print(f"        {per_cpu:.2f} per CPU second {ok(per_cpu >= GOAL_RATIO)}")
    print(f"  idle-ish users held >= {GOAL_USERS}: {held} {ok(held >= GOAL_USERS)}")
    print(f"  client memory <= {GOAL_BYTES // 1024} KiB/connection: {per_conn / 1024:.1f} {ok(per_conn <= GOAL_BYTES)}")
    return 0


def ok(passed: bool) -> str:
    return "ok" if passed else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
