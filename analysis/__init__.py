"""Analysis of a run folder: leak verdicts, exact latency percentiles, the run's status, verdict.json, junit.xml and
report.html.

    analysis = analyze(run_dir, baseline=None)   # judge once: an Analysis (run, verdict, fits, baseline)
    write_verdict(analysis); write_junit(analysis); write_report(analysis)
    analyze_and_write(run_dir)                   # all of the above, what `soak run` and `soak report` do
    summary_lines(analysis), exit_code(analysis) # what to print, and 0 passed, 1 failed, 3 incomplete, 4 invalid

Standalone on purpose: pandas, numpy and matplotlib only, never Locust or gevent; of this repository only runspec.
"""

from __future__ import annotations

from pathlib import Path

from analysis.growth import leak_slope
from analysis.junit import write_junit
from analysis.runfolder import RunFolderError, load_run
from analysis.verdict import Analysis, analyze, exit_code, summary_lines, write_verdict


def write_report(analysis: Analysis) -> Path:
    """report.html (matplotlib is imported only when a report is drawn)."""
    from analysis.report import write_report as write

    return write(analysis)


def analyze_and_write(
    run_dir: str | Path, baseline: Analysis | str | Path | None = None, report: bool = True
) -> Analysis:
    """Judge the run once and write verdict.json, junit.xml and (with ``report``) report.html from that one result.
    Raises RunFolderError (one line) on bad input; nothing is written then."""
    analysis = analyze(run_dir, baseline)
    write_verdict(analysis)
    write_junit(analysis)
    if report:
        write_report(analysis)
    return analysis


__all__ = [
    "Analysis",
    "RunFolderError",
    "analyze",
    "analyze_and_write",
    "exit_code",
    "leak_slope",
    "load_run",
    "summary_lines",
    "write_junit",
    "write_report",
    "write_verdict",
]
