"""Streamed replies: the client's cost per streamed event, next to a bare websocket-client loop in the same run.

Each connection sends a chat message and reads its reply to ``agent_completed``: the ack, four steps, ``--tokens``
``agent_token`` events (200 by default) and the final event, streamed by the real sut as fast as it can
(``agent_token_interval`` 0). Two loops under gevent, alternated, best of 2:
- ``bare``: send, ``recv()`` until the final event, no parsing beyond finding the end;
- ``ours``: a Tab as the users have it (reader greenlet, Inbox matching, the event-id check, the token Stream firing
  ``time to first token`` / ``token gap`` / ``tokens per second`` into real Locust stats and the exact timing record,
  the delivery ledger counting every token's sequence number).
Printed: events per second and per CPU second of this (the load-generating) process, and ours as a ratio of bare.
The sut runs in its own processes on the same cores: events per CPU second of the client is the figure that says
what a worker can take.

Then the capacity: how many concurrent streaming users one Locust worker (this process, a real local runner with
real ChattingUsers: login, thread, WebSocket, chat, think) holds with its token gap p99 under ``--gap-p99-max``
(50 ms) against the embedded sut, its replies paced as a model's (``--interval`` 5 ms per token, 2 ms jitter). The
user count steps up by ``--factor`` from ``--start``, each step measured ``--step-seconds`` after its users have
started; it stops at the first step over (or ``--max-steps``, or ``--max-users``). Per step: replies per second,
tokens per second, the replies streaming at once (Little's law: replies/s x mean reply time), the gap p50/p99, and
the CPU of this process and of the sut's (on the same cores: which one ran out says whose limit it is).

    .venv/bin/python bench/bench_stream.py [--connections 20] [--seconds 8] [--tokens 200] [--start 10 --factor 1.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gevent
import locust  # noqa: F401, I001 - first: gevent monkey-patching
import numpy as np
import psutil
import websocket
from locust import events
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ws import cpu_seconds, login  # noqa: E402 - the same helpers: bench/ is this script's folder

from analysis.latency import weighted_percentiles  # noqa: E402
from locustfiles import options, plugin, timings, userclasses, users  # noqa: E402
from locustfiles.exchange import Reporter, new_id  # noqa: E402
from locustfiles.reconnect import Policy, Tab  # noqa: E402
from locustfiles.timings import round_ms  # noqa: E402
from locustfiles.wsclient import ws_url  # noqa: E402
from runspec import resolve  # noqa: E402
from runspec.protocol import TOKEN_GAP, TOKEN_STALL  # noqa: E402
from sut.launcher import SutConfig, start_sut  # noqa: E402

LAG_EVERY = 0.01  # seconds the loop-lag probe sleeps
LAG_KEPT = 100_000  # lag readings kept per step (a step of 15 s takes 1,500)
STEPS = 6  # ack, agent_started, agent_thinking, tool_executing, tool_completed, agent_completed
FINAL = '"type": "agent_completed"'


def bare_loop(backend: str, token: str, thread_id: int, deadline: float, done: list[int], _report) -> None:  # noqa: ANN001
    ws = websocket.create_connection(
        ws_url(backend), header=[f"Authorization: Bearer {token}"], skip_utf8_validation=True
    )
    sent = 0
    while time.perf_counter() < deadline:
        sent += 1
        ws.send(f'{{"type":"chat_message","id":"bare-{new_id()}","thread_id":{thread_id},"content":"hi"}}')
        while True:
            done[0] += 1
            if FINAL in ws.recv():
                break
    ws.close()


def our_loop(backend: str, token: str, thread_id: int, deadline: float, done: list[int], report: Reporter) -> None:
    tab = Tab(backend, lambda: token, report, Policy(heartbeat_interval=0.0))
    tab.connect()
    while time.perf_counter() < deadline:
        exchange = tab.chat(thread_id, "hi")
        if exchange.wait(30.0):
            done[0] += STEPS + (exchange.stream.count if exchange.stream is not None else 0)
    tab.close()


def throughput(label: str, loop, identities, backend: str, seconds: float, report: Reporter) -> tuple[float, float]:  # noqa: ANN001
    done = [0]
    deadline = time.perf_counter() + seconds
    cpu, started = cpu_seconds(), time.perf_counter()
    greenlets = [gevent.spawn(loop, backend, token, thread, deadline, done, report) for token, thread in identities]
    gevent.joinall(greenlets, raise_error=True)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    print(f"  {label:<5} {done[0] / elapsed:9.0f} events/s  {done[0] / cpu:9.0f} events per CPU s")
    return done[0] / elapsed, done[0] / cpu


class Gaps:
    """The users' token gaps, counted per rounded value (what Reporter.timing hands the exact record)."""

    def __init__(self) -> None:
        self.counts: dict[float, int] = {}

    def record_timing(self, _request_type: str, name: str, ms: float) -> None:
        if name == TOKEN_GAP:
            key = round_ms(ms)
            self.counts[key] = self.counts.get(key, 0) + 1

    def take(self) -> tuple[int, float, float]:
        """How many gaps since the last take, and their p50 and p99 in ms."""
        counts, self.counts = self.counts, {}
        if not counts:
            return 0, float("nan"), float("nan")
        ms, n = np.array(list(counts.keys())), np.array(list(counts.values()), dtype=float)
        p50, p99 = weighted_percentiles(ms, n, (50.0, 99.0))
        return int(n.sum()), p50, p99


