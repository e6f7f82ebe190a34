"""`soak ui [SCENARIO]`: the Locust web UI against the scenario's target, with the sampler and a live Services tab."""

from __future__ import annotations

import argparse
from pathlib import Path

from soak.cli import UsageError
from soak.cmd_run import scenario_from_args

DEFAULT_SCENARIO = "smoke"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO, help="scenario name or path (default: smoke)")
    parser.add_argument("--host", help="the backend's base URL (default: start the embedded sut)")
    parser.add_argument("--auth-host", help="the auth service's base URL (default: --host)")
    parser.add_argument("--out", type=Path, help="the run folder to create (default: reports/<time>-<scenario>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scenario key")
    parser.add_argument("--web-host", default="127.0.0.1", help="address the web UI listens on (default: 127.0.0.1)")
    parser.add_argument("--web-port", type=int, default=8089, help="web UI port (default: 8089)")
    parser.add_argument("--processes", type=int, help="Locust --processes N on this machine")


def run(args: argparse.Namespace) -> int:
    from soak import runner, uirun

    options = runner.RunOptions(scenario=scenario_from_args(args), out=args.out, processes=args.processes)
    try:
        return uirun.UiRun(options, args.web_host, args.web_port).execute()
    except runner.RunError as exc:
        raise UsageError(str(exc)) from None
