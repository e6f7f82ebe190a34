"""Faults during a run (``[[faults]]``): what each one did to the platform and to its users.

Per fault: did the other services stay up (no cascade), did the users recover in time (p95 against
``recovery.time_max``), did they get a clear error rather than a hang, did memory settle back after recovery; the
errors inside its window are counted apart from the error budget. Over the run: the users' delivery ledger lost,
duplicated and reordered nothing. Judged only when the run had faults; a fault-free verdict is unchanged.

Windows. A fault lasts from its ``fault_start`` to its ``fault_end``; its *window* goes on to ``recovery.time_max``
after the end (the time the platform is given to recover: errors in it are the fault's, not the budget's, and a
service down in it is a cascade). Recovery timings are taken until twice that, so a slow recovery is counted and
fails rather than missed. Every window stops where the next fault starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.faultevents import (
    AGGREGATED,
    LEDGER,
    NOT_USER_ERRORS,
    OUTAGE,
    RECOVERY,
    RECOVERY_INTERVAL_S,
    Counts,
    Fault,
    check,
    clock_time,
    fault_windows,
    ledger_check,
    read_counts,
    timeout_shares,
)
from analysis.faultmemory import memory_series, memory_step
from analysis.latency import weighted_percentiles
from analysis.metrics import HEALTH_UP
from analysis.runfolder import Run
from runspec import folder
from runspec.units import LOAD_GENERATOR

TIMEOUTS_MAX = 0  # requests that may time out inside a fault's window (a user left hanging)


CHECKS = (
    ("recovery", "recovery", "recovery"),
    ("cascade", "cascade", "other services stayed up"),
    ("clear_error", "clear error", "a clear error, not a hang"),
    ("memory_step", "memory step", "no memory step after recovery"),
)  # (key in a fault's checks, the check's kind, its title)


@dataclass
class Judged:
    faults: list[dict[str, Any]]  # one per occurrence: verdict["faults"]
    checks: list[dict[str, Any]]  # for verdict["checks"]: per [[faults]] entry, over its occurrences
    inside: dict[str, Any] | None  # requests and failures inside the windows; None: the run had no faults


@dataclass
class _Context:
    run: Run
    tmax: float
    origin: float
    data_end: float
    downtime: list[dict[str, Any]]
    health: set[str]  # services with health_up samples
    memory: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]  # one memory series per service, in time order
    recoveries: tuple[np.ndarray, np.ndarray, np.ndarray]  # 'ws recovery' timings: row ts, seconds, count
    phases: dict[str, float | None]
    counts: Counts | None
    counts_why: str
    shares: dict[str, float]

    def at(self, ts: float) -> str:
        return clock_time(ts - self.origin)

    def per_name(self) -> str:
        """'' when the history has per-name rows, else why not."""
        if self.counts is None:
            return self.counts_why
        return "" if self.counts.full else f"{folder.LOCUST_HISTORY} has no per-name rows (--csv-full-history)"


def judge_faults(run: Run, downtime: list[dict[str, Any]], series: dict[tuple[str, str], np.ndarray]) -> Judged:
    """Every fault's figures and checks, the ledger check and the errors inside the fault windows.
    ``downtime``: analysis/status.py's outages; ``series``: the samples' rows per (service, metric)."""
    faults = fault_windows(run)
    planned = run.settings.scenario.get("faults") or []
    if not faults and not planned:
        return Judged([], [], None)
    counts, why = read_counts(run)
    samples = run.samples
    health = {str(s) for (s, m) in series if m == HEALTH_UP}
    load_start = run.first_event(folder.LOAD_START)
    ctx = _Context(
        run=run,
        tmax=float(run.settings.scenario.get("recovery", {}).get("time_max", 30.0)),
        origin=load_start if load_start is not None else float(samples["ts"].min()),
        data_end=max(float(samples["ts"].max()), float(run.events["ts"].max()) if len(run.events) else 0.0),
        downtime=downtime,
        health=health,
        memory=memory_series(run, series),
        recoveries=_recoveries(run),
        phases={name: run.first_event(name) for name in (folder.LOAD_START, folder.WARMUP_END)}
        | {folder.LOAD_STOP: run.last_event(folder.LOAD_STOP)},
        counts=counts,
        counts_why=why,
        shares=timeout_shares(run),
    )
    ran = [f for f in faults if f.ran]
    starts = sorted(f.start for f in ran)
    out, windows, previous = [], [], -math.inf
    for fault in faults:
        end = fault.end if fault.end is not None else ctx.data_end
        later = [s for s in starts if s > end]
        entry = _judge_one(ctx, fault, end, later[0] if later else math.inf, previous)
        out.append(entry)
        if fault.ran:
            windows.append((fault.start, entry["window_end"]))
            previous = max(previous, entry["window_end"])
    checks = [_ran_check(faults, planned)] + _flat_checks(out) + [ledger_check(run)]
    return Judged(out, checks, _inside(ctx, windows))


def _inside(ctx: _Context, windows: list[tuple[float, float]]) -> dict[str, Any]:
    """Requests and failures inside the union of the windows (Aggregated history rows, each counted once)."""
    base = {"windows": len(windows), "requests": None, "failures": None, "note": ""}
    if ctx.counts is None or AGGREGATED not in ctx.counts.rows:
        return {**base, "note": ctx.counts_why or f"no Aggregated rows in {folder.LOCUST_HISTORY}"}
    ts, requests, failures = ctx.counts.rows[AGGREGATED]
    mask = Counts.mask(ts, windows)
    return {**base, "requests": int(requests[mask].sum()), "failures": int(failures[mask].sum())}


def _judge_one(ctx: _Context, fault: Fault, end: float, next_start: float, previous: float) -> dict[str, Any]:
    length = max(0.0, end - fault.start)
    window_end = min(end + ctx.tmax, next_start)
    entry: dict[str, Any] = {
        "id": fault.spec,
        "n": fault.n,
        "kind": fault.kind,
        "service": fault.service,
        "label": fault.label,
        "detail": fault.detail,
        "start": fault.start,
        "end": fault.end,
        "at_s": fault.start - ctx.origin,
        "length_s": round(length, 3),
        "outcome": fault.outcome,
        "reason": fault.reason,
        "window_end": window_end,
        "errors": None,
        "ledger": None,
    }
    if not fault.ran:
        why = f"no data: the fault did not take hold ({fault.outcome}" + (f": {fault.reason})" if fault.reason else ")")
        entry["checks"] = {key: check("no data", why) for key, _, _ in CHECKS}
        return entry
    if ctx.counts is not None and AGGREGATED in ctx.counts.rows:
        requests, failures = ctx.counts.between(AGGREGATED, fault.start, window_end)
        entry["errors"] = {"requests": requests, "failures": failures}
    if not ctx.per_name():
        assert ctx.counts is not None
        entry["ledger"] = {k: ctx.counts.between(name, fault.start, window_end)[1] for k, name in LEDGER.items()}
    entry["checks"] = {
        "recovery": _recovery(ctx, fault, end, length, window_end, min(end + 2 * ctx.tmax, next_start)),
        "cascade": _cascade(ctx, fault, window_end),
        "clear_error": _clear_error(ctx, fault, window_end),
        "memory_step": memory_step(
            ctx.memory, ctx.phases, (ctx.tmax, ctx.data_end), fault, (end, next_start, previous)
        ),
    }
    return entry


def _recovery(
    ctx: _Context, fault: Fault, end: float, length: float, window_end: float, recovery_end: float
) -> dict[str, Any]:
    """The service answers again within time_max of the fault's end, and the users' recovery p95 is within it.

    A user's timing runs from its first failure to its first good round trip; it is taken back to the fault's end
    as the gap between the fault's end and the second it completed in (its row's ts), and at least the timing less
    the fault's length (no user lost its connection before the fault began): fault end -> first good round trip,
    to the second (a lower bound within 10 s on folders written before recoveries were kept per second).
    """
    tmax, service = ctx.tmax, fault.service
    figures: dict[str, Any] = {"target_s": tmax, "p95_s": None, "from_failure_p95_s": None, "timings": 0}
    figures.update(service_back_s=None, outages=None)
    problems = []
    own = [
        d
        for d in ctx.downtime
        if d["service"] == service and d["start"] < recovery_end and (d["end"] is None or d["end"] > fault.start)
    ]
    if own:
        if any(d["end"] is None for d in own):
            first = min(d["start"] for d in own)
            problems.append(f"{service} did not come back (down since {ctx.at(first)})")
        else:
            back = max(0.0, max(d["end"] for d in own) - end)
            figures["service_back_s"] = back
            if back > tmax:
                problems.append(f"{service} answered again only {back:.0f} s after the fault ended")
    elif service in ctx.health:
        figures["service_back_s"] = 0.0
    ts, seconds, weights = ctx.recoveries
    rows = (ts + RECOVERY_INTERVAL_S > fault.start) & (ts <= recovery_end)
    if rows.any():
        ts, seconds, weights = ts[rows], seconds[rows], weights[rows]
        after = np.maximum(np.maximum(seconds - length, ts - end), 0.0)
        figures["p95_s"] = weighted_percentiles(after, weights, [95.0])[0]
        figures["from_failure_p95_s"] = weighted_percentiles(seconds, weights, [95.0])[0]
        figures["timings"] = int(weights.sum())
    if not ctx.per_name():
        assert ctx.counts is not None
        figures["outages"] = ctx.counts.between(OUTAGE, fault.start, window_end)[1]
    p95, timings, outages = figures["p95_s"], figures["timings"], figures["outages"]
    if p95 is not None and p95 > tmax:
        problems.append(f"users back {p95:.1f} s after the fault ended (p95 of {timings}), target {tmax:g} s")
    if not timings and outages:
        problems.append(f"{outages} user outage(s) and no user recovered within {recovery_end - end:.0f} s")
    if fault.outcome == "failed" and fault.kind == "restart" and not own and service not in ctx.health:
        problems.append(f"the restart failed: {fault.reason or 'no reason given'}")
    if problems:
        return check("failed", "; ".join(problems), **figures)
    back = figures["service_back_s"]
    service_note = f"{service} answered again {back:.0f} s after the fault ended" if own else ""
    if timings:
        reason = (
            f"users back {p95:.1f} s after the fault ended (p95 of {timings}; {figures['from_failure_p95_s']:.1f} s "
            f"from each one's first failure), target {tmax:g} s" + (f"; {service_note}" if service_note else "")
        )
        return check("passed", reason, **figures)
    if own:
        return check("passed", f"{service_note}; no user timed a recovery ('{RECOVERY}')", **figures)
    if service in ctx.health:
        seen = "no user reported an outage" if outages == 0 else f"no user timed a recovery ('{RECOVERY}')"
        return check("passed", f"nothing to recover from: {service} answered throughout and {seen}", **figures)
    return check("no data", f"no data: no '{RECOVERY}' timings and no health checks of {service}", **figures)


def _cascade(ctx: _Context, fault: Fault, window_end: float) -> dict[str, Any]:
    """Every other service answered its health checks from the fault's start to time_max after its end."""
    others = (ctx.health | {str(d["service"]) for d in ctx.downtime}) - {fault.service, LOAD_GENERATOR, ""}
    down: dict[str, float] = {}
    for d in ctx.downtime:
        if d["service"] in others and d["start"] < window_end and (d["end"] is None or d["end"] > fault.start):
            down[d["service"]] = min(down.get(d["service"], math.inf), max(d["start"], fault.start))
    figures = {"stayed_up": sorted(others - set(down)), "went_down": sorted(down)}
    if not others:
        return check("no data", "no data: no other service's health was checked", **figures)
    if down:
        what = ", ".join(
            f"{s} {t - fault.start:.0f} s after it began" for s, t in sorted(down.items(), key=lambda kv: kv[1])
        )
        return check("failed", f"went down in the fault's window: {what}", **figures)
    reason = f"{', '.join(figures['stayed_up'])} stayed up until {ctx.tmax:g} s after the fault ended"
    return check("passed", reason, **figures)


