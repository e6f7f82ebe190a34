"""`soak analyze RUN_DIR [--baseline RUN_DIR]` and `soak report RUN_DIR [--baseline RUN_DIR]`.

analyze judges the run once, writes verdict.json and junit.xml, prints one line per failed check and the overall
line, and exits with the run's status: 0 passed, 1 failed, 3 incomplete, 4 invalid (2: bad input). report does the
same judging once, writes report.html too, prints the overall line and the report's path, and exits the same way
(a CI step that only writes the report still goes red on a night that went wrong).
"""

from __future__ import annotations

import argparse

from soak.cli import UsageError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (reports/<time>-<scenario>/)")
    parser.add_argument("--baseline", metavar="RUN_DIR", help="an earlier run to compare with; regressions are flagged")


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def run_analyze(args: argparse.Namespace) -> int:
    from analysis import RunFolderError, analyze_and_write, exit_code, summary_lines

    try:
        analysis = analyze_and_write(args.run_dir, baseline=args.baseline, report=False)
    except RunFolderError as exc:
        raise UsageError(str(exc)) from None
    for line in summary_lines(analysis):
        print(line)
    return exit_code(analysis)


def run_report(args: argparse.Namespace) -> int:
    from analysis import RunFolderError, analyze_and_write, exit_code, summary_lines
    from runspec import folder

    try:
        analysis = analyze_and_write(args.run_dir, baseline=args.baseline)
    except RunFolderError as exc:
        raise UsageError(str(exc)) from None
    print(summary_lines(analysis)[-1])
    print(f"report written to {analysis.run.path / folder.REPORT}")
    return exit_code(analysis)


add_arguments = add_analyze_arguments
run = run_analyze
