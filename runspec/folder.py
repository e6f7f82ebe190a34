"""The run folder: ``reports/<YYYYmmdd-HHMMSS>-<scenario>/``, the one interface between the parts.

File names, CSV columns, event names, the order of the run's phases, the run statuses and their exit codes.
"""

from __future__ import annotations

# --- files --------------------------------------------------------------------------------------------------
SCENARIO = "scenario.toml"  # the resolved scenario, as run
SAMPLES = "samples.csv"  # ts,service,metric,value: appended and flushed as sampled
EVENTS = "events.csv"  # ts,event,detail
LATENCY = "latency.csv"  # exact timings per interval: ts,type,name,ms,count
VERDICT = "verdict.json"
RUNTIME = "runtime.json"  # where each service ran (process or container, limits, engine): runner writes, report reads
EARLY = "early.json"  # the early leak verdict's latest look during a run: soak/early.py writes, the web UI reads
JUNIT = "junit.xml"
REPORT = "report.html"
LOCUST_CSV_PREFIX = "locust"  # Locust's --csv prefix: locust_stats.csv, locust_stats_history.csv, ...
LOCUST_STATS = "locust_stats.csv"
LOCUST_HISTORY = "locust_stats_history.csv"
LOCUST_FAILURES = "locust_failures.csv"
LOCUST_HTML = "locust_report.html"
LOCUST_LOG = "locust.log"

# --- columns ------------------------------------------------------------------------------------------------
SAMPLES_COLUMNS = ("ts", "service", "metric", "value")
EVENTS_COLUMNS = ("ts", "event", "detail")
LATENCY_COLUMNS = ("ts", "type", "name", "ms", "count")
SAMPLES_HEADER = ",".join(SAMPLES_COLUMNS) + "\n"
EVENTS_HEADER = ",".join(EVENTS_COLUMNS) + "\n"
LATENCY_HEADER = ",".join(LATENCY_COLUMNS) + "\n"

# --- events -------------------------------------------------------------------------------------------------
LOAD_START = "load_start"
WARMUP_END = "warmup_end"
LOAD_STOP = "load_stop"
DRAIN_END = "drain_end"
PHASES = (LOAD_START, WARMUP_END, LOAD_STOP, DRAIN_END)  # in this order, each once per run
INTERRUPTED = "interrupted"  # SIGINT/SIGTERM: detail = the signal's name
FAULT = "fault"  # a fault switch of the embedded sut that is on for the whole run: detail = key=value
FAULT_START = "fault_start"  # a scheduled fault begins: detail = kind service detail
FAULT_END = "fault_end"
SERVICE_DOWN = "service_down"  # a sampled process is gone, or its health check fails: detail = service (why)
SERVICE_UP = "service_up"  # it answers again
SERVICE_RESTART = "service_restart"  # a sampled service came back as a new process
OOM_KILLED = "oom_killed"  # the kernel's OOM killer ended a service at its memory limit: detail = service: why
LOAD_GENERATOR_GONE = "load_generator_gone"  # Locust died before its end: detail = exit code
STOPPED_EARLY = "stopped_early"  # the runner stopped the load before its end: detail = why
LEAK_CONFIRMED = (
    "leak_confirmed"  # the early verdict confirmed a leak while the run went on: detail = "service metric: why"
)
STOPPED_DECIDED = "stopped_decided"  # leaks.stop_on_confirmed stopped the load: the outcome was decided (failed)

# --- request names the users report through Locust and the analysis reads back (locust_stats.csv, latency.csv) ---
WS_OUTAGE = "ws outage"  # failure: a user noticed an outage; the message is the cause (close code, exception)
WS_RECOVERY = "ws recovery"  # success: outage noticed -> first pong on a new connection; failure: gave up
WS_RECONNECT = "ws reconnect"  # each reconnect handshake (a failure is not a user left hanging)
WS_RESEND = "ws resend"  # a message resent with its client id, timed from its first send
LEDGER_COMPLETE = "ledger complete"  # success: a message whose reply sequence came whole
LEDGER_LOST = "ledger lost"  # failures: the delivery ledger's verdicts
LEDGER_DUPLICATE = "ledger duplicate"
LEDGER_ORDER = "ledger order"
# open model ([arrival] rate): the schedule's own figures, and the round trip the targets do not judge
SEND_LATENESS = "send lateness"  # each send: how late it left against its intended time
SEND_DROPPED = "send dropped"  # a send later than arrival.max_late: not sent; its lateness, so a count and how late
REST_SCHEDULE_TYPE = "HTTP"  # request type of the REST schedule's lateness and drops; the messages' are WS
FROM_SEND = " (from send)"  # suffix: the round trip timed from the actual send (arrival.judge = intended)
FROM_INTENDED = " (from intended)"  # suffix: the round trip timed from the intended time (arrival.judge = actual)

# --- statuses and exit codes --------------------------------------------------------------------------------
PASSED = "passed"
FAILED = "failed"
INCOMPLETE = "incomplete"  # the run did not go to its end: interrupted, killed, a service lost, Locust gone
INVALID = "invalid"  # the load generator could not keep its schedule: the figures do not describe the target
STATUSES = (PASSED, FAILED, INCOMPLETE, INVALID)
EXIT_CODES = {PASSED: 0, FAILED: 1, INCOMPLETE: 3, INVALID: 4}
EXIT_BAD_INPUT = 2


def exit_code(status: str) -> int:
    """The process exit code of a run status: 0 passed, 1 failed, 3 incomplete, 4 invalid (2 is bad input)."""
    return EXIT_CODES[status]
