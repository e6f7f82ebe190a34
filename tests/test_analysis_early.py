"""The early verdict on the samples so far: "confirmed leak" only beyond doubt, "clean so far" only for a flat
series judged long enough, "undecided" otherwise; pure (a frame in, dicts out)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.early import CLEAN_SO_FAR, CONFIRMED, UNDECIDED, early_verdicts, early_verdicts_for_folder
from analysis.settings import Settings
from analysis.synthetic import T0, build_run
from runspec.scenario import resolve

MB = 1024.0 * 1024.0
HOUR = 3600.0


def _frame(series):
    parts = [
        pd.DataFrame({"ts": ts, "service": service, "metric": metric, "value": values})
        for (service, metric), (ts, values) in series.items()
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame["service"] = frame["service"].astype("category")
    frame["metric"] = frame["metric"].astype("category")
    return frame


def _series(hours, seed=1):
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(0, hours * HOUR, 5.0)
    h = (ts - T0) / HOUR
    return {
        ("backend", "mem_rss_bytes"): (ts, 300 * MB + 20 * MB * h + 0.5 * MB * rng.normal(size=ts.size)),
        ("auth", "mem_rss_bytes"): (ts, 200 * MB + 0.5 * MB * rng.normal(size=ts.size)),
        ("agent", "mem_rss_bytes"): (ts, 250 * MB + 1.0 * MB * h + 0.5 * MB * rng.normal(size=ts.size)),
        ("backend", "tcp_established"): (ts, 10 + np.floor(h * 12) + rng.integers(0, 2, ts.size)),
        ("auth", "tcp_established"): (ts, 10 + rng.integers(0, 2, ts.size).astype(float)),
        ("locust", "mem_rss_bytes"): (ts, 100 * MB + 50 * MB * h),
    }


def _states(entries):
    return {(e["service"], e["metric"]): e["state"] for e in entries}


def test_states_after_an_hour():
    settings = Settings.from_scenario(resolve({}), found=False)
    entries = early_verdicts(_frame(_series(1.0)), settings, load_start=T0, warmup_end=T0 + 60)
    states = _states(entries)
    assert states[("backend", "mem_rss_bytes")] == CONFIRMED
    assert states[("auth", "mem_rss_bytes")] == CLEAN_SO_FAR
    assert states[("agent", "mem_rss_bytes")] == UNDECIDED  # right at the threshold: not yet either way
    assert states[("backend", "tcp_established")] == CONFIRMED
    assert states[("auth", "tcp_established")] == CLEAN_SO_FAR
    assert ("locust", "mem_rss_bytes") not in states  # the load generator is never judged
    for entry in entries:
        assert entry["rule"] and entry["reason"]


def test_too_early_is_undecided_with_a_reason():
    settings = Settings.from_scenario(resolve({}), found=False)
    entries = early_verdicts(_frame(_series(0.02)), settings, load_start=T0)
    assert entries and all(e["state"] == UNDECIDED for e in entries)
    assert all("need" in e["reason"] for e in entries)
    assert early_verdicts(_frame(_series(1.0)).iloc[:0], settings) == []


def test_from_a_folder_being_written(tmp_path):
    folder = build_run(tmp_path / "run", _series(1.0), [(T0, "load_start", "")], {"name": "live"})
    states = _states(early_verdicts_for_folder(folder))
    assert states[("backend", "mem_rss_bytes")] == CONFIRMED
