"""`soak sample`: sample services into DIR/samples.csv until Ctrl-C, SIGTERM or --duration.

    soak sample --service backend=port:8001 --service auth=pid:1234 --interval 1s --out reports/manual
    soak sample --service backend=port:8001 --service backend=prometheus:http://127.0.0.1:8001/metrics ...
    soak sample --service backend=health:http://127.0.0.1:8001/health --service redis=tcp:127.0.0.1:6379 ...

A service named more than once gets all its sources. A folder that holds a finished run (its verdict.json) is
refused unless --append says to add to it. Each tick's rows reach the file in one write, so a sampler
killed at any moment (even kill -9) leaves samples.csv whole up to its last tick.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from runspec import folder, parse_duration
from soak.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="a service and where to read it: pid:N, pid:self, port:N, cmd:REGEX, docker:NAME, prometheus:URL[#map], "
        "redis:URL, postgres:URL[#all], health:URL, tcp:HOST:PORT; repeat for more services or more sources of one "
        "service",
    )
    parser.add_argument("--interval", default="1s", help="time between ticks (default 1s)")
    parser.add_argument("--uss-interval", default="0", help="time between USS reads, costly (default 0 = off)")
    parser.add_argument("--duration", default="0", help="stop after this long (default 0 = until Ctrl-C or SIGTERM)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder: samples.csv and events.csv go here")
    parser.add_argument(
        "--append", action="store_true", help="add to a folder that already holds a finished run (its verdict.json)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def _duration(flag: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}") from None


def parse_service_args(items: list[str]) -> dict[str, list[str]]:
    """["backend=port:8001", "backend=prometheus:..."] -> {"backend": ["port:8001", "prometheus:..."]}."""
    services: dict[str, list[str]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise UsageError(f"--service {item!r}: expected NAME=SPEC, e.g. backend=port:8001")
        services.setdefault(name.strip(), []).append(spec.strip())
    if not services:
        raise UsageError("no --service given; e.g. --service backend=port:8001")
    return services


def check_out(out: str, append: bool) -> None:
    """--out must be a folder (new or existing), and not a finished run unless ``append``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out!r}: is a file, not a folder")
    if (path / folder.VERDICT).exists() and not append:
        raise UsageError(
            f"--out {out!r}: holds a finished run ({folder.VERDICT}); give a new folder, or --append to add to it"
        )


def run(args: argparse.Namespace) -> int:
    from sampler import Sampler, SourceSpecError

    services = parse_service_args(args.service)
    interval = _duration("--interval", args.interval)
    if interval <= 0:
        raise UsageError(f"--interval {args.interval!r}: must be above 0")
    uss_interval = _duration("--uss-interval", args.uss_interval)
    duration = _duration("--duration", args.duration)
    check_out(args.out, args.append)
    try:
        sampler = Sampler(services, args.out, interval=interval, uss_interval=uss_interval)
    except SourceSpecError as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        sampler.open()
    except OSError as exc:
        raise UsageError(f"--out {args.out!r}: cannot write there: {exc.strerror or exc}") from None

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    sampler.start()
    if not args.quiet:
        print(
            f"soak sample: {len(services)} service(s) every {interval:g} s into {sampler.out_dir / folder.SAMPLES}"
            f"{f' for {duration:g} s' if duration else '; Ctrl-C to stop'}",
            file=sys.stderr,
        )
    try:
        while not stop.wait(min(1.0, duration - (time.monotonic() - started)) if duration else 1.0):
            if duration and time.monotonic() - started >= duration:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to end a standalone sampling
    finally:
        writer = sampler.writer
        sampler.stop()
        signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        print(f"soak sample: {sampler.ticks} tick(s), {writer.rows_written} row(s) written", file=sys.stderr)
    return 0
