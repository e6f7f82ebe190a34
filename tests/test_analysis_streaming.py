"""Streamed replies in the analysis: stream targets judged like the others (no data when nothing streamed, the stall
switch named when missed), the summary's stalls per interval, and the report section."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import analyze
from analysis.figures import Figures
from analysis.streaming import stall_threshold_ms, stream_summary
from analysis.streamsection import stream_section
from analysis.synthetic import T0, build_run

STREAM_TARGETS = [
    {"name": "ws round trip", "percentile": 95.0, "max_ms": 50.0},
    {"name": "time to first token", "percentile": 95.0, "max_ms": 500.0},
    {"name": "token gap", "percentile": 95.0, "max_ms": 50.0},
]


def _samples():
    ts = np.arange(T0, T0 + 631, 10.0)
    return {("backend", "mem_rss_bytes"): (ts, 1e8 + 0 * ts)}


def _events():
    return [
        (T0, "load_start", ""),
        (T0 + 10, "warmup_end", ""),
        (T0 + 600, "load_stop", ""),
        (T0 + 630, "drain_end", ""),
    ]


def _rows(stall_every: int = 0, stall_ms: float = 300.0):
    """A reply a second for 10 minutes: first token at 80 ms, 7 gaps of 5 ms (one stalled every N replies)."""
    rows = []
    for i in range(590):
        ts = T0 + 10 + i
        rows.append((ts, "WS", "ws round trip", 3.0, 1))
        rows.append((ts, "WS", "time to first token", 80.0, 1))
        stalled = stall_every and i % stall_every == 0
        rows.append((ts, "WS", "token gap", 5.0, 6 if stalled else 7))
        if stalled:
            rows.append((ts, "WS", "token gap", stall_ms, 1))
        rows.append((ts, "WS", "tokens per second", 150.0, 1))
    return rows


def _locust():
    return {("WS", "ws round trip"): (590, 0)}


def test_no_tokens_means_no_data_for_the_stream_targets_not_a_failure(tmp_path):
    rows = [(T0 + 10 + i, "WS", "ws round trip", 3.0, 1) for i in range(590)]
    asked = [{**t, "max_ms": t["max_ms"] * 2} for t in STREAM_TARGETS]  # not the defaults: the scenario asks for them
    scenario = {"targets": {"latency": asked}}
    folder = build_run(tmp_path / "run", _samples(), _events(), scenario=scenario, latency=rows, locust=_locust())
    analysis = analyze(folder)
    stream = [c for c in analysis.verdict["latency"] if c["name"] in ("time to first token", "token gap")]
    assert [c["status"] for c in stream] == ["no data", "no data"]
    assert "streamed no tokens" in stream[0]["reason"]
    assert analysis.verdict["status"] == "passed"
    assert stream_summary(analysis.run.latency) is None


def test_the_default_stream_targets_are_left_out_of_a_run_that_did_not_stream(tmp_path):
    rows = [(T0 + 10 + i, "WS", "ws round trip", 3.0, 1) for i in range(590)]
    folder = build_run(tmp_path / "run", _samples(), _events(), scenario={}, latency=rows, locust=_locust())
    names = {c["name"] for c in analyze(folder).verdict["latency"]}
    assert "ws round trip" in names and not names & {"time to first token", "token gap"}


def test_clean_stream_passes_and_a_stalled_one_fails_naming_the_switch(tmp_path):
    clean = build_run(
        tmp_path / "clean",
        _samples(),
        _events(),
        scenario={"targets": {"latency": STREAM_TARGETS}, "sut": {"agent_tokens": 8}},
        latency=_rows(),
        locust=_locust(),
    )
    assert analyze(clean).verdict["status"] == "passed"
    stalled = build_run(
        tmp_path / "stalled",
        _samples(),
        _events(),
        scenario={"targets": {"latency": STREAM_TARGETS}, "sut": {"agent_tokens": 8, "stall_tokens_every": 4}},
        latency=_rows(stall_every=1),  # one gap in 7 stalls: far above the 5% a p95 forgives
        locust=_locust(),
    )
    verdict = analyze(stalled).verdict
    gap = next(c for c in verdict["latency"] if c["name"] == "token gap" and c["scope"] == "overall")
    assert gap["status"] == "failed" and gap["value_ms"] == pytest.approx(300.0)
    assert "fault switch on: stall_tokens_every=4" in gap["reason"]
    assert verdict["status"] == "failed" and "token gap p95 overall" in verdict["status_reason"]
    first = next(c for c in verdict["latency"] if c["name"] == "time to first token" and c["scope"] == "overall")
    assert first["status"] == "passed"
    # gaps and rates are not requests: the WS channel's figures are the round trips and first tokens only
    channel = next(r for r in verdict["latency_table"] if r["type"] == "channel" and r["name"] == "WS")
    assert channel["count"] == 2 * 590
    assert "tokens per second" not in {r["name"] for r in verdict["latency_table"]}  # a rate, not ms


def test_summary_counts_stalls_per_interval(tmp_path):
    folder = build_run(tmp_path / "run", _samples(), _events(), latency=_rows(stall_every=10), locust=_locust())
    analysis = analyze(folder)
    summary = stream_summary(analysis.run.latency, stall_threshold_ms(analysis.run.settings.scenario))
    assert summary["replies"] == 590 and summary["gaps"] == 590 * 7
    assert summary["stall_ms"] == 250.0 and summary["stalls"] == 59
    assert summary["first_p95_ms"] == pytest.approx(80.0) and summary["rate_p50"] == pytest.approx(150.0)
    series = summary["series"]
    assert series["stalls"].sum() == 59 and series["ts"].size == 59
    assert np.nanmax(series["gap_p95"]) == pytest.approx(5.0)


def test_threshold_follows_the_users_token_stall():
    scenario = {"users": {"ChattingUser": {"weight": 1, "token_stall": 0.1}, "MultiTabUser": {"weight": 0}}}
    assert stall_threshold_ms(scenario) == pytest.approx(100.0)
    assert stall_threshold_ms({}) == 250.0


def test_report_section_draws_only_for_streamed_runs(tmp_path):
    streamed = analyze(build_run(tmp_path / "s", _samples(), _events(), latency=_rows(4), locust=_locust()))
    figures = Figures(streamed, None)
    page = figures.fill(stream_section(streamed, figures))
    assert "<h2>Streamed replies</h2>" in page and "data:image/png;base64," in page
    assert "stalls (gaps over 250 ms)" in page
    rows = [(T0 + 10 + i, "WS", "ws round trip", 3.0, 1) for i in range(100)]
    plain = analyze(build_run(tmp_path / "p", _samples(), _events(), latency=rows, locust=_locust()))
    assert stream_section(plain, Figures(plain, None)) == ""
