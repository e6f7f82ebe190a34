"""The sections of report.html that are about the whole run: failed checks, targets, latency, load and failures,
the baseline comparison, the run's metadata (services.py has the sections per service). Every string from the run
goes through ``e()`` (html.escape)."""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

from analysis import plots
from analysis.figures import Figures
from analysis.formatting import fmt_duration
from analysis.latency import percentile_series
from analysis.metrics import MEMORY_FIRST
from analysis.perwork import per_unit_text
from analysis.verdict import Analysis
from runspec import folder
from runspec.units import MB


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def status_cell(status: str) -> str:
    css = {"passed": "s-passed", "failed": "s-failed"}.get(status, "s-nodata")
    return f'<td class="status {css}">{e(status.upper())}</td>'


def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def utc(ts: float | None) -> str:
    if ts is None:
        return "n/a"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _at(ts: float | None, origin: float) -> str:
    return "n/a" if ts is None else f"+{fmt_duration(ts - origin)}"


def health_events(current: Analysis) -> list[tuple[str, float, str]]:
    """(service, time, one line) for each downtime and restart (from analysis/status.py), in time order, times
    since the load started: the health section and the run's metadata both list them."""
    verdict = current.verdict
    load_start = current.run.first_event(folder.LOAD_START)
    origin = load_start if load_start is not None else verdict["run"]["start"]
    out = []
    for down in verdict["downtime"]:
        end = "not back" if down["end"] is None else f"back at {_at(down['end'], origin)}"
        seconds = "" if down["seconds"] is None else f" ({fmt_duration(down['seconds'])})"
        cause = f": {down['cause']}" if down.get("cause") else ""
        line = f"down at {_at(down['start'], origin)}, {end}{seconds}{cause}"
        out.append((str(down["service"]), float(down["start"]), line))
    for restart in verdict["restarts"]:
        detail = f": {restart['detail']}" if restart.get("detail") else ""
        out.append(
            (str(restart["service"]), float(restart["ts"]), f"restarted at {_at(restart['ts'], origin)}{detail}")
        )
    return sorted(out, key=lambda item: (item[1], item[0]))


def failed_list(verdict: dict[str, Any]) -> str:
    failed = [c for c in verdict["checks"] if c["status"] == "failed"]
    if not failed and verdict["status"] != folder.PASSED:  # an incomplete run is never shown in green
        return (
            f'<p class="s-nodata"><b>No check failed on the data gathered, but {e(verdict["status_reason"])}.</b></p>'
        )
    if not failed:
        return '<p class="s-passed"><b>Every check passed.</b></p>'
    items = "".join(f"<li><b>{e(c['title'])}</b>: {e(c['reason'])}</li>" for c in failed)
    return f'<ul class="failed">{items}</ul>'


def checks_table(verdict: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr>{status_cell(c['status'])}<td>{e(c['kind'])}</td><td>{e(c['title'])}</td><td>{e(c['reason'])}</td></tr>"
        for c in verdict["checks"]
    )
    return f"<table><tr><th>status</th><th>kind</th><th>check</th><th>reason</th></tr>{rows}</table>"


