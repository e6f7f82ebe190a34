"""Did the run go to its end? The run status beside pass/fail, so a night that went wrong never reads green.

Read from events.csv (the runner's phases and signals, the samplers' service events) and the ``health_up``
samples. A run is incomplete when it was interrupted, killed (a phase event missing: ``kill -9`` or the OOM killer
took the runner), lost its load generator, was stopped early, or when a sampled service went down and was not back
by the end. A folder without events.csv (another tool's) has no phases to miss; its services are still checked.

A service the OOM killer ended (``oom_killed``) is the run's finding, not a run that went wrong: its being down and
not back, and the load stopped for it, are ``explained`` by the kill (analysis/oom.py makes it a failed check), so
such a run is failed, not incomplete.

Downtime is the union of what the health checks saw (``health_up`` 0) and what the samplers said
(``service_down`` / ``oom_killed`` until ``service_up`` / ``service_restart``); a health check that answers again
ends an outage an event opened, since a process sampler that cannot find the new process writes no restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.formatting import fmt_duration
from analysis.metrics import HEALTH_UP
from analysis.runfolder import Run
from runspec import folder
from runspec.units import LOAD_GENERATOR

DOWN_EVENTS = (folder.SERVICE_DOWN, folder.OOM_KILLED)
UP_EVENTS = (folder.SERVICE_UP, folder.SERVICE_RESTART)
HEALTH_CAUSE = "health check failed"
UP_AT_LEAST = 0.5  # health_up is 0 or 1; anything from a corrupted file counts as up from here
DETAIL = re.compile(r"\s*([^\s:(]*)\s*(.*)", re.S)  # "backend: pid 12 exited", "backend (refused)", "backend"


@dataclass
class RunStatus:
    complete: bool
    reason: str  # "" when complete, else one line: the most important reason
    downtime: list[dict[str, Any]] = field(default_factory=list)  # service, start, end (None: not back), seconds, cause
    restarts: list[dict[str, Any]] = field(default_factory=list)  # service, ts, detail
    reasons: list[str] = field(default_factory=list)  # every reason, most important first
    decided: str = ""  # the load was stopped because a leak was confirmed early (leaks.stop_on_confirmed): when, why
    explained: list[str] = field(default_factory=list)  # reasons an OOM kill accounts for (not in ``reasons``)


def split_detail(detail: str) -> tuple[str, str]:
    """A service event's detail -> (service, why): the samplers write ``service: why`` or ``service (why)``."""
    service, rest = DETAIL.match(_one_line(detail)).groups()  # matches any text
    rest = rest.strip()
    if rest.startswith(":"):
        rest = rest[1:].strip()
    elif rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1].strip()
    return service, rest


def run_status(run: Run) -> RunStatus:
    """The run's status from its events and health samples (see the module docstring for the rules)."""
    events = run.events
    load_start = run.first_event(folder.LOAD_START)
    data_end = _data_end(run)
    origin = load_start if load_start is not None else float(run.samples["ts"].min())

    def at(ts: float) -> str:
        return f"+{fmt_duration(ts - origin)}" if ts >= origin else f"{fmt_duration(origin - ts)} before load start"

    def first(name: str) -> tuple[float, str] | None:
        rows = events[events["event"] == name]
        return (float(rows["ts"].iat[0]), _one_line(rows["detail"].iat[0])) if len(rows) else None

    reasons: list[str] = []
    explained: list[str] = []
    oom_killed = {split_detail(str(d))[0] for d in events[events["event"] == folder.OOM_KILLED]["detail"]}
    if interrupted := first(folder.INTERRUPTED):
        reasons.append(f"interrupted by {interrupted[1] or 'a signal'} at {at(interrupted[0])}")
    finished, missing = _phases_done(run)
    if missing:
        reasons.append(f"killed: no {missing} in {folder.EVENTS} (the last record is at {at(data_end)})")
    if gone := first(folder.LOAD_GENERATOR_GONE):
        reasons.append(f"load generator gone at {at(gone[0])}" + (f" ({gone[1]})" if gone[1] else ""))
    if stopped := first(folder.STOPPED_EARLY):
        why = f"stopped early at {at(stopped[0])}" + (f": {stopped[1]}" if stopped[1] else "")
        (explained if split_detail(stopped[1])[0] in oom_killed else reasons).append(why)

    # The end the services had to last to: drain_end of a finished run (what comes after is the shutdown).
    end = finished if finished is not None else data_end
    # The load generator ends with its load; its death before that is load_generator_gone's to say.
    downtime = [
        d for d in _downtime(run, data_end) if d["service"] != LOAD_GENERATOR and (d["start"] < end or finished is None)
    ]
    for down in downtime:
        if down["end"] is None or down["end"] > end:
            cause = f" ({down['cause']})" if down["cause"] else ""
            why = f"{down['service'] or 'a service'} down since {at(down['start'])} and not back{cause}"
            (explained if down["service"] in oom_killed else reasons).append(why)
    restarts = []
    rows = events[events["event"] == folder.SERVICE_RESTART]
    for ts, detail in zip(rows["ts"], rows["detail"], strict=True):
        service, why = split_detail(detail)
        restarts.append({"service": service, "ts": float(ts), "detail": why if service else _one_line(detail)})
    decided = ""
    if stop := first(folder.STOPPED_DECIDED):
        decided = f"stopped early at {at(stop[0])}" + (f": {stop[1]}" if stop[1] else "")
    return RunStatus(not reasons, reasons[0] if reasons else "", downtime, restarts, reasons, decided, explained)


