"""Idempotent sends: a chat message resent with the same client id is answered from the first one, not run again.

A client that lost its connection cannot know whether its last messages arrived, so it resends those that got no
``ack`` with the same ``id``, maybe on another connection. The backend remembers, per user, the client ids it
accepted (the thread and the ack's event id); a resend gets an ``ack`` marked ``"duplicate": true`` and no second
agent run, while the first run's events reach the user's connections (and the replay buffer) as usual.

The memory is bounded (DEDUP_MAX_IDS per user, each kept DEDUP_TTL) and lives in the backend process, next to the
replay buffer and the event ids it refers to: a restarted backend has neither, so it handles a resend as new, which
gives the client the one complete reply it is missing rather than a duplicate ack for a reply nobody can replay.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from sut import metrics

DEDUP_MAX_IDS = 1000  # client ids remembered per user; the oldest is forgotten first
DEDUP_TTL = 600.0  # seconds a client id is remembered (as long as an idle user's replay buffer, by default)
DEDUP_WAIT = 30.0  # longest a resend waits for the first send that is still being stored
SWEEP_INTERVAL = 30.0


@dataclass(frozen=True)
class Outcome:
    """What became of an accepted chat message: its thread and the event id of its ack."""

    thread_id: int
    event_id: int
    duplicate: bool = False


@dataclass(eq=False)
class _Sent:
    at: float
    # set once the first send is acked (an Outcome) or refused (None: a resend is then handled as new)
    outcome: asyncio.Future[Outcome | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Dedup:
    """Client ids per user, oldest first, each with the outcome of its first send."""

    def __init__(self) -> None:
        self.users: dict[str, OrderedDict[str, _Sent]] = {}
        self.remembered = 0
        metrics.gauge("sut_dedup_ids", "client message ids remembered for de-duplication", lambda: self.remembered)

    async def earlier(self, user: str, client_id: str) -> Outcome | None:
        """The outcome of an earlier send of ``client_id``; None when this is the first (the caller now owns it
        and must call ``accepted`` or ``refused``). Waits while an earlier send is still being stored."""
        while True:
            sent = self._claim(user, client_id)
            if sent is None:
                return None
            try:
                outcome = await asyncio.wait_for(asyncio.shield(sent.outcome), DEDUP_WAIT)
            except TimeoutError:
                outcome = None
            if outcome is not None:
                return Outcome(outcome.thread_id, outcome.event_id, duplicate=True)
            # the first send was refused (rate limit, storage): this one gets its own try

    def _claim(self, user: str, client_id: str) -> _Sent | None:
        # no await in here: two sends of one id that arrive together cannot both see "first"
        ids = self.users.setdefault(user, OrderedDict())
        self._expire(ids, time.monotonic())
        sent = ids.get(client_id)
        if sent is not None:
            return sent
        ids[client_id] = _Sent(time.monotonic())
        self.remembered += 1
        while len(ids) > DEDUP_MAX_IDS:
            self._drop(ids, next(iter(ids)))
        return None

    def accepted(self, user: str, client_id: str, outcome: Outcome) -> None:
        sent = self.users.get(user, {}).get(client_id)
        if sent is not None and not sent.outcome.done():
            sent.outcome.set_result(outcome)

    def refused(self, user: str, client_id: str, event_id: int | None = None) -> None:
        """The first send was not accepted: forget it, and let a resend that waits for it try again.

        ``event_id``: forget it only if it is the send acked with that event id (a job that failed long after its
        ack must not take a later send of the same id with it, e.g. after the id was evicted and sent anew).
        """
        ids = self.users.get(user)
        sent = ids.get(client_id) if ids else None
        if sent is None:
            return
        if event_id is not None:
            earlier = sent.outcome.result() if sent.outcome.done() else None
            if earlier is None or earlier.event_id != event_id:
                return
        if not sent.outcome.done():
            sent.outcome.set_result(None)
        self._drop(ids, client_id)

    def _drop(self, ids: OrderedDict[str, _Sent], client_id: str) -> None:
        sent = ids.pop(client_id)
        self.remembered -= 1
        if not sent.outcome.done():
            sent.outcome.set_result(None)

    def _expire(self, ids: OrderedDict[str, _Sent], now: float) -> None:
        while ids:
            client_id, sent = next(iter(ids.items()))
            if sent.at > now - DEDUP_TTL:
                return
            self._drop(ids, client_id)

    def sweep(self) -> None:
        """Expire old ids of every user, and forget users with none left: the memory must not be a leak."""
        now = time.monotonic()
        for user in list(self.users):
            ids = self.users[user]
            self._expire(ids, now)
            if not ids:
                del self.users[user]

    async def sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL, DEDUP_TTL))
            self.sweep()