def at_a_glance(verdict: dict[str, Any]) -> str:
    """Targets (latency and errors) and one line per service, before the detail sections."""
    rows = []
    for c in verdict["latency"]:
        value = "n/a" if c["value_ms"] is None else f"{c['value_ms']:,.1f} ms"
        rows.append(
            f"<tr>{status_cell(c['status'])}<td>{e(c['name'])} p{c['percentile']:g}</td><td>{e(c['scope'])}</td>"
            f"<td class=num>{e(value)}</td><td class=num>{c['target_ms']:g} ms</td><td>{e(c['reason'])}</td></tr>"
        )
    errors = verdict["errors"]
    rate = "n/a" if errors["rate"] is None else f"{errors['rate']:.2%}"
    rows.append(
        f"<tr>{status_cell(errors['status'])}<td>error rate</td><td>{e(errors.get('scope', 'overall'))}</td>"
        f"<td class=num>{e(rate)}</td>"
        f"<td class=num>{errors['max']:.2%}</td><td>{e(errors['reason'])}</td></tr>"
    )
    out = [
        "<h2>Targets</h2><table><tr><th>status</th><th>target</th><th>scope</th><th>value</th><th>limit</th>"
        f"<th>reason</th></tr>{''.join(rows)}</table>"
    ]
    by_service: dict[str, list[dict[str, Any]]] = {}
    for entry in verdict["leaks"]:
        by_service.setdefault(entry["service"], []).append(entry)
    lines = []
    for service, entries in by_service.items():
        failed = [x for x in entries if x["status"] == "failed"]
        no_data = sum(x["status"] == "no data" for x in entries)
        memory = next((x for m in MEMORY_FIRST for x in entries if x["metric"] == m and x["check"] == "slope"), None)
        trend = ""
        if memory is not None and memory["slope_per_hour"] is not None:
            trend = f"{memory['metric']} {memory['slope_per_hour'] / MB:+.2f} MB/h"
            if memory.get("growth_since_text"):
                trend += f" since +{memory['growth_since_text']}"
        per_unit = per_unit_text(memory) if memory is not None and memory["status"] == "failed" else ""
        status = "failed" if failed else ("passed" if len(entries) > no_data else "no data")
        what = "; ".join(f"{x['metric']} ({x.get('rule', x['check'])})" for x in failed)
        what = what or f"{len(entries) - no_data} checks passed"
        if no_data:
            what += f", {no_data} without data"
        lines.append(
            f"<tr>{status_cell(status)}<td>{e(service)}</td><td class=num>{e(trend)}</td><td>{e(per_unit)}</td>"
            f"<td>{e(what)}</td></tr>"
        )
    if lines:
        out.append(
            "<h2>Leaks by service</h2><table><tr><th>status</th><th>service</th><th>memory trend</th>"
            "<th>kept per unit of work</th><th>checks (rule)</th></tr>" + "".join(lines) + "</table>"
        )
    return "".join(out)


def _has_timings(verdict: dict[str, Any]) -> bool:
    return any(check["status"] != "no data" for check in verdict["latency"])


def where_it_ran(verdict: dict[str, Any]) -> str:
    """The small box: each service as a process or a container, its memory limit, its OOM kills; the engine."""
    placement = verdict.get("placement") or {}
    kills: dict[str, list[dict[str, Any]]] = {}
    for kill in verdict.get("oom_kills") or []:
        kills.setdefault(str(kill["service"]), []).append(kill)
    services = placement.get("services") or {}
    if not services and not kills:
        return ""
    rows = []
    for service in sorted({*services, *kills}):
        where = services.get(service) or {}
        runs_as = str(where.get("runs_as", "not recorded"))
        if where.get("container"):
            runs_as += f" {where['container']}"
        elif where.get("pid"):
            runs_as += f" (pid {where['pid']} at start)"
        limit = where.get("memory_limit_bytes")
        limit_text = f"{limit / MB:,.0f} MB" if isinstance(limit, int | float) and limit > 0 else "none"
        oom = "; ".join(f"OOM-killed at +{fmt_duration(k['at_s'])}" for k in kills.get(service, []))
        rows.append(
            f"<tr><td>{e(service)}</td><td>{e(runs_as)}</td><td class=num>{e(limit_text)}</td>"
            + (f'<td class="status s-failed">{e(oom)}</td>' if oom else "<td>none</td>")
            + "</tr>"
        )
    engine = placement.get("engine") or {}
    said = [f"runtime {placement.get('runtime', 'not recorded')}"]
    if engine:
        version, api, cgroup = (engine.get(key, "?") for key in ("version", "api", "cgroup"))
        said.append(f"Docker engine {version} (API {api}, cgroup {cgroup}) at {engine.get('address', '?')}")
    if placement.get("network"):
        said.append(f"{placement['network']} network")
    return (
        "<h2>Where it ran</h2><table><tr><th>service</th><th>ran as</th><th>memory limit</th><th>OOM kills</th></tr>"
        + "".join(rows)
        + f'</table><p class="muted">{e("; ".join(said))}</p>'
    )


