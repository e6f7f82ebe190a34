"""The load generator's own hub lag and CPU: a real blocked hub is seen, a busy process is measured, and workers'
rows merge to the busiest worker's, one row per interval.

Importing locustfiles imports Locust (gevent monkey-patching): these tests run in their own pytest process.
"""

from __future__ import annotations

import time

import gevent
import pytest

pytestmark = pytest.mark.locust_inprocess


def _spin(seconds: float) -> None:
    """Hold the hub and a core: no gevent switch can happen inside."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_hub_held_by_a_busy_callback_is_seen_as_lag():
    from locustfiles.hubwatch import PROBE_EVERY, HubWatch

    watch = HubWatch()
    watch.start()
    try:
        gevent.sleep(3 * PROBE_EVERY)
        quiet = max((lag for _ts, lag, _blocked, _cpu in watch.take_report()), default=0.0)
        _spin(0.2)  # the probe was due during this: it wakes about 150 ms late
        gevent.sleep(2 * PROBE_EVERY)
        [[_ts, lagged, blocked, _cpu]] = watch.take_report()
    finally:
        watch.stop()
    assert lagged >= 100.0, lagged
    assert quiet < lagged
    assert blocked >= lagged  # the blocked time sums every late wake-up


def test_cpu_is_the_share_of_one_core_over_the_interval():
    from locustfiles.hubwatch import HubWatch

    watch = HubWatch()
    start = 1_000_000.0
    watch.add_cpu(start)  # the interval's mark
    used = time.process_time()
    while time.process_time() - used < 0.3:  # 0.3 s of this process's CPU, however busy the machine is
        pass
    watch.add_cpu(start + 5.0)  # same interval: nothing closes
    assert watch.intervals == {}
    watch.add_cpu(start + 10.0)  # next interval: 0.3 s of CPU over 10 s of wall time, about 3%
    [[ts, lag, blocked, cpu]] = watch.take_report()
    assert ts == 1_000_000 and lag == blocked == 0.0
    assert 2.9 <= cpu <= 10.0, cpu


def test_workers_merge_to_the_busiest_one_row_per_interval():
    from locustfiles.hubwatch import HubWatch, sample_rows

    worker_a, worker_b, master = HubWatch(), HubWatch(), HubWatch()
    worker_a.add_lag(1003.0, 15.0)
    worker_a.add_lag(1004.0, 9.0)  # timer slack on a busy machine: not blocked time
    worker_a.combine(worker_a.entry(1003.0), [0.0, 0.0, 40.0])
    worker_b.add_lag(1008.0, 30.0)
    worker_b.combine(worker_b.entry(1008.0), [0.0, 0.0, 95.0])
    master.merge(worker_a.take_report())
    master.merge(worker_b.take_report())
    written = master.take_closed(now=1020.0, grace=1.0)
    assert written == [[1000, 30.0, 30.0, 95.0]]
    master.merge([[1000, 80.0, 90.0, 10.0]])  # late: goes to the next interval, not a second row for 1000
    assert master.take_all() == [[1010, 80.0, 90.0, 10.0]]
    assert sample_rows(written) == [
        [1000.0, "locust", "hub_lag_max_ms", 30.0],
        [1000.0, "locust", "hub_blocked_ms", 30.0],
        [1000.0, "locust", "worker_cpu_max_percent", 95.0],
    ]
