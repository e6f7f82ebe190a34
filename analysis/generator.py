"""Was the load generator the bottleneck? Its validity over the judged load period, and whose each slow window was.

A tail that the client made (its garbage collector, a blocked gevent hub, a saturated core, sends that left late)
reads as server latency. The load generator writes its own state as service ``locust``:

- ``samples.csv``: ``worker_cpu_max_percent`` (the busiest Locust process, % of one core; the process sampler's
  ``cpu_percent`` stands in for a single-process run), ``gc_pause_max_ms`` (locustfiles/gcwatch.py),
  ``hub_blocked_ms`` and ``hub_lag_max_ms`` (locustfiles/hubwatch.py: how long the gevent hub was blocked in the
  interval, and the latest it woke a sleeping greenlet);
- ``latency.csv``: ``send lateness`` (open model: how late each message left against its intended time).

Each limit of the scenario's ``[generator]`` table is judged on 10 s intervals of the judged load period (after the
warm-up): the share of intervals over it. Over ``share_max`` for any limit, in at least MIN_INTERVALS_OVER intervals
(one bad interval of a short run is a blip, not a saturated generator), and the run is ``invalid``: the figures
describe the client, not the target. Then each latency target's 10 s windows over their limit are labelled with
what the generator was doing in them (a GC pause or a wake-up later than its limit, a saturated core, late sends),
or "server" when it was doing nothing wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.latency import WS_TYPE, judged_start, select, weighted_percentiles
from analysis.runfolder import Run
from runspec import folder
from runspec.units import LOAD_GENERATOR

INTERVAL_S = 10.0  # the generator's own rows (GC, hub lag) come per 10 s: judge every limit on that grid
SEND_LATENESS = folder.SEND_LATENESS
WORKER_CPU = "worker_cpu_max_percent"
PROCESS_CPU = "cpu_percent"
GC_PAUSE = "gc_pause_max_ms"
HUB_LAG = "hub_lag_max_ms"
HUB_BLOCKED = "hub_blocked_ms"
OUTLIERS_KEPT = 20  # slow windows listed in the verdict (the worst); the counts per cause cover them all
MIN_INTERVALS_OVER = 3
SERVER = "server"

# (limit key in [generator], what it reads, label in a reason, unit): the validity limits
LIMITS = (
    ("cpu_max", "cpu", "CPU over {limit:g}% of a core", "%"),
    ("gc_pause_max_ms", GC_PAUSE, "a GC pause over {limit:g} ms", "ms"),
    ("hub_blocked_max_percent", HUB_BLOCKED, "the hub blocked over {limit:g}% of the time", "%"),
    ("late_p99_ms", SEND_LATENESS, "sends late over {limit:g} ms (p99)", "ms"),
)
# (limit key, what it reads): what labels a slow window; a single late wake-up is enough to spoil one
LABELS = (
    ("cpu_max", "cpu"),
    ("gc_pause_max_ms", GC_PAUSE),
    ("hub_lag_max_ms", HUB_LAG),
    ("late_p99_ms", SEND_LATENESS),
)
CAUSES = {"cpu": "CPU saturated", GC_PAUSE: "GC pause", HUB_LAG: "hub blocked", SEND_LATENESS: "sends late"}
UNITS = {"cpu": "%"}


@dataclass
class GeneratorVerdict:
    status: str  # "valid", "invalid" or "no data"
    reason: str
    limits: list[dict[str, Any]] = field(default_factory=list)  # one per limit with data
    outliers: list[dict[str, Any]] = field(default_factory=list)  # the worst slow windows and their cause
    blame: dict[str, int] = field(default_factory=dict)  # slow windows per cause ("server": none of the generator's)

    @property
    def invalid(self) -> bool:
        return self.status == "invalid"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "limits": self.limits,
            "outliers": self.outliers,
            "blame": self.blame,
        }


def judge_generator(run: Run, series: dict[tuple[str, str], np.ndarray]) -> GeneratorVerdict:
    """The generator's validity and the cause of each slow window (see the module docstring)."""
    window = _window(run)
    if window is None:
        return GeneratorVerdict("no data", "no judged load period")
    start, end = window
    edges = start + INTERVAL_S * np.arange(int(math.ceil((end - start) / INTERVAL_S - 1e-9)) + 1)
    if edges.size < 2:
        return GeneratorVerdict("no data", "the judged load period is shorter than one interval")
    per_interval = _per_interval(run, series, edges)
    settings = run.settings.scenario.get("generator", {})
    limits, invalid = [], []
    share_max = float(settings.get("share_max", 0.05))
    for key, what, label, unit in LIMITS:
        values = per_interval.get(what)
        if values is None or not np.isfinite(values).any():
            continue
        limit = float(settings.get(key, math.inf))
        known = np.isfinite(values)
        over = int(np.sum(values[known] > limit))
        share = over / int(known.sum())
        entry = {
            "limit": key,
            "metric": what,
            "max": limit,
            "unit": unit,
            "worst": float(np.nanmax(values)),
            "intervals": int(known.sum()),
            "over": over,
            "share": share,
        }
        limits.append(entry)
        if share > share_max and over >= MIN_INTERVALS_OVER:
            invalid.append(
                f"{label.format(limit=limit)} in {over} of {int(known.sum())} judged 10 s intervals ({share:.0%})"
            )
    blame, outliers = _label_slow_windows(run, edges, per_interval, settings)
    if not limits:
        return GeneratorVerdict("no data", "the load generator wrote none of its own figures", [], outliers, blame)
    if invalid:
        more = f" (and {len(invalid) - 1} more)" if len(invalid) > 1 else ""
        reason = f"the load generator fell behind: {invalid[0]}{more}; allowed in {share_max:.0%} of them"
        return GeneratorVerdict("invalid", reason, limits, outliers, blame)
    return GeneratorVerdict("valid", "the load generator kept up", limits, outliers, blame)