def _clear_error(ctx: _Context, fault: Fault, window_end: float) -> dict[str, Any]:
    """Users that lost service said so ('ws outage', an error status or event) rather than waiting for nothing.

    Timeouts are timed through the history per name and told apart by the failure messages per name; where a name
    fails both ways, its failures in the window are shared out as in the whole run (said so in the reason).
    """
    figures: dict[str, Any] = {"outages": None, "timeouts": None, "other_failures": None}
    why = ctx.per_name()
    if why:
        return check("no data", f"no data: {why}", **figures)
    assert ctx.counts is not None
    outages = ctx.counts.between(OUTAGE, fault.start, window_end)[1]
    timeouts = other = 0.0
    estimated = False
    for name in ctx.counts.names():
        if name in NOT_USER_ERRORS:
            continue
        failures = ctx.counts.between(name, fault.start, window_end)[1]
        share = ctx.shares.get(name, 0.0)
        timeouts += failures * share
        other += failures * (1.0 - share)
        estimated |= bool(failures) and 0.0 < share < 1.0
    figures.update(outages=outages, timeouts=round(timeouts), other_failures=round(other))
    about = "about " if estimated else ""
    if figures["timeouts"] > TIMEOUTS_MAX:
        reason = (
            f"{about}{figures['timeouts']} request(s) timed out in the fault's window (left hanging past the event "
            f"timeout); {outages} outage(s) reported clearly"
        )
        return check("failed", reason, **figures)
    if not outages and not figures["other_failures"]:
        return check("no data", "no data: no request failed in the fault's window (the users saw nothing of it)")
    reason = f"{outages} outage(s) and {figures['other_failures']} other failure(s), each a clear error; no timeouts"
    return check("passed", reason, **figures)