def latency_section(current: Analysis, figures: Figures) -> str:
    verdict = current.verdict
    out = ["<h2>Latency</h2>"]
    model = verdict.get("load_model") or {}
    if model.get("note"):
        style = "banner warn" if model["model"] == "closed" and _has_timings(verdict) else "muted"
        out.append(f'<p class="{style}">{e(model["note"])}.</p>')
    if verdict["latency_window"]:
        out.append(
            f'<p class="muted">Exact percentiles from {folder.LATENCY}, judged {e(verdict["latency_window"])}.</p>'
        )
    table = verdict["latency_table"]
    if table:
        rows = "".join(
            f"<tr><td>{e(r['type'])}</td><td>{e(r['name'])}</td><td class=num>{r['count']:,}</td>"
            + "".join(f"<td class=num>{num(r[k])}</td>" for k in ("p50", "p95", "p99", "max"))
            + "</tr>"
            for r in table
        )
        out.append(
            "<table><tr><th>type</th><th>name</th><th>timings</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
            f"<th>max ms</th></tr>{rows}</table>"
        )
    else:
        out.append(
            '<p class="muted">No timings: ' + e(verdict["latency"][0]["reason"] if verdict["latency"] else "") + "</p>"
        )
    buckets = verdict["latency_buckets"]
    if buckets:
        width = current.latency_info.get("bucket_s", 3600.0)
        scope = current.latency_info.get("scope", "last hour")
        out.append(f"<h3>Drift: each target per {'hour' if width == 3600.0 else e(fmt_duration(width))}</h3>")
        for target in current.run.settings.latency_targets:
            values = buckets.get(target["name"])
            if not values:
                continue
            cells = "".join(
                f'<td class="num {"s-failed" if b["value_ms"] > target["max_ms"] else ""}">{num(b["value_ms"])}</td>'
                if b["value_ms"] is not None
                else "<td class=num>-</td>"
                for b in values
            )
            heads = "".join(f"<th>{i + 1}</th>" for i in range(len(values)))
            out.append(
                f"<p><b>{e(target['name'])}</b> p{target['percentile']:g} (target {target['max_ms']:g} ms), "
                f"ms per {e(scope.replace('last ', ''))}, the last is the {e(scope)}:</p>"
                f"<table><tr>{heads}</tr><tr>{cells}</tr></table>"
            )
    for target in current.run.settings.latency_targets:

        def draw(i: int, target: dict[str, Any] = target) -> str:
            run = figures.runs[i].run
            checks = [
                c
                for c in figures.runs[i].verdict["latency"]
                if c["name"] == target["name"] and c["percentile"] == target["percentile"]
            ]
            failed = any(c["status"] == "failed" for c in checks) if checks else None
            if run.latency is None:
                return ""
            ctx = figures.ctx[i]
            span = run.latency["ts"]
            series = percentile_series(run.latency, target["name"], float(span.min()), float(span.max()) + 10)
            if not series:
                return ""
            title = f"{target['name']}: p50/p95/p99 (target p{target['percentile']:g} {target['max_ms']:g} ms)"
            return plots.latency_plot(series, ctx["clock"], ctx["events"], target, title, failed, figures.half)

        out.append(figures.row(draw, f"latency of {target['name']}"))
    return "".join(out)


