"""A streamed reply as a person feels it: the wait for the first token, each gap between tokens, the stalls.

One ``Stream`` per timed Exchange whose reply streams token events, under the names in runspec.protocol: ``time to
first token`` (from the send; a Locust request, one per reply), ``token stall`` (a Locust failure per gap above the
stall threshold, timed with the gap), and into the exact timing record only (Reporter.timing: one per token would
swamp Locust's requests per second and the error rate's denominator) ``token gap`` (one per gap) and, at the
reply's end, ``tokens per second`` (a rate, not milliseconds, in the ms column). Nothing is kept per token: the
timing record (timings.py) aggregates per interval and rounded value, so a day of tokens stays a bounded record.

Whether each token came once, in order and none missing is the ledger's job (ledger.py), which also sees the
tokens of a reply whose Exchange ended or was untimed by a reconnect. This module does not import Locust.
"""

from __future__ import annotations

from locustfiles.reporting import Reporter
from runspec.keys import USER_SCHEMA
from runspec.protocol import TOKEN_FIRST, TOKEN_GAP, TOKEN_RATE, TOKEN_STALL

STALL_AFTER_MS = USER_SCHEMA["token_stall"].default * 1000.0
FIRST_NAME, GAP_NAME, STALL_NAME, RATE_NAME = TOKEN_FIRST, TOKEN_GAP, TOKEN_STALL, TOKEN_RATE


class Stream:
    """The token arrivals of one reply: only the first and last times and a count."""

    __slots__ = ("first", "last", "count")

    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.count = 0

    def token(self, report: Reporter, sent_at: float, now: float, stall_ms: float) -> None:
        """One token arrived at ``now`` (perf_counter) for a message sent at ``sent_at``."""
        if self.count == 0:
            self.first = now
            report.success(FIRST_NAME, (now - sent_at) * 1000.0)
        else:
            gap = (now - self.last) * 1000.0
            report.timing(GAP_NAME, gap)
            if gap > stall_ms:
                # the message names the threshold, never the gap, so Locust's error table stays one row
                report.failure(STALL_NAME, f"gap between tokens over {stall_ms:g} ms", gap)
        self.last = now
        self.count += 1

    def end(self, report: Reporter) -> None:
        """The reply ended: its rate, when there were two tokens or more to measure it between."""
        if self.count >= 2 and self.last > self.first:
            report.timing(RATE_NAME, (self.count - 1) / (self.last - self.first))
