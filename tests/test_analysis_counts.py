"""Count gauges judged with and without samples before load: connection and pool leaks must be caught either way,
by the rule that has the data (drain, zero after drain, count trend), and the entry must say which rule judged it.
The clean look-alikes (load that comes and goes, idle jitter, a pool that fills to its size and stays) stay clean."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import analyze
from analysis.counts import judge_trend
from analysis.synthetic import T0, build_run

HOUR = 3600.0
PRE_S = 120.0
DRAIN_S = 120.0


def _folder(tmp_path, gauges, hours=2.0, interval=5.0, before=True, drain=True, seed=5):
    """A run with the given count gauges: {(service, metric): f(ts, loaded, since_load_h, rng) -> values}."""
    rng = np.random.default_rng(seed)
    load_start = T0 + PRE_S
    load_stop = load_start + hours * HOUR
    ts = np.arange(T0 if before else load_start, load_stop + (DRAIN_S if drain else 0.0), interval)
    loaded = (ts >= load_start) & (ts <= load_stop)
    h = np.clip(np.minimum(ts, load_stop) - load_start, 0, None) / HOUR
    series = {key: (ts, make(ts, loaded, h, rng).astype(float)) for key, make in gauges.items()}
    events = [
        (load_start, "load_start", ""),
        (load_start + 60, "warmup_end", ""),
        (load_stop, "load_stop", ""),
        (load_stop + DRAIN_S, "drain_end", ""),
    ]
    return analyze(build_run(tmp_path / "run", series, events, {"name": "counts"})).verdict


def _entry(verdict, service, metric):
    return next(e for e in verdict["leaks"] if e["service"] == service and e["metric"] == metric)


def _tcp_leak(per_hour):
    def make(ts, loaded, h, rng):
        jitter = rng.integers(0, 3, ts.size) * loaded  # requests in flight: 0-2 short-lived connections
        return 4 + 36 * loaded + jitter + np.floor(per_hour * h)

    return make


def _pool_leak(every_min):
    """Pool slots: 0-2 busy under load (idle jitter), one more leaked every ``every_min`` minutes, never given back."""

    def make(ts, loaded, h, rng):
        busy = rng.integers(0, 3, ts.size) * loaded
        return busy + np.floor(h * 60 / every_min)

    return make


def _pool_fills_and_stays(ts, loaded, h, rng):
    """A pool that fills to its size (5) in the first minutes of load, stays full while loaded, then is given back."""
    return np.where(loaded, np.minimum(5, np.floor(h * 60 / 2)), 0)


def _pool_full_and_kept(ts, loaded, h, rng):
    """As above, but the slots stay open after the load (a team's pool that keeps its connections)."""
    return np.minimum(5, np.floor(h * 60 / 2)) + rng.integers(0, 2, ts.size) * loaded


@pytest.mark.parametrize("before", [True, False], ids=["with samples before load", "without"])
def test_connection_leak_is_caught_with_and_without_a_baseline(tmp_path, before):
    gauges = {("backend", "tcp_established"): _tcp_leak(6.0), ("auth", "tcp_established"): _tcp_leak(0.0)}
    verdict = _folder(tmp_path, gauges, before=before)
    leak, clean = _entry(verdict, "backend", "tcp_established"), _entry(verdict, "auth", "tcp_established")
    assert leak["status"] == "failed", leak["reason"]
    assert clean["status"] == "passed", clean["reason"]
    assert leak["rule"] == clean["rule"] == ("drain" if before else "count trend")
    if not before:
        assert leak["slope_per_hour"] == pytest.approx(6.0, rel=0.25), leak["reason"]
        assert "no baseline needed" in leak["reason"]


@pytest.mark.parametrize("before", [True, False], ids=["with samples before load", "without"])
@pytest.mark.parametrize("drain", [True, False], ids=["with a drain", "no drain"])
def test_pool_leak_is_caught_with_and_without_a_baseline(tmp_path, before, drain):
    gauges = {
        ("backend", "db_pool_checked_out"): _pool_leak(every_min=15),
        ("auth", "db_pool_checked_out"): _pool_leak(every_min=10**9),
    }
    verdict = _folder(tmp_path, gauges, before=before, drain=drain)
    leak, clean = _entry(verdict, "backend", "db_pool_checked_out"), _entry(verdict, "auth", "db_pool_checked_out")
    expected = "drain" if before and drain else ("zero after drain" if drain else "count trend")
    assert leak["rule"] == clean["rule"] == expected, (leak["reason"], clean["reason"])
    assert leak["status"] == "failed", leak["reason"]
    assert clean["status"] == "passed", clean["reason"]
    if expected == "count trend":
        assert leak["slope_per_hour"] == pytest.approx(4.0, rel=0.25), leak["reason"]
    else:
        assert leak["level_after"] - leak["level_before"] == pytest.approx(8, abs=1), leak["reason"]


@pytest.mark.parametrize("drain", [True, False], ids=["with a drain", "no drain"])
def test_a_pool_that_fills_to_its_size_and_stays_is_clean(tmp_path, drain):
    gauges = {("backend", "db_pool_checked_out"): _pool_fills_and_stays, ("auth", "open_fds"): _pool_full_and_kept}
    verdict = _folder(tmp_path, gauges, before=False, drain=drain, hours=3.0)
    for service, metric in gauges:
        entry = _entry(verdict, service, metric)
        assert entry["status"] == "passed", entry["reason"]
    if not drain:
        assert _entry(verdict, "backend", "db_pool_checked_out")["rule"] == "count trend"


@pytest.mark.parametrize("seed", range(4))
def test_small_steps_under_idle_jitter(tmp_path, seed):
    """A leak of one connection every 20 minutes under 0-3 connections of jitter: 6 steps in 2 hours, caught; the
    same jitter without the steps stays clean."""

    def leaky(ts, loaded, h, rng):
        return 2 + rng.integers(0, 4, ts.size) + np.floor(h * 3)

    def jitter(ts, loaded, h, rng):
        return 2 + rng.integers(0, 4, ts.size)

    gauges = {("backend", "ws_connections_active"): leaky, ("auth", "ws_connections_active"): jitter}
    verdict = _folder(tmp_path, gauges, before=False, drain=False, seed=seed)
    leak, clean = _entry(verdict, "backend", "ws_connections_active"), _entry(verdict, "auth", "ws_connections_active")
    assert leak["status"] == "failed" and leak["rule"] == "count trend", leak["reason"]
    assert leak["slope_per_hour"] == pytest.approx(3.0, rel=0.25), leak["reason"]
    assert clean["status"] == "passed", clean["reason"]


def test_load_that_comes_and_goes_is_not_a_trend(tmp_path):
    """Connections that follow a wave of users rise and fall back: not kept, not a leak."""

    def wave(ts, loaded, h, rng):
        return 4 + np.round(30 * (1 - np.cos(2 * np.pi * h / 1.0)) / 2) * loaded

    verdict = _folder(tmp_path, {("backend", "tcp_established"): wave}, before=False, drain=False, hours=3.0)
    entry = _entry(verdict, "backend", "tcp_established")
    assert entry["status"] == "passed" and entry["rule"] == "count trend", entry["reason"]


def test_a_count_without_enough_samples_says_why(tmp_path):
    verdict = _folder(tmp_path, {("backend", "tcp_established"): _tcp_leak(0.0)}, before=False, drain=False, hours=0.03)
    entry = _entry(verdict, "backend", "tcp_established")
    assert entry["status"] == "no data"
    assert "no sample before load" in entry["reason"] and "need" in entry["reason"]


def test_trend_reports_the_floor():
    ts = T0 + np.arange(0, 2 * HOUR, 10.0)
    values = 10 + np.floor((ts - T0) / 600)  # one step every 10 minutes
    verdict = judge_trend(ts, values, T0, ts[-1], [], T0)
    assert verdict.leaking is True
    assert verdict.details["floor_rise"] >= 9 and verdict.details["came_back"] <= 1


def test_a_service_restarted_during_the_run_is_not_drained_to_another_processs_level():
    from analysis.counts import judge_count

    load_start, load_stop, drain_end = T0 + PRE_S, T0 + PRE_S + HOUR, T0 + PRE_S + HOUR + DRAIN_S
    ts = np.arange(T0, drain_end, 5.0)
    restart = load_start + HOUR / 2
    # the old process sat at 12 fds; the one started at the restart sits at 14 from its first second: flat
    values = np.where(ts < restart, 12.0, 14.0)
    window = {"load_start": load_start, "load_stop": load_stop, "drain_end": drain_end}
    common = {"start": load_start + 60, "end": load_stop, "origin": load_start, "tolerance": 0.0}
    without = judge_count(ts, values, "open_fds", **window, **common, breaks=[])
    assert without.leaking is True and without.details["rule"] == "drain"  # the comparison the restart undoes
    verdict = judge_count(ts, values, "open_fds", **window, **common, breaks=[restart])
    assert verdict.details["rule"] != "drain" and verdict.leaking is not True, verdict.reason


@pytest.mark.parametrize("top", [24, 34], ids=["refills to its old level", "climbs past it"])
def test_a_restarted_service_refilling_its_connections_is_not_a_leak(top):
    """Seen in CI (a 1 minute run, sampled every second): after a restart the users re-open their connections one by
    one, so the new process's fds climb until the load stops. Back to the level the old process held under the same
    load is a refill; past it is a leak."""
    from analysis.counts import judge_count

    load_start, load_stop, drain_end = T0 + 3.0, T0 + 65.0, T0 + 73.0
    ts = np.arange(T0, drain_end, 1.0)
    restart = T0 + 19.0
    climb = 12.0 + np.floor((ts - restart) / (load_stop - restart) * (top - 11.0)) + (ts.astype(int) % 3 == 0)
    busy = np.where(ts.astype(int) % 2 == 0, 20.0, 27.0)  # the old process: 20 held, 7 more while requests run
    values = np.where(ts < load_start, 12.0, np.where(ts < restart, busy, climb))
    values = np.where(ts > load_stop, 14.0, values)  # everything is given back once the load is gone
    window = {"load_start": load_start, "load_stop": load_stop, "drain_end": drain_end}
    common = {"start": T0 + 13.0, "end": load_stop, "origin": load_start, "tolerance": 0.0}
    verdict = judge_count(ts, values, "open_fds", **window, **common, breaks=[restart])
    assert verdict.details["rule"] == "count trend"
    if top > 26:
        assert verdict.leaking is True, verdict.reason
    else:
        assert verdict.leaking is False and "refilled after the restart" in verdict.reason, verdict.reason
        assert verdict.details["held_before_restart"] == 23.5
