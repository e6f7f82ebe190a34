"""Load shapes for 1-24 hour runs, all read from the scenario's [shape] table.

- steady: ramp to ``users`` at ``spawn_rate``, hold.
- step: ``step_users`` more every ``step_every`` seconds, up to ``users``.
- spike: ``users``, then ``spike_users`` from ``spike_at`` for ``spike_for`` seconds, then ``users`` again.
- wave: a daily cycle between ``min_users`` (at the start) and ``users`` (the crest, half a period later), one
  ``period`` long, time-compressed by ``time_scale`` (24 = a day in an hour).
Every kind stops after ``duration`` seconds of load; Locust moves between user counts at ``spawn_rate`` per second.
The LoadTestShape that reads them is in shaped.py; this module does not import Locust.
"""

from __future__ import annotations

import math
from typing import Any


def users_at(shape: dict[str, Any], t: float) -> int | None:
    """How many users the shape wants ``t`` seconds into the run; None once ``duration`` has passed."""
    if t >= shape["duration"]:
        return None
    kind = shape["kind"]
    if kind == "steady":
        return shape["users"]
    if kind == "step":
        step_every = shape["step_every"] or shape["duration"]
        return min(shape["users"], shape["step_users"] * (1 + int(t // step_every)))
    if kind == "spike":
        in_spike = shape["spike_at"] <= t < shape["spike_at"] + shape["spike_for"]
        return shape["spike_users"] if in_spike else shape["users"]
    if kind == "wave":
        low, high = min(shape["min_users"], shape["users"]), shape["users"]
        period = shape["period"] or shape["duration"]
        phase = 2 * math.pi * (t * shape["time_scale"]) / period
        return round(low + (high - low) * (1 - math.cos(phase)) / 2)
    raise ValueError(f"shape.kind: unknown kind {kind!r}")
