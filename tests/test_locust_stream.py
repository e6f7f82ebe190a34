"""Streamed replies as the users measure them: time to first token, gaps, stalls and the token ledger.

The unit tests feed events as the server sends them (in-process: they import locustfiles, so gevent); the end-to-end
ones run Locust as a subprocess against the real sut and judge the run folder with the analysis.
"""

from __future__ import annotations

import shutil

import pytest
import tomli_w
from test_locust_users import FAST_WAIT, failures, latency_counts, locust_stats, run_locust

CHAT = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed"]
STREAM_TARGETS = [
    {"name": "ws round trip", "percentile": 95.0, "max_ms": 500.0},
    {"name": "time to first token", "percentile": 95.0, "max_ms": 500.0},
    {"name": "token gap", "percentile": 95.0, "max_ms": 50.0},
]


class Recorder:
    """Stands in for Locust's environment: collects what the client fires (name, ms, error message)."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.fired: list[tuple[str, float | None, str | None]] = []
        self.events = SimpleNamespace(request=SimpleNamespace(fire=self.fire))

    def fire(self, request_type, name, response_time, response_length, exception, context):  # noqa: ANN001
        self.fired.append((name, response_time, None if exception is None else str(exception)))

    def record_timing(self, request_type, name, ms):  # noqa: ANN001 - what Reporter.timing hands the exact record
        self.fired.append((name, ms, None))

    def ok(self, name: str) -> list[float]:
        return [ms for n, ms, err in self.fired if n == name and err is None]

    def errors(self) -> list[str]:
        return [f"{n}: {err}" for n, _, err in self.fired if err is not None]


def events(reply_to: str, seqs: list[int], count: int | None = None, first_id: int = 100) -> list[dict]:
    """A reply's events: the steps, tokens with ``seqs``, agent_completed saying ``count`` tokens."""
    out = [{"type": t, "reply_to": reply_to} for t in CHAT]
    out += [{"type": "agent_token", "reply_to": reply_to, "seq": s, "text": "w "} for s in seqs]
    final = {"type": "agent_completed", "reply_to": reply_to}
    if count is not None:
        final["tokens"] = count
    out.append(final)
    for i, event in enumerate(out):
        event["event_id"] = first_id + i
    return out


def tab_inbox(env, stall_ms: float = 250.0):
    from locustfiles.exchange import CHAT_NAMES, CHAT_STEPS, Exchange, Reporter
    from locustfiles.ledger import Ledger, LedgerInbox

    ledger = Ledger(Reporter(env), 10.0)
    inbox = LedgerInbox(Reporter(env), ledger)
    inbox.stall_ms = stall_ms
    exchange = Exchange("m1", CHAT_STEPS, CHAT_NAMES, Reporter(env))
    exchange.sent_at = 0.0
    ledger.expect("m1", {"type": "chat_message", "id": "m1"}, now=0.0)
    inbox.expect(exchange)
    return ledger, inbox, exchange


@pytest.mark.locust_inprocess
def test_exchange_times_first_token_gaps_rate_and_stalls():
    env = Recorder()
    _, inbox, exchange = tab_inbox(env, stall_ms=100.0)
    # the steps, a 50 ms wait for the first token, 3 more 10 ms apart, a 260 ms stall, one more, the end
    arrivals = [0.01] * 5 + [0.05, 0.06, 0.07, 0.08, 0.34, 0.35] + [0.36]
    for event, now in zip(events("m1", list(range(6)), count=6), arrivals, strict=True):
        inbox.handle(event, now)
    assert exchange.ok and exchange.stream.count == 6
    assert env.ok("time to first token") == pytest.approx([50.0])
    gaps = env.ok("token gap")
    assert len(gaps) == 5 and gaps[3] == pytest.approx(260.0) and max(gaps[:3] + gaps[4:]) == pytest.approx(10.0)
    assert env.errors() == ["token stall: gap between tokens over 100 ms"]
    assert env.ok("tokens per second") == pytest.approx([5 / 0.30])
    assert env.ok("ledger complete")


@pytest.mark.locust_inprocess
@pytest.mark.parametrize(
    ("seqs", "count", "expected"),
    [
        ([0, 1, 3, 4], 5, "ledger lost: agent_token missing (sequence number skipped)"),
        ([0, 1, 1, 2, 3], 4, "ledger duplicate: agent_token twice (sequence number did not increase)"),
        ([0, 1, 2], 4, "ledger lost: agent_token missing at agent_completed"),
        ([0, 2, 1, 3], 4, "ledger lost: agent_token missing (sequence number skipped)"),
    ],
)
def test_token_ledger_fails_on_a_dropped_or_duplicated_token(seqs, count, expected):
    env = Recorder()
    ledger, inbox, _ = tab_inbox(env)
    for i, event in enumerate(events("m1", seqs, count)):
        inbox.handle(event, 0.01 * (i + 1))
    assert expected in env.errors()
    assert not env.ok("ledger complete") and ledger.counts["complete"] == 0


@pytest.mark.locust_inprocess
def test_token_ledger_counts_across_a_reconnect_with_replay():
    env = Recorder()
    ledger, inbox, exchange = tab_inbox(env)
    feed = events("m1", list(range(6)), count=6)
    for event in feed[:8]:  # the steps and tokens 0-2 on the first connection
        inbox.handle(event, 0.1)
    exchange.untime()  # the reconnect: the rest comes with the replay, not timed
    for event in feed[8:]:
        inbox.handle(event, 0.5)
    assert env.errors() == [] and ledger.counts["complete"] == 1
    assert len(env.ok("token gap")) == 2  # gaps timed only while on the first connection


