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
    from locustfiles.options import ScenarioFileError, load_settings

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
    with pytest.raises(ScenarioFileError, match="weight 0"):
        load_settings(str(path))
    path.write_text("[users.Robot]\nweight = 1\n")
    with pytest.raises(ScenarioFileError, match=r"users\.Robot: unknown user class"):
        load_settings(str(path))


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
