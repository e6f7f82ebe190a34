"""The load generator judged on its own figures: valid when it kept up, invalid when it was saturated for more than
a small share of the judged period, and each slow window labelled with what the generator was doing in it."""

from __future__ import annotations

import numpy as np

from analysis.generator import judge_generator
from analysis.groups import group_indices
from analysis.runfolder import load_run
from analysis.synthetic import T0, build_run

LOAD_S = 600
TARGETS = [{"name": "ws round trip", "percentile": 95.0, "max_ms": 50.0}]


def _events():
    return [
        (T0, "load_start", ""),
        (T0 + 10, "warmup_end", ""),
        (T0 + LOAD_S, "load_stop", ""),
        (T0 + 630, "drain_end", ""),
    ]


def _generator(cpu=30.0, gc=3.0, lag=2.0, busy=(), pauses=(), lags=(), processes=1.0, worker_cpu=None):
    """The generator's rows: CPU each second, GC and hub lag per 10 s; ``busy``/``pauses``/``lags``: the 10 s
    intervals (from load start) where CPU is 98%, a GC pause 45 ms, the hub 120 ms late and blocked 700 ms (7%)."""
    seconds = np.arange(T0, T0 + 631, 1.0)
    tens = np.arange(T0, T0 + 631, 10.0)
    interval = ((seconds - T0) // 10).astype(int)
    cpu_values = np.where(np.isin(interval, busy), 98.0, cpu)
    rows = {
        ("backend", "mem_rss_bytes"): (tens, 1e8 + 0 * tens),
        ("locust", "processes"): (seconds, processes + 0 * seconds),
        ("locust", "gc_pause_max_ms"): (tens, np.where(np.isin(np.arange(tens.size), pauses), 45.0, gc)),
        ("locust", "hub_lag_max_ms"): (tens, np.where(np.isin(np.arange(tens.size), lags), 120.0, lag)),
        ("locust", "hub_blocked_ms"): (tens, np.where(np.isin(np.arange(tens.size), lags), 700.0, 5 * lag)),
    }
    if worker_cpu is None:
        rows[("locust", "cpu_percent")] = (seconds, cpu_values)
    else:
        rows[("locust", "cpu_percent")] = (seconds, 3 * cpu_values)
        rows[("locust", "worker_cpu_max_percent")] = (
            tens,
            np.where(np.isin(np.arange(tens.size), busy), 98.0, worker_cpu),
        )
    return rows


def _latency(slow=(), late=(), open_model=True):
    """A round trip a second at 5 ms (400 ms during the ``slow`` intervals) and, open model, each send's lateness
    (1 ms; 60 ms during the ``late`` intervals)."""
    rows = []
    for i in range(10, LOAD_S):
        ts = T0 + i
        rows.append((ts, "WS", "ws round trip", 400.0 if i // 10 in slow else 5.0, 1))
        if open_model:
            rows.append((ts, "ARRIVAL", "send lateness", 60.0 if i // 10 in late else 1.0, 1))
    return rows


def _judge(tmp_path, series, latency=None, scenario=None):
    scenario = {"targets": {"latency": TARGETS}, **(scenario or {})}
    path = build_run(tmp_path / "run", series, _events(), scenario=scenario, latency=latency)
    run = load_run(path)
    return judge_generator(run, group_indices(run.samples, "service", "metric"))


def test_a_generator_that_kept_up_is_valid_and_a_quiet_slow_window_is_the_servers(tmp_path):
    verdict = _judge(tmp_path, _generator(), _latency(slow=(30,)))
    assert verdict.status == "valid", verdict.reason
    assert {entry["metric"] for entry in verdict.limits} == {
        "cpu",
        "gc_pause_max_ms",
        "hub_blocked_ms",
        "send lateness",
    }
    assert all(entry["over"] == 0 for entry in verdict.limits)
    assert verdict.blame == {"server": 1}
    assert verdict.outliers[0]["cause"] == "server" and verdict.outliers[0]["start"] == T0 + 300


def test_a_starved_generator_makes_the_run_invalid_and_owns_its_slow_windows(tmp_path):
    busy = tuple(range(10, 30))  # 20 of the 59 judged intervals at 98% of a core
    verdict = _judge(tmp_path, _generator(busy=busy), _latency(slow=(12, 13, 40)))
    assert verdict.invalid
    assert "CPU over 90% of a core" in verdict.reason and "34%" in verdict.reason, verdict.reason
    assert verdict.blame == {"CPU saturated": 2, "server": 1}
    causes = {row["start"]: row["cause"] for row in verdict.outliers}
    assert causes[T0 + 120].startswith("CPU saturated (98%)") and causes[T0 + 400] == "server"


def test_rare_gc_pauses_stay_valid_but_label_their_window(tmp_path):
    verdict = _judge(tmp_path, _generator(pauses=(20, 21)), _latency(slow=(20,)))  # 2 of 59 intervals: 3%
    assert verdict.status == "valid", verdict.reason
    gc = next(entry for entry in verdict.limits if entry["metric"] == "gc_pause_max_ms")
    assert gc["over"] == 2 and gc["worst"] == 45.0
    assert verdict.outliers[0]["cause"] == "GC pause (45 ms)"


def test_share_max_and_limits_come_from_the_scenario(tmp_path):
    scenario = {"generator": {"share_max": 0.01, "hub_blocked_max_percent": 3.0}}  # 7% is over 3%
    verdict = _judge(tmp_path, _generator(lags=(20, 30, 40)), _latency(slow=(30,)), scenario)  # 3 of 59: 5%
    assert verdict.invalid and "the hub blocked over 3% of the time" in verdict.reason, verdict.reason
    assert verdict.outliers[0]["cause"] == "hub blocked (120 ms)"
    assert _judge(tmp_path / "default", _generator(lags=(20, 30)), _latency()).status == "valid"  # two: not yet


def test_one_bad_interval_of_a_short_run_is_a_blip_not_an_invalid_run(tmp_path):
    short = {key: (ts[ts <= T0 + 60], values[ts <= T0 + 60]) for key, (ts, values) in _generator(lags=(3,)).items()}
    path = build_run(
        tmp_path / "run",
        short,
        [(T0, "load_start", ""), (T0 + 10, "warmup_end", ""), (T0 + 60, "load_stop", "")],
        scenario={"targets": {"latency": TARGETS}},
    )
    run = load_run(path)
    verdict = judge_generator(run, group_indices(run.samples, "service", "metric"))
    blocked = next(entry for entry in verdict.limits if entry["metric"] == "hub_blocked_ms")
    assert blocked["over"] == 1 and blocked["share"] == 0.2  # 1 of 5 intervals
    assert verdict.status == "valid", verdict.reason


def test_sends_that_left_late_make_an_open_model_run_invalid(tmp_path):
    verdict = _judge(tmp_path, _generator(), _latency(late=tuple(range(10, 20))))
    assert verdict.invalid and "sends late over 20 ms (p99)" in verdict.reason, verdict.reason


def test_a_tree_of_processes_is_judged_on_its_busiest_worker_not_the_sum(tmp_path):
    summed = _judge(tmp_path / "a", _generator(cpu=60.0, processes=3.0))  # cpu_percent 60: but for 3 processes
    assert "cpu" not in {entry["metric"] for entry in summed.limits}
    workers = _judge(tmp_path / "b", _generator(cpu=60.0, processes=3.0, worker_cpu=50.0, busy=tuple(range(10, 30))))
    assert workers.invalid and "CPU over 90%" in workers.reason, workers.reason


def test_a_folder_without_the_generators_figures_has_no_data(tmp_path):
    tens = np.arange(T0, T0 + 631, 10.0)
    verdict = _judge(
        tmp_path, {("backend", "mem_rss_bytes"): (tens, 1e8 + 0 * tens)}, _latency(slow=(5,), open_model=False)
    )
    assert verdict.status == "no data" and verdict.limits == []
    assert verdict.blame == {"server": 1}  # nothing says the generator was busy: the slow window is the server's


def test_the_open_models_two_schedules_are_kept_apart_and_the_other_view_is_never_api(tmp_path):
    from analysis.generator import load_model
    from analysis.latency import select

    latency = []
    for i in range(10, LOAD_S):
        latency += [
            (T0 + i, "WS", "send lateness", 1.0, 2),
            (T0 + i, "HTTP", "send lateness", 3.0, 1),
            (T0 + i, "GET", "GET /api/threads/{id}/messages", 40.0, 1),
            (T0 + i, "GET", "GET /api/threads/{id}/messages (from send)", 5.0, 1),
        ]
    latency += [(T0 + 50, "HTTP", "send dropped", 1500.0, 3), (T0 + 60, "WS", "send dropped", 1200.0, 1)]
    arrival = {"rate": 2.0, "rest_rate": 1.0, "max_in_flight": 2, "max_late": 1.0, "judge": "intended"}
    path = build_run(tmp_path / "run", _generator(), _events(), scenario={"arrival": arrival}, latency=latency)
    run = load_run(path)
    model = load_model(run)
    assert (model["sent"], model["dropped"], model["rest"]["sent"], model["rest"]["dropped"]) == (1180, 1, 590, 3)
    assert model["achieved_rate"] == 1180 / LOAD_S and model["rest"]["achieved_rate"] == 590 / LOAD_S
    assert model["rest"]["lateness_p99_ms"] == 3.0 and "REST calls: 1/s asked" in model["note"]
    api = select(run.latency, "api")
    assert set(api["name"]) == {"GET /api/threads/{id}/messages"}  # the same calls again: not in "api" twice
