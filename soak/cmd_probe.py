"""`soak probe [SCENARIO] --host URL [--auth-host URL]`: walk the contract against a target in under a minute.

Prints a line per step (ok / failed / skipped), with what came back and, where a failure has one, the [protocol] key
that would fix it. Exit 0 when no step failed, 1 when one did, 2 on bad input (one line, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import time
from urllib.parse import urlsplit

from runspec import ScenarioError, load_scenario, resolve
from runspec.scenario import apply_overrides
from soak.cli import UsageError

MARKS = {"ok": "ok", "failed": "FAILED", "skipped": "skipped"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario", nargs="?", help="a scenario name or .toml path whose [protocol] to use (default: the contract)"
    )
    parser.add_argument("--host", help="the backend's base URL (default: the scenario's target.host)")
    parser.add_argument("--auth-host", help="the auth service's base URL (default: target.auth_host, else --host)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a scenario key, e.g. --set protocol.ws.path=/socket (repeatable)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for one answer (default 5)")


def _url(flag: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag} {value!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"{flag} {value!r}: not a valid port") from None
    return value.rstrip("/")


def resolve_args(args: argparse.Namespace) -> tuple[dict, str, str]:
    """The resolved scenario and the two base URLs; UsageError (exit 2) on anything wrong."""
    overrides = list(args.set)
    if args.host:
        overrides.append(f"target.host={json.dumps(args.host)}")
    if args.auth_host:
        overrides.append(f"target.auth_host={json.dumps(args.auth_host)}")
    try:
        if args.scenario:
            scenario = load_scenario(args.scenario, overrides)
        else:
            scenario = resolve(apply_overrides({}, overrides), "<defaults>")
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    target = scenario["target"]
    if not target["host"]:
        raise UsageError("no target: give --host URL (or target.host in the scenario)")
    host = _url("--host", target["host"])
    auth_host = _url("--auth-host", target["auth_host"]) if target["auth_host"] else host
    if args.timeout is not None and not 0 < args.timeout <= 60:
        raise UsageError(f"--timeout {args.timeout:g}: expected seconds in (0, 60]")
    return scenario, host, auth_host


def run(args: argparse.Namespace) -> int:
    from soak.probe import OPT_IN, STEP_TIMEOUT, STEPS, Probe, Result, steps_for

    scenario, host, auth_host = resolve_args(args)
    print(f"probing {host}" + (f" (auth {auth_host})" if auth_host != host else ""), flush=True)

    def say(result: Result) -> None:
        print(f"  {MARKS[result.status]:<8}{result.step:<17}{result.detail}", flush=True)
        if result.fix:
            print(f"  {'':<8}{'':<17}fix: {result.fix}", flush=True)

    started = time.monotonic()
    # every step of the contract, but the parts many platforms leave out only where the scenario's users need them
    steps = tuple(step for step in STEPS if step not in OPT_IN or step in steps_for(scenario))
    results = Probe(scenario, host, auth_host, args.timeout or STEP_TIMEOUT).run(steps, say=say)
    counts = {status: sum(r.status == status for r in results) for status in MARKS}
    print(
        f"{len(results)} steps: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {time.monotonic() - started:.1f} s"
    )
    return 1 if counts["failed"] else 0
