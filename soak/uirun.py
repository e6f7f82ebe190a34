"""``soak ui``: the Locust web UI against the scenario's target, sampled from inside Locust, analysed at the end."""

from __future__ import annotations

import signal
import time
from typing import Any

from runspec import folder
from soak.early import EarlyWatch
from soak.runner import POLL, Run, RunOptions


class UiRun(Run):
    """``soak ui``: the Locust web UI against the scenario's target. The sampler runs inside Locust (the plugin in
    locustfiles/sampling.py) so the Services tab shows it live; the runner analyses the folder when Locust exits."""

    def __init__(self, options: RunOptions, web_host: str, web_port: int) -> None:
        super().__init__(options)
        self.web_host, self.web_port = web_host, web_port

    def execute(self) -> int:
        previous = {sig: signal.signal(sig, self._on_ui_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.say(f"run folder: {self.dir}")
            host, auth_host, services, _checks = self._start_target()
            self._write_scenario(host, auth_host, services)
            self._spawn_locust(self._locust_command(host, auth_host, web=(self.web_host, self.web_port)))
            self.say(f"web UI: http://{self.web_host}:{self.web_port}  (Ctrl-C to stop; log: locust.log)")
            early = EarlyWatch(self.dir, self.scenario["leaks"]["early_every"], time.time(), self._leak_confirmed)
            while self.locust.poll() is None:
                early.poll(time.time())
                time.sleep(POLL)
            early.stop()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not (self.dir / folder.SAMPLES).exists():
            self.say("no test was started: nothing to analyse")
            return 0
        return self._analyse()

    def _on_ui_signal(self, signum: int, _frame: Any) -> None:
        # Ending the web UI is the normal way out, not an interruption of a test.
        self.signals += 1
        self._stop_locust(kill=self.signals > 1)
