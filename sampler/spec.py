"""Source specs: the one-line strings that say where a service's readings come from.

``pid:1234``, ``pid:self``, ``port:8001``, ``cmd:REGEX``, ``docker:NAME_OR_ID`` (alone, or beside one of the three
before it), ``prometheus:URL[#mapping]``, ``redis:URL``, ``postgres:URL[#all]``, ``health:URL`` (GET, 200 = up),
``tcp:HOST:PORT`` (a connect = up).
A mistake raises SourceSpecError with a one-line message that names the spec.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from dataclasses import dataclass, field

KINDS = ("pid", "port", "cmd", "docker", "prometheus", "redis", "postgres", "health", "tcp")
# One service gets at most one of these: each writes the process metrics (mem_*, cpu_percent, ...). A docker source
# may sit beside one of the others (the container and the process inside it): it then writes only what the container
# alone knows (its working set, its OOM kills), so no metric is written twice.
PROCESS_KINDS = ("pid", "port", "cmd", "docker")
# ... and at most one of these: each writes health_up and health_latency_ms.
HEALTH_KINDS = ("health", "tcp")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_:]*$")
# their_name, their_name{label="value",...}, either optionally followed by =our_name
_MAPPING_ENTRY = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(?:=\s*([A-Za-z_][A-Za-z0-9_]*))?\s*$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class SourceSpecError(ValueError):
    """A bad source spec or service name; the message is one line."""


@dataclass(frozen=True)
class PromSelector:
    """One mapped series of a Prometheus source: samples named ``name`` whose labels include ``labels``, summed."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    metric: str = ""  # our metric name; defaults to name


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    target: str  # pid number or "self", port, regex, container, URL
    text: str  # the spec as written, for messages
    selectors: tuple[PromSelector, ...] = field(default=())  # prometheus only; empty = the default gauges
    all_databases: bool = False  # postgres only
    beside_process: bool = False  # docker only: the service also has a pid/port/cmd source (set by parse_services)


def parse_source(text: str) -> SourceSpec:
    """Parse one spec such as ``port:8001``; raise SourceSpecError naming the spec on any mistake."""
    if not isinstance(text, str):
        raise SourceSpecError(f"source spec {text!r}: expected a string like 'port:8001'")
    kind, sep, target = text.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise SourceSpecError(f"source spec {text!r}: expected KIND:TARGET with KIND one of {', '.join(KINDS)}")
    target = target.strip()
    if not target:
        raise SourceSpecError(f"source spec {text!r}: nothing after '{kind}:'")

    def bad(why: str) -> SourceSpecError:
        return SourceSpecError(f"source spec {text!r}: {why}")

    if kind == "pid":
        if target != "self" and not (target.isdigit() and int(target) > 0):
            raise bad("expected a process id (a whole number above 0) or 'self'")
        return SourceSpec(kind, target, text)
    if kind == "port":
        if not target.isdigit() or not 0 < int(target) < 65536:
            raise bad("expected a TCP port between 1 and 65535")
        return SourceSpec(kind, str(int(target)), text)
    if kind == "cmd":
        try:
            re.compile(target)
        except re.error as exc:
            raise bad(f"not a valid regular expression: {exc}") from None
        return SourceSpec(kind, target, text)
    if kind == "docker":
        if any(ch.isspace() for ch in target):
            raise bad("expected a container name or id")
        return SourceSpec(kind, target, text)
    if kind == "prometheus":
        url, _, fragment = target.partition("#")
        if not re.match(r"^https?://[^/\s]+", url):
            raise bad("expected an http:// or https:// URL of a /metrics page")
        return SourceSpec(kind, url, text, selectors=_parse_mapping(fragment, bad) if fragment else ())
    if kind == "redis":
        if not re.match(r"^(rediss?|unix)://", target):
            raise bad("expected a redis://, rediss:// or unix:// URL")
        return SourceSpec(kind, target, text)
    if kind == "health":
        if not re.match(r"^https?://[^/\s]+", target) or any(ch.isspace() for ch in target):
            raise bad("expected an http:// or https:// URL of a health page, e.g. health:http://127.0.0.1:8001/health")
        try:
            urllib.parse.urlsplit(target).port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise bad(str(exc)) from None
        return SourceSpec(kind, target, text)
    if kind == "tcp":
        host, port = split_host_port(target)
        if not host or any(ch.isspace() for ch in host):
            raise bad("expected HOST:PORT, e.g. tcp:127.0.0.1:6379")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise bad("expected a TCP port between 1 and 65535 after the host")
        return SourceSpec(kind, target, text)
    url, _, fragment = target.partition("#")
    if not re.match(r"^postgres(ql)?(\+\w+)?://", url):
        raise bad("expected a postgresql:// URL")
    if fragment not in ("", "all"):
        raise bad(f"unknown option '#{fragment}' (known: '#all' counts connections to every database)")
    return SourceSpec(kind, url, text, all_databases=fragment == "all")


