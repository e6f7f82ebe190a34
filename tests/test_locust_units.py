"""The pure parts of locustfiles/: rounding and merging of the timing record, GC rows, shapes, scenario options,
and the event checks of the WebSocket client fed with events as the server would send them.

Importing locustfiles imports Locust (gevent monkey-patching): these tests run in their own pytest process.
"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.locust_inprocess


class Recorder:
    """Stands in for Locust's environment: collects what the client fires (name, ms, error message)."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, float | None, str | None]] = []
        self.events = SimpleNamespace(request=SimpleNamespace(fire=self.fire))

    def fire(self, request_type, name, response_time, response_length, exception, context):  # noqa: ANN001
        self.fired.append((name, response_time, None if exception is None else str(exception)))

    def names(self, ok: bool | None = None) -> list[str]:
        return [n for n, _, err in self.fired if ok is None or (err is None) == ok]

    def errors(self) -> list[str]:
        return [f"{n}: {err}" for n, _, err in self.fired if err is not None]


@pytest.fixture
def env():
    return Recorder()


def chat_exchange(env, message_id="m1", **kwargs):
    from locustfiles.exchange import CHAT_NAMES, CHAT_STEPS, Exchange, Inbox, Reporter

    inbox = Inbox(Reporter(env))
    exchange = Exchange(message_id, CHAT_STEPS, CHAT_NAMES, Reporter(env), **kwargs)
    inbox.expect(exchange)
    return inbox, exchange


def feed(inbox, types, reply_to="m1", first_id=100, now=1.0):
    for i, etype in enumerate(types):
        inbox.handle({"type": etype, "reply_to": reply_to, "event_id": first_id + i}, now + i)


# --- the timing record


def test_round_ms_keeps_three_significant_digits():
    from locustfiles.timings import round_ms

    assert round_ms(41.237) == 41.2
    assert round_ms(1234.5) == 1230.0
    assert round_ms(0.012345) == 0.0123
    assert round_ms(250.4) == 250.0
    assert round_ms(99.96) == 100.0
    assert round_ms(0.0) == 0.0
    assert round_ms(-3.0) == 0.0


def test_record_intervals_merge_and_write(tmp_path):
    from locustfiles.timings import HEADER, TimingRecord, append_rows

    worker_a, worker_b, master = TimingRecord(), TimingRecord(), TimingRecord()
    worker_a.add("WS", "ws round trip", 41.237, now=1005.0)
    worker_a.add("WS", "ws round trip", 41.24, now=1009.9)  # same rounded value, same interval: one key
    worker_b.add("WS", "ws round trip", 41.2, now=1001.0)
    worker_b.add("GET", "GET /api/threads", 1234.5, now=1011.0)  # next interval
    master.merge(worker_a.take_all())
    master.merge(worker_b.take_all())
    assert worker_a.intervals == {} and worker_b.intervals == {}

    assert master.take_closed(now=1015.0, grace=5.0) == [[1000, "WS", "ws round trip", 41.2, 3]]
    assert master.take_closed(now=1015.0, grace=5.0) == []  # 1010-1020 still open
    append_rows(tmp_path / "latency.csv", HEADER, [[1000, "WS", "ws round trip", 41.2, 3]])
    append_rows(tmp_path / "latency.csv", HEADER, master.take_all())
    with open(tmp_path / "latency.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [
        list(HEADER),
        ["1000", "WS", "ws round trip", "41.2", "3"],
        ["1010", "GET", "GET /api/threads", "1230", "1"],
    ]


def test_a_recovery_keeps_the_second_it_completed_in_while_other_timings_keep_ten():
    from locustfiles.timings import TimingRecord

    worker, master = TimingRecord(), TimingRecord()
    worker.add("WS", "ws round trip", 5.0, now=1003.7)
    worker.add("WS", "ws recovery", 2500.0, now=1003.7)
    worker.add("WS", "ws round trip", 5.0, now=1007.2)  # the interval's cache still serves the 10 s rows
    worker.add("WS", "ws recovery", 2500.0, now=1007.2)
    master.merge(worker.take_all())
    # a second's group is written as late as an interval starting then would be: never before its data is in
    assert master.take_closed(now=1018.5, grace=5.0) == [
        [1000, "WS", "ws round trip", 5.0, 2],
        [1003, "WS", "ws recovery", 2500.0, 1],
    ]
    assert master.take_all() == [[1007, "WS", "ws recovery", 2500.0, 1]]


