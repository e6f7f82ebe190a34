"""RateLimitedUser: a free-tier user bursting past the rate limit, then waiting retry_after, then paid."""

from __future__ import annotations

import gevent
from locust import task

from locustfiles import options
from locustfiles.exchange import Exchange
from locustfiles.reconnect import Tab
from locustfiles.users import MESSAGE, ChatUser

RETRY_SLACK = 0.25  # seconds added to retry_after before the retry: the server's clock granularity
RATE_NAME = "rate limit"


class RateLimitedUser(ChatUser):
    """A free-tier user bursting past the limit: refused exactly over it, accepted after retry_after and when paid.

    Every cycle is a new free user (an empty window). The limit it expects is the scenario's [sut] rate_limit per
    rate_window; a server that refuses early, accepts over the limit, leaves out retry_after, refuses after the wait
    or refuses a paid user fails the ``rate limit`` check.
    """

    paid = False

    @task
    def hit_the_limit(self) -> None:
        if not self.begin():
            return
        limit = int(options.current.sut["rate_limit"])
        burst = self.cfg["burst"] or limit + 1
        conn = self.connections[0]
        accepted, refusals, problem = self.burst(conn, burst, limit)
        if problem is None and burst > limit and not refusals:
            problem = "free tier accepted a message over its limit"
        if problem:
            self.report.failure(RATE_NAME, problem)
        elif refusals:
            self.report.success(RATE_NAME, refusals[0].replied_ms)
        for exchange in accepted:
            exchange.wait(self.timeout)
        if problem:
            return
        if refusals:
            gevent.sleep(float(refusals[-1].error[self.wire.retry_after_key]) + RETRY_SLACK)
            self.keep_fresh()
            exchange = conn.chat(self.thread_id, MESSAGE, refusable=True)
            if not self.judge_single(exchange, "refused again after waiting retry_after"):
                return
            exchange.wait(self.timeout)
        if not self.session.upgrade():
            self.report.failure(RATE_NAME, "upgrade to the paid tier failed")
            return
        if not conn.refresh_token(self.session.access_token, self.timeout):
            return
        accepted, refusals, problem = self.burst(conn, burst, limit=None)
        if problem:
            self.report.failure(RATE_NAME, problem)
        else:
            self.report.success(RATE_NAME, accepted[-1].replied_ms if accepted else 0.0)
        for exchange in accepted:
            exchange.wait(self.timeout)

    def burst(self, conn: Tab, count: int, limit: int | None) -> tuple[list, list, str | None]:
        """Send ``count`` messages, each after the reply to the one before; ``limit`` None = paid, never refused."""
        accepted: list[Exchange] = []
        refusals: list[Exchange] = []
        wire = self.wire
        for i in range(count):
            exchange = conn.chat(self.thread_id, MESSAGE, refusable=True)
            if not exchange.replied.wait(self.timeout) or exchange.replied_at is None:
                exchange.fail(f"{{step}} not received within {self.timeout:g} s")
                return accepted, refusals, "no reply to a message of the burst"
            if exchange.error is None:
                accepted.append(exchange)
                if limit is not None and i >= limit:
                    return accepted, refusals, "free tier accepted a message over its limit"
                continue
            code = str(exchange.error.get(wire.code_key) or "?")[:40]
            if limit is None:
                return accepted, refusals, f"paid tier refused ({code})"
            if code != wire.rate_limited:
                return accepted, refusals, f"error {code} instead of {wire.rate_limited}"
            if i < limit:
                return accepted, refusals, "free tier refused below its limit"
            retry_after = exchange.error.get(wire.retry_after_key)
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after <= 0:
                return accepted, refusals, f"{wire.rate_limited} without a positive {wire.retry_after_key}"
            refusals.append(exchange)
        return accepted, refusals, None

    def judge_single(self, exchange: Exchange, refused_message: str) -> bool:
        if not exchange.replied.wait(self.timeout) or exchange.replied_at is None:
            exchange.fail(f"{{step}} not received within {self.timeout:g} s")
            self.report.failure(RATE_NAME, "no reply to the retry")
            return False
        if exchange.error is not None:
            self.report.failure(RATE_NAME, refused_message)
            return False
        self.report.success(RATE_NAME, exchange.replied_ms)
        return True
