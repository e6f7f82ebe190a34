"""How the WebSocket checks speak to Locust: request events of type WS (Reporter), and a cheap one-shot flag.

Split out of exchange.py (which re-exports both). This module does not import Locust.
"""

from __future__ import annotations

from typing import Any

from gevent.hub import Waiter, get_hub

from locustfiles.timings import record_timing

REQUEST_TYPE = "WS"


class Flag:
    """A one-shot event with at most one waiter: gevent.event.Event's link machinery and Timeout object cost more
    than the rest of a round trip's bookkeeping (measured with bench/bench_ws.py)."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: Waiter | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            get_hub().loop.run_callback(waiter.switch, True)

    def wait(self, timeout: float) -> bool:
        """True once set; False after ``timeout`` seconds."""
        if self._is_set:
            return True
        if timeout <= 0:
            return False
        hub = get_hub()
        waiter = self._waiter = Waiter(hub)
        timer = hub.loop.timer(timeout)
        timer.start(waiter.switch, False)
        try:
            return waiter.get()
        finally:
            timer.close()
            self._waiter = None


class EventCheckFailed(Exception):
    """A server event that broke the contract (the message says which check, never which id)."""


class Reporter:
    """Fires Locust request events of type WS."""

    __slots__ = ("_fire", "_timing")

    def __init__(self, environment: Any) -> None:
        self._fire = environment.events.request.fire
        self._timing = getattr(environment, "record_timing", None) or record_timing

    def timing(self, name: str, ms: float) -> None:
        """A timing for the exact record (latency.csv) only: many per reply, so never a Locust request."""
        self._timing(REQUEST_TYPE, name, ms)

    def success(self, name: str, ms: float, length: int = 0) -> None:
        self._fire(
            request_type=REQUEST_TYPE, name=name, response_time=ms, response_length=length, exception=None, context={}
        )

    def count(self, name: str) -> None:
        """Counted, untimed and not a failure (Locust leaves a None time out of its percentiles)."""
        self._fire(
            request_type=REQUEST_TYPE, name=name, response_time=None, response_length=0, exception=None, context={}
        )

    def failure(self, name: str, message: str, ms: float | None = None) -> None:
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=ms,
            response_length=0,
            exception=EventCheckFailed(message),
            context={},
        )