def test_record_is_bounded_by_distinct_values_not_requests():
    from locustfiles.timings import TimingRecord

    record = TimingRecord()
    for i in range(20_000):
        record.add("WS", "ws round trip", 40.0 + (i % 50) / 10, now=2000.0)
    assert len(record.intervals[2000]) == 50
    assert sum(row[4] for row in record.take_all()) == 20_000


# --- the load generator's GC


def test_gc_rows_merge_max_and_sum_one_row_per_interval():
    from locustfiles.gcwatch import GcPauses, sample_rows

    worker_a, worker_b, master = GcPauses(), GcPauses(), GcPauses()
    worker_a.add(1003.0, 5.0)
    worker_a.add(1004.0, 12.0)
    worker_b.add(1008.0, 7.0)
    master.merge(worker_a.take_report())
    master.merge(worker_b.take_report())
    written = master.take_closed(now=1020.0, grace=1.0)
    assert written == [[1000, 12.0, 24.0, 3]]
    # a late report for a written interval goes to the next one instead of a second row with the same ts
    master.merge([[1000, 30.0, 30.0, 1]])
    master.touch(1021.0)
    rows = master.take_all()
    assert rows == [[1010, 30.0, 30.0, 1], [1020, 0.0, 0.0, 0]]
    assert sample_rows(written)[0] == [1000.0, "locust", "gc_pause_max_ms", 12.0]


def test_gc_pauses_are_timed_from_real_collections():
    import gc

    from locustfiles.gcwatch import GcPauses

    pauses = GcPauses()
    pauses.install()
    try:
        gc.collect()
    finally:
        pauses.uninstall()
    assert sum(values[2] for values in pauses.intervals.values()) >= 1
    assert max(values[0] for values in pauses.intervals.values()) > 0


def test_lean_sleep_sleeps_wakes_on_kill_and_refuses_a_stray_switch():
    import time

    import gevent
    from gevent.exceptions import InvalidSwitchError

    from locustfiles.gcwatch import sleep

    started = time.perf_counter()
    sleep(0.05)
    assert time.perf_counter() - started >= 0.05
    active = gevent.get_hub().loop.activecnt
    sleeper = gevent.spawn(sleep, 30.0)
    gevent.sleep(0.01)
    sleeper.kill(block=True, timeout=1.0)  # as Locust stops a waiting user
    assert sleeper.dead and gevent.get_hub().loop.activecnt == active  # its timer went with it
    stray = gevent.spawn(sleep, 30.0)
    gevent.sleep(0.01)
    gevent.get_hub().loop.run_callback(stray.switch, "not the timer")
    stray.join(timeout=1.0)
    assert isinstance(stray.exception, InvalidSwitchError)


def test_lean_sleep_leaves_the_collector_fewer_objects_than_gevent_sleep():
    """Measured, not assumed: tracked objects alive per sleeping greenlet, over what a greenlet itself holds."""
    import gc

    import gevent

    from locustfiles.gcwatch import sleep

    def alive_per_sleeper(sleeping) -> float:  # noqa: ANN001
        gc.collect()
        before = len(gc.get_objects())
        sleepers = [gevent.spawn(sleeping, 30.0) for _ in range(500)]
        gevent.sleep(0.01)
        gc.collect()
        alive = len(gc.get_objects()) - before
        gevent.killall(sleepers, block=True)
        sleepers.clear()
        gevent.sleep(0.05)  # the hub lets go of the killed greenlets
        return alive / 500

    alive_per_sleeper(gevent.sleep)  # the first spawns allocate what later ones reuse
    lean, gevents = alive_per_sleeper(sleep), alive_per_sleeper(gevent.sleep)
    assert gevents - lean >= 3, (lean, gevents)  # 19 and 16 here: Waiter, tuple, __exit__


# --- shapes


SHAPE = {
    "kind": "steady", "users": 10, "spawn_rate": 2.0, "duration": 3600.0, "step_users": 3, "step_every": 60.0,
    "spike_users": 50, "spike_at": 600.0, "spike_for": 30.0, "min_users": 2, "period": 86400.0, "time_scale": 24.0,
}  # fmt: skip


