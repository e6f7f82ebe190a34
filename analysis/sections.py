"""The sections of report.html, top-down; every string from the run goes through ``e()`` (html.escape)."""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

from analysis import plots
from analysis.figures import Figures
from analysis.latency import percentile_series
from analysis.leaks import LOAD_GENERATOR, MIB, fmt_duration, metric_kind
from analysis.verdict import Analysis

MEMORY_FIRST = ("mem_rss_bytes", "mem_working_set_bytes", "mem_uss_bytes")
SHOWN_WITH_GAUGES = ("db_pool_size", "pg_connections_idle", "threads")  # context for the drain check, not judged


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _status_cell(status: str) -> str:
    css = {"passed": "s-passed", "failed": "s-failed"}.get(status, "s-nodata")
    return f'<td class="status {css}">{e(status.upper())}</td>'


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def utc(ts: float | None) -> str:
    if ts is None:
        return "n/a"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def failed_list(verdict: dict[str, Any]) -> str:
    failed = [c for c in verdict["checks"] if c["status"] == "failed"]
    if not failed:
        return '<p class="s-passed"><b>Every check passed.</b></p>'
    items = "".join(f"<li><b>{e(c['title'])}</b>: {e(c['reason'])}</li>" for c in failed)
    return f'<ul class="failed">{items}</ul>'


def checks_table(verdict: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr>{_status_cell(c['status'])}<td>{e(c['kind'])}</td><td>{e(c['title'])}</td><td>{e(c['reason'])}</td></tr>"
        for c in verdict["checks"]
    )
    return f"<table><tr><th>status</th><th>kind</th><th>check</th><th>reason</th></tr>{rows}</table>"


