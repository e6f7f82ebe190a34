"""Memory per unit of work: the same leak per chat message reads the same at 10 and at 100 users, where MB/h does
not; the work is counted from latency.csv, else from Locust's totals; without either there is no per-unit figure."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import analyze
from analysis.synthetic import T0, build_run, write_history

MB = 1024.0 * 1024.0
HOUR = 3600.0
KEEP_PER_MESSAGE = 2048.0  # bytes


def _folder(tmp_path, messages_per_s, timing_record=True, name="run", seed=3):
    rng = np.random.default_rng(seed)
    load_start, hours = T0 + 60, 3.0
    load_stop = load_start + hours * HOUR
    ts = np.arange(T0, load_stop + 120, 10.0)
    sent = messages_per_s * np.clip(np.minimum(ts, load_stop) - load_start, 0, None)
    memory = 200 * MB + KEEP_PER_MESSAGE * sent + 0.3 * MB * rng.normal(size=ts.size)
    events = [(load_start, "load_start", ""), (load_start + 300, "warmup_end", ""), (load_stop, "load_stop", "")]
    seconds = np.arange(load_start, load_stop, 10.0)
    rows = [(t, "WS", "ws round trip", 12.0, int(messages_per_s * 10)) for t in seconds]
    rows += [(t, "GET", "GET /api/threads", 20.0, 5) for t in seconds]
    rows += [(t, "WS", "WS connect", 15.0, 1) for t in seconds]  # reconnecting users: 360 an hour
    total = {("WS", "ws round trip"): (int(messages_per_s * hours * HOUR), 0), ("GET", "GET /api/threads"): (5400, 0)}
    path = build_run(
        tmp_path / name,
        {("backend", "mem_rss_bytes"): (ts, memory)},
        events,
        {"name": "perwork"},
        latency=rows if timing_record else None,
        locust=total,
    )
    if not timing_record:
        write_history(
            path / "locust_stats_history.csv", seconds, np.full(seconds.size, 10.0), np.full(seconds.size, 5.0)
        )
    return analyze(path).verdict["leaks"][0]


def test_the_same_leak_per_message_reads_the_same_at_any_load(tmp_path):
    low, high = _folder(tmp_path, 2.0, name="low"), _folder(tmp_path, 20.0, name="high")
    assert low["status"] == high["status"] == "failed"
    assert high["slope_per_hour"] == pytest.approx(10 * low["slope_per_hour"], rel=0.1)  # MB/h follows the load
    for entry in (low, high):
        assert entry["per_unit"]["message"] == pytest.approx(KEEP_PER_MESSAGE, rel=0.25), entry["reason"]
        assert entry["work_source"] == "latency.csv"
        assert "KB per chat message" in entry["reason"]
        assert {"message", "request", "connection"} <= set(entry["per_unit"])


def test_locust_totals_stand_in_for_the_timing_record(tmp_path):
    entry = _folder(tmp_path, 5.0, timing_record=False)
    assert entry["per_unit"]["message"] == pytest.approx(KEEP_PER_MESSAGE, rel=0.25), entry["reason"]
    assert "locust_stats.csv" in entry["work_source"]


def test_no_record_of_work_no_per_unit_figure(tmp_path):
    ts = np.arange(T0, T0 + 2 * HOUR, 10.0)
    folder = build_run(tmp_path / "run", {("backend", "mem_rss_bytes"): (ts, 100 * MB + 5 * MB * (ts - T0) / HOUR)})
    entry = analyze(folder).verdict["leaks"][0]
    assert entry["status"] == "failed" and "per_unit" not in entry and "per chat message" not in entry["reason"]


def test_verdict_and_report_show_the_rule_and_the_figure_per_unit(tmp_path):
    import json

    from analysis import analyze_and_write

    _folder(tmp_path, 5.0, name="run")
    analysis = analyze_and_write(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "verdict.json").read_text(encoding="utf-8"))
    entry = saved["leaks"][0]
    assert entry["rule"] == "slope" and entry["per_unit"]["message"] > 0
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "kept per unit of work" in page and "per chat message" in page
    assert "backend mem_rss_bytes (leak)" in analysis.verdict["failed_checks"]
