"""The report's section on faults: one table row per fault (kind, service, start, length, outcome, recovery against
its target, errors in its window, ledger, services that stayed up, memory step, clear errors), the delivery ledger
over the run, and how the error budget was counted. The bands on the time plots are drawn by plots.fault_bands."""

from __future__ import annotations

from typing import Any

from analysis.faults import clock_time
from analysis.formatting import fmt_duration
from analysis.sections import e, status_cell
from analysis.verdict import Analysis
from runspec.units import MB

FAULT_CHECK_KINDS = ("faults", "recovery", "cascade", "clear error", "memory step", "ledger")
CSS_CLASS = {"passed": "s-passed", "failed": "s-failed"}


def _length(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.1f} s" if seconds < 10 else fmt_duration(seconds)


def _cell(check: dict[str, Any], text: str) -> str:
    """A table cell coloured by its check, with the check's reason as its tooltip."""
    css = CSS_CLASS.get(check["status"], "s-nodata")
    return f'<td class="num {css}" title="{e(check["reason"])}">{e(text)}</td>'


def _recovery(check: dict[str, Any]) -> str:
    if check.get("p95_s") is not None:
        text = f"{check['p95_s']:.1f} s / {check['target_s']:g} s"
    elif check.get("service_back_s") is not None:
        text = f"service {check['service_back_s']:.0f} s / {check['target_s']:g} s"
    else:
        text = check["status"]
    return _cell(check, text)


def _errors(entry: dict[str, Any]) -> str:
    errors = entry.get("errors")
    if not errors:
        return "<td class=num>n/a</td>"
    rate = f" ({errors['failures'] / errors['requests']:.1%})" if errors["requests"] else ""
    return f"<td class=num>{errors['failures']:,} of {errors['requests']:,}{e(rate)}</td>"


def _ledger(entry: dict[str, Any]) -> str:
    ledger = entry.get("ledger")
    if ledger is None:
        return "<td class=num>n/a</td>"
    css = "s-failed" if any(ledger.values()) else "s-passed"
    return f'<td class="num {css}">{ledger["lost"]} / {ledger["duplicate"]} / {ledger["order"]}</td>'


def _services(check: dict[str, Any]) -> str:
    """The services that stayed up as plain text, those that went down in red."""
    up = ", ".join(check.get("stayed_up") or []) or ("-" if check["status"] != "no data" else "n/a")
    down = check.get("went_down") or []
    tail = f'<br><span class="s-failed">down: {e(", ".join(down))}</span>' if down else ""
    return f'<td title="{e(check["reason"])}">{e(up)}{tail}</td>'


def _memory(check: dict[str, Any]) -> str:
    steps = check.get("steps") or []
    if not steps:
        return _cell(check, "n/a")
    top = max(steps, key=lambda s: s["step"])
    return _cell(check, f"{top['service']} {round(top['step'] / MB):+d} MB")


def _clear(check: dict[str, Any]) -> str:
    if check.get("outages") is None:
        return _cell(check, "n/a")
    return _cell(check, f"{check['outages']} / {check['timeouts']}")


def faults_section(current: Analysis) -> str:
    """Nothing for a run without faults."""
    verdict = current.verdict
    faults = verdict.get("faults") or []
    checks = [c for c in verdict["checks"] if c["kind"] in FAULT_CHECK_KINDS]
    if not faults and not checks:
        return ""
    tmax = current.run.settings.scenario.get("recovery", {}).get("time_max", 30.0)
    out = [
        "<h2>Faults</h2>",
        f'<p class="muted">Each fault is a shaded band on the time plots. Its window runs from its start to '
        f"{tmax:g} s (recovery.time_max) after its end, or to the next fault: errors in it are counted apart from "
        "the error budget, and every other service must stay up in it. Recovery is each user's first good round "
        "trip after the fault ended (p95, from the users' 'ws recovery' timings), against the target; memory is "
        f"the median before the fault against the median after recovery.</p>",
        f"<p><b>Error budget:</b> {e(_budget(verdict))}</p>",
    ]
    if faults:
        head = (
            "<tr><th>fault</th><th>start</th><th>length</th><th>outcome</th><th>recovery p95 / target</th>"
            "<th>errors in window</th><th>lost / dup / order</th><th>stayed up</th><th>memory step</th>"
            "<th>outages / timeouts</th></tr>"
        )
        rows = []
        for entry in faults:
            n = f" #{entry['n']}" if entry.get("n") else ""
            outcome = entry["outcome"] + (
                f": {entry['reason']}" if entry["reason"] and entry["outcome"] != "ok" else ""
            )
            c = entry["checks"]
            rows.append(
                f"<tr><td title='{e(entry['detail'])}'><b>{e(entry['label'])}</b>{e(n)}</td>"
                f"<td class=num>{e(clock_time(entry['at_s']))}</td><td class=num>{e(_length(entry['length_s']))}</td>"
                f"<td>{e(outcome)}</td>{_recovery(c['recovery'])}{_errors(entry)}{_ledger(entry)}"
                f"{_services(c['cascade'])}{_memory(c['memory_step'])}{_clear(c['clear_error'])}</tr>"
            )
        out.append(f"<table>{head}{''.join(rows)}</table>")
    rows = "".join(
        f"<tr>{status_cell(c['status'])}<td>{e(c['title'])}</td><td>{e(c['reason'])}</td></tr>" for c in checks
    )
    out.append(f"<table><tr><th>status</th><th>check</th><th>reason</th></tr>{rows}</table>")
    return "".join(out)


def _budget(verdict: dict[str, Any]) -> str:
    errors = verdict["errors"]
    scope = errors.get("scope")
    if scope == "outside faults":
        return "only the requests outside the fault windows count against it. " + errors["reason"]
    if scope == "whole run":
        return "every request counts against it (the windows could not be told apart). " + errors["reason"]
    return errors["reason"]
