"""Reporter's batched successes: Locust's stats and the exact timing record end up as a request event each would
have left them; failures still fire at once; a stats reset drops what is pending; a stopping runner flushes.

Runs in the pytest process of the Locust-importing tests (locust_inprocess).
"""

from __future__ import annotations

import time

import gevent
import pytest

pytestmark = pytest.mark.locust_inprocess

TIMES = [0.4, 3.21, 47.6, 47.6, 151.0, 1234.0, 12.0]


@pytest.fixture
def env():
    from locust import events  # noqa: F401 - first: gevent monkey-patching
    from locust.env import Environment

    environment = Environment()
    environment.create_local_runner()
    yield environment
    environment.runner.quit()


@pytest.fixture
def record(monkeypatch):
    from locustfiles import timings

    kept = timings.TimingRecord()
    monkeypatch.setattr(timings, "SINK", kept.add)
    return kept


def fired_alike(times: list[float], at: float):
    """A StatsEntry logged one request at a time, as Locust's request event listener does."""
    from locust.stats import RequestStats

    stats = RequestStats()
    entry = stats.get("ws round trip", "WS")
    for ms in times:
        entry.log(ms, 0)
    entry.num_reqs_per_sec = {int(at): len(times)}
    return entry


def test_batched_successes_reach_locusts_stats_and_the_record_as_events_would(env, record):
    from locustfiles.reporting import FLUSH_EVERY, Reporter

    report = Reporter(env)
    while time.time() % 1 > 0.5:  # all in one second: the per-second count is then exact to compare
        gevent.sleep(0.05)
    at = time.time()
    for ms in TIMES:
        report.success("ws round trip", ms)
    stats = env.runner.stats
    assert stats.get("ws round trip", "WS").num_requests == 0  # not yet: merged every FLUSH_EVERY
    gevent.sleep(FLUSH_EVERY + 0.2)

    got, want = stats.get("ws round trip", "WS"), fired_alike(TIMES, at)
    assert got.num_requests == want.num_requests == len(TIMES)
    assert got.total_response_time == pytest.approx(want.total_response_time)
    assert (got.min_response_time, got.max_response_time) == (want.min_response_time, want.max_response_time)
    assert dict(got.response_times) == dict(want.response_times)
    assert dict(got.num_reqs_per_sec) == {int(at): len(TIMES)}
    assert got.get_response_time_percentile(0.95) == want.get_response_time_percentile(0.95)
    assert stats.total.num_requests == len(TIMES) and stats.total.max_response_time == 1234.0

    rows = record.take_all()
    assert sorted(ms for _, kind, name, ms, count in rows for _ in range(count) if name == "ws round trip") == sorted(
        [0.4, 3.21, 47.6, 47.6, 151.0, 1230.0, 12.0]
    )
    assert {kind for _, kind, *_ in rows} == {"WS"}


def test_failures_fire_at_once_and_a_stats_reset_drops_what_is_pending(env, record):
    from locustfiles.reporting import FLUSH_EVERY, Reporter

    seen = []
    env.events.request.add_listener(lambda name, exception, **_kw: seen.append((name, str(exception))))
    report = Reporter(env)
    report.failure("ws round trip", "missing agent_completed", 12.0)
    assert seen == [("ws round trip", "missing agent_completed")]
    assert env.runner.stats.get("ws round trip", "WS").num_failures == 1

    report.success("ws round trip", 5.0)
    env.runner.stats.reset_all()
    env.events.reset_stats.fire()
    gevent.sleep(FLUSH_EVERY + 0.2)
    assert env.runner.stats.get("ws round trip", "WS").num_requests == 0
    assert seen == [("ws round trip", "missing agent_completed")]  # successes are no request events


def test_a_stopping_runner_merges_what_is_pending_before_its_final_figures(env, record):
    from locustfiles.reporting import Reporter

    report = Reporter(env)
    env.runner.start(0, 1)
    gevent.sleep(0)
    for ms in TIMES:
        report.success("agent startup", ms)
    env.runner.stop()  # its test_stop merges them: the FLUSH_EVERY timer has not come round yet
    assert env.runner.stats.get("agent startup", "WS").num_requests == len(TIMES)
