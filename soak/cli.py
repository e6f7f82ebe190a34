"""``soak``: a thin command line. Each subcommand lives in ``soak/cmd_<name>.py`` with ``add_arguments`` and ``run``.

Exit codes everywhere: 0 passed, 1 a check failed, 2 bad input (a one-line message on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "run": "run a scenario end to end: sut, sampler, Locust, drain, analysis, report",
    "analyze": "judge a run folder: verdict.json, junit.xml, exit code",
    "report": "write report.html for a run folder",
    "sample": "sample services into samples.csv until stopped",
    "sut": "start the embedded chat platform (auth, backend, agent)",
    "ui": "the Locust web UI with the sampler and a live service tab",
    "probe": "walk the contract against a target (--host) step by step, naming the [protocol] key that fixes a failure",
}
MODULES = {"report": "analyze"}  # commands that share a module


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soak", description="Load, soak and leak testing for real-time chat platforms"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"soak.cmd_{MODULES.get(name, name)}")
        command = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{name}_arguments", module.add_arguments)(command)
        command.set_defaults(handler=getattr(module, f"run_{name}", module.run))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"soak {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
