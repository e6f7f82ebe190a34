"""Entry locustfile for scenario runs: chat.py plus a load shape read from the scenario's [shape] (see shapes.py).

    locust -f locustfiles/shaped.py --headless --host BACKEND --auth-host AUTH --soak-scenario RUN/scenario.toml \
        --soak-run-dir RUN --soak-sampler off --csv RUN/locust --csv-full-history --html RUN/locust_report.html

SIGTERM: headless Locust 2.47 installs its SIGTERM handler only after a shape test has ended (main.py), so a SIGTERM
during the shape killed the process outright: no final CSV rows, no HTML report, no quitting event, orphaned
``--processes`` workers. Here SIGTERM during the shape ends the shape, which takes Locust's normal way out.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import gevent
import locust  # noqa: F401 - first: gevent monkey-patching before anything opens a socket
from locust import LoadTestShape, events
from locust.runners import WorkerRunner

from locustfiles import options, plugin, sampling, webui  # noqa: F401 - their listeners register on import
from locustfiles.ratelimited import RateLimitedUser
from locustfiles.shapes import users_at
from locustfiles.sseuser import SseChattingUser
from locustfiles.users import ChattingUser, MultiTabUser, ReconnectingUser, UploadingUser

__all__ = [
    "ChattingUser",
    "MultiTabUser",
    "RateLimitedUser",
    "ReconnectingUser",
    "ScenarioShape",
    "SseChattingUser",
    "UploadingUser",
]


class ScenarioShape(LoadTestShape):
    """The scenario's [shape], read at every tick (the scenario is loaded in the init event)."""

    def tick(self) -> tuple[int, float] | None:
        shape = options.current.shape
        users = users_at(shape, self.get_run_time())
        if users is None:
            return None
        return users, shape["spawn_rate"]


def _end_shape_on_sigterm(environment: Any) -> None:
    logging.getLogger(__name__).info("Got SIGTERM during the shape: ending the test")
    shape_greenlet = getattr(environment.runner, "shape_greenlet", None)
    if shape_greenlet is not None:
        shape_greenlet.kill(block=False)  # main() then stops, writes its reports and quits as on completion
    else:
        environment.runner.quit()


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    # Locust installs its own handler once the shape has ended, replacing this one, which is what we want then.
    if environment.shape_class is not None and not isinstance(environment.runner, WorkerRunner):
        gevent.signal_handler(signal.SIGTERM, _end_shape_on_sigterm, environment)
