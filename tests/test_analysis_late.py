"""Leaks that begin late in a run, judged through a whole run folder: the whole-run slope misses them, the stretch
since growth began does not, and says when it began. The clean look-alikes (a late one-off step, batch jobs that hold
memory for minutes and give it back, a wave, a sawtooth, a warm-up) stay clean with the late rule on."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import analyze
from analysis.changepoint import hinge_knot
from analysis.synthetic import T0, build_run

MB = 1024.0 * 1024.0
HOUR = 3600.0
BASE = 300 * MB
PRE_LOAD_S = 60.0
DRAIN_S = 300.0


def _run(tmp_path, values_of, hours, interval, seed=11, scenario=None):
    rng = np.random.default_rng(seed)
    load_start = T0 + PRE_LOAD_S
    load_stop = load_start + hours * HOUR
    ts = np.arange(T0, load_stop + DRAIN_S, interval)
    h = np.clip(ts - load_start, 0, None) / HOUR
    series = {
        ("backend", "mem_rss_bytes"): (ts, values_of(h, rng)),
        ("auth", "mem_rss_bytes"): (ts, BASE + 1 * MB * rng.normal(size=ts.size)),
    }
    events = [
        (load_start, "load_start", ""),
        (load_start + 300, "warmup_end", ""),
        (load_stop, "load_stop", ""),
        (load_stop + DRAIN_S, "drain_end", ""),
    ]
    return analyze(build_run(tmp_path / "run", series, events, scenario or {"name": "late"})).verdict


def _backend(verdict):
    return next(e for e in verdict["leaks"] if e["service"] == "backend" and e["metric"] == "mem_rss_bytes")


def _failed(verdict):
    return {(e["service"], e["metric"]) for e in verdict["leaks"] if e["status"] == "failed"}


# (hours of load, leak starts at this share of the load, MB/h after it, sampling interval s, noise MB, sawtooth MB)
LATE_CASES = {
    "2 h, from half-way": (2, 0.5, 20.0, 5, 0.5, 0.0),
    "6 h, from 75%": (6, 0.75, 10.0, 10, 1.0, 0.0),
    "12 h, from 80% under a GC sawtooth": (12, 0.8, 8.0, 10, 0.5, 40.0),
    "24 h, from 75%": (24, 0.75, 5.0, 30, 0.5, 0.0),
    "24 h, from 90%": (24, 0.9, 10.0, 30, 1.0, 0.0),
    "24 h, from a third (the whole slope understates it)": (24, 1 / 3, 4.0, 30, 0.5, 0.0),
}


@pytest.mark.parametrize("case", list(LATE_CASES))
def test_late_leak_is_caught_with_when_it_began(tmp_path, case):
    hours, share, rate, interval, noise, saw = LATE_CASES[case]
    begins = share * hours

    def shape(h, rng):
        sawtooth = saw * MB * ((h * 60 / 7) % 1.0)
        return BASE + rate * MB * np.clip(h - begins, 0, None) + sawtooth + noise * MB * rng.normal(size=h.size)

    verdict = _run(tmp_path, shape, hours, interval)
    entry = _backend(verdict)
    assert _failed(verdict) == {("backend", "mem_rss_bytes")}, entry["reason"]
    assert entry["rule"] == "late slope", entry["reason"]
    assert entry["slope_per_hour"] == pytest.approx(rate * MB, rel=0.25), entry["reason"]
    began = entry["growth_since_s"] / HOUR
    assert began == pytest.approx(begins, abs=max(0.08 * hours, 0.25)), entry["reason"]
    assert f"since +{entry['growth_since_text']}" in entry["reason"]
    assert entry["whole_slope_per_hour"] < entry["slope_per_hour"]


def test_a_whole_run_leak_keeps_the_whole_run_rule(tmp_path):
    verdict = _run(tmp_path, lambda h, rng: BASE + 3 * MB * h + 0.5 * MB * rng.normal(size=h.size), 12, 20)
    entry = _backend(verdict)
    assert entry["status"] == "failed" and entry["rule"] == "slope", entry["reason"]
    assert entry["slope_per_hour"] == pytest.approx(3 * MB, rel=0.25)


def test_the_late_rule_can_be_switched_off(tmp_path):
    shape = LATE_CASES["24 h, from 90%"]
    verdict = _run(
        tmp_path,
        lambda h, rng: BASE + 10 * MB * np.clip(h - 21.6, 0, None) + MB * rng.normal(size=h.size),
        shape[0],
        shape[3],
        scenario={"name": "late", "leaks": {"late": False}},
    )
    assert _backend(verdict)["status"] == "passed" and _backend(verdict)["rule"] == "slope"


def _late_step(h, rng):
    return BASE + 80 * MB * (h > 5.4) + 0.5 * MB * rng.normal(size=h.size)


def _batch_jobs(h, rng):
    # Every 45 minutes a job holds 120 MB for 8 minutes and gives it back; the run ends in the middle of one.
    minutes = h * 60
    holding = (minutes % 45) >= 37
    return BASE + 120 * MB * holding + 0.5 * MB * rng.normal(size=h.size)


def _wave(h, rng):
    # A traffic wave of 2 h, three of them in the run, ending on the falling flank.
    return BASE - 40 * MB * np.sin(2 * np.pi * h / 2.0) + 0.5 * MB * rng.normal(size=h.size)


def _warmup_then_flat(h, rng):
    return BASE + 150 * MB * (1 - np.exp(-h / 0.7)) + 0.5 * MB * rng.normal(size=h.size)


def _sawtooth(h, rng):
    return BASE + 60 * MB * ((h * 60 / 11) % 1.0) + 0.5 * MB * rng.normal(size=h.size)


def _noise_only(h, rng):
    return BASE + 3 * MB * rng.normal(size=h.size)


def _late_plateau(h, rng):
    # A cache that fills over the last half hour of the run and is full before the end.
    return BASE + 60 * MB * np.clip((h - 4.5) / 0.5, 0, 1) + 0.5 * MB * rng.normal(size=h.size)


CLEAN_CASES = {
    "one-off step late in the run": (_late_step, 6, 10),
    "batch jobs that hold memory for minutes": (_batch_jobs, 6, 5),
    "batch jobs in a 2 h run": (_batch_jobs, 2.1, 5),
    "waves": (_wave, 6, 10),
    "warm-up then flat": (_warmup_then_flat, 6, 10),
    "GC sawtooth": (_sawtooth, 6, 5),
    "noise only": (_noise_only, 12, 10),
    "a cache that fills late and is full": (_late_plateau, 6, 10),
}


@pytest.mark.parametrize("case", list(CLEAN_CASES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_look_alikes_stay_clean(tmp_path, case, seed):
    shape, hours, interval = CLEAN_CASES[case]
    verdict = _run(tmp_path, shape, hours, interval, seed=seed)
    entry = _backend(verdict)
    assert _failed(verdict) == set(), entry["reason"]
    assert entry["rule"] == "slope"


def test_hinge_knot_finds_where_growth_begins():
    t = T0 + np.arange(100) * 60.0
    v = np.where(np.arange(100) < 70, 5.0, 5.0 + (np.arange(100) - 70) * 2.0)
    assert hinge_knot(t, v) == pytest.approx(70, abs=1)
    assert hinge_knot(t[:5], v[:5]) == -1


def test_the_report_says_since_when(tmp_path):
    from analysis import analyze_and_write

    rng = np.random.default_rng(2)
    ts = np.arange(T0, T0 + 4 * HOUR, 10.0)
    h = (ts - T0) / HOUR
    values = BASE + 20 * MB * np.clip(h - 3, 0, None) + 0.5 * MB * rng.normal(size=ts.size)
    folder = build_run(tmp_path / "run", {("backend", "mem_rss_bytes"): (ts, values)}, [(T0, "load_start", "")])
    entry = analyze_and_write(folder).verdict["leaks"][0]
    assert entry["rule"] == "late slope" and entry["growth_since_text"] in ("2h59m", "3h00m", "3h01m", "3h02m")
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert f"since +{entry['growth_since_text']}" in page and "late slope" in page
