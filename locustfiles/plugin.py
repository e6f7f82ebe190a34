"""The Locust glue: command-line options, scenario settings, the timing record and the load generator's GC.

Where things run: requests are recorded where users run (a local runner or each worker). Workers hand their counts
to the master with every report; the master (or the local runner) writes ``latency.csv`` and the ``locust`` rows of
``samples.csv`` as intervals close, and everything left when Locust quits (after SIGINT or SIGTERM too).
``samples.csv`` has one writer everywhere (sampler.writer.SampleWriter: one O_APPEND write per batch, shared with
a sampler that writes the same file).
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import time
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner
from locust.user.task import TaskSet

from locustfiles import gcwatch, hubwatch, options, timings, tokentab, userclasses
from runspec import ScenarioError, folder
from sampler.writer import SampleWriter

FLUSH_EVERY = 2.0  # seconds between checks for closed intervals
MASTER_GRACE = 7.0  # workers report every 3 s: wait two reports before writing an interval
LOCAL_GRACE = 1.0
FREEZE_AFTER = 5.0  # seconds after spawning completes: time for the users' on_start (login, connect)
REPORT_KEY_TIMINGS = "soak_timings"
REPORT_KEY_GC = "soak_gc"
REPORT_KEY_HUB = "soak_hub"

logger = logging.getLogger(__name__)
record = timings.TimingRecord()
# Every user's wait_time sleep (TaskSet.wait -> TaskSet._sleep, which is gevent.sleep): see gcwatch.sleep.
if not callable(getattr(TaskSet, "_sleep", None)):
    raise ImportError("locust.user.task.TaskSet._sleep is gone: locustfiles/plugin.py needs this Locust's sleep hook")
TaskSet._sleep = lambda _taskset, seconds: gcwatch.sleep(seconds)
# A Locust that does not stop is killed by the runner after SIGUSR1: this prints where every thread is (the greenlet
# running, or the hub waiting) to stderr, which is locust.log, from a C handler that works even when Python is stuck.
faulthandler.register(signal.SIGUSR1, all_threads=True)
gc_pauses = gcwatch.GcPauses()
hub = hubwatch.HubWatch()
live_tokens = tokentab.LiveTokens()  # the web UI's Tokens tab, where there is a web UI (webui.py)
_state: dict[str, Any] = {"flusher": None, "writes": False, "grace": LOCAL_GRACE, "samples": None, "live": False}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    options.add_arguments(parser)


def _on_request(request_type: str, name: str, response_time: float | None, exception: Any, **_kwargs: Any) -> None:
    if exception is None and response_time is not None:
        record.add(request_type, name, response_time, time.time())


def keep_record(environment: Any) -> None:
    """This process keeps the exact timing record: HTTP requests through their event, WS timings through the sink."""
    environment.events.request.add_listener(_on_request)
    timings.SINK = record.add


def _on_report_to_master(client_id: str, data: dict, **_kwargs: Any) -> None:
    data[REPORT_KEY_TIMINGS] = record.take_all()
    data[REPORT_KEY_GC] = gc_pauses.take_report()
    data[REPORT_KEY_HUB] = hub.take_report()


def _on_worker_report(client_id: str, data: dict, **_kwargs: Any) -> None:
    rows = data.get(REPORT_KEY_TIMINGS) or []
    record.merge(rows)
    if _state["live"]:
        live_tokens.merge(rows, time.time())
    gc_pauses.merge(data.get(REPORT_KEY_GC) or [])
    hub.merge(data.get(REPORT_KEY_HUB) or [])


def _live_sink(record_sink: timings.Sink | None) -> timings.Sink:
    """The timings that are no requests (token gaps) for the Tokens tab too, besides the record if it keeps them."""

    def sink(request_type: str, name: str, ms: float, now: float, count: int) -> None:
        if record_sink is not None:
            record_sink(request_type, name, ms, now, count)
        if name in tokentab.NAMES:
            live_tokens.add(name, ms, now, count)

    return sink


def _show_tokens(environment: Any, local: bool) -> None:
    """A web UI's Tokens tab is fed here: a local runner's timings as they come, a master's from worker reports."""
    _state["live"] = True
    environment.events.test_start.add_listener(lambda **_kw: live_tokens.reset())  # as Locust's stats: per test
    environment.events.reset_stats.add_listener(lambda **_kw: live_tokens.reset())
    if local:  # every WS timing (time to first token included) reaches the sink: see locustfiles/reporting.py
        timings.SINK = _live_sink(timings.SINK)


