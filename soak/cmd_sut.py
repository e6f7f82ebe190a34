"""``soak sut``: start the embedded chat platform (auth, backend, agent), wait until healthy, run until stopped.

Every [sut] scenario key is a flag (``--leak-bytes-per-message 100000``, ``--redis-url env``, ...); ``--scenario``
takes the [sut] table of a scenario as the starting point. Ctrl-C or SIGTERM stops all three cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import asdict, fields
from typing import Any

from soak.cli import UsageError
from soak.scenario import ScenarioError, load_scenario, parse_duration
from sut.config import HELP, SERVICES
from sut.launcher import SutConfig, SutError, start_sut

WATCH_INTERVAL = 0.5
DURATION_KEYS = ("access_token_ttl", "rate_window", "agent_step", "rest_latency", "agent_latency")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", metavar="NAME|PATH", help="start from this scenario's [sut] table")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    for name in SERVICES:
        parser.add_argument(f"--{name}-port", type=int, default=None, metavar="PORT", help=f"{name} port (0 = free)")
    parser.add_argument("--log-dir", metavar="DIR", help="write sut-<service>.log files here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health (default 60)")
    group = parser.add_argument_group("[sut] scenario keys (defaults as in a scenario)")
    defaults = SutConfig()
    for field in fields(SutConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            help_text = f"{HELP[field.name]} (default: off)"
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            metavar = "SECONDS" if field.name in DURATION_KEYS else ("URL" if isinstance(default, str) else "N")
            extra = "; 'env' = from $" + field.name.upper() if isinstance(default, str) else ""
            help_text = f"{HELP[field.name]} (default: {default!r}{extra})"
            group.add_argument(flag, default=None, metavar=metavar, help=help_text)


def _value(name: str, raw: Any, default: Any) -> Any:
    flag = "--" + name.replace("_", "-")
    if isinstance(default, bool) or isinstance(default, str):
        return raw
    if name in DURATION_KEYS:
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{flag}: expected a whole number, got {raw!r}") from None
    if value < 0:
        raise UsageError(f"{flag}: must be >= 0, got {raw!r}")
    return value


def config_from_args(args: argparse.Namespace) -> SutConfig:
    values = asdict(SutConfig())
    if args.scenario:
        try:
            values.update(load_scenario(args.scenario)["sut"])
        except ScenarioError as exc:
            raise UsageError(str(exc)) from None
    for name, default in asdict(SutConfig()).items():
        raw = getattr(args, name)
        if raw is not None:
            values[name] = _value(name, raw, default)
    return SutConfig(**values)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    ports = {name: getattr(args, f"{name}_port") or 0 for name in SERVICES}
    if any(not 0 <= port <= 65535 for port in ports.values()):
        raise UsageError("ports must be between 0 and 65535")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sut = start_sut(config, host=args.host, log_dir=args.log_dir, ports=ports, timeout=args.timeout)
        except SutError as exc:
            print(f"soak sut: error: {exc}", file=sys.stderr)
            return 1
        with sut:
            for name in SERVICES:
                print(f"{name:8} {sut.urls[name]}  pid {sut.pids[name]}", flush=True)
            storage = config.database_url or "sqlite (temporary)"
            limits = "redis" if sut.settings.redis_url else "in-memory"
            print(f"storage: {storage.split('@')[-1]}; rate limits and agent bus: {limits}; logs: {sut.log_dir}")
            print("healthy; Ctrl-C or SIGTERM stops all three", flush=True)
            while not stop.wait(WATCH_INTERVAL):
                dead = [name for name, alive in sut.alive().items() if not alive]
                if dead:
                    name = dead[0]
                    code = sut.processes[name].returncode
                    print(
                        f"soak sut: error: {name} exited with code {code}; its log:\n{sut.log_tail(name)}",
                        file=sys.stderr,
                    )
                    return 1
            print("stopping ...", flush=True)
        print("stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
