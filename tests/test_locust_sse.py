"""SseChattingUser (locustfiles/sseuser.py): replies streamed over Server-Sent Events, measured and judged as over the
WebSocket, and streams cut mid-reply resumed with Last-Event-ID. Locust as a subprocess against the real sut (through
our TCP proxy for the cut), the run folder judged by the analysis."""

from __future__ import annotations

import time
from types import SimpleNamespace

import tomli_w
from test_locust_sampling import wait_until
from test_locust_stream import latency_check, stream_run
from test_locust_users import FAST_WAIT, failures, latency_counts, locust_stats, run_locust
from test_sut_sse import streams_open

from soak.proxy import Proxy

SSE_USERS = {"SseChattingUser": {"weight": 1, **FAST_WAIT}}
STREAM_POST = ("POST", "POST /api/threads/{id}/messages/stream")


def test_sse_users_time_tokens_and_pass_on_a_clean_sut(sut_factory, tmp_path):
    result, run_dir, analysis = stream_run(sut_factory, tmp_path, user=SSE_USERS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert failures(run_dir) == []
    stats, counts = locust_stats(run_dir), latency_counts(run_dir)
    replies = stats[STREAM_POST][0]
    assert replies > 0 and stats[STREAM_POST][1] == 0
    # once per reply; a reply under way when the two users stopped may lack its later steps
    completed = stats[("WS", "agent complete")][0]
    for name in ("agent startup", "agent complete", "time to first token", "ledger complete"):
        count, failed = stats[("WS", name)]
        assert replies - 2 <= count <= replies and failed == 0, (name, count, replies)
    assert ("WS", "ws round trip") not in stats  # the ack comes with the response, which Locust times itself
    assert 7 * completed <= counts[("WS", "token gap")] <= 7 * replies
    assert counts[("WS", "tokens per second")] == completed
    assert latency_check(analysis, "token gap")["status"] == "passed"
    assert latency_check(analysis, "time to first token")["status"] == "passed"


def test_a_repeated_token_fails_the_ledger_over_sse(sut_factory, tmp_path):
    result, run_dir, analysis = stream_run(sut_factory, tmp_path, user=SSE_USERS, duration=3.0, repeat_token_every=3)
    assert result.returncode == 1, result.stdout[-3000:]
    expected = "ledger duplicate: EventCheckFailed('agent_token twice (sequence number did not increase)')"
    assert expected in failures(run_dir)
    stats = locust_stats(run_dir)
    started = stats[STREAM_POST][0]  # one verdict per reply; one under way at the users' stop may not have it yet
    assert started > 0 and started - 2 <= stats[("WS", "ledger duplicate")][1] <= started
    assert ("WS", "ledger complete") not in stats and analysis.verdict["status"] == "failed"


def test_streams_cut_mid_reply_are_resumed_and_every_reply_counted_once(sut_factory, tmp_path):
    # the users reach the backend through our TCP proxy; while replies stream, it resets every connection twice
    sut = sut_factory(agent_step=0.005, agent_tokens=60, agent_token_interval=0.01, agent_token_jitter=0.002)
    scenario = tmp_path / "scenario.toml"
    table = {
        "users": {"SseChattingUser": {"weight": 1, "wait_min": 0.1, "wait_max": 0.2}},
        "shape": {"kind": "steady", "users": 3, "spawn_rate": 10.0, "duration": 8.0},
    }
    scenario.write_text(tomli_w.dumps(table), encoding="utf-8")
    cuts = []
    with Proxy(("127.0.0.1", sut.ports["backend"])) as proxy:

        def cut_while_streaming() -> None:
            for _ in range(2):
                wait_until(lambda: streams_open(sut) > 0, 20)
                proxy.cut("reset")
                cuts.append(time.monotonic())
                time.sleep(0.3)
                proxy.restore()
                time.sleep(1.5)

        via = SimpleNamespace(urls={"backend": f"http://127.0.0.1:{proxy.port}", "auth": sut.urls["auth"]})
        run_locust(via, scenario, tmp_path / "run", during=cut_while_streaming)
    stats = locust_stats(tmp_path / "run")
    assert len(cuts) == 2 and stats[("WS", "ws resend")][0] > 0  # streams broke and were resumed
    assert stats[("WS", "ledger complete")][0] > 0
    assert ("WS", "ledger lost") not in stats and ("WS", "ledger duplicate") not in stats
    assert ("WS", "ws event") not in stats  # nothing repeated, out of order or foreign after a resume
    # what failed is what the cut refused (HTTP requests while it lasted), never a check on a reply's events
    assert all(line.startswith(("GET ", "POST ")) for line in failures(tmp_path / "run")), failures(tmp_path / "run")
