"""The early leak verdict while a run goes on: every ``leaks.early_every`` seconds, in a thread of its own (it reads
``samples.csv`` as it stands, which takes seconds on a day-long run and must not hold up the runner's loop), the
analysis's ``early_verdicts`` is asked per series. A leak confirmed for the first time is written to ``events.csv``
(``leak_confirmed``) and said once; the progress line carries the counts; each look is written whole to
``early.json``, which the web UI's Services tab shows."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runspec import folder
from sampler.writer import append_event

FIRST_LOOK_AFTER = 60.0  # seconds of load before the first look: nothing can be confirmed sooner


class EarlyWatch:
    """``poll(now)`` from the runner's loop starts a look when one is due and none is under way; ``confirmed`` holds
    the (service, metric, reason) confirmed so far, ``summary()`` a short text for the progress line."""

    def __init__(self, run_dir: Path, every: float, start: float, on_confirmed: Callable[[str], None]) -> None:
        self.run_dir = run_dir
        self.every = every
        self.next_look = start + max(FIRST_LOOK_AFTER, min(every, FIRST_LOOK_AFTER * 5))
        self.on_confirmed = on_confirmed
        self.confirmed: dict[tuple[str, str], str] = {}
        self.states: dict[tuple[str, str], str] = {}
        self.error = ""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poll(self, now: float) -> None:
        if self.every <= 0 or now < self.next_look or (self._thread is not None and self._thread.is_alive()):
            return
        self.next_look = now + self.every
        self._thread = threading.Thread(target=self._look, args=(now,), name="early-verdict", daemon=True)
        self._thread.start()

    def summary(self) -> str:
        with self._lock:
            states = list(self.states.values())
        if not states:
            return ""
        from analysis.early import CLEAN_SO_FAR, CONFIRMED

        confirmed, clean = states.count(CONFIRMED), states.count(CLEAN_SO_FAR)
        return f"leaks: {confirmed} confirmed, {clean} clean so far, {len(states) - confirmed - clean} undecided"

    def _look(self, now: float) -> None:
        from analysis import RunFolderError
        from analysis.early import CONFIRMED, early_verdicts_for_folder

        try:
            verdicts = early_verdicts_for_folder(self.run_dir)
        except (RunFolderError, OSError, ValueError) as exc:  # a folder being written: try again next time
            self.error = str(exc)
            return
        self._write(verdicts)
        new: list[dict[str, Any]] = []
        with self._lock:
            self.states = {(v["service"], v["metric"]): v["state"] for v in verdicts}
            for v in verdicts:
                key = (v["service"], v["metric"])
                if v["state"] == CONFIRMED and key not in self.confirmed:
                    self.confirmed[key] = v["reason"]
                    new.append(v)
        for v in new:
            detail = f"{v['service']} {v['metric']}: {v['reason']}"
            append_event(self.run_dir, folder.LEAK_CONFIRMED, detail, ts=now)
            self.on_confirmed(detail)

    def _write(self, verdicts: list[dict[str, Any]]) -> None:
        path = self.run_dir / folder.EARLY
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps({"ts": time.time(), "verdicts": verdicts}, default=str), encoding="utf-8")
            os.replace(temporary, path)  # a reader never sees half a file
        except OSError as exc:
            self.error = str(exc)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=30)