def _one_line(text: object) -> str:
    """A detail as one line: a reason is printed on one line, whatever a (broken) events.csv held."""
    return " ".join(str(text).split())


def _data_end(run: Run) -> float:
    last = float(run.samples["ts"].max())
    return max(last, float(run.events["ts"].max())) if len(run.events) else last


def _phases_done(run: Run) -> tuple[float | None, str]:
    """(drain_end of a run that went through its phases, else None; the phase event missing, or "").

    Judged on the last load_start: the web UI may start a new test during a drain, which ends the old one without
    a drain_end. No load_start (no events.csv, a folder from another tool) misses nothing.
    """
    started = run.last_event(folder.LOAD_START)
    if started is None:
        return None, ""
    stops = [t for t in run.event_times(folder.LOAD_STOP) if t >= started]
    if not stops:
        return None, folder.LOAD_STOP
    drained = [t for t in run.event_times(folder.DRAIN_END) if t >= min(stops)]
    if not drained:
        return None, folder.DRAIN_END
    return max(drained), ""


def _downtime(run: Run, data_end: float) -> list[dict[str, Any]]:
    """Outages per service, merged from the health samples and the service events, in time order."""
    health = _health(run)
    spans: dict[str, list[tuple[float, float | None, str]]] = {}
    for service, (ts, up) in health.items():
        spans[service] = _health_spans(ts, up)
    for service, start, end, cause in _event_spans(run):
        if service in health:  # a health check that answers again ends it, restart event or not
            ts, up = health[service]
            answered = ts[up]
            k = int(np.searchsorted(answered, start, side="right"))
            if k < answered.size and (end is None or answered[k] < end):
                end = float(answered[k])
        spans.setdefault(service, []).append((start, end, cause))
    out = []
    for service, items in spans.items():
        for start, end, causes in _merge(items):
            seconds = max(0.0, (end if end is not None else data_end) - start)
            out.append({"service": service, "start": start, "end": end, "seconds": seconds, "cause": causes})
    return sorted(out, key=lambda d: (d["start"], d["service"]))


def _health(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{service: (times, up)} of the health_up samples, in time order."""
    frame = run.samples
    rows = frame[(frame["metric"] == HEALTH_UP).to_numpy()]
    out = {}
    for service, idx in rows.groupby("service", observed=True, sort=True).indices.items():
        ts = rows["ts"].to_numpy()[idx]
        order = np.argsort(ts, kind="stable")
        out[str(service)] = (ts[order], rows["value"].to_numpy()[idx][order] >= UP_AT_LEAST)
    return out


def _health_spans(ts: np.ndarray, up: np.ndarray) -> list[tuple[float, float | None, str]]:
    """Each run of failed checks: from its first failure to the next answer (None: none came)."""
    starts = np.flatnonzero(~up & np.r_[True, up[:-1]])
    answers = np.flatnonzero(up)
    after = np.searchsorted(answers, starts)
    return [
        (float(ts[i]), float(ts[answers[k]]) if k < answers.size else None, HEALTH_CAUSE)
        for i, k in zip(starts, after, strict=True)
    ]


def _event_spans(run: Run) -> list[tuple[str, float, float | None, str]]:
    """(service, down at, up again at or None, cause) from service_down/oom_killed ... service_up/service_restart."""
    events = run.events
    rows = events[events["event"].isin((*DOWN_EVENTS, *UP_EVENTS)).to_numpy()]
    open_: dict[str, tuple[float, str]] = {}
    out = []
    for ts, event, detail in zip(rows["ts"], rows["event"], rows["detail"], strict=True):
        service, why = split_detail(detail)
        if event in DOWN_EVENTS:
            cause = why or "service_down event"
            if event == folder.OOM_KILLED:
                cause = f"OOM killed: {why}" if why else "OOM killed"
            if service in open_:  # already down: a second source says why
                start, before = open_[service]
                open_[service] = (start, before if cause in before else f"{before}; {cause}")
            else:
                open_[service] = (float(ts), cause)
        elif service in open_:
            start, cause = open_.pop(service)
            out.append((service, start, float(ts), cause))
    out += [(service, start, None, cause) for service, (start, cause) in open_.items()]
    return out


def _merge(spans: list[tuple[float, float | None, str]]) -> list[tuple[float, float | None, str]]:
    """Overlapping outages of one service are one outage (the health check and the process sampler saw the same)."""
    merged: list[list[Any]] = []
    for start, end, cause in sorted(spans, key=lambda s: s[0]):
        last = merged[-1] if merged else None
        if last is not None and (last[1] is None or start <= last[1]):
            last[1] = None if end is None or last[1] is None else max(last[1], end)
            if cause not in last[2]:
                last[2].append(cause)
        else:
            merged.append([start, end, [cause]])
    return [(start, end, "; ".join(_said(causes))) for start, end, causes in merged]


def _said(causes: list[str]) -> list[str]:
    """What the samplers said (a health check's own service_down names its reason); the generic line otherwise."""
    return [c for c in causes if c != HEALTH_CAUSE] or [HEALTH_CAUSE]
