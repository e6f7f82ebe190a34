"""What a WebSocket client expects back and what it got: per message id, in order, each once, in time.

An Exchange is one message sent and the events expected back; an Inbox holds a connection's exchanges and matches
each server event to one by ``reply_to`` (``upload_id`` for uploads). Timed steps are fired as Locust requests of
type ``WS``, each exactly once per exchange: a success with its time (``time.perf_counter()`` from the send), or a
failure saying what went wrong. A missing, late, out-of-order, duplicated or foreign event is a failure; messages
name the event type, never an id, so Locust's error table stays bounded. An event of a type the scenario's
[protocol] does not name is ignored and counted (``ws ignored <type>``, untimed), never a failure: a platform may say
more than the contract. Field and event names come from the connection's Wire (locustfiles/wire.py; the contract by
default). Everything is bounded: MAX_PENDING exchanges and RECENT_IDS finished ids per connection, MAX_IGNORED_NAMES
names for ignored types. This module does not import Locust.
"""

from __future__ import annotations

import os
import time
from collections import deque
from itertools import count
from typing import Any

from locustfiles.reporting import REQUEST_TYPE, EventCheckFailed, Flag, Reporter
from locustfiles.stream import STALL_AFTER_MS, Stream
from locustfiles.wire import DEFAULT, Wire
from runspec.folder import FROM_INTENDED, FROM_SEND

__all__ = ["REQUEST_TYPE", "EventCheckFailed", "Exchange", "Flag", "Inbox", "Reporter", "new_id"]

MAX_PENDING = 64  # exchanges in flight on one connection; a user waits for its replies long before this
RECENT_IDS = 16  # finished exchanges remembered to tell a late duplicate from a foreign event
MAX_EARLY_UPLOADS = 16  # upload results that overtook their POST's response
EVENTS_NAME = "ws event"  # events that belong to no exchange: foreign, repeated after the end, malformed

IGNORED_PREFIX = "ws ignored "  # + the event type: counted (untimed), not a failure
MAX_IGNORED_NAMES = 16  # distinct ignored types named in the stats; the rest share one name
IGNORED_OTHER = IGNORED_PREFIX + "(other types)"
# The contract's names (the [protocol] defaults); a connection uses its Wire's.
CHAT_STEPS = DEFAULT.chat_steps
CHAT_NAMES = DEFAULT.chat_names
REFRESH_STEPS = DEFAULT.refresh_steps
REFRESH_NAMES = DEFAULT.refresh_names
UPLOAD_STEPS = DEFAULT.upload_steps
UPLOAD_NAMES = DEFAULT.upload_names
UPLOAD_TYPES = DEFAULT.upload_types  # matched by upload_id, not reply_to
ERROR_TYPES = DEFAULT.error_types
NOTICE_TYPES = DEFAULT.notices

_ids = count(1)
_id_prefix = ""
_step_indexes: dict[tuple[str, ...], dict[str, int]] = {}
_ignored_names: dict[str, str] = {}
MAX_STEP_INDEXES = 64  # distinct steps tuples remembered (they are module constants; more is a caller's bug)


def _new_prefix() -> None:
    global _id_prefix
    _id_prefix = os.urandom(5).hex() + "-"


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)  # instead of a getpid() per message


def new_id() -> str:
    """A client message id unique across users, processes and machines (random per process, after any fork)."""
    return _id_prefix + str(next(_ids))


def _step_index(steps: tuple[str, ...]) -> dict[str, int]:
    """Each step's position (the first, as ``steps.index``), made once per steps tuple: a receive looks it up."""
    index = _step_indexes.get(steps)
    if index is None:
        index = {}
        for i, step in enumerate(steps):
            index.setdefault(step, i)
        if len(_step_indexes) < MAX_STEP_INDEXES:
            _step_indexes[steps] = index
    return index


