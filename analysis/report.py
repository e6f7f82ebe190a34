"""report.html: one self-contained page (plots embedded as PNG, no network) that reads top-down.

The run's status and failed checks first (an OOM kill in the banner), then targets, where each service ran (process
or container, memory limit, OOM kills, engine), the faults (when the run had any), latency, load and
failures, each service's health (downtime, restarts, timeline), memory and gauges, the load generator's own health,
the baseline comparison, and the run's metadata. Every string that came from the run
(names, error messages, scenario text, metadata) is HTML-escaped (see sections.py).
"""

from __future__ import annotations

from pathlib import Path

from analysis.faultsection import faults_section
from analysis.figures import Figures
from analysis.formatting import fmt_duration
from analysis.sections import (
    at_a_glance,
    baseline_section,
    checks_table,
    e,
    failed_list,
    latency_section,
    load_section,
    metadata_section,
    utc,
    where_it_ran,
)
from analysis.services import generator_section, health_section, services_section
from analysis.streamsection import stream_section
from analysis.verdict import Analysis
from runspec import folder

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:0 20px 40px}
.verdict{padding:22px 28px;color:#fff;margin-bottom:14px}
.verdict.passed{background:#2e7d32}.verdict.failed{background:#c62828}
.verdict.incomplete{background:#b45309}.verdict.invalid{background:#6a1b9a}
.verdict p.why{font-size:17px;font-weight:600;opacity:1}
.verdict h1{margin:0;font-size:34px;letter-spacing:.5px}.verdict p{margin:4px 0 0;font-size:15px;opacity:.95}
.banner{padding:10px 16px;margin:10px 0;border-radius:4px;font-weight:600}
.banner.warn{background:#fff3cd;border:1px solid #e0b000}.banner.info{background:#e3f2fd;border:1px solid #64b5f6}
h2{margin:28px 0 8px;font-size:21px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin:18px 0 6px;font-size:16px}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status{font-weight:700;white-space:nowrap}.failed .status,.s-failed{color:#c62828}
.s-passed{color:#2e7d32}.s-nodata{color:#777}.s-regressed{color:#c62828;font-weight:700}
ul.failed{background:#fff;border-left:5px solid #c62828;padding:10px 10px 10px 30px;margin:8px 0}
ul.failed li{margin:4px 0}
img{max-width:100%;display:block;background:#fff;border:1px solid #e5e5e5;margin:6px 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px}.pair>div>p{margin:0;font-size:12px;color:#555}
.muted{color:#666}pre{background:#fff;border:1px solid #ddd;padding:10px;overflow:auto;font-size:12px}
"""


def render(current: Analysis) -> str:
    """The page for one judged run (beside its baseline when it was compared with one)."""
    verdict = current.verdict
    figures = Figures(current, current.baseline)
    run = verdict["run"]
    # The banner's word and colour are the status: a run that did not go to its end is never green.
    word = verdict["status"].upper()
    why = "" if verdict["status"] in (folder.PASSED, folder.FAILED) else verdict["status_reason"]
    if verdict.get("oom_kills"):  # a service the OOM killer ended is the night's news: said in the banner
        why = verdict["status_reason"]
    failed = sum(c["status"] == "failed" for c in verdict["checks"])
    no_data = sum(c["status"] == "no data" for c in verdict["checks"])
    total = len(verdict["checks"])
    headline = (
        f"{run['name']}: {total - failed - no_data} of {total} checks passed"
        + (f", {failed} failed" if failed else "")
        + (f", {no_data} without data" if no_data else "")
    )
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{e(word)}: {e(run['name'])} soak report</title><style>{CSS}</style></head><body>",
        f'<header class="verdict {e(verdict["status"])}"><h1>{e(word)}</h1>',
        f'<p class="why">{e(why)}</p>' if why else "",
        f"<p>{e(headline)}</p>",
        f"<p>{e(utc(run['start']))}, {e(fmt_duration(run['duration_s']))} of samples; {e(run['target_host'])}</p></header><main>",
    ]
    if verdict["interrupted"]:
        parts.append(
            '<div class="banner warn">This run was interrupted (Ctrl-C or SIGTERM) before its planned end: '
            "the verdict judges the data gathered until then.</div>"
        )
    if run["faults"]:
        parts.append(f'<div class="banner info">Fault switches on in this run: {e(", ".join(run["faults"]))}</div>')
    base_info = verdict.get("baseline")
    if base_info and base_info["regressed"]:
        parts.append(
            f'<div class="banner warn">{len(base_info["regressions"])} regression(s) against the baseline '
            f"{e(base_info['name'])}: see the comparison below.</div>"
        )
    parts.append("<h2>Failed checks</h2>" + failed_list(verdict))
    parts.append(at_a_glance(verdict))
    parts.append(where_it_ran(verdict))
    parts.append(
        f"<details><summary>All {len(verdict['checks'])} checks with their reasons</summary>{checks_table(verdict)}</details>"
    )
    parts.append(faults_section(current))
    parts.append(latency_section(current, figures))
    parts.append(stream_section(current, figures))
    parts.append(load_section(current, figures))
    parts.append(health_section(current, figures))
    parts.append(services_section(current, figures))
    parts.append(generator_section(current, figures))
    parts.append(baseline_section(verdict))
    parts.append(metadata_section(current))
    parts.append("</main></body></html>\n")
    return figures.fill("".join(parts))


def write_report(analysis: Analysis) -> Path:
    """report.html in the run folder."""
    path = analysis.run.path / folder.REPORT
    path.write_text(render(analysis), encoding="utf-8")
    return path
