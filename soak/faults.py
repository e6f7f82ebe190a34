"""The fault schedule of a run (``[[faults]]``): kill, restart, cut, slow and pause, started and ended on the run's
clock.

The runner owns the processes and the proxies and lends them through ``Actions``; this module decides what is due,
carries out the network part itself (nftables through ``NetCut`` where it works, the proxy otherwise) and writes
``fault_start`` / ``fault_end`` to ``events.csv``. Like ``sampler.phases.Phases`` it never sleeps: the runner calls
``advance()`` from its loop and sleeps at most ``seconds_to_next()``.

Event details: ``<kind> <service> id=<i> n=<k> key=value ...``; ``id`` is the fault's index in ``[[faults]]`` and
``n`` its occurrence (1, 2, ... with ``every``), so a ``fault_end`` starts with the same words as its
``fault_start``. ``fault_start`` adds what ran (``via=nft``, ``via=proxy``, ``via=docker`` or ``via=sigstop``, the
port or container, mode, latency, for); ``fault_end`` adds ``outcome=ok|failed|stopped|skipped|unfinished``, then
``lasted=`` or ``took=`` seconds, and, last and running to the end of the line, ``reason=`` when there is one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runspec import folder
from runspec.keys import FAULT_KINDS
from sampler.writer import append_event
from soak import netcut
from soak.proxy import Proxy

POLL = 0.2  # seconds between advance() calls the runner should allow while a kill or restart is running
STOP_WAIT = 5.0  # stop(): how long a kill or restart still running may take before it is written off
REASON_MAX = 200  # characters of an exception kept in a reason
NETWORK_KINDS = ("cut", "slow")
PROCESS_KINDS = ("kill", "restart")
PAUSE = "pause"  # every process of the service frozen for ``for`` seconds (docker pause, or SIGSTOP), then thawed


class Actions(Protocol):
    """What the runner lends the schedule. kill and restart run in a worker thread, one at a time per fault.

    ``kill``/``restart`` return an optional detail for ``fault_end`` (e.g. ``"pid=123"``) and raise with a one-line
    reason when they fail; ``restart`` returns only once the service answers its health check again. ``pause``
    freezes the service and returns a detail for ``fault_start`` (e.g. ``"container=NAME via=docker"``); ``unpause``
    thaws it. Only the embedded sut has pause and unpause.
    ``port``: the TCP port the service listens on (None if unknown). ``proxy(service, to)``: the proxy the runner put
    between the service and Redis (``to='redis'``) or Postgres (``'postgres'``), or in front of the service itself
    (``to=''``); None where there is none.
    """

    def kill(self, service: str) -> str | None: ...

    def restart(self, service: str) -> str | None: ...

    def pause(self, service: str) -> str | None: ...

    def unpause(self, service: str) -> None: ...

    def port(self, service: str) -> int | None: ...

    def proxy(self, service: str, to: str) -> Proxy | None: ...


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:REASON_MAX]


def check_faults(
    faults: list[dict[str, Any]],
    services: Collection[str],
    can_kill: bool,
    proxied: Collection[tuple[str, str]] = (),
    nft: bool | None = None,
) -> None:
    """Raise ValueError (one line naming ``faults[i].key``) for a fault this run cannot carry out.

    ``services``: the names a fault may hit; ``can_kill``: the runner controls their processes or containers (the
    embedded sut: kill, restart, pause);
    ``proxied``: the (service, to) pairs the runner puts a proxy on (to '' = in front of the service);
    ``nft``: whether nftables works (None: probe it now).
    """
    nft_ok = netcut.available() if nft is None else nft
    for i, fault in enumerate(faults):
        at = f"faults[{i}]"
        kind, service, to = fault.get("kind", ""), fault.get("service", ""), fault.get("to", "")
        if service not in services:
            raise ValueError(f"{at}.service: unknown service {service!r} (known: {', '.join(sorted(services))})")
        if kind in PROCESS_KINDS:
            if not can_kill:
                raise ValueError(f"{at}.kind: {kind} needs control of {service!r}'s process (the embedded sut)")
            for key in ("for", "to", "latency"):
                if fault.get(key):
                    raise ValueError(f"{at}.{key}: a {kind} has no {key!r}; it ends when the {kind} is done")
        elif kind == PAUSE:
            if not can_kill:
                raise ValueError(f"{at}.kind: a pause needs control of {service!r}'s process (the embedded sut)")
            if not fault.get("for", 0) > 0:
                raise ValueError(f"{at}.for: a pause needs a length above 0 (how long {service!r} stays frozen)")
            for key in ("to", "latency"):
                if fault.get(key):
                    raise ValueError(f"{at}.{key}: a pause has no {key!r}; it freezes the whole service")
        elif kind in NETWORK_KINDS:
            if kind == "cut" and fault.get("latency"):
                raise ValueError(f"{at}.latency: a cut has no latency (use kind = 'slow')")
            if to and (service, to) not in proxied:
                raise ValueError(
                    f"{at}.to: {service!r} has no proxy on its {to} connections "
                    f"(the runner sets one up only for the embedded sut using a real {to})"
                )
            if kind == "slow" and not to and (service, "") not in proxied:
                raise ValueError(
                    f"{at}.to: slow on {service!r}'s own port needs a proxy in front of it, which this run does not "
                    "have; slow its 'redis' or 'postgres' connections instead"
                )
            if kind == "cut" and not to and not nft_ok and (service, "") not in proxied:
                raise ValueError(
                    f"{at}.kind: a cut of {service!r} needs nftables ({netcut.unavailable_reason() or 'disabled'}) "
                    "or a proxy in front of it; this run has neither"
                )
        else:
            raise ValueError(f"{at}.kind: unknown kind {kind!r} (known: {', '.join(FAULT_KINDS)})")


@dataclass(eq=False)
class _Active:
    index: int  # in [[faults]]
    fault: dict[str, Any]
    ident: str  # "<kind> <service> id=<i> n=<k>"
    started: float
    target: tuple[str, str] | None = None  # (service, to) a network fault holds; (service, "pause") a pause
    ends: float | None = None  # a network fault's or a pause's end on the clock
    undo: Callable[[], None] | None = None  # puts the network back, thaws the service
    thread: threading.Thread | None = None  # a kill or restart in flight
    ended: bool = False
    extra: list[str] = field(default_factory=list)


class FaultSchedule:
    """The run's ``[[faults]]`` on one clock: ``start``, then ``advance`` until the load ends, then ``stop``."""

    def __init__(
        self,
        faults: list[dict[str, Any]],
        run_dir: str | Path,
        actions: Actions,
        clock: Callable[[], float] = time.time,
        use_nft: bool | None = None,
    ) -> None:
        self.faults = faults
        self.run_dir = Path(run_dir)
        self.actions = actions
        self.clock = clock
        self.use_nft = use_nft  # None: nftables where it works, else the proxy; False: always the proxy
        self.netcut: netcut.NetCut | None = None
        self.active: list[_Active] = []
        self.started = False
        self.stopped = False
        self.until: float | None = None
        self._next: list[float | None] = []
        self._index: list[int] = []  # the next occurrence of each fault, from 0
        self._written: list[str] = []  # events written since the last advance(), for its return value
        self._lock = threading.RLock()  # reentrant: stop() may come from a signal handler inside advance()

    # --- the runner's side ------------------------------------------------------------------------------------
    def start(self, load_start_ts: float, until: float | None = None) -> None:
        """Load started at ``load_start_ts``; no fault starts at or after ``until`` (the load's planned end)."""
        if self.started:
            return
        self.started = True
        self.until = until
        self._next = [self._before_until(load_start_ts + fault["at"]) for fault in self.faults]
        self._index = [0] * len(self.faults)
        if any(fault["kind"] == "cut" for fault in self.faults) and self._nft_ok():
            try:
                netcut.cleanup_stale()
            except netcut.NetCutError:
                pass  # a stale table of a dead run is untidy, not a reason to stop this one

    def advance(self) -> list[str]:
        """Start and end whatever is due now; returns the events written since the last call ("event detail")."""
        with self._lock:
            if self.started and not self.stopped:
                now = self.clock()
                for active in [a for a in self.active if a.ends is not None and now >= a.ends]:
                    self._end_network(active, "ok", now)
                for i, fault in enumerate(self.faults):
                    due = self._next[i]
                    if due is not None and now >= due and not self.stopped:  # stop() may come from a signal
                        self._begin(i, fault, now)
            written, self._written = self._written, []
            return written

    def seconds_to_next(self) -> float | None:
        """How long until ``advance`` has something to do; None when nothing is pending."""
        with self._lock:
            if not self.started or self.stopped:
                return None
            times = [due for due in self._next if due is not None]
            times += [a.ends for a in self.active if a.ends is not None]
            waits = [POLL] if any(a.thread is not None for a in self.active) or self._written else []
            if not times and not waits:
                return None
            now = self.clock()
            return max(0.0, min([t - now for t in times] + waits))

    def stop(self) -> list[str]:
        """End every active fault now and put the network back; returns the events written since the last call.

        Idempotent and safe from a finally block: waits at most STOP_WAIT for a kill or restart still running.
        """
        with self._lock:
            if self.stopped:
                return []
            self.stopped = True
            now = self.clock()
            for active in [a for a in self.active if a.thread is None]:
                self._end_network(active, "stopped", now)
            in_flight = [a for a in self.active if a.thread is not None]
        deadline = time.monotonic() + STOP_WAIT
        for active in in_flight:  # outside the lock: the worker takes it to write its own fault_end
            active.thread.join(max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
        with self._lock:
            for active in [a for a in self.active if not a.ended]:
                kind = active.fault["kind"]
                self._end(active, "unfinished", self.clock(), f"reason=the run stopped while the {kind} was running")
            if self.netcut is not None:
                self.netcut.close()
            written, self._written = self._written, []
            return written

    # --- beginnings ---------------------------------------------------------------------------------------------
    def _before_until(self, ts: float) -> float | None:
        return ts if self.until is None or ts < self.until else None

    def _nft_ok(self) -> bool:
        return self.use_nft is not False and netcut.available()

    def _begin(self, i: int, fault: dict[str, Any], now: float) -> None:
        k, due, every = self._index[i], self._next[i], fault["every"]
        assert due is not None
        first = due - k * every
        if every > 0:  # the latest occurrence due now; any before it were missed (advance() was late)
            k = max(k, math.floor((now - first) / every))
            due = first + k * every
        skipped = k - self._index[i]
        self._index[i] = k + 1
        self._next[i] = self._before_until(first + (k + 1) * every) if every > 0 else None
        if self._before_until(due) is None:
            return
        active = _Active(i, fault, f"{fault['kind']} {fault['service']} id={i} n={k + 1}", now)
        if skipped:  # the runner was blocked past whole occurrences: say so, start the latest once
            active.extra.append(f"skipped={skipped}")
        kind = fault["kind"]
        busy = self._busy(i, fault)
        if busy:
            self._start_event(active, now)
            self._end(active, "skipped", now, f"reason={busy}")
        elif kind in PROCESS_KINDS:
            self._begin_process(active, now)
        elif kind == PAUSE:
            self._begin_pause(active, now)
        else:
            self._begin_network(active, now)

    def _busy(self, i: int, fault: dict[str, Any]) -> str:
        for active in self.active:
            if active.index == i:
                return "its previous occurrence is still running"
            if fault["kind"] in NETWORK_KINDS and active.target == (fault["service"], fault["to"]):
                return f"{active.ident} still holds the same connections"
            if fault["kind"] == PAUSE and active.target == (fault["service"], PAUSE):
                return f"{active.ident} holds {fault['service']} frozen already"
        return ""

    def _begin_process(self, active: _Active, now: float) -> None:
        kind, service = active.fault["kind"], active.fault["service"]
        self._start_event(active, now)
        active.thread = threading.Thread(
            target=self._run_process, args=(active,), name=f"fault-{kind}-{service}", daemon=True
        )
        self.active.append(active)
        active.thread.start()

    def _run_process(self, active: _Active) -> None:
        kind, service = active.fault["kind"], active.fault["service"]
        began = time.monotonic()
        try:
            detail = getattr(self.actions, kind)(service)
            outcome, extra = "ok", (detail or "").strip()
        except Exception as exc:  # noqa: BLE001 - any failure of the runner's action is this fault's outcome
            outcome, extra = "failed", f"reason={_one_line(exc)}"
        took = f"took={time.monotonic() - began:.3f}"
        with self._lock:
            if not active.ended:  # stop() may have written it off already
                self._end(active, outcome, self.clock(), " ".join(part for part in (took, extra) if part))

    def _begin_pause(self, active: _Active, now: float) -> None:
        service, length = active.fault["service"], active.fault["for"]
        active.extra.append(f"for={length:g}")
        try:
            detail = self.actions.pause(service)
        except Exception as exc:  # noqa: BLE001 - the pause could not start: say why, in a start/end pair
            self._start_event(active, self.clock())
            self._end(active, "failed", self.clock(), f"reason={_one_line(exc)}")
            return
        active.extra += [detail.strip()] if detail else []
        active.undo = lambda: self.actions.unpause(service)
        active.target, active.ends = (service, PAUSE), now + length
        self.active.append(active)
        self._start_event(active, self.clock())

    def _begin_network(self, active: _Active, now: float) -> None:
        fault = active.fault
        kind, service, to = fault["kind"], fault["service"], fault["to"]
        params = [f"mode={fault['mode']}"] if kind == "cut" else [f"latency={fault['latency']:g}"]
        params += [f"to={to}"] if to else []
        params.append(f"for={fault['for']:g}")
        try:
            proxy = self.actions.proxy(service, to)
            if kind == "slow":
                if proxy is None:
                    raise RuntimeError(f"no proxy on {service}'s {to or 'own'} connections")
                previous = proxy.latency
                proxy.latency = fault["latency"]
                active.undo = lambda: setattr(proxy, "latency", previous)
                params += ["via=proxy", f"port={proxy.port}"]
            else:
                # to = redis/postgres: the proxy's port is the sut's side of those connections, never the server's.
                port = (proxy.port if proxy is not None else None) if to else self.actions.port(service)
                if self._nft_ok() and port is not None:
                    if self.netcut is None:
                        self.netcut = netcut.NetCut()
                    cutter = self.netcut
                    cutter.cut(port, fault["mode"])
                    if proxy is not None and fault["mode"] == "reset":
                        # nft answers a packet with a reset only on the side that sent it: an idle connection's
                        # far end (the proxy's socket to Redis/Postgres) would outlive the cut and read as a
                        # connection the server never got back. Reset what is open, on both sides, as a cut does.
                        proxy.cut("reset")
                        proxy.restore()
                    active.undo = lambda: cutter.restore(port)
                    params += ["via=nft", f"port={port}"]
                elif proxy is not None:
                    proxy.cut(fault["mode"])
                    active.undo = proxy.restore
                    params += ["via=proxy", f"port={proxy.port}"]
                elif to:
                    raise RuntimeError(f"no proxy on {service}'s {to} connections")
                else:
                    why = "no port known" if port is None else f"no nftables ({netcut.unavailable_reason() or 'off'})"
                    raise RuntimeError(f"{why} for {service} and no proxy in front of it")
        except Exception as exc:  # noqa: BLE001 - the fault could not start: say why, in a start/end pair
            active.extra += params
            self._start_event(active, self.clock())
            self._end(active, "failed", self.clock(), f"reason={_one_line(exc)}")
            return
        active.extra += params
        active.target, active.ends = (service, to), now + fault["for"]
        self.active.append(active)
        self._start_event(active, self.clock())

    # --- ends ---------------------------------------------------------------------------------------------------
    def _end_network(self, active: _Active, outcome: str, now: float) -> None:
        if active.ended:  # stop() from a signal handler ended it while advance() was on its way here
            return
        extra = f"lasted={now - active.started:.3f}"
        try:
            if active.undo is not None:
                active.undo()
        except Exception as exc:  # noqa: BLE001 - stop() closes the NetCut table anyway; the event says it failed
            outcome, extra = "failed", f"{extra} reason=restore failed: {_one_line(exc)}"
        self._end(active, outcome, self.clock(), extra)

    def _start_event(self, active: _Active, ts: float) -> None:
        self._write(folder.FAULT_START, " ".join([active.ident, *active.extra]), ts)

    def _end(self, active: _Active, outcome: str, ts: float, extra: str) -> None:
        active.ended = True
        if active in self.active:
            self.active.remove(active)
        self._write(folder.FAULT_END, f"{active.ident} outcome={outcome} {extra}".strip(), ts)

    def _write(self, event: str, detail: str, ts: float) -> None:
        append_event(self.run_dir, event, detail, ts=ts)
        self._written.append(f"{event} {detail}")