def process_cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


class LoopLag:
    """How late this process's gevent loop woke a greenlet that sleeps LAG_EVERY: a token read late by the worker
    shows here; a token sent late by the sut (or a host too busy for both) does not."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.probe = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            due = time.perf_counter() + LAG_EVERY
            gevent.sleep(LAG_EVERY)
            if len(self.lags) < LAG_KEPT:
                self.lags.append((time.perf_counter() - due) * 1000.0)

    def take_p99(self) -> float:
        lags, self.lags = self.lags, []
        return float(np.percentile(lags, 99)) if lags else float("nan")


def capacity(args: argparse.Namespace) -> None:
    """Streaming ChattingUsers stepped up until their token gap p99 passes the limit (see the module's doc)."""
    sut_keys = {
        "rate_limit": 0,
        "agent_tokens": args.tokens,
        "agent_token_interval": args.interval,
        "agent_token_jitter": args.jitter,
    }
    wait = {"wait_min": args.wait_min, "wait_max": args.wait_max}
    with start_sut(SutConfig(**sut_keys)) as sut:
        options.current = options.Settings(
            scenario=resolve({"sut": sut_keys, "users": {"ChattingUser": {"weight": 1, **wait}}}, "<bench>"),
            auth_host=sut.urls["auth"],
        )
        env = Environment(user_classes=[users.ChattingUser], host=sut.urls["backend"])
        gaps = Gaps()
        env.record_timing = gaps.record_timing  # Reporter.timing hands the token gaps here
        userclasses.configure(env, options.current, drop_unweighted=False)
        runner = env.create_local_runner()
        backend, agent = psutil.Process(sut.pids["backend"]), psutil.Process(sut.pids["agent"])
        lag = LoopLag()
        print(
            f"capacity: ChattingUsers streaming {args.tokens}-token replies ({args.interval * 1000:g} ms apart, "
            f"+-{args.jitter * 1000:g} ms), thinking {args.wait_min:g}-{args.wait_max:g} s; "
            f"limit: token gap p99 <= {args.gap_p99_max:g} ms"
        )
        print(
            "  users  replies/s  tokens/s  streaming  gap p50  gap p99  failed/stalls  worker CPU  loop lag p99"
            "  backend CPU  agent CPU"
        )
        held, count, over = 0, args.start, False
        for _ in range(args.max_steps):
            runner.start(count, spawn_rate=args.spawn_rate)
            started = time.perf_counter()
            while runner.user_count < count and time.perf_counter() - started < count / args.spawn_rate + 30:
                gevent.sleep(0.5)
            gevent.sleep(args.settle)  # logins, threads and sockets of the new users, and their first replies
            runner.stats.reset_all()
            gaps.take()
            lag.take_p99()
            cpus = (cpu_seconds(), process_cpu(backend), process_cpu(agent))
            began = time.perf_counter()
            gevent.sleep(args.step_seconds)
            elapsed = time.perf_counter() - began
            cpu, backend_cpu, agent_cpu = (
                100 * (now - then) / elapsed
                for now, then in zip((cpu_seconds(), process_cpu(backend), process_cpu(agent)), cpus, strict=True)
            )
            n, p50, p99 = gaps.take()
            complete = runner.stats.get("agent complete", "WS")
            stalls = runner.stats.get(TOKEN_STALL, "WS").num_failures
            failed = runner.stats.total.num_failures - stalls  # stalls are gaps: the p99 judges them
            replies = complete.num_requests / elapsed
            streaming = replies * complete.avg_response_time / 1000.0
            print(
                f"  {count:5d}  {replies:9.1f}  {n / elapsed:8.0f}  {streaming:9.1f}  {p50:7.1f}  {p99:7.1f}"
                f"  {f'{failed}/{stalls}':>13}  {cpu:9.0f}%  {lag.take_p99():9.1f} ms"
                f"  {backend_cpu:10.0f}%  {agent_cpu:8.0f}%"
            )
            if not p99 <= args.gap_p99_max or failed:  # NaN (no gaps at all) is over too
                over = True
                break
            held = count
            if count >= args.max_users:
                break
            count = min(args.max_users, max(count + 1, round(count * args.factor)))
        runner.quit()
        lag.probe.kill()
    limit = f"with token gap p99 <= {args.gap_p99_max:g} ms"
    if not held:
        print(f"  one worker holds fewer than {args.start} streaming users {limit}")
    elif over:
        print(f"  one worker holds {held} streaming users {limit} (the next step, {count}, was over)")
    else:
        print(f"  one worker holds at least {held} streaming users {limit} (the steps ended before the limit)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20, help="concurrent connections")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per streamed reply")
    parser.add_argument("--skip-ratio", action="store_true", help="only the capacity steps")
    parser.add_argument("--skip-capacity", action="store_true", help="only the events per CPU second")
    parser.add_argument("--interval", type=float, default=0.005, help="capacity: seconds between tokens")
    parser.add_argument("--jitter", type=float, default=0.002, help="capacity: each token's delay varies this much")
    parser.add_argument("--wait-min", type=float, default=1.0, help="capacity: shortest think time (s)")
    parser.add_argument("--wait-max", type=float, default=3.0, help="capacity: longest think time (s)")
    parser.add_argument("--gap-p99-max", type=float, default=50.0, help="capacity: the token gap p99 limit (ms)")
    parser.add_argument("--start", type=int, default=10, help="capacity: users in the first step")
    parser.add_argument("--factor", type=float, default=1.5, help="capacity: users multiplied by this per step")
    parser.add_argument("--max-users", type=int, default=1000, help="capacity: most users")
    parser.add_argument("--max-steps", type=int, default=10, help="capacity: most steps")
    parser.add_argument("--spawn-rate", type=float, default=20.0, help="capacity: users started per second")
    parser.add_argument("--settle", type=float, default=5.0, help="capacity: seconds after a step's users started")
    parser.add_argument("--step-seconds", type=float, default=15.0, help="capacity: seconds measured per step")
    args = parser.parse_args()
    if not args.skip_ratio:
        ratio(args)
    if not args.skip_capacity:
        capacity(args)
    return 0


def ratio(args: argparse.Namespace) -> None:
    """Our client's streamed events per CPU second against the bare loop's (see the module's doc)."""

    env = Environment(events=events)
    env.create_local_runner()  # Locust's stats listen to the request events, as in a real run
    plugin.keep_record(env)  # the exact timing record, as on a worker
    report = Reporter(env)
    config = SutConfig(
        rate_limit=0, agent_step=0.0, agent_tokens=args.tokens, agent_token_interval=0.0, agent_token_jitter=0.0
    )
    with start_sut(config, settings={"ws_ping_interval": 0.0, "replay_max_events": 100_000}) as sut:
        auth, backend = sut.urls["auth"], sut.urls["backend"]
        identities = [login(auth, backend, f"bench-{i}-{new_id()}@soak.test") for i in range(args.connections)]
        print(f"{args.tokens}-token replies, {args.connections} connections, {args.seconds:g} s each (best of 2):")
        bare = ours = (0.0, 0.0)
        for _ in range(2):
            run = throughput("bare", bare_loop, identities, backend, args.seconds, report)
            bare = (max(bare[0], run[0]), max(bare[1], run[1]))
            run = throughput("ours", our_loop, identities, backend, args.seconds, report)
            ours = (max(ours[0], run[0]), max(ours[1], run[1]))
    timings.SINK = None  # the capacity run keeps its own record (env.record_timing)
    print(f"  ratio {ours[0] / bare[0]:9.2f} of bare per s {ours[1] / bare[1]:9.2f} of bare per CPU s")
    # the sut shares the cores and is the limit here: stalls above token_stall say so, they are not the client's
    failed = {name: e.num_failures for (name, _), e in env.runner.stats.entries.items() if e.num_failures}
    print(f"  failures recorded by our loop: {failed or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
