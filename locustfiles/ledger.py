"""The delivery ledger: every chat message gets exactly one complete reply sequence, each event once, in order.

The reply's events are the scenario's [protocol] (a Wire; the contract's by default). One Ledger per tab, kept across the tab's reconnections like its Inbox (a ``LedgerInbox``), so it counts what a user
really got across reconnects, token refreshes and faults, whatever became of the Exchange that timed the message
(an Exchange ends at its timeout; the ledger waits for a resend or a replay). It also holds the messages to resend
after a reconnect: those without an ``ack``, and after ``replay_truncated`` those whose reply is incomplete.

Each message ends with one verdict, fired as a Locust request of type WS so it adds up over workers:
``ledger complete`` (a success timed from the first send to ``agent_completed``), or a failure ``ledger lost`` (a
step missing when ``agent_completed`` came, or no ``agent_completed`` within ``lost_after`` seconds of the last send
or reconnect), ``ledger duplicate`` (a step twice: a repeated event or a second reply) or ``ledger order``. A second
reply after the verdict fires one more ``ledger duplicate``. A message refused with an error event gets no verdict:
the error is the answer (and the Exchange reports it). Messages never name ids, so the error table stays bounded.

A streamed reply's token events (``[protocol] events.token``) are counted too: each sequence number once, in order
from 0, none missing (against the final event's token count when the platform says it), also across a reconnect
with replay. A token twice is ``ledger duplicate``, one skipped or missing at the end ``ledger lost``, one before the
startup event ``ledger order``.

Bounded: at most MAX_OPEN messages awaiting their reply (the oldest is judged lost beyond that) and MAX_DONE judged
ones remembered to recognise a late second reply. Only counts per message: nothing grows per event or per token.
This module does not import Locust.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from locustfiles.exchange import Inbox, Reporter
from locustfiles.wire import DEFAULT, Wire
from runspec import folder

MAX_OPEN = 64  # messages awaiting their reply per tab; as many as an Inbox lets be in flight
MAX_DONE = 32  # judged messages remembered per tab, so a late second reply is a duplicate, not a foreign event
COMPLETE_NAME = folder.LEDGER_COMPLETE
LOST_NAME = folder.LEDGER_LOST
DUPLICATE_NAME = folder.LEDGER_DUPLICATE
ORDER_NAME = folder.LEDGER_ORDER


class Steps:
    """A reply's events as the ledger counts them (from a Wire: the contract's by default)."""

    __slots__ = (
        "names",
        "index",
        "final",
        "all",
        "types",
        "ack",
        "duplicate_key",
        "type_key",
        "reply_key",
        "event_id_key",
        "token",
        "token_seq_key",
        "token_count_key",
        "startup_index",
    )

    def __init__(self, wire: Wire) -> None:
        self.names = wire.chat_steps
        self.index = {step: i for i, step in enumerate(self.names)}
        self.final = len(self.names) - 1
        self.all = (1 << len(self.names)) - 1
        self.token = wire.token  # '' = the platform does not stream
        self.token_seq_key, self.token_count_key = wire.token_seq_key, wire.token_count_key
        self.startup_index = self.index.get(wire.startup, 0)
        # events the ledger looks at (matched by reply_to)
        self.types = frozenset(self.index) | wire.error_types | ({wire.token} if wire.token else frozenset())
        self.ack = wire.ack
        self.duplicate_key = wire.duplicate_key
        self.type_key, self.reply_key, self.event_id_key = wire.type_key, wire.reply_key, wire.event_id_key


DEFAULT_STEPS = Steps(DEFAULT)


class Entry:
    """One message and what its reply brought so far."""

    __slots__ = (
        "id",
        "payload",
        "first_sent",
        "sent_at",
        "sent_on",
        "seen",
        "last",
        "acked",
        "problem",
        "verdict",
        "tokens",
    )

    def __init__(self, message_id: str, payload: dict | None, now: float) -> None:
        self.id = message_id
        self.payload = payload  # what to resend; None on a tab that only watches (another tab sent it)
        self.first_sent = now
        self.sent_at = now  # the last (re)send: the lost deadline counts from here
        self.sent_on = -1  # the tab's connection number it was last sent on (-1: not sent yet)
        self.seen = 0  # bit per step of CHAT_STEPS
        self.last = -1
        self.acked = False  # the server has it: its ack arrived, or a resend was acked as a duplicate
        self.problem: tuple[str, str] | None = None  # (request name, message): the first thing wrong
        self.verdict = ""  # once judged: complete, lost, duplicate, order, refused
        self.tokens = 0  # the next token seq expected (= tokens counted, when none was skipped)

    def restart(self) -> None:
        """Forget a partial reply: after ``replay_truncated`` a complete one must come anew (or it was lost)."""
        self.seen = 0
        self.last = -1
        self.acked = False
        self.problem = None
        self.tokens = 0


class Ledger:
    """The messages of one tab, open (awaiting their reply) and recently judged, oldest first."""

    def __init__(self, report: Reporter, lost_after: float, wire: Wire = DEFAULT) -> None:
        self.report = report
        self.lost_after = lost_after
        self.steps = DEFAULT_STEPS if wire is DEFAULT else Steps(wire)
        self.open: OrderedDict[str, Entry] = OrderedDict()
        self.done: OrderedDict[str, Entry] = OrderedDict()
        self.counts = {"complete": 0, "lost": 0, "duplicate": 0, "order": 0, "refused": 0}

    def expect(self, message_id: str, payload: dict | None = None, now: float | None = None) -> Entry:
        """A message this tab sends (``payload``, so it can be resent) or only watches; before it is sent."""
        now = time.perf_counter() if now is None else now
        entry = self.open[message_id] = Entry(message_id, payload, now)
        while len(self.open) > MAX_OPEN:
            self._judge(next(iter(self.open.values())), (LOST_NAME, "forgotten: too many messages awaiting a reply"))
        return entry

    def forget(self, message_id: str) -> None:
        """A message that was never sent after all."""
        self.open.pop(message_id, None)

    def knows(self, message_id: Any) -> bool:
        return message_id in self.open or message_id in self.done

    def observe(self, event: dict, etype: str, key: Any, now: float) -> bool:
        """Count one event replying to ``key``; False if the message is none of this ledger's."""
        entry = self.open.get(key)
        if entry is None:
            entry = self.done.get(key)
            if entry is None:
                return False
            if etype in self.steps.index and entry.verdict in ("complete", "order"):
                # a reply for a message already answered in full: a second reply (or an event sent twice)
                entry.verdict = "duplicate"
                self.counts["duplicate"] += 1
                self.report.failure(DUPLICATE_NAME, f"{etype} after the reply was complete (a second reply)")
            return True
        steps = self.steps
        if etype == steps.token:
            self._token(entry, etype, event.get(steps.token_seq_key))
            return True
        index = steps.index.get(etype, -1)
        if index < 0:  # an error event (the ledger sees only its reply's events and errors)
            self._close(entry, "refused")
            return True
        bit = 1 << index
        if entry.seen & bit:
            entry.problem = entry.problem or (DUPLICATE_NAME, f"{etype} twice")
        elif index < entry.last:
            entry.problem = entry.problem or (ORDER_NAME, f"{etype} after {steps.names[entry.last]}")
        entry.seen |= bit
        if index > entry.last:
            entry.last = index
        if index == 0:
            entry.acked = True
        if index == steps.final:
            self._final(entry, now, event)
        return True

    def _token(self, entry: Entry, etype: str, seq: Any) -> None:
        """One token of an open message: seq must be the next one (messages never name a seq: bounded errors)."""
        if isinstance(seq, bool) or not isinstance(seq, int):
            entry.problem = entry.problem or (ORDER_NAME, f"{etype} without a whole-number sequence number")
            return
        if entry.last < self.steps.startup_index:
            entry.problem = entry.problem or (
                ORDER_NAME,
                f"{etype} before {self.steps.names[self.steps.startup_index]}",
            )
        if seq < entry.tokens:
            entry.problem = entry.problem or (DUPLICATE_NAME, f"{etype} twice (sequence number did not increase)")
            return
        if seq > entry.tokens:
            entry.problem = entry.problem or (LOST_NAME, f"{etype} missing (sequence number skipped)")
        entry.tokens = seq + 1

    def resend_acked(self, key: Any) -> None:
        """A resend answered from the first send (``"duplicate": true``): the server has the message."""
        entry = self.open.get(key)
        if entry is not None:
            entry.acked = True

    def unacked(self, connection: int, now: float) -> list[Entry]:
        """After a reconnect: the messages to resend on ``connection`` (sent by this tab, never acked)."""
        return self._mark([e for e in self.open.values() if e.payload is not None and not e.acked], connection, now)

    def truncated(self, connection: int, now: float) -> list[Entry]:
        """``replay_truncated``: events may be gone. Incomplete replies start over; the messages this tab sent and
        has not resent on ``connection`` yet are returned to be resent (a restarted backend runs them anew)."""
        resend = []
        for entry in self.open.values():
            entry.restart()
            if entry.payload is not None and entry.sent_on != connection:
                resend.append(entry)
        return self._mark(resend, connection, now)

    def sweep(self, now: float, connected_at: float) -> None:
        """Judge lost what got no ``agent_completed`` within ``lost_after`` of its last send and of the reconnect
        (call it while connected: a message waiting out an outage is not lost yet)."""
        for entry in list(self.open.values()):
            if now - max(entry.sent_at, connected_at) > self.lost_after:
                self._judge(entry, (LOST_NAME, f"no {self.steps.names[-1]} within {self.lost_after:g} s"))

    def give_up(self, message_id: str, reason: str) -> None:
        """A reply that can no longer come (its stream ended and could not be resumed): judged lost now."""
        entry = self.open.get(message_id)
        if entry is not None:
            self._judge(entry, (LOST_NAME, reason))

    def close(self, now: float, connected_at: float) -> None:
        """The tab is closed: what is overdue is lost; the rest (still in time) is left unjudged."""
        self.sweep(now, connected_at)
        self.open.clear()

    def _mark(self, entries: list[Entry], connection: int, now: float) -> list[Entry]:
        for entry in entries:
            entry.sent_on = connection
            entry.sent_at = now
        return entries

    def _final(self, entry: Entry, now: float, event: dict | None = None) -> None:
        steps = self.steps
        names = steps.names
        if entry.seen != steps.all:
            missing = next(s for i, s in enumerate(names) if not entry.seen & (1 << i))
            self._judge(entry, (LOST_NAME, f"{missing} missing before {names[-1]}"))
            return
        said = event.get(steps.token_count_key) if event is not None and steps.token and steps.token_count_key else None
        if entry.problem is None and isinstance(said, int) and not isinstance(said, bool) and entry.tokens != said:
            # fewer: the stream lost its tail; more: tokens the platform says it never sent
            what = "missing" if entry.tokens < said else "beyond the count"
            entry.problem = (
                LOST_NAME if entry.tokens < said else DUPLICATE_NAME,
                f"{steps.token} {what} at {names[-1]}",
            )
        self._judge(entry, entry.problem, now)

    def _judge(self, entry: Entry, problem: tuple[str, str] | None, now: float | None = None) -> None:
        if problem is None:
            self._close(entry, "complete")
            ended = time.perf_counter() if now is None else now
            self.report.success(COMPLETE_NAME, (ended - entry.first_sent) * 1000.0)
            return
        name, message = problem
        self._close(entry, name.removeprefix("ledger "))
        self.report.failure(name, message)

    def _close(self, entry: Entry, verdict: str) -> None:
        entry.verdict = verdict
        entry.payload = None
        self.counts[verdict] += 1
        del self.open[entry.id]
        self.done[entry.id] = entry
        while len(self.done) > MAX_DONE:
            self.done.popitem(last=False)


class LedgerInbox(Inbox):
    """An Inbox whose chat events also go to the tab's ledger, which knows them when their Exchange has ended."""

    __slots__ = ("ledger",)

    def __init__(self, report: Reporter, ledger: Ledger, wire: Wire = DEFAULT) -> None:
        super().__init__(report, wire)
        self.ledger = ledger

    def handle(self, event: dict, now: float) -> None:
        steps = self.ledger.steps
        etype = event.get(steps.type_key)
        if etype in steps.types:
            key = event.get(steps.reply_key)
            if event.get(steps.duplicate_key) is True:
                if etype == steps.ack:  # a resend acked from the first send: not a step (it has no event_id)
                    self.ledger.resend_acked(key)
                    if self.ledger.knows(key):
                        return
            elif self.ledger.observe(event, etype, key, now) and key not in self.pending:
                # ours, after its Exchange ended (a timeout, or an outage the reply outlived): not foreign, and
                # the resume point moves past it, or a reconnect would have it replayed again
                event_id = event.get(steps.event_id_key)
                if event_id is not None and (self.last_event_id is None or event_id > self.last_event_id):
                    self.last_event_id = event_id
                return
        Inbox.handle(self, event, now)
