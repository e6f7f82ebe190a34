"""OOM kills: a service the kernel's OOM killer ended at its memory limit (``oom_killed`` in events.csv, written by
the sampler's docker source, dated by the engine).

Each kill is a failed check, and the run's status names the first: "backend was OOM-killed at +19 s after growing
11,546.2 MB/h (mem_working_set_bytes at 108 MB, limit 110 MB)". The growth is the service's memory from the start of
the load (or the service's previous start, after a restart) to the kill: the figure that says how soon the next
kill comes, and that a bigger limit only postpones it. The memory read is the container's working set when it was
sampled (the figure the kill was decided on), else the process's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.formatting import fmt_duration
from analysis.growth import MIN_SAMPLES, leak_slope, theil_sen
from analysis.placement import memory_limit
from analysis.runfolder import Run
from analysis.status import split_detail
from runspec import folder
from runspec.units import MB

OOM_METRICS = ("mem_working_set_bytes", "mem_rss_bytes", "mem_uss_bytes")  # the first sampled is read


def _growth(ts: np.ndarray, values: np.ndarray) -> float:
    """Per hour: Theil-Sen of the lower envelope when there are enough samples, else of the samples themselves."""
    if ts.size >= MIN_SAMPLES:
        slope, _, _ = leak_slope(ts, values)
        if math.isfinite(slope):
            return slope
    if ts.size < 2:
        return math.nan
    order = np.argsort(ts, kind="stable")
    slope, _, _, _ = theil_sen(ts[order], values[order], with_ci=False)
    return slope


def oom_kills(run: Run, series: dict[tuple[str, str], np.ndarray], placement: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per OOM kill, in time order: service, ts, at_s (since load start), metric, growth_per_hour,
    peak_bytes, limit_bytes, detail (the event's), reason (one line)."""
    events = run.events
    rows = events[(events["event"] == folder.OOM_KILLED).to_numpy()]
    if not len(rows):
        return []
    load_start = run.first_event(folder.LOAD_START)
    origin = load_start if load_start is not None else float(run.samples["ts"].min())
    restarts = events[events["event"].isin((folder.SERVICE_RESTART, folder.OOM_KILLED)).to_numpy()]
    ts_all, values_all = run.samples["ts"].to_numpy(), run.samples["value"].to_numpy()
    out = []
    for ts, detail in zip(rows["ts"].astype(float), rows["detail"], strict=True):
        service, why = split_detail(str(detail))
        earlier = [
            float(t)
            for t, d in zip(restarts["ts"], restarts["detail"], strict=True)
            if split_detail(str(d))[0] == service and float(t) < ts
        ]
        since = max([origin, *earlier])  # this life of the service: from load start or its last (re)start
        metric, growth, peak = "", math.nan, math.nan
        for name in OOM_METRICS:
            idx = series.get((service, name))
            if idx is None:
                continue
            t, v = ts_all[idx], values_all[idx]
            keep = (t >= since) & (t <= ts)
            if keep.any():
                metric, growth, peak = name, _growth(t[keep], v[keep]), float(np.max(v[keep]))
                break
        limit = memory_limit(placement, service)
        out.append(
            {
                "service": service,
                "ts": ts,
                "at_s": ts - origin,
                "metric": metric,
                "growth_per_hour": growth,
                "peak_bytes": peak,
                "limit_bytes": limit,
                "detail": why,
                "reason": _reason(service, ts - origin, metric, growth, peak, limit),
            }
        )
    return out


def _reason(service: str, at_s: float, metric: str, growth: float, peak: float, limit: float | None) -> str:
    when = f"+{fmt_duration(at_s)}" if at_s >= 0 else f"{fmt_duration(-at_s)} before load start"
    how = f" after growing {growth / MB:,.1f} MB/h" if math.isfinite(growth) else ""
    seen = [f"{metric} at {peak / MB:,.0f} MB"] if metric else []
    seen += [f"limit {limit / MB:,.0f} MB"] if limit else []
    return f"{service} was OOM-killed at {when}{how}" + (f" ({', '.join(seen)})" if seen else "")
