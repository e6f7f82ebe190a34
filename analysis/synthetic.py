"""Synthetic run folders with known truth, for the tests and the benchmark (and to try the report without a run).

Nothing here is used to judge a real run: it writes the same files a real run writes, in the same formats.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from runspec import folder
from runspec.units import LOAD_GENERATOR, MB

T0 = 1_760_000_000.0  # a fixed start so generated folders are reproducible
REST_NAMES = (
    ("POST", "POST /auth/login"),
    ("POST", "POST /auth/refresh"),
    ("GET", "GET /api/threads"),
    ("POST", "POST /api/threads"),
    ("GET", "GET /api/threads/{id}/messages"),
    ("POST", "POST /api/uploads"),
)
WS_NAMES = ("WS connect", "ws round trip", "agent startup", "agent complete", "upload processed", "fan-out lag")
SERVICES = ("auth", "backend", "agent", "redis", "postgres")
METRICS = (
    "mem_rss_bytes",
    "mem_uss_bytes",
    "cpu_percent",
    "open_fds",
    "threads",
    "tcp_established",
    "ws_connections_active",
    "db_pool_checked_out",
    "db_pool_size",
    "redis_connected_clients",
    "pg_connections",
    "ws_replay_buffer_bytes",
)


def write_samples(path: Path, ts: np.ndarray, service: np.ndarray, metric: np.ndarray, value: np.ndarray) -> None:
    """samples.csv from parallel arrays (rows in the order given)."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write(folder.SAMPLES_HEADER)
        step = 500_000
        for lo in range(0, len(ts), step):
            hi = lo + step
            handle.write(
                "".join(
                    f"{t:.3f},{s},{m},{v:.6g}\n"
                    for t, s, m, v in zip(ts[lo:hi], service[lo:hi], metric[lo:hi], value[lo:hi], strict=True)
                )
            )