def load_section(current: Analysis, figures: Figures) -> str:
    verdict = current.verdict
    out = ["<h2>Load and failures</h2>"]
    errors = verdict["errors"]
    out.append(f"<p>Error rate: <b class='s-{e(errors['status']).replace(' ', '')}'>{e(errors['reason'])}</b></p>")

    def draw(i: int) -> str:
        history = figures.runs[i].run.history
        if history is None or history.empty:
            return ""
        ctx = figures.ctx[i]
        return plots.load_plot(history, ctx["clock"], ctx["events"], figures.half)

    out.append(figures.row(draw, "users and requests per second"))
    groups = verdict["failures"]
    if groups:
        rows = "".join(
            f"<tr><td class=num>{g['occurrences']:,}</td><td>{e(g['error'])}</td><td>"
            + "<br>".join(f"{e(name)} ({count:,})" for name, count in g["requests"])
            + "</td></tr>"
            for g in groups
        )
        out.append(
            f"<h3>Failures, grouped by error</h3><table><tr><th>count</th><th>error</th><th>requests</th></tr>{rows}</table>"
        )
    exceptions = current.run.exceptions
    if exceptions is not None and not exceptions.empty:
        rows = "".join(
            f"<tr><td class=num>{int(c):,}</td><td>{e(m)}</td></tr>"
            for c, m in exceptions[["Count", "Message"]].itertuples(index=False)
        )
        out.append(
            f"<h3>Exceptions in the load generator</h3><table><tr><th>count</th><th>message</th></tr>{rows}</table>"
        )
    return "".join(out)


def baseline_section(verdict: dict[str, Any]) -> str:
    base = verdict.get("baseline")
    if not base:
        return ""
    flag = '<span class="s-regressed">REGRESSED</span>'
    rows = "".join(
        f"<tr><td>{flag if r['regressed'] else 'same or better'}</td><td>{e(r['check'])}</td><td>{e(r['reason'])}</td></tr>"
        for r in base["comparisons"]
    )
    count = len(base["regressions"])
    summary = f"{count} regression(s)" if count else "no regressions"
    return (
        f"<h2>Compared with the baseline</h2><p>Baseline <b>{e(base['name'])}</b> ({e(base['run'])}, "
        f"{e(base['status'])}): <b>{e(summary)}</b>.</p>"
        f"<table><tr><th>change</th><th>check</th><th>values</th></tr>{rows}</table>"
    )


def metadata_section(current: Analysis) -> str:
    verdict = current.verdict
    run = verdict["run"]
    events = health_events(current)
    restarts = ", ".join(f"{service} {line}" for service, _, line in events if line.startswith("restarted"))
    downtime = ", ".join(f"{service} {line}" for service, _, line in events if line.startswith("down"))
    items = [
        ("scenario", run["name"] + (f" (no {folder.SCENARIO}: defaults used)" if not run["scenario_found"] else "")),
        ("description", run["description"]),
        ("folder", run["folder"]),
        ("samples from", utc(run["start"])),
        ("samples to", utc(run["end"])),
        ("duration", fmt_duration(run["duration_s"])),
        ("load", fmt_duration(run["load_s"]) if run["load_s"] is not None else "n/a"),
        ("target", run["target_host"]),
        ("faults switched on", ", ".join(run["faults"]) or "none"),
        ("service restarts", restarts or ", ".join(run["restarts"]) or "none"),
        ("services", ", ".join(run["services"])),
    ]
    if downtime:
        items.insert(-1, ("downtime", downtime))
    for key, value in sorted(run["meta"].items()):
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        items.append((f"run {key}", value))
    analysis = verdict["analysis"]
    items.append(("analysed", f"{analysis['generated_at']} on {analysis['host']}, Python {analysis['python']}"))
    items += [("note", note) for note in verdict["notes"]]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in items)
    out = [f"<h2>Run</h2><table>{rows}</table>"]
    scenario = current.run.path / folder.SCENARIO
    if scenario.exists():
        text = scenario.read_text(encoding="utf-8", errors="replace")
        out.append(f"<details><summary>{folder.SCENARIO} as run</summary><pre>{e(text)}</pre></details>")
    return "".join(out)