def _recoveries(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The users' 'ws recovery' timings (row ts, seconds, count), picked out of the timing record once."""
    latency = run.latency
    if latency is None:
        return np.empty(0), np.empty(0), np.empty(0, dtype="int64")
    rows = (latency["name"] == RECOVERY).to_numpy()
    return latency["ts"].to_numpy()[rows], latency["ms"].to_numpy()[rows] / 1000.0, latency["count"].to_numpy()[rows]


def _ran_check(faults: list[Fault], planned: list[Any]) -> dict[str, Any]:
    base = {"kind": "faults", "title": "faults took hold"}
    ran = [f for f in faults if f.ran]
    if not faults:
        reason = f"scenario.toml plans {len(planned)} fault(s) but events.csv has no fault_start: nothing was tested"
        return {**base, **check("failed", reason)}
    if not ran:
        first = faults[0]
        reason = f"none of {len(faults)} took hold; the first: {first.outcome}" + (
            f": {first.reason}" if first.reason else ""
        )
        return {**base, **check("failed", reason)}
    rest = len(faults) - len(ran)
    skipped = f"; {rest} did not (skipped or failed to start)" if rest else ""
    return {**base, **check("passed", f"{len(ran)} of {len(faults)} fault(s) took hold{skipped}")}


def _flat_checks(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One check per [[faults]] entry and check, over its occurrences: failed if any failed."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["id"] if entry["id"] is not None else entry["label"], []).append(entry)
    out = []
    for key, group in groups.items():
        name = f"{group[0]['label']} (faults[{key}])" if isinstance(key, int) else group[0]["label"]
        for field_, kind, title in CHECKS:
            items = [(e, e["checks"][field_]) for e in group]
            failed = [(e, c) for e, c in items if c["status"] == "failed"]
            passed = [(e, c) for e, c in items if c["status"] == "passed"]
            status = "failed" if failed else ("passed" if passed else "no data")
            shown = (failed or passed or items)[0]
            at = f"at {clock_time(shown[0]['at_s'])}"
            if len(group) == 1:
                reason = f"{at}: {shown[1]['reason']}"
            else:
                count = len(failed) if failed else len(passed)
                word = "failed" if failed else ("passed" if passed else "had no data")
                reason = f"{count or len(group)} of {len(group)} {word}; the first {at}: {shown[1]['reason']}"
            out.append({"kind": kind, "title": f"{name}: {title}", "status": status, "reason": reason})
    return out
