"""`soak analyze RUN_DIR [--baseline RUN_DIR]` and `soak report RUN_DIR [--baseline RUN_DIR]`.

analyze writes verdict.json and junit.xml, prints one line per failed check and the overall line, and exits 0 (all
passed), 1 (a check failed) or 2 (bad input). report also writes report.html and exits 0 once it is written.
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
    from analysis import RunFolderError, analyze_run, exit_code, summary_lines

    try:
        verdict = analyze_run(args.run_dir, baseline=args.baseline)
    except RunFolderError as exc:
        raise UsageError(str(exc)) from None
    for line in summary_lines(verdict):
        print(line)
    return exit_code(verdict)


def run_report(args: argparse.Namespace) -> int:
    import json

    from analysis import RunFolderError, write_report

    try:
        path = write_report(args.run_dir, baseline=args.baseline)
    except RunFolderError as exc:
        raise UsageError(str(exc)) from None
    verdict = json.loads((path.parent / "verdict.json").read_text(encoding="utf-8"))
    print(f"{'PASSED' if verdict['passed'] else 'FAILED'}: report written to {path}")
    return 0


add_arguments = add_analyze_arguments
run = run_analyze
