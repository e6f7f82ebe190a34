"""report.html: one self-contained page (plots embedded as PNG, no network) that reads top-down.

Verdict and failed checks first, then targets, latency, load and failures, each service's memory and gauges, the
load generator's own health, the baseline comparison, and the run's metadata. Every string that came from the run
(names, error messages, scenario text, metadata) is HTML-escaped (see sections.py).
"""

from __future__ import annotations

from pathlib import Path

from analysis.figures import Figures
from analysis.leaks import fmt_duration
from analysis.sections import (
    at_a_glance,
    baseline_section,
    checks_table,
    e,
    failed_list,
    generator_section,
    latency_section,
    load_section,
    metadata_section,
    services_section,
    utc,
)
from analysis.verdict import Analysis, analyze, json_safe

REPORT_FILE = "report.html"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:0 20px 40px}
.verdict{padding:22px 28px;color:#fff;margin-bottom:14px}
.verdict.passed{background:#2e7d32}.verdict.failed{background:#c62828}
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


def render(current: Analysis, base: Analysis | None = None) -> str:
    verdict = json_safe(current.verdict)
    figures = Figures(current, base)
    run = verdict["run"]
    word = "PASSED" if verdict["passed"] else "FAILED"
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
        f'<header class="verdict {word.lower()}"><h1>{word}</h1><p>{e(headline)}</p>',
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
    parts.append(
        f"<details><summary>All {len(verdict['checks'])} checks with their reasons</summary>{checks_table(verdict)}</details>"
    )
    parts.append(latency_section(current, figures))
    parts.append(load_section(current, figures))
    parts.append(services_section(current, figures))
    parts.append(generator_section(current, figures))
    parts.append(baseline_section(verdict))
    parts.append(metadata_section(current))
    parts.append("</main></body></html>\n")
    return "".join(parts)


def write_report(run_dir: str | Path, baseline: str | Path | None = None) -> Path:
    """Write report.html, and verdict.json and junit.xml with it; right after ``analyze_run`` on the same unchanged
    folder the run is not judged again."""
    current, base = analyze(run_dir, baseline, reuse=True)
    path = Path(run_dir) / REPORT_FILE
    path.write_text(render(current, base), encoding="utf-8")
    return path
