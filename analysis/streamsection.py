"""The report's "Streamed replies" section: what a reader felt, from analysis/streaming.py's summary.

A table (replies, time to first token, gaps, stalls, tokens per second) and one figure: stalls per interval as bars
on the time axis, with the gap p95 and time-to-first-token p95 per interval as lines. The targets themselves are in
the latency section (judged in latency.py). Empty for a run whose replies streamed nothing, so reports of platforms
that do not stream are unchanged. Call ``stream_section(current, figures)`` from report.render, after the latency
section.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from analysis import plots
from analysis.figures import Figures
from analysis.streaming import INTERVAL_S, stall_threshold_ms, stream_summary
from analysis.verdict import Analysis


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary_of(analysis: Analysis) -> dict[str, Any] | None:
    run = analysis.run
    return stream_summary(run.latency, stall_threshold_ms(run.settings.scenario))


def stream_section(current: Analysis, figures: Figures) -> str:
    summary = summary_of(current)
    if summary is None:
        return ""
    share = summary["stalls"] / summary["gaps"] if summary["gaps"] else 0.0
    rows = [
        ("replies streamed", f"{summary['replies']:,}"),
        ("time to first token p50 / p95", f"{_num(summary['first_p50_ms'])} / {_num(summary['first_p95_ms'])} ms"),
        (
            "gap between tokens p50 / p95 / p99",
            f"{_num(summary['gap_p50_ms'])} / {_num(summary['gap_p95_ms'])} / {_num(summary['gap_p99_ms'])} ms",
        ),
        (
            f"stalls (gaps over {summary['stall_ms']:g} ms)",
            f"{summary['stalls']:,} of {summary['gaps']:,} ({share:.2%})",
        ),
        (
            "tokens per second per reply, median / slowest 5%",
            f"{_num(summary['rate_p50'])} / {_num(summary['rate_p5'])}",
        ),
    ]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td class=num>{html.escape(v)}</td></tr>" for k, v in rows)
    out = [
        "<h2>Streamed replies</h2>",
        '<p class="muted">As a person reading the reply feels it: the wait for the first token and the gaps after '
        "it (ledger verdicts on each token are under ledger lost / duplicate / order).</p>",
        f"<table>{body}</table>",
    ]

    def draw(i: int) -> str:
        other = summary_of(figures.runs[i])
        if other is None:
            return ""
        return stream_plot(other, figures.ctx[i]["clock"], figures.ctx[i]["events"], figures.half)

    out.append(figures.row(draw, "stalls and gaps of streamed replies over time"))
    return "".join(out)


def stream_plot(summary: dict[str, Any], clock: plots.Clock, events: dict[str, Any], half: bool = False) -> str:
    """Stalls per interval (bars, right axis) under the gap and first-token p95 per interval (lines, ms)."""
    series = summary["series"]
    fig, ax = plots.figure(half, right=plots.TWIN_RIGHT)
    x = clock(series["ts"] + INTERVAL_S / 2)  # the middle of each interval
    ax.plot(x, series["gap_p95"], "-", lw=1.2, color=plots.COLORS[0], label="token gap p95")
    ax.plot(x, series["first_p95"], "-", lw=1.2, color=plots.COLORS[2], label="time to first token p95")
    ax.set_ylim(bottom=0)
    bars = ax.twinx()
    if np.any(series["stalls"] > 0):
        width = INTERVAL_S / clock.scale
        bars.bar(x, series["stalls"], width=width, color=plots.FAIL_COLOR, alpha=0.4, label="stalls")
    bars.set_ylabel("stalls per 10 s", fontsize=8)
    bars.tick_params(labelsize=8)
    bars.set_ylim(bottom=0)
    ax.set_zorder(bars.get_zorder() + 1)  # the lines over the bars, not hidden behind them
    ax.patch.set_visible(False)
    plots._phases(ax, clock, events, events.get("warmup_end"))
    title = f"streamed replies: {summary['stalls']:,} stalls (gaps over {summary['stall_ms']:g} ms)"
    plots._finish(ax, clock, title, "ms", summary["stalls"] > 0 or None)
    return plots._png(fig)
