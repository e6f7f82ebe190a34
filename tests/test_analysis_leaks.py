"""Leak verdicts on synthetic series with known truth, judged through a whole run folder (analyze).

Each case puts its series into the backend's memory (or connections) next to a clean auth service: the verdict must
name exactly the leaking service and metric, and a leak's slope must be within 25% of the injected rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import analyze, leak_slope
from analysis.growth import judge_slope, lower_envelope, segment_starts, theil_sen
from analysis.synthetic import T0, build_run

MB = 1024.0 * 1024.0
HOUR = 3600.0
BASE = 300 * MB
PRE_LOAD_S = 60.0
DRAIN_S = 300.0


def _flat(h, rng):
    return BASE + 2 * MB * rng.normal(size=h.size)


def _fast_plateau(h, rng):
    return BASE + 120 * MB * (1 - np.exp(-h / (4 / 60))) + 0.5 * MB * rng.normal(size=h.size)


def _slow_plateau(h, rng):
    return BASE + 300 * MB * (1 - np.exp(-h / 1.0)) + 0.5 * MB * rng.normal(size=h.size)


def _sawtooth(h, rng):
    return BASE + 80 * MB * ((h * 60 / 9) % 1.0) + 0.5 * MB * rng.normal(size=h.size)


def _step(h, rng):
    return BASE + 150 * MB * (h > 7) + 0.5 * MB * rng.normal(size=h.size)


def _daily_wave(h, rng):
    # Memory that follows a day of traffic: the worst phase for a straight line (it rises through the middle).
    return BASE - 60 * MB * np.sin(2 * np.pi * h / 24) + 1 * MB * rng.normal(size=h.size)


def _slow_linear(h, rng):
    return BASE + 2 * MB * h + 0.5 * MB * rng.normal(size=h.size)


def _stairs(h, rng):
    return BASE + 12 * MB * np.floor(h / 3) + 0.5 * MB * rng.normal(size=h.size)


def _sawtooth_leak(h, rng):
    return BASE + 150 * MB * ((h * 60 / 10) % 1.0) + 3 * MB * h + 0.5 * MB * rng.normal(size=h.size)


def _leak_after_warmup(h, rng):
    return BASE + 200 * MB * (1 - np.exp(-h / 0.5)) + 5 * MB * h + 0.5 * MB * rng.normal(size=h.size)


def _noisy_slow_leak(h, rng):
    return BASE + 1.5 * MB * h + 8 * MB * rng.normal(size=h.size)


# name: (shape, hours of load, sampling interval s, injected MB/h or 0, warmup_end event written)
MEMORY_CASES = {
    "flat with noise": (_flat, 6, 10, 0.0, True),
    "fast warm-up plateau": (_fast_plateau, 4, 5, 0.0, False),
    "slow warm-up plateau": (_slow_plateau, 24, 30, 0.0, False),
    "GC sawtooth": (_sawtooth, 6, 5, 0.0, True),
    "one-off step": (_step, 24, 30, 0.0, True),
    "daily wave": (_daily_wave, 24, 30, 0.0, True),
    "slow linear leak": (_slow_linear, 12, 20, 2.0, True),
    "stair-step leak": (_stairs, 24, 30, 4.0, True),
    "leak under a large sawtooth": (_sawtooth_leak, 12, 10, 3.0, True),
    "leak after a warm-up": (_leak_after_warmup, 12, 20, 5.0, False),
    "noisy slow leak over 24 h": (_noisy_slow_leak, 24, 10, 1.5, True),
}


def _count_gauge(ts, load_start, load_stop, leaked_per_hour, rng):
    """Connections: 4 idle, ~40 under load; a leak adds connections that stay open after the load stops."""
    loaded = (ts >= load_start) & (ts <= load_stop)
    base = 4 + np.round(36 * loaded + 2 * rng.random(ts.size) * loaded)
    leaked = np.floor(leaked_per_hour * np.clip(np.minimum(ts, load_stop) - load_start, 0, None) / HOUR)
    return base + leaked


def _run_folder(tmp_path, shape, hours, interval, warmup_event, conn_leak=0.0, seed=7):
    rng = np.random.default_rng(seed)
    load_start = T0 + PRE_LOAD_S
    load_stop = load_start + hours * HOUR
    ts = np.arange(T0, load_stop + DRAIN_S, interval)
    h = np.clip(ts - load_start, 0, None) / HOUR
    series = {
        ("backend", "mem_rss_bytes"): (ts, shape(h, rng)),
        ("auth", "mem_rss_bytes"): (ts, _flat(h, rng)),
        ("backend", "tcp_established"): (ts, _count_gauge(ts, load_start, load_stop, conn_leak, rng)),
        ("auth", "tcp_established"): (ts, _count_gauge(ts, load_start, load_stop, 0.0, rng)),
        ("backend", "cpu_percent"): (ts, 30 + 5 * rng.random(ts.size)),
    }
    events = [(load_start, "load_start", ""), (load_stop, "load_stop", ""), (load_stop + DRAIN_S, "drain_end", "")]
    if warmup_event:
        events.insert(1, (load_start + 300, "warmup_end", ""))
    return build_run(tmp_path / "run", series, events=events, scenario={"name": "truth"})


def _failed_leaks(verdict):
    return {(e["service"], e["metric"]) for e in verdict["leaks"] if e["status"] == "failed"}


@pytest.mark.parametrize("case", list(MEMORY_CASES))
def test_memory_truth(tmp_path, case):
    shape, hours, interval, rate, warmup_event = MEMORY_CASES[case]
    verdict = analyze(_run_folder(tmp_path, shape, hours, interval, warmup_event)).verdict
    entry = next(e for e in verdict["leaks"] if e["service"] == "backend" and e["metric"] == "mem_rss_bytes")
    assert entry["reason"]
    if rate == 0:
        assert _failed_leaks(verdict) == set(), entry["reason"]
        assert verdict["passed"] is True
    else:
        assert _failed_leaks(verdict) == {("backend", "mem_rss_bytes")}, entry["reason"]
        assert entry["leaking"] is True and verdict["passed"] is False
        assert entry["slope_per_hour"] == pytest.approx(rate * MB, rel=0.25), entry["reason"]
        assert entry["ci_low"] <= entry["slope_per_hour"] <= entry["ci_high"]
        assert entry["ci_low"] > 0
        assert "grows" in entry["reason"] and "MB/h" in entry["reason"]
        assert verdict["failed_checks"] == ["backend mem_rss_bytes (leak)"]


def test_connections_that_never_drain(tmp_path):
    verdict = analyze(_run_folder(tmp_path, _flat, 2, 5, True, conn_leak=6.0)).verdict
    assert _failed_leaks(verdict) == {("backend", "tcp_established")}
    entry = next(e for e in verdict["leaks"] if e["metric"] == "tcp_established" and e["service"] == "backend")
    assert entry["check"] == "drain"
    assert entry["level_after"] - entry["level_before"] == pytest.approx(12, abs=1)
    assert "does not drain" in entry["reason"]
    clean = next(e for e in verdict["leaks"] if e["metric"] == "tcp_established" and e["service"] == "auth")
    assert clean["status"] == "passed" and "drains" in clean["reason"]


def test_drain_tolerance_and_ignore_come_from_the_scenario(tmp_path):
    folder = _run_folder(tmp_path, _slow_linear, 3, 10, True, conn_leak=2.0)
    (folder / "scenario.toml").write_text(
        'name = "t"\n[leaks]\ndrain_tolerance = 10.0\nignore = ["backend:mem_rss_bytes"]\n', encoding="utf-8"
    )
    verdict = analyze(folder).verdict
    assert verdict["passed"] is True
    assert verdict["ignored"] == ["backend:mem_rss_bytes"]


def test_per_metric_threshold_override_in_mb(tmp_path):
    folder = _run_folder(tmp_path, _slow_linear, 6, 10, True)
    (folder / "scenario.toml").write_text('[leaks.metrics]\n"backend:mem_rss_bytes" = 3.0\n', encoding="utf-8")
    entry = next(e for e in analyze(folder).verdict["leaks"] if e["service"] == "backend" and e["check"] == "slope")
    assert entry["threshold_per_hour"] == 3.0 * MB
    assert entry["status"] == "passed"


def test_restart_resets_the_level_but_the_leak_is_still_seen(tmp_path):
    rng = np.random.default_rng(3)
    ts = np.arange(T0, T0 + 6 * HOUR, 10.0)
    h = (ts - T0) / HOUR
    values = BASE + 4 * MB * (h % 2) + 0.3 * MB * rng.normal(size=ts.size)  # restarted every 2 hours
    events = [
        (T0, "load_start", ""),
        (T0 + 2 * HOUR, "service_restart", "backend"),
        (T0 + 4 * HOUR, "service_restart", "backend"),
    ]
    folder = build_run(tmp_path / "run", {("backend", "mem_rss_bytes"): (ts, values)}, events=events)
    entry = analyze(folder).verdict["leaks"][0]
    assert entry["status"] == "failed"
    assert entry["slope_per_hour"] == pytest.approx(4 * MB, rel=0.25)


def test_gap_is_not_bridged(tmp_path):
    """A service that was down for an hour: no samples, and the fit does not draw a line across the hole."""
    rng = np.random.default_rng(4)
    ts = np.arange(T0, T0 + 8 * HOUR, 10.0)
    ts = ts[(ts < T0 + 3 * HOUR) | (ts > T0 + 4 * HOUR)]
    values = BASE + 30 * MB * (ts > T0 + 4 * HOUR) + 0.3 * MB * rng.normal(size=ts.size)
    folder = build_run(tmp_path / "run", {("backend", "mem_rss_bytes"): (ts, values)})
    entry = analyze(folder).verdict["leaks"][0]
    assert entry["status"] == "passed", entry["reason"]


def test_too_few_samples_is_no_data_with_a_reason(tmp_path):
    ts = T0 + np.arange(10.0)
    folder = build_run(tmp_path / "run", {("backend", "mem_rss_bytes"): (ts, BASE + ts * 0)})
    verdict = analyze(folder).verdict
    assert verdict["leaks"][0]["status"] == "no data"
    assert "need" in verdict["leaks"][0]["reason"]
    assert verdict["passed"] is False  # nothing at all was judged: a green run that measured nothing must not pass
    assert "measured nothing" in verdict["checks"][-1]["reason"]


def test_load_generator_is_reported_not_judged(tmp_path):
    rng = np.random.default_rng(5)
    ts = np.arange(T0, T0 + 2 * HOUR, 5.0)
    h = (ts - T0) / HOUR
    series = {
        ("locust", "mem_rss_bytes"): (ts, BASE + 20 * MB * h),
        ("locust", "gc_pause_max_ms"): (ts, 5 + rng.random(ts.size)),
        ("backend", "mem_rss_bytes"): (ts, _flat(h, rng)),
    }
    verdict = analyze(build_run(tmp_path / "run", series)).verdict
    assert {e["service"] for e in verdict["leaks"]} == {"backend"}
    generator = verdict["load_generator"]
    assert generator["mem_rss_bytes"]["slope_per_hour"] == pytest.approx(20 * MB, rel=0.1)
    assert 5 <= generator["gc_pause_max_ms"]["max"] <= 6


def test_leak_slope_is_cheap_and_robust_on_partial_data():
    rng = np.random.default_rng(6)
    ts = T0 + np.arange(0, 24 * HOUR, 1.0)
    values = BASE + 60 * MB * ((ts / 600) % 1.0) + 2 * MB * (ts - T0) / HOUR + 0.3 * MB * rng.normal(size=ts.size)
    slope, low, high = leak_slope(ts, values)
    assert slope == pytest.approx(2 * MB, rel=0.1) and low <= slope <= high
    assert all(math.isnan(x) for x in leak_slope(ts[:5], values[:5]))
    shuffled = rng.permutation(2000)
    assert leak_slope(ts[:2000][shuffled], values[:2000][shuffled]) == leak_slope(ts[:2000], values[:2000])


def test_theil_sen_ignores_outliers_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(8)
    t = T0 + np.arange(40) * 600.0
    v = 5.0 * (t - T0) / HOUR + rng.normal(0, 0.5, t.size)
    v[[3, 17, 30]] += 500
    slope, low, high, _ = theil_sen(t, v)
    assert slope == pytest.approx(5.0, rel=0.05) and low < 5.0 < high


def test_envelope_takes_window_minima_per_segment():
    ts = T0 + np.arange(0, 7200, 1.0)
    values = 100 + ((ts - T0) % 300)  # a sawtooth with a floor of 100
    env_t, env_v, seg = lower_envelope(ts, values, segment_starts(ts))
    assert np.all(env_v == 100) and env_t.size >= 8 and np.all(seg == 0)


def test_judge_slope_says_why_a_step_is_not_a_leak():
    rng = np.random.default_rng(9)
    ts = T0 + np.arange(0, 12 * HOUR, 20.0)
    values = BASE + 200 * MB * (ts > T0 + 6 * HOUR) + 0.3 * MB * rng.normal(size=ts.size)
    verdict = judge_slope(ts, values, MB, "memory", T0, ts[-1], [], T0)
    assert verdict.leaking is False
    assert "rise of 200" in verdict.reason and "does not go on" in verdict.reason


def test_pool_connections_held_open_after_warm_up_are_not_a_leak(tmp_path):
    """Real runs open pools while warming up and keep them idle: fds stay up after the drain but never pile up."""
    ts = np.arange(T0, T0 + PRE_LOAD_S + HOUR + DRAIN_S, 5.0)
    load_start, load_stop = T0 + PRE_LOAD_S, T0 + PRE_LOAD_S + HOUR
    loaded = (ts >= load_start) & (ts <= load_stop)
    fds = 11 + 8 * (ts >= load_start + 2) + 10 * loaded  # +8 kept by pools, +10 client sockets while loaded
    events = [(load_start, "load_start", ""), (load_start + 60, "warmup_end", ""), (load_stop, "load_stop", "")]
    folder = build_run(tmp_path / "run", {("auth", "open_fds"): (ts, fds.astype(float))}, events=events)
    entry = analyze(folder).verdict["leaks"][0]
    assert entry["status"] == "passed" and "held open" in entry["reason"], entry["reason"]
    assert entry["level_after"] - entry["level_before"] == 8


def test_strict_gauges_must_return_to_the_level_before_load(tmp_path):
    ts = np.arange(T0, T0 + PRE_LOAD_S + HOUR + DRAIN_S, 5.0)
    load_start, load_stop = T0 + PRE_LOAD_S, T0 + PRE_LOAD_S + HOUR
    checked_out = 2.0 * (ts >= load_start + 2)  # two pool slots never given back, right from the start
    events = [(load_start, "load_start", ""), (load_start + 60, "warmup_end", ""), (load_stop, "load_stop", "")]
    folder = build_run(tmp_path / "run", {("backend", "db_pool_checked_out"): (ts, checked_out)}, events=events)
    entry = analyze(folder).verdict["leaks"][0]
    assert entry["status"] == "failed" and "does not drain: +2" in entry["reason"]