def _window(run: Run) -> tuple[float, float] | None:
    start, _why = judged_start(run)
    end = run.last_event(folder.LOAD_STOP)
    if end is None:
        end = float(run.samples["ts"].max()) if not run.samples.empty else None
    if start is None or end is None or end <= start:
        return None
    return start, end


def _per_interval(run: Run, series: dict[tuple[str, str], np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    """{what: the worst value per interval, NaN where nothing was written}."""
    ts_all = run.samples["ts"].to_numpy()
    values_all = run.samples["value"].to_numpy(dtype="float64")
    out: dict[str, np.ndarray] = {}
    cpu = series.get((LOAD_GENERATOR, WORKER_CPU))
    if cpu is None and _single_process(run, series):
        cpu = series.get((LOAD_GENERATOR, PROCESS_CPU))
    for what, idx in (("cpu", cpu), (GC_PAUSE, series.get((LOAD_GENERATOR, GC_PAUSE))),
                      (HUB_LAG, series.get((LOAD_GENERATOR, HUB_LAG))),
                      (HUB_BLOCKED, series.get((LOAD_GENERATOR, HUB_BLOCKED)))):  # fmt: skip
        if idx is not None and idx.size:
            # A 10 s row's ts is its interval's start: it belongs where it starts, as a 1 s sample does.
            out[what] = _worst(ts_all[idx], values_all[idx], edges, mean=what == "cpu")
    if HUB_BLOCKED in out:
        out[HUB_BLOCKED] = out[HUB_BLOCKED] / (INTERVAL_S * 1000.0) * 100.0  # % of the interval
    lateness = _lateness_p99(run, edges)
    if lateness is not None:
        out[SEND_LATENESS] = lateness
    return out


def _single_process(run: Run, series: dict[tuple[str, str], np.ndarray]) -> bool:
    # The process sampler sums a process tree: with --processes N its cpu_percent is N workers' together.
    idx = series.get((LOAD_GENERATOR, "processes"))
    if idx is None or not idx.size:
        return True
    return float(np.nanmax(run.samples["value"].to_numpy(dtype="float64")[idx])) <= 1.0


def _worst(ts: np.ndarray, values: np.ndarray, edges: np.ndarray, mean: bool) -> np.ndarray:
    """Per interval: the largest value (pauses, lag) or the mean (CPU: a sustained load, not one busy second)."""
    which = np.searchsorted(edges, ts, side="right") - 1
    keep = (which >= 0) & (which < edges.size - 1) & np.isfinite(values)
    out = np.full(edges.size - 1, np.nan)
    if not keep.any():
        return out
    which, values = which[keep], values[keep]
    if mean:
        sums = np.bincount(which, weights=values, minlength=out.size)
        counts = np.bincount(which, minlength=out.size)
        has = counts > 0
        out[has] = sums[has] / counts[has]
    else:
        np.fmax.at(out, which, values)
    return out


def _lateness_p99(run: Run, edges: np.ndarray) -> np.ndarray | None:
    if run.latency is None or run.latency.empty:
        return None
    rows = select(run.latency, SEND_LATENESS)
    if rows.empty:
        return None
    return _percentile_per_interval(rows, edges, 99.0)


def _percentile_per_interval(rows: Any, edges: np.ndarray, percentile: float) -> np.ndarray:
    ts, ms, counts = (rows[c].to_numpy(dtype="float64") for c in ("ts", "ms", "count"))
    which = np.searchsorted(edges, ts, side="right") - 1
    out = np.full(edges.size - 1, np.nan)
    for i in np.unique(which[(which >= 0) & (which < out.size)]):
        mask = which == i
        out[i] = weighted_percentiles(ms[mask], counts[mask], [percentile])[0]
    return out


def _label_slow_windows(
    run: Run, edges: np.ndarray, per_interval: dict[str, np.ndarray], settings: dict[str, Any]
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Each latency target's 10 s windows over its limit, with the generator's state in them."""
    if run.latency is None or run.latency.empty:
        return {}, []
    limit_of = {what: float(settings.get(key, math.inf)) for key, what in LABELS}
    blame: dict[str, int] = {}
    found = []
    for target in run.settings.latency_targets:
        rows = select(run.latency, target["name"])
        if rows.empty:
            continue
        values = _percentile_per_interval(rows, edges, float(target["percentile"]))
        for i in np.flatnonzero(np.nan_to_num(values, nan=-1.0) > float(target["max_ms"])):
            causes = [
                f"{CAUSES[what]} ({vals[i]:.0f}{UNITS.get(what, ' ms')})"
                for what, vals in per_interval.items()
                if what in limit_of and np.isfinite(vals[i]) and vals[i] > limit_of[what]
            ]
            for cause in causes or [SERVER]:
                key = cause.split(" (")[0]
                blame[key] = blame.get(key, 0) + 1
            found.append(
                {
                    "name": target["name"],
                    "percentile": float(target["percentile"]),
                    "start": float(edges[i]),
                    "value_ms": float(values[i]),
                    "max_ms": float(target["max_ms"]),
                    "cause": "; ".join(causes) if causes else SERVER,
                }
            )
    found.sort(key=lambda row: row["value_ms"] / row["max_ms"], reverse=True)
    return blame, found[:OUTLIERS_KEPT]


def load_model(run: Run) -> dict[str, Any]:
    """Closed or open model, and for the open model its schedule kept: sends, drops, achieved against target rate.

    The closed model's note is a warning: its users stop asking while the server stalls, so a stall shows in few
    samples (coordinated omission)."""
    arrival = run.settings.scenario.get("arrival", {})
    rate = float(arrival.get("rate", 0.0) or 0.0)
    if rate <= 0:
        return {
            "model": "closed",
            "note": "closed model: each user waits for its reply before it sends again, so a server stall slows the "
            "users and shows in few samples (coordinated omission may hide stalls); [arrival] rate runs an open "
            "model that keeps sending on schedule",
        }
    start, stop = run.first_event(folder.LOAD_START), run.last_event(folder.LOAD_STOP)
    seconds = (stop - start) if start is not None and stop is not None and stop > start else math.nan
    messages = _schedule_kept(run, seconds, rest=False)
    judged = arrival.get("judge", "intended")
    note = (
        f"open model: {rate:g} messages/s asked, {messages['achieved_rate']:.3g}/s sent, {messages['dropped']} dropped"
        f" (later than {float(arrival.get('max_late', 1.0)):g} s), send lateness p99 {messages['lateness_p99_ms']:.3g}"
        f" ms; round trips judged from the {'intended send time' if judged == 'intended' else 'actual send'}"
    )
    rest_rate = float(arrival.get("rest_rate", 0.0) or 0.0)
    rest: dict[str, Any] = {}
    if rest_rate > 0:
        rest = {"rate": rest_rate, **_schedule_kept(run, seconds, rest=True)}
        note += (
            f"; REST calls: {rest_rate:g}/s asked, {rest['achieved_rate']:.3g}/s sent, {rest['dropped']} dropped,"
            f" lateness p99 {rest['lateness_p99_ms']:.3g} ms"
        )
    return {"model": "open", "rate": rate, **messages, "rest": rest, "judge": judged, "note": note}


def _schedule_kept(run: Run, seconds: float, rest: bool) -> dict[str, Any]:
    """Sends, drops and lateness of one schedule: the messages' (request type WS) or the REST calls'."""
    sent = dropped = 0
    late_p99 = math.nan
    if run.latency is not None and not run.latency.empty:
        frame = run.latency[run.latency["type"] == (folder.REST_SCHEDULE_TYPE if rest else WS_TYPE)]
        sends, drops = select(frame, SEND_LATENESS), select(frame, folder.SEND_DROPPED)
        sent, dropped = int(sends["count"].sum()), int(drops["count"].sum())
        if sent:
            late_p99 = weighted_percentiles(sends["ms"].to_numpy(), sends["count"].to_numpy(), [99.0])[0]
    achieved = sent / seconds if math.isfinite(seconds) else math.nan
    return {"achieved_rate": achieved, "sent": sent, "dropped": dropped, "lateness_p99_ms": late_p99}
