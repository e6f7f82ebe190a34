"""Real traces (tests/data/leak_trace, recorded once by bench/bench_leak_trace.py): the embedded sut under steady chat
load (8 users, ~7 chat messages/s) with leak_bytes_per_message=300 and its clean twin, 30 minutes each. The leak
twin must fail naming the backend's memory, the clean twin must pass; every count gauge must stay clean in both,
with the samples before load and without them (then the zero and trend rules judge, not the drain check)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis import analyze
from analysis.early import CONFIRMED, early_verdicts_for_folder
from runspec import folder

DATA = Path(__file__).resolve().parent / "data" / "leak_trace"
# The clean backend's RSS climbs for the whole half hour (SQLite's page cache per pooled connection filling, and
# the interpreter's arenas): bench/bench_leak_trace.py finds the lowest threshold it passes with a margin.
THRESHOLD_MB = 5.0
LEAK_BYTES = 300


def _unpack(twin: str, dest: Path, drop_before_load: bool = False) -> Path:
    src = DATA / twin
    assert src.is_dir(), f"{src}: missing; record it with bench/bench_leak_trace.py record"
    dest.mkdir(parents=True)
    for path in src.iterdir():
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as packed, (dest / path.stem).open("wb") as out:
                shutil.copyfileobj(packed, out)
        else:
            shutil.copy(path, dest / path.name)
    scenario = dest / folder.SCENARIO
    text = scenario.read_text(encoding="utf-8").replace(
        "memory_mb_per_hour = 5.0", f"memory_mb_per_hour = {THRESHOLD_MB}"
    )
    scenario.write_text(text, encoding="utf-8")
    if drop_before_load:
        events = pd.read_csv(dest / folder.EVENTS)
        load_start = float(events.loc[events["event"] == folder.LOAD_START, "ts"].iloc[0])
        samples = pd.read_csv(dest / folder.SAMPLES)
        samples[samples["ts"] >= load_start].to_csv(dest / folder.SAMPLES, index=False)
    return dest


def _backend_memory(verdict):
    return next(e for e in verdict["leaks"] if e["service"] == "backend" and e["metric"] == "mem_rss_bytes")


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    base = tmp_path_factory.mktemp("trace")
    return {twin: analyze(_unpack(twin, base / twin)).verdict for twin in ("leak", "clean")}


def test_the_leak_twin_fails_naming_backend_memory(verdicts):
    leak = verdicts["leak"]
    failed = {(e["service"], e["metric"]) for e in leak["leaks"] if e["status"] == "failed"}
    assert ("backend", "mem_rss_bytes") in failed
    assert {service for service, _ in failed} == {"backend"}
    entry = _backend_memory(leak)
    assert entry["rule"] in ("slope", "late slope")
    assert entry["per_unit"]["message"] > LEAK_BYTES, entry["reason"]  # the leak plus the clean growth
    assert "per chat message" in entry["reason"]


def test_the_clean_twin_passes(verdicts):
    clean = verdicts["clean"]
    failed = [e["reason"] for e in clean["leaks"] if e["status"] == "failed"]
    assert failed == []


def test_the_leak_per_message_is_what_the_switch_keeps(verdicts):
    """Per message, the leak twin keeps the switch's bytes (and Python's overhead per bytes object) more than its
    clean twin: the figure that reads the same at any load."""
    leak, clean = (_backend_memory(verdicts[twin])["per_unit"]["message"] for twin in ("leak", "clean"))
    assert LEAK_BYTES * 0.75 <= leak - clean <= LEAK_BYTES * 3, (leak, clean)


@pytest.mark.parametrize("twin", ["leak", "clean"])
def test_counts_stay_clean_without_samples_before_load(tmp_path, twin):
    verdict = analyze(_unpack(twin, tmp_path / twin, drop_before_load=True)).verdict
    entries = [e for e in verdict["leaks"] if e["kind"] == "count"]
    assert entries
    assert {e["rule"] for e in entries} <= {"zero after drain", "count trend"}
    assert [e["reason"] for e in entries if e["status"] == "failed"] == []
    assert any(e["rule"] == "zero after drain" for e in entries)


def test_early_verdict_on_the_whole_trace(tmp_path):
    states = {
        twin: {
            (e["service"], e["metric"]): e["state"] for e in early_verdicts_for_folder(_unpack(twin, tmp_path / twin))
        }
        for twin in ("leak", "clean")
    }
    assert states["leak"][("backend", "mem_rss_bytes")] == CONFIRMED
    assert CONFIRMED not in states["clean"].values()
