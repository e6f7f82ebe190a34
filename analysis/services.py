"""The report's sections per service: health (downtime, restarts, the up/down timeline), memory with its fitted
trend, connection and pool gauges, and the load generator's own figures."""

from __future__ import annotations

import math
from typing import Any

from analysis import plots
from analysis.figures import Figures
from analysis.health import plot_health
from analysis.metrics import HEALTH_UP, metric_kind
from analysis.sections import MEMORY_FIRST, e, health_events, status_cell
from analysis.verdict import Analysis
from runspec.units import LOAD_GENERATOR, MB

SHOWN_WITH_GAUGES = ("db_pool_size", "pg_connections_idle", "threads")  # context for the drain check, not judged


def health_section(current: Analysis, figures: Figures) -> str:
    """Downtime and restarts per service, and the health timeline; nothing for a run without either."""
    verdict = current.verdict
    has_health = any(m == HEALTH_UP for _, m in figures.ctx[0]["groups"])
    if not (has_health or verdict["downtime"] or verdict["restarts"]):
        return ""
    out = ["<h2>Service health</h2>"]
    by_service: dict[str, list[str]] = {}
    for service, _, line in health_events(current):
        by_service.setdefault(service, []).append(line)
    if by_service:
        rows = "".join(
            f"<tr><td>{e(service)}</td><td>{'<br>'.join(e(line) for line in lines)}</td></tr>"
            for service, lines in sorted(by_service.items())
        )
        out.append(f"<table><tr><th>service</th><th>downtime and restarts</th></tr>{rows}</table>")
    else:
        out.append('<p class="s-passed">Every service answered its health checks throughout; no restarts.</p>')
    if has_health:

        def draw(i: int) -> str:
            return plot_health(figures.runs[i].run, half=figures.half) or ""

        out.append(figures.row(draw, "health of each service: up and down over time"))
    return "".join(out)


def _leak_rows(entries: list[dict[str, Any]]) -> str:
    rows = []
    for entry in entries:
        if entry["check"] == "slope":
            scale, unit = (MB, " MB/h") if entry["kind"] == "memory" else (1.0, "/h")
            value = entry["slope_per_hour"]
            shown = "n/a" if value is None or math.isnan(value) else f"{value / scale:+.2f}{unit}"
        elif entry.get("floor_first") is not None:  # count trend: the floor under load, first and last
            shown = f"floor {entry['floor_first']:g} -> {entry['floor_last']:g}"
        else:
            before, after = entry.get("level_before"), entry.get("level_after")
            shown = "n/a" if before is None else f"{before:g} -> {after:g}"
        rows.append(
            f"<tr>{status_cell(entry['status'])}<td>{e(entry['metric'])}</td><td>{e(entry.get('rule', entry['check']))}</td>"
            f"<td class=num>{e(shown)}</td><td>{e(entry['reason'])}</td></tr>"
        )
    return (
        "<table><tr><th>status</th><th>metric</th><th>rule</th><th>value</th><th>reason</th></tr>"
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
    validity = current.verdict.get("generator") or {}
    if not generator and validity.get("status") in (None, "no data"):
        return ""
    out = ["<h2>The load generator itself (Locust)</h2>", validity_html(validity)]
    facts = []
    memory = generator.get("mem_rss_bytes")
    if memory and memory.get("max") is not None:
        slope = memory.get("slope_per_hour")
        trend = "" if slope is None or math.isnan(slope) else f", trend {slope / MB:+.2f} MB/h"
        facts.append(f"memory up to {memory['max'] / MB:,.0f} MB{trend}")
    pause = generator.get("gc_pause_max_ms")
    if pause and pause.get("max") is not None:
        facts.append(f"longest GC pause {pause['max']:,.0f} ms (a pause this long shows up as latency)")
    if facts:
        out.append(f"<p>{e('; '.join(facts))}.</p>")
    for metric, title, unit, scale in (
        ("mem_rss_bytes", "Locust memory (RSS)", "MB", MB),
        ("gc_pause_max_ms", "Locust longest GC pause per sample", "ms", 1.0),
        ("cpu_percent", "Locust CPU", "%", 1.0),
        ("worker_cpu_max_percent", "Busiest Locust process CPU (% of one core)", "%", 1.0),
        ("hub_lag_max_ms", "gevent hub: longest late wake-up per 10 s", "ms", 1.0),
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


def validity_html(validity: dict[str, Any]) -> str:
    """Whether the generator kept up (each limit: intervals over it), and whose each slow window was."""
    if not validity or validity.get("status") == "no data":
        return ""
    css = "banner warn" if validity["status"] == "invalid" else "muted"
    out = [f'<p class="{css}">{e(validity["reason"])}.</p>']
    rows = "".join(
        f"<tr><td>{e(limit['limit'])}</td><td class=num>{limit['max']:g} {e(limit['unit'])}</td>"
        f"<td class=num>{limit['worst']:,.1f} {e(limit['unit'])}</td>"
        f"<td class=num>{limit['over']} of {limit['intervals']} ({limit['share']:.1%})</td></tr>"
        for limit in validity["limits"]
    )
    out.append(
        f"<table><tr><th>limit</th><th>max</th><th>worst 10 s</th><th>10 s intervals over it</th></tr>{rows}</table>"
    )
    blame = validity.get("blame") or {}
    if blame:
        counts = ", ".join(f"{cause}: {n}" for cause, n in sorted(blame.items(), key=lambda kv: -kv[1]))
        out.append(f"<p>Slow 10 s windows (a latency target's percentile over its limit), by cause: {e(counts)}.</p>")
        rows = "".join(
            f"<tr><td>{e(row['name'])} p{row['percentile']:g}</td><td class=num>{row['value_ms']:,.1f}</td>"
            f"<td class=num>{row['max_ms']:g}</td><td>{e(row['cause'])}</td></tr>"
            for row in validity["outliers"]
        )
        out.append(
            "<details><summary>The worst slow windows</summary><table><tr><th>target</th><th>ms</th>"
            f"<th>limit ms</th><th>what the generator was doing</th></tr>{rows}</table></details>"
        )
    return "".join(out)
