"""Exact percentiles from the timing record, targets overall and in the last hour, error rate, "no data"."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import analyze
from analysis.latency import bucket_edges, weighted_percentiles
from analysis.synthetic import T0, build_run, round3, timing_rows

HOUR = 3600.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1e5, allow_nan=False), min_size=1, max_size=300),
    st.floats(min_value=0.0, max_value=100.0),
)
def test_percentiles_of_raw_timings_agree_with_numpy(timings, percentile):
    ms = np.array(timings)
    ours = weighted_percentiles(ms, np.ones(ms.size, dtype=np.int64), [percentile])[0]
    assert ours == pytest.approx(float(np.percentile(ms, percentile)), rel=1e-12, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 5000.0), st.integers(1, 50)), min_size=1, max_size=80))
def test_counted_rows_agree_with_numpy_on_the_timings_they_stand_for(rows):
    ms = np.array([r[0] for r in rows])
    counts = np.array([r[1] for r in rows])
    expanded = np.repeat(ms, counts)
    for p in (0.0, 50.0, 95.0, 99.0, 99.9, 100.0):
        assert weighted_percentiles(ms, counts, [p])[0] == pytest.approx(float(np.percentile(expanded, p)), rel=1e-12)


def test_round3_keeps_three_significant_digits():
    assert list(round3(np.array([41.237, 1234.5, 0.012345, 999.94]))) == pytest.approx([41.2, 1230.0, 0.0123, 1000.0])


def test_buckets_are_whole_hours_counted_back_from_the_end():
    edges, width = bucket_edges(T0, T0 + 12.5 * HOUR)
    assert width == HOUR and edges[-1] == T0 + 12.5 * HOUR and edges[-2] == T0 + 11.5 * HOUR
    edges, width = bucket_edges(T0, T0 + 600)
    assert width == 60 and len(edges) == 11


def _samples(hours: float):
    ts = np.arange(T0, T0 + hours * HOUR + 1, 10.0)
    return {("backend", "mem_rss_bytes"): (ts, 1e8 + 0 * ts)}


def _events(hours: float, warmup: float = 60.0):
    return [(T0, "load_start", ""), (T0 + warmup, "warmup_end", ""), (T0 + hours * HOUR, "load_stop", "")]


def test_verdict_values_are_numpy_percentiles_of_the_judged_timings(tmp_path):
    rng = np.random.default_rng(1)
    ts = T0 + rng.uniform(0, 2 * HOUR, 4000)
    ms = rng.lognormal(np.log(20), 0.6, ts.size)
    ms[ts < T0 + 60] = 5000.0  # the ramp is slow and not judged
    rows = [(t, "WS", "ws round trip", m, 1) for t, m in zip(ts, ms, strict=True)]
    rows += [(t, "GET", "GET /api/threads", m * 2, 1) for t, m in zip(ts[:2000], ms[:2000], strict=True)]
    folder = build_run(
        tmp_path / "run", _samples(2), _events(2), latency=rows, locust={("WS", "ws round trip"): (6000, 3)}
    )
    verdict = analyze(folder).verdict
    ws = next(c for c in verdict["latency"] if c["name"] == "ws round trip" and c["scope"] == "overall")
    judged = ms[ts >= T0 + 60]
    assert ws["value_ms"] == pytest.approx(float(np.percentile(judged, 95)), abs=1e-3)
    api = next(c for c in verdict["latency"] if c["name"] == "api" and c["scope"] == "overall")
    http = (ms[:2000] * 2)[ts[:2000] >= T0 + 60]
    assert api["value_ms"] == pytest.approx(float(np.percentile(http, 95)), abs=1e-3)
    row = next(r for r in verdict["latency_table"] if r["name"] == "ws round trip")
    assert row["p50"] == pytest.approx(float(np.percentile(judged, 50)))
    assert row["max"] == pytest.approx(float(judged.max()))
    assert row["count"] == judged.size


def test_meets_p95_overall_but_misses_it_in_the_last_hour(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for hour in range(12):
        ts = T0 + hour * HOUR + rng.uniform(0, HOUR, 600)
        ms = rng.normal(20.0, 5.0, ts.size).clip(1)
        if hour == 11:
            ms[: int(0.4 * ms.size)] += 60.0  # 40% of the last hour is slow: 3% of the run, under the 5% of a p95
        rows += timing_rows(ts, "WS", "ws round trip", ms)
    folder = build_run(
        tmp_path / "run", _samples(12), _events(12), latency=rows, locust={("WS", "ws round trip"): (7200, 0)}
    )
    verdict = analyze(folder).verdict
    checks = {c["scope"]: c for c in verdict["latency"] if c["name"] == "ws round trip"}
    assert checks["overall"]["passed"] is True
    assert checks["last hour"]["passed"] is False
    assert "drifts" in checks["last hour"]["reason"] and "last hour" in checks["last hour"]["reason"]
    assert verdict["passed"] is False
    assert len(verdict["latency_buckets"]["ws round trip"]) == 12


def test_a_target_without_timings_fails_when_locust_ran(tmp_path):
    rows = [(T0 + 100 + i, "WS", "ws round trip", 10.0, 1) for i in range(200)]
    folder = build_run(
        tmp_path / "run", _samples(1), _events(1), latency=rows, locust={("WS", "ws round trip"): (200, 0)}
    )
    verdict = analyze(folder).verdict
    startup = next(c for c in verdict["latency"] if c["name"] == "agent startup")
    assert startup["status"] == "failed" and "measured nothing" in startup["reason"]
    assert "agent startup p95 overall" in verdict["failed_checks"]


def test_locust_output_without_a_timing_record_fails_every_target(tmp_path):
    folder = build_run(tmp_path / "run", _samples(1), _events(1), locust={("GET", "/x"): (100, 0)})
    verdict = analyze(folder).verdict
    assert all(c["status"] == "failed" and "latency.csv" in c["reason"] for c in verdict["latency"])


def test_samples_only_folder_reports_no_data_not_failure(tmp_path):
    verdict = analyze(build_run(tmp_path / "run", _samples(1))).verdict
    assert all(c["status"] == "no data" and c["passed"] is None for c in verdict["latency"])
    assert verdict["errors"]["status"] == "no data" and verdict["errors"]["rate"] is None
    assert verdict["passed"] is True


def test_error_rate_and_grouped_failures(tmp_path):
    failures = [
        ("GET", "GET /api/threads", "HTTPError('502 Bad Gateway for 1700000123')", 30),
        ("GET", "GET /api/threads", "HTTPError('502 Bad Gateway for 1700000999')", 20),
        ("WS", "ws round trip", "timeout waiting for ack", 5),
    ]
    rows = [(T0 + 100 + i, "WS", "ws round trip", 10.0, 1) for i in range(200)]
    folder = build_run(
        tmp_path / "run",
        _samples(1),
        _events(1),
        latency=rows,
        locust={("GET", "GET /api/threads"): (1000, 50), ("WS", "ws round trip"): (1000, 5)},
        failures=failures,
    )
    verdict = analyze(folder).verdict
    assert verdict["errors"]["rate"] == pytest.approx(55 / 2000)
    assert verdict["errors"]["passed"] is False and "55 of 2000" in verdict["errors"]["reason"]
    top = verdict["failures"][0]
    assert top["occurrences"] == 50 and top["error"] == "HTTPError('502 Bad Gateway for #')"


def test_custom_targets_from_the_scenario(tmp_path):
    rows = [(T0 + 100 + i, "WS", "upload processed", 900.0 + i, 1) for i in range(300)]
    scenario = {"targets": {"latency": [{"name": "upload processed", "percentile": 99, "max_ms": 1000}]}}
    folder = build_run(
        tmp_path / "run",
        _samples(1),
        _events(1),
        scenario=scenario,
        latency=rows,
        locust={("WS", "upload processed"): (300, 0)},
    )
    verdict = analyze(folder).verdict
    overall = next(c for c in verdict["latency"] if c["scope"] == "overall")
    assert overall["percentile"] == 99 and overall["target_ms"] == 1000
    assert overall["passed"] is False and overall["value_ms"] == pytest.approx(
        np.percentile(900.0 + np.arange(300), 99)
    )
