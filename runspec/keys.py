"""Every scenario key: its type, default and one line of documentation, in one table per scenario table.

``runspec.scenario`` loads and checks scenarios against these tables; ``sut.config`` builds the sut's settings,
flags and ``SUT_*`` variables from ``SUT_SCHEMA``; ``locustfiles`` reads its users' defaults from ``USER_SCHEMA``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
USER_CLASSES = (
    "ChattingUser",
    "MultiTabUser",
    "UploadingUser",
    "RateLimitedUser",
    "ReconnectingUser",
    "SseChattingUser",
)
SHAPE_KINDS = ("steady", "step", "spike", "wave")
FAULT_KINDS = ("kill", "restart", "cut", "slow", "pause")
SUT_RUNTIMES = ("process", "docker")
CUT_MODES = ("blackhole", "reset")
ARRIVAL_JUDGES = ("intended", "actual")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a scenario name becomes a folder name
# "1h30m", "90s", "90", "250ms", "1s500ms"; 'm' followed by 's' is milliseconds, not minutes
DURATION_PATTERN = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*(?:(\d+(?:\.\d+)?)(?:s|(?=\s*$)))?\s*"
    r"(?:(\d+(?:\.\d+)?)ms)?\s*$"
)


@dataclass(frozen=True)
class Key:
    """One scenario key. ``positive``: must be above 0 (numbers are always finite and never negative)."""

    kind: str  # str bool int float duration int_list str_list table float_table services latency_list
    default: Any
    doc: str
    positive: bool = False
    choices: tuple[str, ...] = ()


# A dict value is a nested table; USER_SCHEMA applies to every [users.<Class>] table.
USER_SCHEMA: dict[str, Key] = {
    "weight": Key("int", 0, "relative share of the users of this class; 0 = not run"),
    "wait_min": Key("duration", 1.0, "shortest pause between a user's tasks"),
    "wait_max": Key("duration", 3.0, "longest pause between a user's tasks"),
    "event_timeout": Key("duration", 10.0, "how long to wait for a server event before it counts as missing", True),
    "tabs": Key("int", 3, "MultiTabUser: connections per user", True),
    "reopen_every": Key("int", 10, "MultiTabUser: close and reopen a tab every N messages", True),
    "sizes": Key("int_list", [1024, 65536, 5 * 1024 * 1024], "UploadingUser: file sizes in bytes"),
    "burst": Key("int", 0, "RateLimitedUser: messages per burst; 0 = the limit + 1"),
    "drop_every": Key("int", 3, "ReconnectingUser: drop the connection every N messages", True),
    "heartbeat_interval": Key("duration", 2.5, "ping after this long without a frame from the server; 0 = none"),
    "heartbeat_timeout": Key("duration", 2.5, "no frame this long after a ping: the connection is dead", True),
    "reconnect_base": Key("duration", 0.5, "first reconnect delay; doubles per attempt, with jitter", True),
    "reconnect_cap": Key("duration", 8.0, "longest delay between reconnect attempts", True),
    "reconnect_attempts": Key("int", 8, "attempts per outage before the user gives up until its next task", True),
    "token_stall": Key("duration", 0.25, "a gap between two streamed tokens longer than this is a stall", True),
}

SUT_SCHEMA: dict[str, Key] = {
    "redis_url": Key(
        "str", "", "Redis URL for rate limits and the backend<->agent bus; '' = in-process, 'env' = $REDIS_URL"
    ),
    "database_url": Key("str", "", "SQLAlchemy URL (postgresql+psycopg://...); '' = SQLite, 'env' = $DATABASE_URL"),
    "access_token_ttl": Key("duration", 900.0, "access token lifetime", True),
    "rate_limit": Key("int", 5, "free tier: chat messages per window; 0 = unlimited"),
    "rate_window": Key("duration", 60.0, "rate limit window", True),
    "agent_step": Key("duration", 0.02, "time per agent step (five steps per message)"),
    "upload_max_bytes": Key("int", 10 * 1024 * 1024, "largest upload accepted; above it 413", True),
    "db_pool_size": Key("int", 5, "SQLAlchemy pool size", True),
    "db_max_overflow": Key("int", 10, "SQLAlchemy pool max overflow"),
    "leak_bytes_per_message": Key("int", 0, "FAULT: keep this many written bytes per chat message forever"),
    "leak_connections": Key("bool", False, "FAULT: keep the state of closed WebSocket connections"),
    "leak_pool": Key("bool", False, "FAULT: check out a DB connection per request and never return it"),
    "rest_latency": Key("duration", 0.0, "FAULT: time added to every REST call"),
    "agent_latency": Key("duration", 0.0, "FAULT: time added to the agent's first step (startup)"),
    "cross_talk": Key("bool", False, "FAULT: also push each event to another user's connections"),
    "drop_replay": Key("bool", False, "FAULT: keep no replay buffer: a reconnect with last_event_id gets nothing back"),
    "skip_dedup": Key("bool", False, "FAULT: handle a resent message (same client id) again instead of once"),
    "agent_tokens": Key("int", 0, "tokens the agent streams per reply (agent_token events); 0 = no streaming"),
    "agent_token_interval": Key("duration", 0.005, "mean time between two streamed tokens"),
    "agent_token_jitter": Key("duration", 0.002, "each token's delay varies uniformly by up to this much"),
    "stall_tokens_every": Key("int", 0, "FAULT: stall the token stream for stall_for after every N tokens"),
    "stall_for": Key("duration", 0.2, "the stall_tokens_every fault's gap"),
    "drop_token_every": Key(
        "int", 0, "FAULT: leave out one streamed token after every N (its sequence number is skipped)"
    ),
    "repeat_token_every": Key("int", 0, "FAULT: send one streamed token twice after every N (same sequence number)"),
    "freeze_for": Key("duration", 0.0, "FAULT: the backend's event loop is blocked this long every freeze_every"),
    "freeze_every": Key("duration", 10.0, "the freeze_for fault's period", True),
    "supervise": Key("bool", False, "restart a service that dies, as an orchestrator would (restarts are counted)"),
    "runtime": Key(
        "str",
        "process",
        "process: each service an OS process; docker: each in a container of a Docker engine",
        choices=SUT_RUNTIMES,
    ),
    "auth_memory_mb": Key("int", 0, "runtime docker: the auth container's memory limit in MB (2**20 bytes); 0 = none"),
    "backend_memory_mb": Key("int", 0, "runtime docker: the backend container's memory limit in MB; 0 = none"),
    "agent_memory_mb": Key("int", 0, "runtime docker: the agent container's memory limit in MB; 0 = none"),
}
# The [sut] keys that inject a fault: a run with any of them on says so in events.csv and the report.
FAULT_SWITCHES = tuple(name for name, key in SUT_SCHEMA.items() if key.doc.startswith("FAULT:"))

DEFAULT_LATENCY_TARGETS = [
    {"name": "api", "percentile": 95.0, "max_ms": 100.0},
    {"name": "ws round trip", "percentile": 95.0, "max_ms": 50.0},
    {"name": "agent startup", "percentile": 95.0, "max_ms": 500.0},
    # streamed replies (a run whose replies stream no tokens leaves these two out: nothing to judge)
    {"name": "time to first token", "percentile": 95.0, "max_ms": 500.0},
    {"name": "token gap", "percentile": 95.0, "max_ms": 50.0},
]

from runspec.protocol import PROTOCOL_SCHEMA  # noqa: E402 - it needs Key, defined above

SCHEMA: dict[str, Any] = {
    "name": Key("str", "", "the run's name (a folder name: letters, digits, '.', '_', '-'); default: the file's stem"),
    "description": Key("str", "", "one line shown in the report"),
    "run": Key("table", {}, "as-run metadata written by the runner (host, versions, sut urls); free-form"),
    "target": {
        "host": Key("str", "", "backend base URL; empty = start the embedded sut"),
        "auth_host": Key("str", "", "auth base URL; empty = same as host (or the embedded auth service)"),
        "services": Key(
            "services", {}, "service name -> sampler source spec(s), for a target that is not the embedded sut"
        ),
    },
    "sut": SUT_SCHEMA,  # the embedded sut's options (ignored when target.host is set)
    "users": "users",
    "protocol": PROTOCOL_SCHEMA,  # how the target spells the contract (runspec/protocol.py)
    "shape": {
        "kind": Key("str", "steady", "steady, step, spike or wave", choices=SHAPE_KINDS),
        "users": Key("int", 10, "users (the crest of a wave)", True),
        "spawn_rate": Key("float", 2.0, "users started per second", True),
        "duration": Key("duration", 120.0, "how long load runs; the drain follows", True),
        "step_users": Key("int", 5, "step: users added per step", True),
        "step_every": Key("duration", 60.0, "step: time between steps", True),
        "spike_users": Key("int", 50, "spike: users during the spike", True),
        "spike_at": Key("duration", 60.0, "spike: when it starts"),
        "spike_for": Key("duration", 30.0, "spike: how long it lasts", True),
        "min_users": Key("int", 2, "wave: users at the trough"),
        "period": Key("duration", 86400.0, "wave: one full cycle ...", True),
        "time_scale": Key("float", 1.0, "... compressed by this factor (24.0 = a day in an hour)", True),
    },
    "phases": {
        "warmup": Key("duration", 30.0, "excluded from latency and leak verdicts"),
        "drain": Key("duration", 30.0, "sampling goes on after load stops, for the drain check"),
    },
    "health": {
        "start_timeout": Key("duration", 60.0, "every target service must answer its health check within this", True),
        "interval": Key("duration", 1.0, "health checks during the run: health_up and health_latency_ms", True),
        "down_max": Key(
            "duration", 30.0, "a service down longer than this stops the load: the run is incomplete", True
        ),
    },
    "sampler": {
        "interval": Key("duration", 1.0, "time between samples", True),
        "uss_interval": Key("duration", 0.0, "time between USS readings; 0 = off (it costs ms per process)"),
    },
    "locust": {
        "processes": Key("int", 0, "> 0: Locust --processes N"),
        "stop_timeout": Key("duration", 10.0, "how long users may finish their task when the load stops"),
    },
    "targets": {
        "error_rate_max": Key("float", 0.01, "largest share of failed requests"),
        "latency": Key(
            "latency_list",
            DEFAULT_LATENCY_TARGETS,
            "[[targets.latency]] name, percentile, max_ms; name 'api' = every HTTP request",
        ),
    },
    "faults": Key(
        "fault_list", [], "[[faults]] at, every, kind (kill restart cut slow pause), service, for, mode, to, latency"
    ),
    "arrival": {
        "rate": Key(
            "float",
            0.0,
            "open model: chat messages per second over all users and workers, sent on schedule whether or not "
            "replies came; 0 = closed model (each user waits for its reply)",
        ),
        "rest_rate": Key(
            "float",
            0.0,
            "open model: REST calls (a thread's history) per second over all users and workers, on a schedule of "
            "their own; 0 = none beyond the closed model's",
        ),
        "max_in_flight": Key(
            "int", 4, "open model: messages (and REST calls) one user may have waiting for their reply", True
        ),
        "max_late": Key(
            "duration", 1.0, "open model: a send this late against its intended time is dropped and counted", True
        ),
        "judge": Key(
            "str",
            "intended",
            "open model: the round trip the targets judge: from the intended send time or from the actual send",
            choices=ARRIVAL_JUDGES,
        ),
    },
    "generator": {
        "cpu_max": Key("float", 90.0, "a Locust process busier than this % of one core is saturated", True),
        "late_p99_ms": Key(
            "float", 20.0, "open model: sends later than this (p99 of a 10 s interval) fell behind", True
        ),
        "gc_pause_max_ms": Key(
            "float", 20.0, "a pause of the load generator's garbage collector longer than this", True
        ),
        "hub_blocked_max_percent": Key(
            "float",
            5.0,
            "the gevent hub blocked (its wake-ups over 10 ms late, summed) over this % of an interval",
            True,
        ),
        "hub_lag_max_ms": Key(
            "float", 20.0, "a wake-up of the gevent hub this late labels a slow window as the generator's", True
        ),
        "share_max": Key(
            "float",
            0.05,
            "the run is invalid when the generator was over one of these limits in more than this share of the "
            "judged load period",
        ),
    },
    "recovery": {
        "time_max": Key(
            "duration", 30.0, "after a fault ends, each user's first good round trip within this (p95)", True
        ),
    },
    "leaks": {
        "memory_mb_per_hour": Key("float", 1.0, "mem_* metrics: largest growth per service (MB = 2**20 bytes)"),
        "count_per_hour": Key("float", 0.0, "count gauges while load runs; 0 = judged by the drain check only"),
        "drain_tolerance": Key("float", 0.0, "count gauges: allowed level after drain minus level before load"),
        "count_steps": Key(
            "float", 3.0, "count gauges without a baseline: a floor up this many steps under load that stays is a leak"
        ),
        "late": Key("bool", True, "also judge the stretch since growth began: a leak that starts late in the run"),
        "early_every": Key(
            "duration",
            300.0,
            "how often the early verdict looks at the samples so far (progress line, web UI); 0 = off",
        ),
        "stop_on_confirmed": Key(
            "bool", False, "stop the load once the early verdict confirms a leak: the run is decided (failed)"
        ),
        "metrics": Key("float_table", {}, "per-metric threshold per hour, overrides the above"),
        "ignore": Key("str_list", [], "'service:metric' or 'service:*' left out of the verdict"),
    },
}


FAULT_SCHEMA: dict[str, Key] = {
    "at": Key("duration", 0.0, "when the first one starts, from load start"),
    "every": Key("duration", 0.0, "repeat this often until the load ends; 0 = once"),
    "kind": Key(
        "str",
        "",
        "kill (SIGKILL), restart (SIGTERM, start again), cut (the network), slow (added latency), "
        "pause (every process of the service frozen: docker pause, or SIGSTOP for a process)",
        choices=FAULT_KINDS,
    ),
    "service": Key("str", "", "the service it hits (auth, backend, agent, or a [target.services] name)"),
    "for": Key("duration", 0.0, "cut, slow, pause: how long it lasts"),
    "mode": Key(
        "str", "blackhole", "cut: blackhole (packets dropped) or reset (connections refused)", choices=CUT_MODES
    ),
    "to": Key("str", "", "cut, slow: '' = the service's own port; 'redis' or 'postgres' = its connections to them"),
    "latency": Key("duration", 0.0, "slow: time added to each packet's way through the proxy"),
}
