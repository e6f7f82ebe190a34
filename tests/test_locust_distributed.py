"""``--processes 2``: every name appears once in the master's stats, and the custom figures (the exact timing record,
the load generator's GC rows) arrive merged on the master: counts summed over both workers, one row per interval.
Ended by SIGINT mid-shape, as ``soak run`` or a Ctrl-C would.
"""

from __future__ import annotations

import csv
import signal
from collections import Counter

from test_locust_users import FAST_WAIT, gc_rows, latency_counts, locust_stats, run_locust, write_scenario


def test_two_processes_merge_on_the_master(sut_factory, tmp_path):
    sut = sut_factory(agent_step=0.01)
    users = {"ChattingUser": {"weight": 1, **FAST_WAIT}, "MultiTabUser": {"weight": 1, **FAST_WAIT}}
    shape = {"kind": "steady", "users": 4, "spawn_rate": 10.0, "duration": 300.0}
    scenario = write_scenario(tmp_path / "scenario.toml", users, shape, {})
    run_dir = tmp_path / "run"

    result = run_locust(sut, scenario, run_dir, ["--processes", "2"], stop_after=12.0, stop_signal=signal.SIGINT)

    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 workers connected" in result.stdout
    with open(run_dir / "locust_stats.csv", newline="") as file:
        keys = [(row["Type"], row["Name"]) for row in csv.DictReader(file)]
    assert len(keys) == len(set(keys))
    stats = locust_stats(run_dir)
    for key in [("WS", "ws round trip"), ("WS", "agent complete"), ("WS", "fan-out lag"), ("WS", "WS connect")]:
        assert stats[key][0] > 0 and stats[key][1] == 0, key
    # both workers' timings reached latency.csv exactly once: the sum equals the master's (summed) counts
    assert latency_counts(run_dir) == Counter({key: ok - failed for key, (ok, failed) in stats.items()})
    rows = gc_rows(run_dir)
    per_interval = Counter((row["ts"], row["metric"]) for row in rows)
    assert rows and max(per_interval.values()) == 1, per_interval
