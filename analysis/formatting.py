"""Numbers as the verdict's reasons and the report write them: rates per hour, units, durations. One MB is
``runspec.units.MB`` (2**20 bytes) here as in the progress line and the web UI tab."""

from __future__ import annotations

import math

from runspec.units import HOUR, MB


def fmt_rate(value: float, kind: str) -> str:
    """A per-hour value in its unit's figures: MB for memory, the count itself otherwise; "n/a" for NaN."""
    if math.isnan(value):
        return "n/a"
    if kind == "memory":
        return f"{value / MB:.1f}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def unit(kind: str) -> str:
    return " MB" if kind == "memory" else ""


def fmt_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / HOUR:.1f} h"


def fmt_clock(seconds: float) -> str:
    """Time into a run as a person says it: '45m', '1h31m', '23h05m'."""
    minutes = int(round(max(0.0, seconds) / 60.0))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def fmt_bytes(value: float) -> str:
    """A byte count in the unit that reads best: '312 B', '20 KB', '1.5 MB' (KB = 1024 bytes, MB = 2**20)."""
    if math.isnan(value):
        return "n/a"
    size = abs(value)
    if size < 1024:
        return f"{value:.0f} B"
    if size < MB:
        return f"{value / 1024:.3g} KB"
    return f"{value / MB:.3g} MB"