def split_host_port(target: str) -> tuple[str, str]:
    """``127.0.0.1:6379`` -> ("127.0.0.1", "6379"); ``[::1]:6379`` -> ("::1", "6379")."""
    host, _, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.strip(), port.strip()


def _parse_mapping(fragment: str, bad) -> tuple[PromSelector, ...]:
    """``a=ours,b{job="x"}=other,c`` -> selectors; commas inside {...} belong to the labels."""
    entries, depth, start = [], 0, 0
    for i, ch in enumerate(fragment):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            entries.append(fragment[start:i])
            start = i + 1
    entries.append(fragment[start:])
    selectors = []
    for entry in entries:
        if not entry.strip():
            continue
        match = _MAPPING_ENTRY.match(entry)
        if not match:
            raise bad(f'mapping entry {entry.strip()!r}: expected their_name[{{label="value"}}][=our_name]')
        name, label_text, ours = match.groups()
        labels = []
        if label_text:
            body = label_text[1:-1]
            pos = 0
            while pos < len(body.rstrip()):
                label = _LABEL.match(body, pos)
                if not label:
                    raise bad(f'mapping entry {entry.strip()!r}: labels must look like {{name="value",...}}')
                labels.append((label.group(1), label.group(2).replace('\\"', '"').replace("\\\\", "\\")))
                pos = label.end()
        selectors.append(PromSelector(name, tuple(sorted(labels)), ours or name.replace(":", "_")))
    if not selectors:
        raise bad("empty mapping after '#'")
    return tuple(selectors)


def parse_services(services: dict[str, str | list[str] | tuple[str, ...]]) -> dict[str, list[SourceSpec]]:
    """Validate service names and their specs: ``{"backend": ["port:8001", ...]}`` -> parsed specs."""
    out: dict[str, list[SourceSpec]] = {}
    for service, specs in services.items():
        if not isinstance(service, str) or not SERVICE_NAME.match(service):
            raise SourceSpecError(f"service name {service!r}: use letters, digits, '_', '-' or '.' only")
        if isinstance(specs, str):
            specs = [specs]
        if not specs:
            raise SourceSpecError(f"service {service!r}: no source spec given")
        parsed = []
        for text in specs:
            try:
                parsed.append(parse_source(text))
            except SourceSpecError as exc:
                raise SourceSpecError(f"service {service!r}: {exc}") from None
        for group in ([k for k in PROCESS_KINDS if k != "docker"], ["docker"]):
            process_like = [spec.text for spec in parsed if spec.kind in group]
            if len(process_like) > 1:
                raise SourceSpecError(
                    f"service {service!r}: {' and '.join(process_like)} would both write its process metrics; keep one"
                )
        if {"docker"} < {spec.kind for spec in parsed if spec.kind in PROCESS_KINDS}:
            parsed = [dataclasses.replace(s, beside_process=True) if s.kind == "docker" else s for s in parsed]
        for kind in ("redis", "postgres"):
            if sum(spec.kind == kind for spec in parsed) > 1:
                raise SourceSpecError(f"service {service!r}: more than one {kind} source; give each its own service")
        health = [spec.text for spec in parsed if spec.kind in HEALTH_KINDS]
        if len(health) > 1:
            raise SourceSpecError(f"service {service!r}: {' and '.join(health)} would both write its health; keep one")
        out[service] = parsed
    if not out:
        raise SourceSpecError("no services to sample")
    return out