def test_shapes():
    from locustfiles.shapes import users_at

    assert users_at(SHAPE, 0) == 10 and users_at(SHAPE, 3599) == 10 and users_at(SHAPE, 3600) is None
    step = {**SHAPE, "kind": "step"}
    assert [users_at(step, t) for t in (0, 59, 60, 125, 3000)] == [3, 3, 6, 9, 10]
    spike = {**SHAPE, "kind": "spike"}
    assert [users_at(spike, t) for t in (0, 600, 629, 630)] == [10, 50, 50, 10]
    wave = {**SHAPE, "kind": "wave"}  # a day in an hour: trough at 0, crest at 30 min, trough again at 60 min
    assert users_at(wave, 0) == 2 and users_at(wave, 1800) == 10 and users_at(wave, 900) == 6
    assert users_at({**wave, "duration": 7200.0}, 3600) == 2


# --- options


def test_scenario_defaults_and_errors(tmp_path):
    from locustfiles.options import load_settings
    from runspec import ScenarioError

    default = load_settings("")
    assert default.users["ChattingUser"]["weight"] == 1 and default.run_dir is None
    path = tmp_path / "s.toml"
    path.write_text(
        '[users.MultiTabUser]\nweight = 2\nwait_max = "2m"\n[shape]\nkind = "wave"\n[sut]\nrate_limit = 7\n'
    )
    settings = load_settings(str(path), str(tmp_path / "run"), "http://127.0.0.1:1/")
    assert settings.users["MultiTabUser"]["wait_max"] == 120.0 and settings.users["MultiTabUser"]["tabs"] == 3
    assert settings.shape["kind"] == "wave" and settings.sut["rate_limit"] == 7
    assert settings.auth_host == "http://127.0.0.1:1" and (tmp_path / "run").is_dir()
    path.write_text("[users.ChattingUser]\nweight = 0\n")
    with pytest.raises(ScenarioError, match="weight 0"):
        load_settings(str(path))
    path.write_text("[users.Robot]\nweight = 1\n")
    with pytest.raises(ScenarioError, match=r"users\.Robot: unknown user class"):
        load_settings(str(path))


def test_scenario_is_read_as_everywhere_else(tmp_path):
    from locustfiles.options import load_settings, user_defaults
    from runspec import ScenarioError, load_scenario, resolve

    path = tmp_path / "s.toml"
    path.write_text("[shape]\nusers = 5\nuserz = 6\n")  # an unknown key is refused here too, not skipped
    with pytest.raises(ScenarioError) as here:
        load_settings(str(path))
    with pytest.raises(ScenarioError) as there:
        load_scenario(str(path))
    assert str(here.value) == str(there.value) and str(here.value).startswith(f"{path}: shape.userz: unknown key")
    with pytest.raises(ScenarioError, match=r"^--soak-scenario .*nothing\.toml: no such file$"):
        load_settings(str(tmp_path / "nothing.toml"))
    # the resolved scenario, every default filled in by runspec
    settings = load_settings("")
    assert settings.shape == resolve({})["shape"] and settings.scenario_path == "<defaults>"
    assert settings.sut["rate_limit"] == 5 and settings.user("UploadingUser") == user_defaults()
    assert user_defaults()["weight"] == 0


def test_web_ui_slope_is_the_verdicts_mb():
    import numpy as np

    from analysis import leak_slope
    from locustfiles.servicetab import service_rows
    from runspec.units import MB
    from sampler.trend import Trend
    from soak.progress import memory_slopes

    trend = Trend()
    for i in range(60):  # 4 MiB/h: 4 * 2**20 bytes per hour, sampled every 10 s
        trend.add({("backend", "mem_rss_bytes"): (1_700_000_000.0 + 10 * i, 100 * MB + 4 * MB * i * 10 / 3600)})
    latest = {("backend", "mem_rss_bytes"): (1_700_000_590.0, 104 * MB)}
    row = service_rows(latest, trend, 1_700_000_600.0)[0]
    ts, values = np.array(trend.points("backend", "mem_rss_bytes")).T
    per_hour = leak_slope(ts, values)[0]
    assert row["slope_mb_per_hour"].startswith(f"{per_hour / MB:+.1f} ") and row["slope_mb_per_hour"][:4] == "+4.0"
    assert f"{memory_slopes(trend)['backend']:+.1f}" == "+4.0"
    assert row["rss_mb"] == "104.0"
    assert row["leak"] == "(not judged yet)"


