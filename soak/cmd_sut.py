"""``soak sut``: start the embedded chat platform (auth, backend, agent), wait until healthy, run until stopped.

Every [sut] scenario key is a flag (``--leak-bytes-per-message 100000``, ``--redis-url env``, ...); ``--scenario``
takes the [sut] table of a scenario as the starting point. Ctrl-C or SIGTERM stops all three cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from runspec.scenario import SUT_SCHEMA, ScenarioError, load_scenario, sut_value
from soak.cli import UsageError
from sut.config import SERVICES, add_flags, flag_name
from sut.containers import check_runtime
from sut.launcher import SutConfig, SutError, start_sut

WATCH_INTERVAL = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", metavar="NAME|PATH", help="start from this scenario's [sut] table")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    for name in SERVICES:
        parser.add_argument(f"--{name}-port", type=int, default=None, metavar="PORT", help=f"{name} port (0 = free)")
    parser.add_argument("--log-dir", metavar="DIR", help="write sut-<service>.log files here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health (default 60)")
    parser.add_argument(
        "--docker",
        action="store_true",
        help="each service in a container of the Docker engine DOCKER_HOST names (same as --runtime docker)",
    )
    group = parser.add_argument_group("[sut] scenario keys (defaults as in a scenario)")
    add_flags(group, names=list(SUT_SCHEMA))


def config_from_args(args: argparse.Namespace) -> SutConfig:
    """The scenario's [sut] table (or the defaults), then every flag given, each checked by the schema."""
    try:
        values = load_scenario(args.scenario)["sut"] if args.scenario else {}
        for name in SUT_SCHEMA:
            raw = getattr(args, name)
            if raw is not None:
                values[name] = sut_value(name, raw, flag_name(name))
        if args.docker:
            values["runtime"] = "docker"
        config = SutConfig(**values)
        check_runtime(config)
    except (ScenarioError, SutError) as exc:
        raise UsageError(str(exc)) from None
    return config


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
            sut.on_event = lambda name, what, detail: print(
                f"soak sut: {name} {what}: {detail}", file=sys.stderr, flush=True
            )
            for name in SERVICES:
                print(f"{name:8} {sut.urls[name]}  pid {sut.pids[name]}", flush=True)
            for line in sut.describe():  # the containers, with --docker
                print(line, flush=True)
            storage = config.database_url or "sqlite (temporary)"
            limits = "redis" if sut.settings.redis_url else "in-memory"
            print(f"storage: {storage.split('@')[-1]}; rate limits and agent bus: {limits}; logs: {sut.log_dir}")
            print("healthy; Ctrl-C or SIGTERM stops all three", flush=True)
            while not stop.wait(WATCH_INTERVAL):
                dead = sut.watch()  # with --supervise: only what the supervisor gave up on
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