def write_series(path: Path, series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    """samples.csv from {(service, metric): (ts, values)}, interleaved by time as a sampler writes it."""
    parts = [
        (ts, np.full(ts.size, svc, dtype=object), np.full(ts.size, met, dtype=object), values)
        for (svc, met), (ts, values) in series.items()
    ]
    ts = np.concatenate([p[0] for p in parts])
    order = np.argsort(ts, kind="stable")
    write_samples(path, *(np.concatenate([p[i] for p in parts])[order] for i in range(4)))


def write_events(path: Path, events: Iterable[tuple[float, str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(folder.EVENTS_COLUMNS)
        for ts, event, detail in events:
            writer.writerow([f"{ts:.3f}", event, detail])


def write_latency(path: Path, rows: Iterable[tuple[float, str, str, float, int]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(folder.LATENCY_HEADER)
        handle.write("".join(f"{ts:.3f},{kind},{name},{float(ms)!r},{count}\n" for ts, kind, name, ms, count in rows))


def round3(ms: np.ndarray) -> np.ndarray:
    """3 significant digits, as latency.csv stores them (41.237 -> 41.2, 1234.5 -> 1230)."""
    ms = np.asarray(ms, dtype="float64")
    out = np.zeros_like(ms)
    positive = ms > 0
    digits = 2 - np.floor(np.log10(ms[positive]))
    scale = 10.0**digits
    out[positive] = np.round(ms[positive] * scale) / scale
    return out


def timing_rows(ts: np.ndarray, kind: str, name: str, ms: np.ndarray, interval: float = 10.0) -> list[tuple]:
    """Aggregate raw timings into latency.csv rows: (interval start, type, name, ms rounded, count)."""
    start = np.floor(ts / interval) * interval
    rounded = round3(ms)
    keys, counts = np.unique(np.stack([start, rounded], axis=1), axis=0, return_counts=True)
    return [(k[0], kind, name, k[1], int(c)) for k, c in zip(keys, counts, strict=True)]


def write_locust(path: Path, requests: dict[tuple[str, str], tuple[int, int]], failures: list[tuple] = ()) -> None:
    """locust_stats.csv ({(type, name): (requests, failures)} + Aggregated) and locust_failures.csv."""
    columns = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time"]
    with (path / folder.LOCUST_STATS).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for (kind, name), (count, failed) in requests.items():
            writer.writerow([kind, name, count, failed, 10, 12.5])
        total = sum(c for c, _ in requests.values()), sum(f for _, f in requests.values())
        writer.writerow(["", "Aggregated", total[0], total[1], 10, 12.5])
    with (path / folder.LOCUST_FAILURES).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Method", "Name", "Error", "Occurrences"])
        for row in failures:
            writer.writerow(row)


def write_history(path: Path, ts: np.ndarray, users: np.ndarray, rps: np.ndarray, names: Iterable[str] = ()) -> None:
    """locust_stats_history.csv with an Aggregated row per second (and a row per name, as --csv-full-history)."""
    header = (
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,99%,Total Request Count,Total Failure Count\n"
    )
    names = list(names)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(header)
        lines = []
        total = 0.0
        for t, u, r in zip(ts, users, rps, strict=True):
            total += r
            for name in names:
                lines.append(f"{t:.0f},{u:.0f},GET,{name},{r / max(len(names), 1):.2f},0.00,12,40,60,{total:.0f},0\n")
            lines.append(f"{t:.0f},{u:.0f},,Aggregated,{r:.2f},0.00,12,40,60,{total:.0f},0\n")
            if len(lines) > 200_000:
                handle.write("".join(lines))
                lines = []
        handle.write("".join(lines))


def write_scenario(path: Path, scenario: dict[str, Any]) -> None:
    path.write_text(tomli_w.dumps(scenario), encoding="utf-8")


def standard_events(start: float, warmup_s: float, load_s: float, drain_s: float) -> list[tuple[float, str, str]]:
    return [
        (start, folder.LOAD_START, ""),
        (start + warmup_s, folder.WARMUP_END, ""),
        (start + load_s, folder.LOAD_STOP, ""),
        (start + load_s + drain_s, folder.DRAIN_END, ""),
    ]


def day_run(path: Path, hours: float = 24.0, interval: float = 1.0, timings_per_s: float = 60.0, seed: int = 1) -> None:
    """A realistic run folder: 5 services x 12 metrics sampled every ``interval`` s, Locust history every second,
    and a timing record of ``timings_per_s`` requests/s over 12 request names; the backend leaks 4 MB/h."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    pre, warmup, drain = 60.0, 300.0, 120.0
    load = hours * 3600.0 - pre - drain
    start = T0 + pre
    ticks = T0 + np.arange(0.0, hours * 3600.0, interval)
    hours_in = (ticks - start) / 3600.0
    loaded = (ticks >= start) & (ticks <= start + load)
    series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for s_index, service in enumerate(SERVICES):
        base = (80 + 40 * s_index) * MB
        saw = 20 * MB * ((ticks / (300 + 60 * s_index)) % 1.0)
        leak = 4 * MB * np.clip(hours_in, 0, None) if service == "backend" else 0.0
        fill = 50 * MB * (1 - np.exp(-np.clip(hours_in, 0, None) / 0.08))
        for metric in METRICS:
            noise = rng.normal(0.0, 1.0, ticks.size)
            if metric.startswith("mem_"):
                values = base + fill + saw + leak + 0.3 * MB * noise
            elif metric.endswith("_bytes"):
                values = np.minimum(hours_in.clip(0) * 4e6, 1.5e6)
            elif metric == "cpu_percent":
                values = np.abs(20 * loaded + 3 * noise)
            elif metric == "db_pool_size":
                values = np.full(ticks.size, 5.0)
            else:
                values = np.round(10 + 30 * loaded + 2 * np.abs(noise) * loaded)
            series[(service, metric)] = (ticks, values)
    series[(LOAD_GENERATOR, "mem_rss_bytes")] = (
        ticks,
        150 * MB + 2 * MB * hours_in.clip(0) + 0.2 * MB * rng.normal(size=ticks.size),
    )
    series[(LOAD_GENERATOR, "gc_pause_max_ms")] = (ticks, np.abs(rng.normal(5, 3, ticks.size)))
    write_series(path / folder.SAMPLES, series)
    write_events(path / folder.EVENTS, standard_events(start, warmup, load, drain))
    write_scenario(path / folder.SCENARIO, {"name": "soak-24h-synthetic", "phases": {"warmup": warmup, "drain": drain}})
    names = [(kind, name) for kind, name in REST_NAMES] + [("WS", name) for name in WS_NAMES]
    per_name = timings_per_s / len(names)
    rows: list[tuple] = []
    hour_starts = np.arange(start, start + load, 3600.0)
    requests = {}
    for kind, name in names:
        count = int(per_name * load)
        for h0 in hour_starts:
            n = int(per_name * min(3600.0, start + load - h0))
            ts = h0 + rng.uniform(0, min(3600.0, start + load - h0), n)
            ms = rng.lognormal(np.log(8 if kind == "WS" else 15), 0.5, n)
            rows.extend(timing_rows(ts, kind, name, ms))
        requests[(kind, name)] = (count, count // 1000)
    write_latency(path / folder.LATENCY, rows)
    write_locust(path, requests, [("GET", "GET /api/threads", "HTTPError('502 Bad Gateway')", 120)])
    seconds = np.arange(start, start + load, 1.0)
    users = np.minimum((seconds - start) / 30.0, 1.0) * 100
    write_history(path / folder.LOCUST_HISTORY, seconds, users, users * timings_per_s / 100, [n for _, n in names])


def build_run(
    path: Path,
    series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    events: Iterable[tuple[float, str, str]] | None = None,
    scenario: dict[str, Any] | None = None,
    latency: Iterable[tuple[float, str, str, float, int]] | None = None,
    locust: dict[tuple[str, str], tuple[int, int]] | None = None,
    failures: list[tuple] = (),
) -> Path:
    """A run folder from parts; only samples.csv is always written, the rest when given."""
    path.mkdir(parents=True, exist_ok=True)
    write_series(path / folder.SAMPLES, series)
    if events is not None:
        write_events(path / folder.EVENTS, events)
    if scenario is not None:
        write_scenario(path / folder.SCENARIO, scenario)
    if latency is not None:
        write_latency(path / folder.LATENCY, latency)
    if locust is not None:
        write_locust(path, locust, failures)
    return path


def write_full_history(
    path: Path, seconds: np.ndarray, users: np.ndarray, per_name: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
) -> None:
    """locust_stats_history.csv as ``--csv-full-history`` writes it: a row per name and second, then Aggregated,
    with the cumulative totals. ``per_name``: {(type, name): (requests, failures) per second}."""
    header = (
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,99%,Total Request Count,Total Failure Count\n"
    )
    totals = {key: (np.cumsum(r), np.cumsum(f)) for key, (r, f) in per_name.items()}
    all_r = sum(r for r, _ in per_name.values())
    all_f = sum(f for _, f in per_name.values())
    agg_r, agg_f = np.cumsum(all_r), np.cumsum(all_f)
    lines = [header]
    for i, t in enumerate(seconds):
        for (kind, name), (r, f) in per_name.items():
            lines.append(
                f"{t:.0f},{users[i]:.0f},{kind},{name},{r[i]:.2f},{f[i]:.2f},12,40,60,"
                f"{totals[(kind, name)][0][i]:.0f},{totals[(kind, name)][1][i]:.0f}\n"
            )
        lines.append(
            f"{t:.0f},{users[i]:.0f},,Aggregated,{all_r[i]:.2f},{all_f[i]:.2f},12,40,60,{agg_r[i]:.0f},{agg_f[i]:.0f}\n"
        )
    path.write_text("".join(lines), encoding="utf-8")


def fault_run(
    path: Path,
    faults: bool = True,
    back: bool = True,
    cascade: bool = False,
    lost: int = 0,
    window_errors: int = 0,
    timeouts: int = 0,
    memory_step_mb: float = 0.0,
    seed: int = 3,
) -> Path:
    """Twenty minutes of chat with one ``kill backend`` at +9 min (what `soak run error-cascade` leaves): 1 Hz health
    checks and memory of auth, backend and agent, the exact timing record, Locust's totals, failures and full
    history, and what the users report: 'ws outage' as the backend goes, 'ws recovery' as it comes back, a ledger.

    The backend is down from 1 s to 6 s after the kill (a supervisor restarts it) unless ``back`` is False;
    ``cascade``: auth fails its health checks for 3 s in the window; ``lost``: ledger losses; ``window_errors``:
    round trips that fail (connection closed) while the backend is down; ``timeouts``: agent startups that time
    out in the window; ``memory_step_mb``: the backend's memory stays this much higher after the fault.
    ``faults`` False: the same run without the kill and without what the users saw of it.
    """
    rng = np.random.default_rng(seed)
    load_start, warmup_end, load_stop, drain_end = T0 + 60, T0 + 120, T0 + 1140, T0 + 1200
    kill = T0 + 600.0
    down_from, down_to = kill + 1, (kill + 6 if back else drain_end + 1)
    hz = np.arange(T0, drain_end, 1.0)
    series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for service, base in (("auth", 100 * MB), ("backend", 200 * MB), ("agent", 150 * MB)):
        up = np.ones(hz.size)
        memory = base + 0.3 * MB * rng.normal(size=hz.size)
        if faults and service == "backend":
            up[(hz >= down_from) & (hz < down_to)] = 0.0
            memory = memory + memory_step_mb * MB * (hz >= kill)
        if faults and cascade and service == "auth":
            up[(hz >= kill + 10) & (hz < kill + 13)] = 0.0
        series[(service, "health_up")] = (hz, up)
        series[(service, "mem_rss_bytes")] = (hz, memory)
    events = standard_events(load_start, warmup_end - load_start, load_stop - load_start, drain_end - load_stop)
    if faults:
        events += [
            (kill, folder.FAULT_START, "kill backend id=0 n=1"),
            (kill + 0.1, folder.FAULT_END, "kill backend id=0 n=1 outcome=ok took=0.100 pid=4242"),
        ]
        if back:
            events.append((down_to, folder.SERVICE_RESTART, "backend: pid 4343"))
    scenario: dict[str, Any] = {
        "name": "error-cascade" if faults else "steady",
        "targets": {"error_rate_max": 0.005},
        "recovery": {"time_max": 30.0},
    }
    if faults:
        scenario["faults"] = [{"at": kill - load_start, "kind": "kill", "service": "backend"}]
    seconds = np.arange(load_start, load_stop, 1.0)
    down = faults & (seconds >= down_from) & (seconds < down_to)

    def per_s(rate: float) -> np.ndarray:
        return np.where(down, 0.0, rate)

    def at(ts: float, count: int) -> np.ndarray:
        out = np.zeros(seconds.size)
        if count:
            out[int(ts - load_start)] = count
        return out

    steady_failures = ((seconds - load_start) % 50 == 0).astype(float)  # one API failure every 50 s
    users = np.minimum((seconds - load_start) / 10.0, 1.0) * 10
    per_name = {
        ("WS", "ws round trip"): (per_s(20) + at(down_from, window_errors), at(down_from, window_errors)),
        ("WS", "agent startup"): (per_s(20) + at(kill + 11, timeouts), at(kill + 11, timeouts)),
        ("GET", "GET /api/threads"): (per_s(10), steady_failures),
        ("WS", "ledger complete"): (per_s(2), np.zeros(seconds.size)),
    }
    failures = [("GET", "GET /api/threads", "HTTPError('502 Bad Gateway')", int(steady_failures.sum()))]
    rows = []
    for kind, name, scale in (
        ("WS", "ws round trip", 12),
        ("WS", "agent startup", 100),
        ("GET", "GET /api/threads", 20),
    ):
        stamps = rng.uniform(warmup_end, load_stop, 4000)
        rows += timing_rows(stamps, kind, name, rng.lognormal(np.log(scale), 0.3, stamps.size))
    if faults:
        per_name[("WS", "ws outage")] = (at(down_from, 10), at(down_from, 10))
        failures.append(("WS", "ws outage", "connection closed: 1006", 10))
        if window_errors:
            failures.append(("WS", "ws round trip", "connection closed: 1006", window_errors))
        if timeouts:
            failures.append(("WS", "agent startup", "agent_started not received within 10 s", timeouts))
        if lost:
            per_name[("WS", "ledger lost")] = (at(kill + 9, lost), at(kill + 9, lost))
            failures.append(("WS", "ledger lost", "event_id 812 never arrived", lost))
        if back:
            took = rng.uniform(6.0, 9.0, 10)  # from each user's first failure (down_from) to its first good round trip
            per_name[("WS", "ws recovery")] = (at(down_from + 9, 10), np.zeros(seconds.size))
            rows += timing_rows(down_from + took, "WS", "ws recovery", took * 1000.0)
    requests = {key: (int(r.sum()), int(f.sum())) for key, (r, f) in per_name.items()}
    build_run(path, series, events, scenario, rows, requests, failures)
    write_full_history(path / folder.LOCUST_HISTORY, seconds, users, per_name)
    return path
