"""The open model ([arrival] rate > 0): chat messages leave at intended times, whether or not their replies came.

In the closed model a user waits for its reply before it sends again, so when the server stalls the users stop
asking, and the stall hides in a few slow samples (coordinated omission). Here each user has a schedule: a message
every ``shape.users / rate`` seconds from a random phase (so the users spread), up to ``max_in_flight`` replies
outstanding. A send that cannot leave on time (the user still connecting, or its in-flight limit reached) leaves
late. A send later than ``max_late`` is not sent but dropped and counted (``send dropped``, with its lateness), as
k6 counts dropped iterations. Every send's own lateness goes to the record (``send lateness``): how late it left
beyond any wait for a reply to free a slot, since that wait is the server's doing (the intended-time round trip
carries it) and the rest (a late wake-up, a login) is the client falling behind (analysis/generator.py). The round trip is timed
from the intended time (judge = intended: a stall delays every message due during it) and from the send (the
closed model's view); the one the targets do not judge is recorded under its suffix (exchange.Exchange.time_from).

REST calls (``rest_rate``: the thread's history, as people reopen a conversation) keep a schedule of their own in a
greenlet of the user's (OpenRest), each call in a greenlet of its own up to ``max_in_flight``, timed the same way;
their lateness and drops are recorded under the same names with request type ``HTTP`` (the messages' are ``WS``).

The global rate is reached when ``shape.users`` users run: a step, spike or wave shape scales it with the users.
This module does not import Locust.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.pool import Pool

from locustfiles.exchange import Exchange, new_id
from locustfiles.timings import record_timing
from runspec import folder

INTENDED = "intended"
SLOT_POLL = 0.005  # seconds between looks for a free in-flight slot
CLOSE_TIMEOUT = 1.0  # seconds on_stop waits for the REST schedule's greenlets to die


class Schedule:
    """One user's intended send times: every ``period`` seconds from a random phase in the first period."""

    def __init__(self, period: float, now: float, rng: random.Random | None = None) -> None:
        self.period = period
        self.next_at = now + (rng or random).uniform(0.0, period)

    def advance(self) -> float:
        """The intended time of the send at hand; the schedule moves on to the next one."""
        due, self.next_at = self.next_at, self.next_at + self.period
        return due


class OpenChat:
    """A user's open-model chat: ``step()`` is its whole task (Locust's wait time is 0 in this mode)."""

    def __init__(self, arrival: dict[str, Any], users: int, now: float | None = None) -> None:
        self.max_in_flight = int(arrival["max_in_flight"])
        self.max_late = float(arrival["max_late"])
        self.judge_intended = arrival["judge"] == INTENDED
        self.schedule = Schedule(max(users, 1) / float(arrival["rate"]), time.perf_counter() if now is None else now)
        self.in_flight: deque[Exchange] = deque()

    def step(self, user: Any, content: str) -> None:
        """Wait for the next intended time, then send (late if it must) or drop it; reap finished replies."""
        wait = self.schedule.next_at - time.perf_counter()
        if wait > 0:
            gevent.sleep(wait)
        intended = self.schedule.advance()
        self._reap(user)
        free_at = intended
        while len(self.in_flight) >= self.max_in_flight and _late(intended) <= self.max_late:
            self.in_flight[0].done.wait(SLOT_POLL)  # any reply may free a slot: look again soon
            self._reap(user)
            free_at = time.perf_counter()
        ready = _late(intended) <= self.max_late and user.ready()  # ready() may log in or reconnect
        late_ms = _late(intended) * 1000.0
        if not ready or late_ms > self.max_late * 1000.0:
            user.report.timing(folder.SEND_DROPPED, late_ms)
            return
        # The generator's own lateness: a wait for a reply to free a slot is the server's, and the round trip timed
        # from the intended time carries it; what is left (a late wake-up, a login) is the client falling behind.
        user.report.timing(folder.SEND_LATENESS, _late(max(intended, free_at)) * 1000.0)
        self.in_flight.append(self.send(user.connections[0], user.thread_id, content, intended))

    def send(self, tab: Any, thread_id: Any, content: str, intended: float) -> Exchange:
        wire = tab.wire
        message_id = new_id()
        exchange = Exchange(message_id, wire.chat_steps, wire.chat_names, tab.report)
        exchange.time_from(intended, self.judge_intended)
        return tab.start(exchange, wire.chat_payload(message_id, thread_id, content))

    def _reap(self, user: Any) -> None:
        """Finished replies leave; one past its event timeout fails as a closed-model wait would fail it."""
        timeout, now = user.timeout, time.perf_counter()
        finished = [e for e in self.in_flight if e.done.is_set() or now - e.sent_at >= timeout]
        for exchange in finished:
            self.in_flight.remove(exchange)
            exchange.wait(timeout)  # returns at once: done, or its time is up and the missing steps fail
            user.judged(exchange)

    def close(self) -> None:
        self.in_flight.clear()


class OpenRest:
    """A user's REST calls on a schedule of their own: ``call(intended)`` makes one call timed from ``intended``;
    ``ready()`` says whether the user can make it (logged in, a thread open). ``start()`` spawns the schedule's
    greenlet; ``close()`` kills it and the calls still running (on_stop)."""

    def __init__(
        self,
        arrival: dict[str, Any],
        users: int,
        call: Callable[[float], Any],
        ready: Callable[[], bool],
        record: Callable[[str, str, float], None] = record_timing,
        now: float | None = None,
    ) -> None:
        self.max_late = float(arrival["max_late"])
        self.schedule = Schedule(
            max(users, 1) / float(arrival["rest_rate"]), time.perf_counter() if now is None else now
        )
        self.calls = Pool(int(arrival["max_in_flight"]))
        self.call, self.ready, self.record = call, ready, record
        self.loop: gevent.Greenlet | None = None

    def start(self) -> None:
        self.loop = gevent.spawn(self.run)

    def run(self) -> None:
        while True:
            self.step()

    def step(self) -> None:
        """Wait for the next intended time, then start the call (late if it must) or drop it."""
        wait = self.schedule.next_at - time.perf_counter()
        if wait > 0:
            gevent.sleep(wait)
        intended = self.schedule.advance()
        free_at = intended
        if self.calls.full():
            self.calls.wait_available(timeout=max(0.0, self.max_late - _late(intended)))
            free_at = time.perf_counter()  # a wait for a call to end is the server's doing, as for the messages
        while not self.ready() and _late(intended) <= self.max_late:
            gevent.sleep(SLOT_POLL)
        late_ms = _late(intended) * 1000.0
        if self.calls.full() or not self.ready() or late_ms > self.max_late * 1000.0:
            self.record(folder.REST_SCHEDULE_TYPE, folder.SEND_DROPPED, late_ms)
            return
        self.record(folder.REST_SCHEDULE_TYPE, folder.SEND_LATENESS, _late(max(intended, free_at)) * 1000.0)
        self.calls.spawn(self.call, intended)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.kill(timeout=CLOSE_TIMEOUT)
            self.loop = None
        self.calls.kill(timeout=CLOSE_TIMEOUT)


def _late(intended: float) -> float:
    return max(0.0, time.perf_counter() - intended)