def test_web_ui_leak_column_shows_each_services_worst_early_verdict():
    from locustfiles.servicetab import service_rows
    from sampler.trend import Trend

    latest = {(name, "mem_rss_bytes"): (1_700_000_590.0, 1e8) for name in ("agent", "auth", "backend")}
    early = [
        {"service": "backend", "metric": "open_fds", "state": "clean so far", "reason": ""},
        {"service": "backend", "metric": "mem_rss_bytes", "state": "confirmed leak", "reason": "grows 20 MB/h"},
        {"service": "auth", "metric": "mem_rss_bytes", "state": "undecided", "reason": "too short"},
        {"service": "auth", "metric": "open_fds", "state": "clean so far", "reason": ""},
    ]
    rows = {row["service"]: row["leak"] for row in service_rows(latest, Trend(), 1_700_000_600.0, early)}
    assert rows == {
        "agent": "(not judged yet)",
        "auth": "undecided",
        "backend": "confirmed leak: mem_rss_bytes grows 20 MB/h",
    }


# --- event checks


def test_clean_exchange_fires_each_named_step_once(env):
    inbox, exchange = chat_exchange(env)
    feed(inbox, ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"])
    assert exchange.ok and inbox.pending == {}
    assert env.names(ok=True) == ["ws round trip", "agent startup", "agent complete"]
    assert env.errors() == []


def test_missing_out_of_order_and_duplicate_events_fail(env):
    inbox, _ = chat_exchange(env, "m1")
    feed(inbox, ["ack", "agent_started", "tool_executing", "tool_completed", "agent_completed"], "m1")
    assert env.errors() == ["agent complete: agent_thinking missing before agent_completed"]

    env.fired.clear()
    inbox, _ = chat_exchange(env, "m2")
    feed(inbox, ["agent_started", "ack"], "m2")
    assert env.errors() == ["ws round trip: ack after agent_started (out of order)"]

    env.fired.clear()
    inbox, exchange = chat_exchange(env, "m3")
    steps = ["ack", "ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
    feed(inbox, steps, "m3")
    assert env.errors() == ["agent complete: duplicate ack"]

    env.fired.clear()
    inbox, exchange = chat_exchange(env, "m4")
    feed(inbox, ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"], "m4")
    feed(inbox, ["agent_completed"], "m4", first_id=500)  # after a clean end: repeated
    assert env.errors() == ["ws event: agent_completed after its exchange had ended (duplicate or late)"]


def test_repeated_event_id_is_a_duplicate(env):
    inbox, exchange = chat_exchange(env)
    inbox.handle({"type": "ack", "reply_to": "m1", "event_id": 7}, 1.0)
    inbox.handle({"type": "agent_started", "reply_to": "m1", "event_id": 7}, 2.0)
    assert exchange.problem == "agent_started repeated or out of order (event_id did not increase)"


def test_foreign_and_unsolicited_events_fail(env):
    inbox, _ = chat_exchange(env)
    inbox.handle({"type": "agent_started", "reply_to": "someone-else", "event_id": 1}, 1.0)
    inbox.handle({"type": "upload_processed", "upload_id": "u9", "event_id": 2}, 1.0)
    inbox.handle({"type": "error", "code": "BAD_MESSAGE"}, 1.0)
    inbox.handle({"type": "replay_truncated", "last_event_id": 1}, 1.0)  # a notice, not a failure
    assert env.errors() == [
        "ws event: foreign event: agent_started for a message this user did not send",
        "ws event: foreign event: upload_processed for an upload this user did not make",
        "ws event: error BAD_MESSAGE without reply_to",
    ]


def test_upload_result_that_overtakes_its_response_is_claimed(env):
    from locustfiles.exchange import UPLOAD_NAMES, UPLOAD_STEPS, Exchange, Inbox, Reporter

    inbox = Inbox(Reporter(env))
    inbox.uploads_in_flight = 1
    inbox.handle({"type": "upload_processed", "upload_id": "u1", "size": 10, "event_id": 1}, 2.0)
    exchange = Exchange("u1", UPLOAD_STEPS, UPLOAD_NAMES, Reporter(env))
    exchange.expect_fields = {"size": 10}
    inbox.expect(exchange)
    inbox.uploads_in_flight = 0
    inbox.settle_uploads()
    assert exchange.ok and env.errors() == [] and env.names() == ["upload processed"]


def test_timeout_error_and_refusal(env):
    inbox, exchange = chat_exchange(env, "m1")
    feed(inbox, ["ack"], "m1")
    assert not exchange.wait(0.05)
    assert env.errors() == [
        "agent startup: agent_started not received within 0.05 s",
        "agent complete: agent_completed not received within 0.05 s",
    ]
    feed(inbox, ["agent_started"], "m1", first_id=200)  # late: already counted as missing, not counted again
    assert len(env.errors()) == 2

    env.fired.clear()
    inbox, exchange = chat_exchange(env, "m2")
    inbox.handle({"type": "error", "code": "TOKEN_EXPIRED", "reply_to": "m2"}, 1.0)
    assert exchange.done.is_set() and len(env.errors()) == 3
    assert env.errors()[0] == "ws round trip: error TOKEN_EXPIRED instead of ack"

    env.fired.clear()
    inbox, exchange = chat_exchange(env, "m3", refusable=True)
    inbox.handle({"type": "error", "code": "RATE_LIMITED", "retry_after": 2.5, "reply_to": "m3"}, 1.0)
    assert exchange.error["retry_after"] == 2.5 and env.fired == []  # the caller judges a refusal


def test_connection_loss_fails_what_is_in_flight(env):
    inbox, exchange = chat_exchange(env)
    feed(inbox, ["ack", "agent_started"])
    inbox.fail_all("connection closed by the server (code 1011) before {step}")
    assert env.errors() == ["agent complete: connection closed by the server (code 1011) before agent_completed"]
    assert exchange.problem == "connection closed by the server (code 1011) before agent_completed"


def test_pending_exchanges_are_capped(env):
    from locustfiles.exchange import CHAT_NAMES, CHAT_STEPS, MAX_PENDING, Exchange, Inbox, Reporter

    inbox = Inbox(Reporter(env))
    accepted = [inbox.expect(Exchange(f"m{i}", CHAT_STEPS, CHAT_NAMES, Reporter(env))) for i in range(MAX_PENDING + 1)]
    assert accepted.count(True) == MAX_PENDING and len(inbox.pending) == MAX_PENDING
    assert env.errors()[0] == "ws round trip: too many messages in flight on one connection"


# --- the delivery ledger and the reconnecting tab's pieces

CHAT = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def ledger_inbox(env, lost_after=10.0):
    from locustfiles.exchange import Reporter
    from locustfiles.ledger import Ledger, LedgerInbox

    ledger = Ledger(Reporter(env), lost_after)
    return ledger, LedgerInbox(Reporter(env), ledger)


def test_ledger_judges_each_message_once(env):
    ledger, inbox = ledger_inbox(env)
    for message_id in ("ok", "gap", "twice", "swap", "refused"):
        ledger.expect(message_id, {"type": "chat_message", "id": message_id}, now=0.0)
    feed(inbox, CHAT, "ok", first_id=100)
    feed(inbox, ["ack", "agent_started", "tool_executing", "tool_completed", "agent_completed"], "gap", first_id=200)
    feed(inbox, ["ack", "ack", *CHAT[1:]], "twice", first_id=300)
    feed(inbox, ["ack", "agent_thinking", "agent_started", *CHAT[3:]], "swap", first_id=400)
    inbox.handle({"type": "error", "code": "AGENT_UNAVAILABLE", "reply_to": "refused"}, 1.0)
    assert env.names(ok=True) == ["ledger complete"]
    assert env.errors() == [
        "ledger lost: agent_thinking missing before agent_completed",
        "ledger duplicate: ack twice",
        "ledger order: agent_started after agent_thinking",
    ]
    assert ledger.counts == {"complete": 1, "lost": 1, "duplicate": 1, "order": 1, "refused": 1}
    assert ledger.open == {}
    # a second reply after a complete one is a duplicate, once; nothing is foreign
    feed(inbox, CHAT, "ok", first_id=500)
    assert env.errors()[-1] == "ledger duplicate: ack after the reply was complete (a second reply)"
    assert len(env.errors()) == 4 and inbox.last_event_id == 505


def test_ledger_resend_lists_and_deadline(env):
    ledger, inbox = ledger_inbox(env, lost_after=5.0)
    ledger.expect("unacked", {"type": "chat_message", "id": "unacked"}, now=0.0)
    ledger.expect("half", {"type": "chat_message", "id": "half"}, now=0.0)
    ledger.expect("watched", None, now=0.0)  # another tab sent it: never resent from here
    feed(inbox, ["ack", "agent_started"], "half", first_id=10)
    feed(inbox, ["ack"], "watched", first_id=12)
    assert [e.id for e in ledger.unacked(connection=2, now=1.0)] == ["unacked"]
    # replay_truncated on that connection: incomplete replies start over; what was not resent there yet is resent
    assert [e.id for e in ledger.truncated(connection=2, now=1.0)] == ["half"]
    assert all(e.seen == 0 and not e.acked for e in ledger.open.values())
    # a resend acked from the first send is not a step, and makes the message acked
    inbox.handle({"type": "ack", "reply_to": "unacked", "duplicate": True, "ack_event_id": 9}, 1.5)
    assert ledger.open["unacked"].acked and ledger.open["unacked"].seen == 0 and env.fired == []
    feed(inbox, CHAT, "half", first_id=20, now=2.0)
    # the deadline counts from the last send and the last reconnect
    ledger.sweep(now=5.5, connected_at=3.0)
    assert env.errors() == []
    ledger.sweep(now=8.5, connected_at=3.0)
    assert env.errors() == ["ledger lost: no agent_completed within 5 s"] * 2
    assert env.names(ok=True) == ["ledger complete"] and ledger.open == {}


def test_ledger_event_after_its_exchange_ended_is_ours(env):
    from locustfiles.exchange import CHAT_NAMES, CHAT_STEPS, Exchange, Reporter

    ledger, inbox = ledger_inbox(env)
    exchange = Exchange("m1", CHAT_STEPS, CHAT_NAMES, Reporter(env), timed=False)
    ledger.expect("m1", {"type": "chat_message", "id": "m1"}, now=0.0)
    inbox.expect(exchange)
    feed(inbox, ["ack"], "m1", first_id=40)
    exchange.fail("gave up before {step}")  # an outage outlived its wait
    feed(inbox, CHAT[1:], "m1", first_id=41)
    assert env.errors() == [] and env.names(ok=True) == ["ledger complete"] and inbox.last_event_id == 45


def test_ledger_is_bounded(env):
    from locustfiles.ledger import MAX_DONE, MAX_OPEN

    ledger, inbox = ledger_inbox(env)
    for i in range(MAX_OPEN + 1):
        ledger.expect(f"m{i}", {"type": "chat_message"}, now=0.0)
    assert len(ledger.open) == MAX_OPEN and "m0" not in ledger.open
    assert env.errors() == ["ledger lost: forgotten: too many messages awaiting a reply"]
    for i in range(1, MAX_OPEN + 1):
        feed(inbox, CHAT, f"m{i}", first_id=1000 + 10 * i)
    assert ledger.open == {} and len(ledger.done) == MAX_DONE
    assert ledger.counts["complete"] == MAX_OPEN


def test_backoff_grows_is_capped_and_jittered():
    from locustfiles.reconnect import backoff

    low = [backoff(n, 0.5, 8.0, rand=lambda: 0.0) for n in range(8)]
    high = [backoff(n, 0.5, 8.0, rand=lambda: 1.0) for n in range(8)]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert low == [h / 2 for h in high]
    assert backoff(10_000, 0.5, 8.0) <= 8.0  # no overflow for an absurd attempt number


def test_policy_reads_the_user_table_with_defaults():
    from locustfiles.options import user_defaults
    from locustfiles.reconnect import HEARTBEAT_INTERVAL, RECONNECT_ATTEMPTS, Policy

    policy = Policy.for_user(user_defaults())
    assert policy.heartbeat_interval == HEARTBEAT_INTERVAL and policy.attempts == RECONNECT_ATTEMPTS
    assert policy.lost_after == 10.0
    tuned = Policy.for_user({**user_defaults(), "heartbeat_interval": 1.0, "reconnect_attempts": 3})
    assert tuned.heartbeat_interval == 1.0 and tuned.attempts == 3
