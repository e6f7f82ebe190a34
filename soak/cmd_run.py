"""`soak run SCENARIO`: one command from scenario to report (see soak/runner.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runspec import ScenarioError, load_scenario
from soak.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", nargs="?", help="a scenario name (smoke, load, soak-1h, ...) or a .toml path")
    parser.add_argument("--host", help="the backend's base URL (default: start the embedded sut)")
    parser.add_argument("--auth-host", help="the auth service's base URL (default: --host)")
    parser.add_argument("--out", type=Path, help="the run folder to create (default: reports/<time>-<scenario>)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. --set shape.users=50 (repeatable)",
    )
    parser.add_argument("--baseline", type=Path, help="a previous run folder to compare with in the report")
    parser.add_argument("--processes", type=int, help="Locust --processes N on this machine")
    parser.add_argument("--master", action="store_true", help="run Locust as master; start workers with --worker")
    parser.add_argument("--expect-workers", type=int, default=1, help="with --master: workers to wait for")
    parser.add_argument("--worker", action="store_true", help="run only a Locust worker for a master elsewhere")
    parser.add_argument("--master-host", default="127.0.0.1", help="with --worker: the master's address")
    parser.add_argument("--master-port", type=int, default=5557, help="with --worker: the master's port")
    parser.add_argument(
        "--locust-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass one more argument to Locust (repeatable), e.g. --locust-arg=--loglevel=DEBUG",
    )


def scenario_from_args(args: argparse.Namespace) -> dict:
    """The resolved scenario with ``--set``, ``--host`` and ``--auth-host`` applied (shared with ``soak ui``)."""
    overrides = list(args.set)
    if args.host:
        overrides.append(f"target.host={json.dumps(args.host)}")
    if args.auth_host:
        overrides.append(f"target.auth_host={json.dumps(args.auth_host)}")
    try:
        return load_scenario(args.scenario, overrides)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from soak import runner

    if args.worker:
        return runner.run_worker(args.master_host, args.master_port, args.locust_arg)
    if not args.scenario:
        raise UsageError("a scenario is required (a name such as smoke, or a path to a .toml file)")
    scenario = scenario_from_args(args)
    if args.baseline is not None and not (args.baseline / "samples.csv").exists():
        raise UsageError(f"--baseline {args.baseline}: not a run folder (no samples.csv)")
    if args.processes is not None and args.processes < 1:
        raise UsageError(f"--processes {args.processes}: must be 1 or more")
    options = runner.RunOptions(
        scenario=scenario,
        out=args.out,
        processes=args.processes,
        master=args.master,
        expect_workers=args.expect_workers,
        locust_args=args.locust_arg,
        baseline=args.baseline,
    )
    try:
        return runner.Run(options).execute()
    except runner.RunError as exc:
        raise UsageError(str(exc)) from None
