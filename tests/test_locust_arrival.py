"""The open model's schedule in one user: sends leave on time whatever the replies do, up to the in-flight bound;
a send held past max_late is dropped and counted; the round trip is timed from the intended time with the actual
send's view recorded beside it. A tab stands in for the WebSocket (the end-to-end runs are in
test_cmd_run_openmodel.py).

Importing locustfiles imports Locust (gevent monkey-patching): these tests run in their own pytest process.
"""

from __future__ import annotations

import random
import time

import gevent
import gevent.event
import pytest

pytestmark = pytest.mark.locust_inprocess

ARRIVAL = {"rate": 40.0, "max_in_flight": 2, "max_late": 0.2, "judge": "intended"}


class Report:
    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []
        self.successes: list[tuple[str, float]] = []

    def timing(self, name: str, ms: float) -> None:
        self.timings.append((name, ms))

    def success(self, name: str, ms: float, length: int = 0) -> None:
        self.successes.append((name, ms))

    def failure(self, name: str, message: str, ms: float | None = None) -> None:
        raise AssertionError(f"{name}: {message}")

    def named(self, name: str) -> list[float]:
        return [ms for n, ms in self.timings if n == name]


class Tab:
    """Takes each message; the test answers it (or not) with the contract's events."""

    def __init__(self, report: Report) -> None:
        from locustfiles.wire import DEFAULT

        self.wire = DEFAULT
        self.report = report
        self.sent: list = []

    def start(self, exchange, payload):  # noqa: ANN001, ANN201
        self.sent.append(exchange)
        return exchange

    def answer(self, exchange) -> None:  # noqa: ANN001
        now = time.perf_counter()
        for step in exchange.steps:
            exchange.receive({"type": step, "reply_to": exchange.id}, step, now)


class User:
    def __init__(self) -> None:
        self.report = Report()
        self.connections = [Tab(self.report)]
        self.thread_id = 1
        self.timeout = 5.0
        self.judged_count = 0

    def ready(self) -> bool:
        return True

    def judged(self, exchange) -> None:  # noqa: ANN001
        self.judged_count += 1


def test_the_schedule_spreads_users_over_one_period_and_keeps_its_pace():
    from locustfiles.arrival import Schedule

    schedule = Schedule(0.5, now=100.0, rng=random.Random(1))
    first = schedule.advance()
    assert 100.0 <= first < 100.5
    assert [schedule.advance() - first for _ in range(3)] == pytest.approx([0.5, 1.0, 1.5])


def test_sends_leave_on_schedule_without_waiting_for_replies_then_the_bound_holds_and_late_ones_drop():
    from locustfiles.arrival import OpenChat

    user = User()
    chat = OpenChat(ARRIVAL, users=1)  # one user at 40/s: a message due every 25 ms
    began = time.perf_counter()
    for _ in range(2):
        chat.step(user, "hi")
    tab = user.connections[0]
    assert len(tab.sent) == 2 and user.report.named("send lateness")  # no reply yet, both left
    assert time.perf_counter() - began < 0.2
    # two unanswered: the third waits for a slot, past max_late (200 ms), and is dropped, not sent
    chat.step(user, "hi")
    assert len(tab.sent) == 2
    [dropped] = user.report.named("send dropped")
    assert dropped > 200.0
    # a reply frees a slot: each time missed meanwhile is sent late, or dropped when later than max_late
    tab.answer(tab.sent[0])
    steps = 3
    while len(tab.sent) == 2 and steps < 40:
        chat.step(user, "hi")
        steps += 1
    assert len(tab.sent) == 3 and user.judged_count == 1
    assert len(tab.sent) + len(user.report.named("send dropped")) == steps  # every intended time is accounted for


def test_the_round_trip_is_timed_from_the_intended_time_and_the_send_is_recorded_beside_it():
    from locustfiles.arrival import OpenChat

    user = User()
    chat = OpenChat({**ARRIVAL, "max_late": 1.0}, users=1)
    tab = user.connections[0]
    chat.step(user, "hi")
    chat.step(user, "hi")
    intended_third = chat.schedule.next_at
    gevent.sleep(0.15)  # the third is due meanwhile but both slots are taken: it will leave about 125 ms late
    tab.answer(tab.sent[0])
    chat.step(user, "hi")
    late = (tab.sent[2].sent_at - intended_third) * 1000.0
    assert late == pytest.approx(0.0, abs=1e-6)  # its clock starts at the intended time
    tab.answer(tab.sent[2])
    judged = [ms for name, ms in user.report.successes if name == "ws round trip"]
    from_send = user.report.named("ws round trip (from send)")
    assert len(judged) == 2 and len(from_send) == 2
    assert judged[-1] - from_send[-1] > 100.0  # the wait for a slot is in the judged one only
    assert max(user.report.named("send lateness")) > 100.0


def test_rest_calls_leave_on_their_own_schedule_in_parallel_then_the_bound_holds_and_late_ones_drop():
    from locustfiles.arrival import OpenRest

    rows: list[tuple[str, str, float]] = []
    started: list[float] = []
    release = gevent.event.Event()

    def call(intended: float) -> None:  # a call the server holds until the test lets it go
        started.append(intended)
        release.wait(5.0)

    ready = [False]
    rest = OpenRest(
        {**ARRIVAL, "rest_rate": 40.0}, users=1, call=call, ready=lambda: ready[0], record=lambda *row: rows.append(row)
    )
    try:
        rest.step()  # not logged in yet: it waits for the login up to max_late (200 ms), then drops the call
        assert started == [] and [r[1] for r in rows] == ["send dropped"] and rows[0][2] > 200.0
        assert rows[0][0] == "HTTP"  # the REST schedule's rows are told from the messages' (WS) by their type
        ready[0] = True
        rest.step()
        rest.step()
        gevent.sleep(0)
        assert len(started) == 2  # both in flight at once: neither waited for the other's answer
        rest.step()  # both slots (max_in_flight 2) taken past max_late: dropped
        assert len(started) == 2 and [r[1] for r in rows].count("send dropped") == 2
        release.set()
        rest.step()
        gevent.sleep(0)
        assert len(started) == 3 and [r[1] for r in rows].count("send lateness") == 3
    finally:
        rest.close()
    assert rest.calls.free_count() == 2  # close() ends the calls still running


def test_a_rest_call_is_timed_from_its_intended_time_and_its_send_recorded_beside_it(monkeypatch):
    from locustfiles import session

    recorded: list[tuple[str, str, float]] = []
    monkeypatch.setattr(session, "record_timing", lambda *row: recorded.append(row))
    meta = {"request_type": "GET", "name": "GET /api/threads/{id}/messages", "response_time": 12.0}
    session.time_from(meta, intended=10.0, sent=10.3, judge_intended=True)
    assert meta["response_time"] == pytest.approx(312.0)  # Locust's stats and the targets get the judged view
    assert recorded == [("GET", "GET /api/threads/{id}/messages (from send)", 12.0)]
    meta = {"request_type": "GET", "name": "GET /api/threads/{id}/messages", "response_time": 12.0}
    session.time_from(meta, intended=10.0, sent=10.3, judge_intended=False)
    assert meta["response_time"] == 12.0 and recorded[-1][1].endswith("(from intended)")
    assert recorded[-1][2] == pytest.approx(312.0)
