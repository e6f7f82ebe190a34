"""Analysis of a run folder: leak verdicts, exact latency percentiles, verdict.json, junit.xml and report.html.

Standalone on purpose: pandas, numpy and matplotlib only, never Locust or gevent, nothing else of this repository.
"""

from __future__ import annotations

from analysis.leaks import leak_slope
from analysis.report import write_report
from analysis.runfolder import RunFolderError, load_run
from analysis.verdict import analyze_run, exit_code, summary_lines

__all__ = ["RunFolderError", "analyze_run", "exit_code", "leak_slope", "load_run", "summary_lines", "write_report"]
