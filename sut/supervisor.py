"""Restart a service that died, as an orchestrator would: on the same port, after a short backoff, counted.

``start_sut`` runs one when the [sut] key ``supervise`` is on. A thread polls the processes; a dead one (SIGKILL,
a crash, the OOM killer) is started again after RESTART_BACKOFF seconds, doubled for every restart it already had
within RESTART_WINDOW (up to RESTART_BACKOFF_MAX), and waited for until healthy. A service that needed RESTART_LIMIT
restarts within RESTART_WINDOW and dies again is crash-looping: the supervisor gives up, leaves it dead, says why in
the log and ``Sut.history``, and ``Sut.watch()`` names it. ``Sut.stop()`` and ``Sut.restart()`` are never taken
for a death.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING

from sut.launcher import SutError
from sut.procs import describe_exit

if TYPE_CHECKING:
    from sut.launcher import Sut

RESTART_BACKOFF = 0.5  # seconds before the first restart
RESTART_BACKOFF_MAX = 8.0
RESTART_LIMIT = 5  # restarts within RESTART_WINDOW; one more death and the service is left dead
RESTART_WINDOW = 60.0
RESTART_HEALTH_TIMEOUT = 60.0  # a restarted service not healthy by then is left running (and said so)
POLL_INTERVAL = 0.2
CLOSE_TIMEOUT = 10.0

log = logging.getLogger("sut.supervisor")


class Supervisor:
    """Watches the services of one Sut; each restart runs in a thread of its own, so services recover apart."""

    def __init__(self, sut: Sut) -> None:
        self.sut = sut
        self.given_up: dict[str, str] = {}  # service -> why it was left dead
        self._recent: dict[str, deque[float]] = defaultdict(deque)  # when each service was restarted lately
        self._workers: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sut-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching; a restart waiting for its backoff is dropped (the caller is stopping the sut)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_TIMEOUT)
        for worker in list(self._workers.values()):
            if worker is not threading.current_thread():
                worker.join(CLOSE_TIMEOUT)

    def revive(self, name: str) -> None:
        """``name`` was started again on purpose: watch it afresh."""
        self.given_up.pop(name, None)
        self._recent[name].clear()

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            for name, code in self.sut._dead().items():
                worker = self._workers.get(name)
                if name in self.given_up or (worker is not None and worker.is_alive()):
                    continue
                worker = threading.Thread(target=self._restart, args=(name, code), name=f"sut-restart-{name}")
                worker.daemon = True
                self._workers[name] = worker
                worker.start()

    def _restart(self, name: str, code: int) -> None:
        recent = self._recent[name]
        cutoff = time.monotonic() - RESTART_WINDOW
        while recent and recent[0] < cutoff:
            recent.popleft()
        ended = describe_exit(code)
        if len(recent) >= RESTART_LIMIT:
            why = f"exited with {ended} after {len(recent)} restarts within {RESTART_WINDOW:g} s: left dead"
            self.given_up[name] = why
            self.sut._note(name, "gave_up", f"{why}; its log:\n{self.sut.log_tail(name)}")
            return
        delay = min(RESTART_BACKOFF * 2 ** len(recent), RESTART_BACKOFF_MAX)
        self.sut._note(name, "exited", f"{ended}; restarting in {delay:g} s")
        if self._stop.wait(delay):
            return
        try:
            if not self.sut._respawn(name, f"exited with {ended}", deliberate=False):
                return  # restarted on purpose meanwhile, or the sut is stopping
        except SutError as exc:  # its port could not be bound again (the launcher's reservation makes this rare)
            self.given_up[name] = str(exc)
            self.sut._note(name, "gave_up", str(exc))
            return
        recent.append(time.monotonic())
        try:
            self.sut._wait_healthy([name], RESTART_HEALTH_TIMEOUT)
        except SutError as exc:
            # it died again (the next poll restarts it, later) or is slow to be healthy (left running: an
            # orchestrator restarts what is dead, not what is degraded because Redis is away)
            if not self._stop.is_set():
                log.warning("sut %s: %s", name, str(exc).splitlines()[0])