@pytest.mark.locust_inprocess
def test_a_platform_that_does_not_stream_is_not_judged_on_tokens():
    env = Recorder()
    ledger, inbox, _ = tab_inbox(env)
    for event in events("m1", []):
        inbox.handle(event, 0.1)
    assert env.errors() == [] and ledger.counts["complete"] == 1 and not env.ok("time to first token")


# --- end to end: Locust against the real sut, the run judged by the analysis


def stream_run(sut_factory, tmp_path, users: int = 2, duration: float = 6.0, user: dict | None = None, **sut: object):
    from analysis import analyze

    config = {"agent_step": 0.005, "agent_tokens": 8, "agent_token_interval": 0.004, "agent_token_jitter": 0.002}
    config.update(sut)
    running = sut_factory(**config)
    scenario = tmp_path / "scenario.toml"
    table = {
        "sut": config,
        "users": user or {"ChattingUser": {"weight": 1, **FAST_WAIT}},
        "shape": {"kind": "steady", "users": users, "spawn_rate": 10.0, "duration": duration},
        "phases": {"warmup": 0.0},
        "targets": {"latency": STREAM_TARGETS},
    }
    scenario.write_text(tomli_w.dumps(table), encoding="utf-8")
    run_dir = tmp_path / "run"
    result = run_locust(running, scenario, run_dir)
    shutil.copy(scenario, run_dir / "scenario.toml")
    return result, run_dir, analyze(run_dir)


def latency_check(analysis, name: str, scope: str = "overall") -> dict:
    return next(c for c in analysis.verdict["latency"] if c["name"] == name and c["scope"] == scope)


def test_clean_stream_passes_and_is_in_the_timing_record(sut_factory, tmp_path):
    result, run_dir, analysis = stream_run(sut_factory, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert failures(run_dir) == []
    stats, counts = locust_stats(run_dir), latency_counts(run_dir)
    for name in ("time to first token", "ledger complete"):
        assert stats[("WS", name)][0] > 0 and stats[("WS", name)][1] == 0, name
    # gaps and rates are in the exact record only: one per token must not swamp Locust's requests per second
    assert ("WS", "token gap") not in stats and ("WS", "tokens per second") not in stats
    # a reply is rated when it completes; one under way when the users stopped has its first token and some gaps only
    completed = counts[("WS", "agent complete")]
    assert completed > 0 and counts[("WS", "tokens per second")] == completed
    assert 7 * completed <= counts[("WS", "token gap")] <= 7 * counts[("WS", "time to first token")]
    assert latency_check(analysis, "token gap")["status"] == "passed"
    assert latency_check(analysis, "time to first token")["status"] == "passed"


def test_stall_fault_fails_the_gap_target(sut_factory, tmp_path):
    result, run_dir, analysis = stream_run(sut_factory, tmp_path, stall_tokens_every=2, stall_for=0.3)
    assert result.returncode == 1, result.stdout[-3000:]
    gap = latency_check(analysis, "token gap")
    assert gap["status"] == "failed" and gap["value_ms"] >= 250.0, gap
    assert gap["reason"].endswith("missed (fault switch on: stall_tokens_every=2)"), gap["reason"]
    assert "token gap" in analysis.verdict["status_reason"] or any(
        "token gap" in c["title"] and c["status"] == "failed" for c in analysis.verdict["checks"]
    )
    assert "token stall: EventCheckFailed('gap between tokens over 250 ms')" in failures(run_dir)
    assert latency_check(analysis, "time to first token")["status"] == "passed"


def test_tokens_survive_a_reconnect_mid_stream(sut_factory, tmp_path):
    # every other message the connection drops after agent_started, while tokens stream: the resume replays the rest
    user = {"ReconnectingUser": {"weight": 1, "drop_every": 1, **FAST_WAIT}}
    result, run_dir, _ = stream_run(sut_factory, tmp_path, user=user, agent_tokens=20, agent_token_interval=0.01)
    assert result.returncode == 0, result.stdout[-3000:]
    assert failures(run_dir) == []
    stats = locust_stats(run_dir)
    assert stats[("WS", "reconnect replay")][0] > 0 and stats[("WS", "ledger complete")][0] > 0


@pytest.mark.parametrize(
    ("switch", "verdict"),
    [
        ("drop_token_every", "ledger lost: EventCheckFailed('agent_token missing (sequence number skipped)')"),
        (
            "repeat_token_every",
            "ledger duplicate: EventCheckFailed('agent_token twice (sequence number did not increase)')",
        ),
    ],
    ids=["drop", "repeat"],
)
def test_a_dropped_or_repeated_token_fails_the_ledger(sut_factory, tmp_path, switch, verdict):
    # 8 tokens, seq 3 and 6 left out or sent twice: no reply is whole, and the ledger says which way
    result, run_dir, analysis = stream_run(sut_factory, tmp_path, duration=3.0, **{switch: 3})
    assert result.returncode == 1, result.stdout[-3000:]
    assert verdict in failures(run_dir)
    stats = locust_stats(run_dir)
    name = verdict.split(":")[0]
    # one verdict per reply (a reply under way when the two users stopped may not have reached its bad token)
    started = stats[("WS", "time to first token")][0]
    assert started > 0 and started - 2 <= stats[("WS", name)][1] <= started
    assert ("WS", "ledger complete") not in stats
    assert analysis.verdict["status"] == "failed"