def _on_spawning_complete(user_count: int, **_kwargs: Any) -> None:
    # What the users hold once they have started (logged in, connected) lives long: out of the collector's sight,
    # full collections stay short. on_start still runs when spawning completes, hence the delay.
    gevent.spawn_later(FREEZE_AFTER, _freeze, user_count)


def _freeze(user_count: int) -> None:
    if gc_pauses.freeze():
        logger.debug("gc.freeze() after spawning %s users", user_count)


def flush(final: bool = False) -> None:
    """Write closed intervals (all intervals when ``final``) to the run folder."""
    run_dir = options.current.run_dir
    if not _state["writes"] or run_dir is None:
        return
    now = time.time()
    if final:
        latency_rows, gc_rows, hub_rows = record.take_all(), gc_pauses.take_all(), hub.take_all()
    else:
        gc_pauses.touch(now)
        latency_rows = record.take_closed(now, _state["grace"])
        gc_rows = gc_pauses.take_closed(now, _state["grace"])
        hub_rows = hub.take_closed(now, _state["grace"])
    try:
        timings.append_rows(run_dir / folder.LATENCY, timings.HEADER, latency_rows)
        samples = gcwatch.sample_rows(gc_rows) + hubwatch.sample_rows(hub_rows)
        if samples:
            if _state["samples"] is None:  # opened at the first rows: a run without any leaves no empty file
                _state["samples"] = SampleWriter(run_dir / folder.SAMPLES)
            _state["samples"].write(samples)
    except OSError as exc:
        logger.error("cannot write to %s: %s", run_dir, exc)


def _close_samples() -> None:
    writer, _state["samples"] = _state["samples"], None
    if writer is not None:
        try:
            writer.close()
        except OSError as exc:
            logger.error("cannot close %s: %s", writer.path, exc)


def _flush_loop() -> None:
    while True:
        gevent.sleep(FLUSH_EVERY)
        flush()


def _on_quitting(**_kwargs: Any) -> None:
    flush(final=True)


def _on_quit(**_kwargs: Any) -> None:
    # After runner.quit(): users' on_stop ran and the workers' last reports arrived.
    hub.stop()
    flush(final=True)
    _close_samples()
    flusher = _state["flusher"]
    if flusher is not None:
        flusher.kill(block=False)


def _on_test_start(environment: Any, **_kwargs: Any) -> None:
    # A remote worker learns the master's custom options only now (they come with the first spawn message).
    if isinstance(environment.runner, WorkerRunner):
        settings = options.apply(environment.parsed_options)
        userclasses.configure(environment, settings, drop_unweighted=False)


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    settings = options.apply(environment.parsed_options)
    runner = environment.runner
    is_worker = isinstance(runner, WorkerRunner)
    is_master = isinstance(runner, MasterRunner)
    try:
        userclasses.configure(environment, settings, drop_unweighted=not is_worker)
    except ScenarioError as exc:
        options.exit_with(str(exc))
    environment.events.test_start.add_listener(_on_test_start)
    if not is_master:
        environment.events.spawning_complete.add_listener(_on_spawning_complete)
        if is_worker or settings.run_dir is not None:  # recorded only where it will be written
            keep_record(environment)
            gc_pauses.install()
            hub.start()
    if is_worker:
        environment.events.report_to_master.add_listener(_on_report_to_master)
        return
    if environment.web_ui is not None:
        _show_tokens(environment, local=not is_master)
    if is_master:
        environment.events.worker_report.add_listener(_on_worker_report)
        _state["grace"] = MASTER_GRACE
    if settings.run_dir is not None:
        _state["writes"] = True
        _state["flusher"] = gevent.spawn(_flush_loop)
        environment.events.quitting.add_listener(_on_quitting)
        environment.events.quit.add_listener(_on_quit)