def at_a_glance(verdict: dict[str, Any]) -> str:
    """Targets (latency and errors) and one line per service, before the detail sections."""
    rows = []
    for c in verdict["latency"]:
        value = "n/a" if c["value_ms"] is None else f"{c['value_ms']:,.1f} ms"
        rows.append(
            f"<tr>{_status_cell(c['status'])}<td>{e(c['name'])} p{c['percentile']:g}</td><td>{e(c['scope'])}</td>"
            f"<td class=num>{e(value)}</td><td class=num>{c['target_ms']:g} ms</td><td>{e(c['reason'])}</td></tr>"
        )
    errors = verdict["errors"]
    rate = "n/a" if errors["rate"] is None else f"{errors['rate']:.2%}"
    rows.append(
        f"<tr>{_status_cell(errors['status'])}<td>error rate</td><td>overall</td><td class=num>{e(rate)}</td>"
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
            trend = f"{memory['metric']} {memory['slope_per_hour'] / MIB:+.2f} MB/h"
        status = "failed" if failed else ("passed" if len(entries) > no_data else "no data")
        what = "; ".join(f"{x['metric']} ({x['check']})" for x in failed) or f"{len(entries) - no_data} checks passed"
        if no_data:
            what += f", {no_data} without data"
        lines.append(
            f"<tr>{_status_cell(status)}<td>{e(service)}</td><td class=num>{e(trend)}</td><td>{e(what)}</td></tr>"
        )
    if lines:
        out.append(
            "<h2>Leaks by service</h2><table><tr><th>status</th><th>service</th><th>memory trend</th><th>checks</th></tr>"
            + "".join(lines)
            + "</table>"
        )
    return "".join(out)


def latency_section(current: Analysis, figures: Figures) -> str:
    verdict = current.verdict
    out = ["<h2>Latency</h2>"]
    if verdict["latency_window"]:
        out.append(f'<p class="muted">Exact percentiles from latency.csv, judged {e(verdict["latency_window"])}.</p>')
    table = verdict["latency_table"]
    if table:
        rows = "".join(
            f"<tr><td>{e(r['type'])}</td><td>{e(r['name'])}</td><td class=num>{r['count']:,}</td>"
            + "".join(f"<td class=num>{_num(r[k])}</td>" for k in ("p50", "p95", "p99", "max"))
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
                f'<td class="num {"s-failed" if b["value_ms"] > target["max_ms"] else ""}">{_num(b["value_ms"])}</td>'
                if not math.isnan(b["value_ms"])
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


def _leak_rows(entries: list[dict[str, Any]]) -> str:
    rows = []
    for entry in entries:
        if entry["check"] == "slope":
            scale, unit = (MIB, " MB/h") if entry["kind"] == "memory" else (1.0, "/h")
            value = entry["slope_per_hour"]
            shown = "n/a" if value is None or math.isnan(value) else f"{value / scale:+.2f}{unit}"
        else:
            before, after = entry.get("level_before"), entry.get("level_after")
            shown = "n/a" if before is None else f"{before:g} -> {after:g}"
        rows.append(
            f"<tr>{_status_cell(entry['status'])}<td>{e(entry['metric'])}</td><td>{e(entry['check'])}</td>"
            f"<td class=num>{e(shown)}</td><td>{e(entry['reason'])}</td></tr>"
        )
    return (
        "<table><tr><th>status</th><th>metric</th><th>check</th><th>value</th><th>reason</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _failed(verdict: dict[str, Any], service: str, metrics: tuple[str, ...]) -> bool | None:
    """That run's own outcome for these metrics: True failed, False passed, None no data or not judged."""
    entries = [x for x in verdict["leaks"] if x["service"] == service and x["metric"] in metrics]
    judged = [x for x in entries if x["status"] in ("passed", "failed")]
    return any(x["status"] == "failed" for x in judged) if judged else None


def services_section(current: Analysis, figures: Figures) -> str:
    verdict = current.verdict
    out = ["<h2>Services: memory, connections and pools</h2>"]
    window = verdict["leak_window"]
    out.append(
        f'<p class="muted">Leak slopes are fitted to the lower envelope (window minima) with Theil-Sen and a 95% '
        f"confidence interval, judged {e(window['how'])} to load_stop; the shaded band is the warm-up.</p>"
    )
    by_service: dict[str, list[dict[str, Any]]] = {}
    for entry in verdict["leaks"]:
        by_service.setdefault(entry["service"], []).append(entry)
    services = [s for s in verdict["run"]["services"] if s != LOAD_GENERATOR]
    for service in services:
        entries = by_service.get(service, [])
        failed_any = any(x["status"] == "failed" for x in entries)
        mark = ' <span class="s-failed">(failed)</span>' if failed_any else ""
        out.append(f"<h3>{e(service)}{mark}</h3>")
        if entries:
            out.append(_leak_rows(entries))
        metrics = sorted(
            {str(m) for (s, m) in figures.ctx[0]["groups"] if s == service and metric_kind(str(m)) == "memory"},
            key=lambda m: (MEMORY_FIRST.index(m) if m in MEMORY_FIRST else len(MEMORY_FIRST), m),
        )
        for metric in metrics:

            def draw(i: int, metric: str = metric, service: str = service) -> str:
                data = figures.series(i, service, metric)
                if data is None:
                    return ""
                ctx = figures.ctx[i]
                fit = figures.runs[i].fits.get((service, metric))
                failed = _failed(figures.runs[i].verdict, service, (metric,))
                return plots.memory_plot(
                    *data, fit, ctx["clock"], ctx["events"], f"{service} {metric}", failed, figures.half
                )

            out.append(figures.row(draw, f"{service} {metric}"))
        gauges = sorted(
            {
                str(m)
                for (s, m) in figures.ctx[0]["groups"]
                if s == service and (metric_kind(str(m)) == "count" or m in SHOWN_WITH_GAUGES)
            }
        )
        if gauges:

            def draw_gauges(i: int, gauges: list[str] = gauges, service: str = service) -> str:
                series = {m: figures.series(i, service, m) for m in gauges}
                series = {m: s for m, s in series.items() if s is not None}
                if not series:
                    return ""
                ctx = figures.ctx[i]
                failed = _failed(figures.runs[i].verdict, service, tuple(gauges))
                title = f"{service}: connections and pools (drain check: after load stop vs before load)"
                return plots.gauges_plot(series, ctx["clock"], ctx["events"], title, failed, figures.half)

            out.append(figures.row(draw_gauges, f"{service} gauges"))
    if verdict["ignored"]:
        out.append(f'<p class="muted">Left out by leaks.ignore: {e(", ".join(verdict["ignored"]))}</p>')
    return "".join(out)


def generator_section(current: Analysis, figures: Figures) -> str:
    generator = current.verdict["load_generator"]
    if not generator:
        return ""
    out = ["<h2>The load generator itself (Locust)</h2>"]
    facts = []
    memory = generator.get("mem_rss_bytes")
    if memory and memory.get("max") is not None:
        slope = memory.get("slope_per_hour")
        trend = "" if slope is None or math.isnan(slope) else f", trend {slope / MIB:+.2f} MB/h"
        facts.append(f"memory up to {memory['max'] / MIB:,.0f} MB{trend}")
    pause = generator.get("gc_pause_max_ms")
    if pause and pause.get("max") is not None:
        facts.append(f"longest GC pause {pause['max']:,.0f} ms (a pause this long shows up as latency)")
    if facts:
        out.append(f"<p>{e('; '.join(facts))}.</p>")
    for metric, title, unit, scale in (
        ("mem_rss_bytes", "Locust memory (RSS)", "MB", MIB),
        ("gc_pause_max_ms", "Locust longest GC pause per sample", "ms", 1.0),
        ("cpu_percent", "Locust CPU", "%", 1.0),
    ):
        if metric not in generator:
            continue

        def draw(i: int, metric: str = metric, title: str = title, unit: str = unit, scale: float = scale) -> str:
            data = figures.series(i, LOAD_GENERATOR, metric)
            if data is None:
                return ""
            ctx = figures.ctx[i]
            return plots.simple_plot(*data, ctx["clock"], ctx["events"], title, unit, scale, figures.half)

        out.append(figures.row(draw, title))
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
        f"{'passed' if base['passed'] else 'failed'}): <b>{e(summary)}</b>.</p>"
        f"<table><tr><th>change</th><th>check</th><th>values</th></tr>{rows}</table>"
    )


def metadata_section(current: Analysis) -> str:
    verdict = current.verdict
    run = verdict["run"]
    items = [
        ("scenario", run["name"] + (" (no scenario.toml: defaults used)" if not run["scenario_found"] else "")),
        ("description", run["description"]),
        ("folder", run["folder"]),
        ("samples from", utc(run["start"])),
        ("samples to", utc(run["end"])),
        ("duration", fmt_duration(run["duration_s"])),
        ("load", fmt_duration(run["load_s"]) if run["load_s"] is not None else "n/a"),
        ("target", run["target_host"]),
        ("faults switched on", ", ".join(run["faults"]) or "none"),
        ("service restarts", ", ".join(run["restarts"]) or "none"),
        ("services", ", ".join(run["services"])),
    ]
    for key, value in sorted(run["meta"].items()):
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        items.append((f"run {key}", value))
    analysis = verdict["analysis"]
    items.append(("analysed", f"{analysis['generated_at']} on {analysis['host']}, Python {analysis['python']}"))
    items += [("note", note) for note in verdict["notes"]]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in items)
    out = [f"<h2>Run</h2><table>{rows}</table>"]
    scenario = current.run.path / "scenario.toml"
    if scenario.exists():
        text = scenario.read_text(encoding="utf-8", errors="replace")
        out.append(f"<details><summary>scenario.toml as run</summary><pre>{e(text)}</pre></details>")
    return "".join(out)