class Exchange:
    """One message sent and the events expected back, in order, each once."""

    __slots__ = (
        "id",
        "steps",
        "index",
        "names",
        "report",
        "sent_at",
        "timed",
        "refusable",
        "seen",
        "fired",
        "last",
        "times",
        "problem",
        "error",
        "result",
        "done",
        "replied",
        "replied_at",
        "expect_fields",
        "inbox",
        "wire",
        "stream",
        "other",
        "_watch",
    )

    def __init__(
        self,
        exchange_id: str,
        steps: tuple[str, ...],
        names: dict[str, str],
        report: Reporter,
        timed: bool = True,
        refusable: bool = False,
    ) -> None:
        self.id = exchange_id
        self.steps = steps
        self.index = _step_index(steps)
        self.names = names
        self.report = report
        self.sent_at = time.perf_counter()
        self.timed = timed  # fire the named steps (one tab of several times them; the others only check)
        self.refusable = refusable  # an error reply is an answer the caller judges, not a failure
        self.seen = 0  # bit per step
        self.fired = 0  # bit per named step already fired
        self.last = -1
        self.times: dict[str, float] = {}
        self.problem: str | None = None
        self.error: dict | None = None
        self.result: dict | None = None  # the final event
        self.done = Flag()
        self.replied = Flag() if refusable else None
        self.replied_at: float | None = None
        self.expect_fields: dict[str, Any] | None = None  # fields the final event must carry with these values
        self.inbox: Inbox | None = None
        self.wire = DEFAULT  # the Inbox's, once expected
        self.stream: Stream | None = None  # the reply's tokens, timed (stream.py); None until the first
        self.other: tuple[str, float] | None = None  # open model: (name suffix, ms to add) of the round trip not judged
        self._watch: tuple[int, Flag] | None = None

    def time_from(self, intended: float, judge_intended: bool) -> None:
        """Open model: the message was due at ``intended`` (perf_counter), before it left. The named steps are timed
        from then (``judge_intended``: a stall delays every message due during it, as people feel it) or from the
        send; the other view goes to the record only, under its suffix (``(from send)``, ``(from intended)``)."""
        late_ms = (self.sent_at - intended) * 1000.0
        if judge_intended:
            self.sent_at, self.other = intended, (FROM_SEND, -late_ms)
        else:
            self.other = (FROM_INTENDED, late_ms)

    @property
    def ok(self) -> bool:
        return self.done.is_set() and self.problem is None and self.error is None

    def _elapsed_ms(self, now: float) -> float:
        return (now - self.sent_at) * 1000.0

    def _fire_failure(self, step: str, message: str, now: float | None) -> None:
        index = self.index[step]
        if self.fired & (1 << index):
            return
        self.fired |= 1 << index
        if self.timed:
            self.report.failure(self.names[step], message, None if now is None else self._elapsed_ms(now))

    def _fire_unfired(self, message: str, now: float | None) -> None:
        """Every named step not yet fired fails with ``message`` (with ``{step}`` filled in)."""
        for step in self.names:
            self._fire_failure(step, message.format(step=step), now)

    def _note(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem

    @property
    def replied_ms(self) -> float:
        return self._elapsed_ms(self.replied_at) if self.replied_at is not None else 0.0

    def receive(self, event: dict, etype: str, now: float) -> None:
        if self.replied_at is None:
            self.replied_at = now
            if self.replied is not None:
                self.replied.set()
        if etype in self.wire.error_types:
            self.error = event
            if not self.refusable:
                code = str(event.get(self.wire.code_key) or etype)[:40]
                self._note(f"error {code}")
                self._fire_unfired(f"error {code} instead of {{step}}", now)
            self._finish()
            return
        index = self.index.get(etype, -1)
        if index < 0:
            self._note(f"unexpected {etype} in this exchange")
            return
        bit = 1 << index
        seen = self.seen
        if seen & bit:
            self._note(f"duplicate {etype}")
            return
        in_order = index > self.last
        if in_order:
            self.last = index
        else:
            self._note(f"{etype} after {self.steps[self.last]} (out of order)")
        self.seen = seen | bit
        self.times[etype] = now
        steps = self.steps
        final = index == len(steps) - 1
        if final:
            if seen != bit - 1:  # not every earlier step arrived
                for i in range(index):
                    if not seen & (1 << i) and self.index[steps[i]] == i:
                        step = steps[i]
                        self._note(f"{step} missing before {etype}")
                        if step in self.names:
                            self._fire_failure(step, f"{step} missing before {etype}", None)
            self.result = event
            if self.expect_fields:
                for key, value in self.expect_fields.items():
                    if event.get(key) != value:
                        self._note(f"{etype} has the wrong {key}")
        name = self.names.get(etype)
        if name is not None and self.timed and not self.fired & bit:
            self.fired |= bit
            if in_order and (not final or self.problem is None):
                ms = (now - self.sent_at) * 1000.0
                self.report.success(name, ms)
                if self.other is not None:
                    self.report.timing(name + self.other[0], ms + self.other[1])
            else:
                self.report.failure(name, self.problem or f"{etype} out of order", self._elapsed_ms(now))
        watch = self._watch
        if watch is not None and self.last >= watch[0]:
            watch[1].set()
        if final:
            if self.stream is not None and self.timed:
                self.stream.end(self.report)
            self._finish()

    def token(self, now: float, stall_ms: float) -> None:
        """A token event of this reply (its seq is the ledger's to judge): timed while the exchange is."""
        if not self.timed or self.done.is_set():
            return
        if self.stream is None:
            self.stream = Stream()
        self.stream.token(self.report, self.sent_at, now, stall_ms)

    def _finish(self) -> None:
        if self.inbox is not None:
            self.inbox.forget(self)
        self.done.set()
        if self.replied is not None:
            self.replied.set()
        if self._watch is not None:
            self._watch[1].set()

    def fail(self, reason: str, now: float | None = None) -> None:
        """End the exchange as failed: every named step not fired yet fails with ``reason``."""
        if self.done.is_set():
            return
        self._note(reason.format(step=self.steps[-1]))
        self._fire_unfired(reason, now)
        self._finish()

    def wait(self, timeout: float) -> bool:
        """Wait for the final step; past ``timeout`` seconds since the send, the missing steps fail. True if ok."""
        remaining = self.sent_at + timeout - time.perf_counter()
        if not self.done.wait(max(remaining, 0.0)):
            self.fail(f"{{step}} not received within {timeout:g} s", time.perf_counter())
        return self.ok

    def wait_for(self, step: str, timeout: float) -> bool:
        """Wait until ``step`` (or a later one) arrived or the exchange ended; True if the step arrived."""
        index = self.steps.index(step)
        if self.last < index and not self.done.is_set():
            self._watch = (index, Flag())
            self._watch[1].wait(max(self.sent_at + timeout - time.perf_counter(), 0.0))
            self._watch = None
        return self.last >= index

    def untime(self) -> None:
        """Stop firing named steps (after a reconnect the times would include the reconnect)."""
        self.timed = False


class Inbox:
    """What one connection (or one connection and its reconnections) expects and has seen."""

    __slots__ = (
        "report",
        "wire",
        "pending",
        "recent",
        "last_event_id",
        "uploads_in_flight",
        "early_uploads",
        "stall_ms",
    )

    def __init__(self, report: Reporter, wire: Wire = DEFAULT) -> None:
        self.report = report
        self.wire = wire
        self.stall_ms = STALL_AFTER_MS  # a longer gap between tokens is a stall (the user's token_stall)
        self.pending: dict[str, Exchange] = {}
        self.recent: deque[tuple[str, bool]] = deque(maxlen=RECENT_IDS)
        self.last_event_id: int | None = None
        self.uploads_in_flight = 0
        self.early_uploads: dict[str, tuple[dict, float]] = {}

    def expect(self, exchange: Exchange) -> bool:
        if len(self.pending) >= MAX_PENDING:
            exchange.fail("too many messages in flight on one connection")
            return False
        exchange.inbox = self
        exchange.wire = self.wire
        self.pending[exchange.id] = exchange
        early = self.early_uploads.pop(exchange.id, None)
        if early is not None:
            exchange.receive(early[0], early[0].get(self.wire.type_key, ""), early[1])
        return True

    def forget(self, exchange: Exchange) -> None:
        if self.pending.pop(exchange.id, None) is not None:
            self.recent.append((exchange.id, exchange.problem is None and exchange.error is None))

    def handle(self, event: dict, now: float) -> None:
        wire = self.wire
        etype = event.get(wire.type_key)
        if etype not in wire.known:
            self.ignore(etype)
            return
        if etype in wire.upload_types:
            key = event.get(wire.upload_id_key)
        else:
            key = event.get(wire.reply_key)
        exchange = self.pending.get(key) if key is not None else None
        if exchange is None:
            self._unmatched(event, etype, key, now)
            return
        event_id = event.get(wire.event_id_key)
        if event_id is not None:
            if self.last_event_id is not None and event_id <= self.last_event_id:
                exchange._note(f"{etype} repeated or out of order (event_id did not increase)")
                return
            self.last_event_id = event_id
        if etype == wire.token:
            exchange.token(now, self.stall_ms)
            return
        exchange.receive(event, etype, now)

    def ignore(self, etype: Any) -> None:
        """An event of a type the [protocol] does not name: counted under its type's name (bounded), not judged."""
        text = str(etype)[:40]
        name = _ignored_names.get(text)
        if name is None:
            name = IGNORED_PREFIX + text if len(_ignored_names) < MAX_IGNORED_NAMES else IGNORED_OTHER
            if len(_ignored_names) < MAX_IGNORED_NAMES:
                _ignored_names[text] = name
        self.report.count(name)

    def _unmatched(self, event: dict, etype: Any, key: Any, now: float) -> None:
        wire = self.wire
        event_id = event.get(wire.event_id_key)
        for finished_id, clean in self.recent:
            if finished_id == key:
                if event_id is not None and self.last_event_id is not None and event_id > self.last_event_id:
                    self.last_event_id = event_id
                if clean:  # after a timeout, late events were already counted as missing
                    self.report.failure(EVENTS_NAME, f"{etype} after its exchange had ended (duplicate or late)")
                return
        if etype in wire.upload_types and self.uploads_in_flight > 0 and len(self.early_uploads) < MAX_EARLY_UPLOADS:
            self.early_uploads[key] = (event, now)  # may have overtaken the response to our own POST
            return
        if key is None:
            if etype in wire.notices:
                return
            if etype == wire.error:
                code = str(event.get(wire.code_key) or "?")[:40]
                self.report.failure(EVENTS_NAME, f"{etype} {code} without {wire.reply_key}")
            else:
                self.report.failure(EVENTS_NAME, f"unexpected event {str(etype)[:40]} without {wire.reply_key}")
            return
        if etype in wire.upload_types:
            self.report.failure(EVENTS_NAME, f"foreign event: {etype} for an upload this user did not make")
        else:
            self.report.failure(EVENTS_NAME, f"foreign event: {etype} for a message this user did not send")

    def settle_uploads(self) -> None:
        """Upload results still unclaimed when no upload of ours is in flight belong to someone else."""
        if self.uploads_in_flight == 0 and self.early_uploads:
            for event, _ in self.early_uploads.values():
                etype = event.get(self.wire.type_key)
                self.report.failure(EVENTS_NAME, f"foreign event: {etype} for an upload of another user")
            self.early_uploads.clear()

    def fail_all(self, reason: str) -> None:
        now = time.perf_counter()
        for exchange in list(self.pending.values()):
            exchange.fail(reason, now)
