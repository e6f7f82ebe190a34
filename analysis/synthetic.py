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

MIB = 1024.0 * 1024.0
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
        handle.write("ts,service,metric,value\n")
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
        writer.writerow(["ts", "event", "detail"])
        for ts, event, detail in events:
            writer.writerow([f"{ts:.3f}", event, detail])


def write_latency(path: Path, rows: Iterable[tuple[float, str, str, float, int]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("ts,type,name,ms,count\n")
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
    with (path / "locust_stats.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for (kind, name), (count, failed) in requests.items():
            writer.writerow([kind, name, count, failed, 10, 12.5])
        total = sum(c for c, _ in requests.values()), sum(f for _, f in requests.values())
        writer.writerow(["", "Aggregated", total[0], total[1], 10, 12.5])
    with (path / "locust_failures.csv").open("w", encoding="utf-8", newline="") as handle:
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
        (start, "load_start", ""),
        (start + warmup_s, "warmup_end", ""),
        (start + load_s, "load_stop", ""),
        (start + load_s + drain_s, "drain_end", ""),
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
        base = (80 + 40 * s_index) * MIB
        saw = 20 * MIB * ((ticks / (300 + 60 * s_index)) % 1.0)
        leak = 4 * MIB * np.clip(hours_in, 0, None) if service == "backend" else 0.0
        fill = 50 * MIB * (1 - np.exp(-np.clip(hours_in, 0, None) / 0.08))
        for metric in METRICS:
            noise = rng.normal(0.0, 1.0, ticks.size)
            if metric.startswith("mem_"):
                values = base + fill + saw + leak + 0.3 * MIB * noise
            elif metric.endswith("_bytes"):
                values = np.minimum(hours_in.clip(0) * 4e6, 1.5e6)
            elif metric == "cpu_percent":
                values = np.abs(20 * loaded + 3 * noise)
            elif metric == "db_pool_size":
                values = np.full(ticks.size, 5.0)
            else:
                values = np.round(10 + 30 * loaded + 2 * np.abs(noise) * loaded)
            series[(service, metric)] = (ticks, values)
    series[("locust", "mem_rss_bytes")] = (
        ticks,
        150 * MIB + 2 * MIB * hours_in.clip(0) + 0.2 * MIB * rng.normal(size=ticks.size),
    )
    series[("locust", "gc_pause_max_ms")] = (ticks, np.abs(rng.normal(5, 3, ticks.size)))
    write_series(path / "samples.csv", series)
    write_events(path / "events.csv", standard_events(start, warmup, load, drain))
    write_scenario(path / "scenario.toml", {"name": "soak-24h-synthetic", "phases": {"warmup": warmup, "drain": drain}})
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
    write_latency(path / "latency.csv", rows)
    write_locust(path, requests, [("GET", "GET /api/threads", "HTTPError('502 Bad Gateway')", 120)])
    seconds = np.arange(start, start + load, 1.0)
    users = np.minimum((seconds - start) / 30.0, 1.0) * 100
    write_history(path / "locust_stats_history.csv", seconds, users, users * timings_per_s / 100, [n for _, n in names])


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
    write_series(path / "samples.csv", series)
    if events is not None:
        write_events(path / "events.csv", events)
    if scenario is not None:
        write_scenario(path / "scenario.toml", scenario)
    if latency is not None:
        write_latency(path / "latency.csv", latency)
    if locust is not None:
        write_locust(path, locust, failures)
    return path
