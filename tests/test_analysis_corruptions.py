"""Random corruptions of a real samples.csv / events.csv never end `soak analyze` in a traceback.

A run folder is written once the way a run writes it (analysis/synthetic.py: services sampled every few seconds,
health checks, the phases, a restart, timings); each example breaks its samples.csv and/or events.csv the ways
files really break (cut at any byte by a kill, garbage from a bad disk or a wrong file, rows appended twice or
shuffled, absurd or non-finite numbers, blank lines, rows with fields missing or extra) and runs the real CLI in
process. Allowed outcomes: a verdict (exit 0, 1, 3 or 4, with verdict.json) or bad input (exit 2, one line).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.synthetic import T0, build_run, standard_events, timing_rows, write_events
from runspec import folder
from soak.cli import main

EXAMPLES = 60  # the analysis of each takes ~0.1 s; a 2-core CI machine shares its time with everyone's tests
REPORT_EXAMPLES = 6  # the report draws every figure: slower, so fewer
FUZZ_SETTINGS = dict(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
FILES = (folder.SAMPLES, folder.EVENTS)
WEIRD_NUMBERS = tuple(
    n.encode()
    for n in ("1e308", "-1e308", "1e400", "inf", "-inf", "nan", "NaN", "-0", "9" * 400, "1e-320", "0x10", "1_0")
)


@functools.cache
def pristine() -> dict[str, bytes]:
    """The files of a small but real-looking run: 10 minutes, 4 services, memory, counts and health every 5 s."""
    rng = np.random.default_rng(7)
    ts = T0 + np.arange(0.0, 600.0, 5.0)
    series = {}
    for i, service in enumerate(("auth", "backend", "agent", "locust")):
        series[(service, "mem_rss_bytes")] = (ts, (80 + 20 * i) * 2**20 + 2**18 * rng.normal(size=ts.size))
        series[(service, "open_fds")] = (ts, np.round(20 + 5 * rng.random(ts.size)))
        if service != "locust":
            up = np.where((service == "backend") & (ts > T0 + 200) & (ts < T0 + 230), 0.0, 1.0)
            series[(service, "health_up")] = (ts, up)
    events = standard_events(T0 + 30, 60, 500, 40)
    events += [
        (T0 + 200, folder.SERVICE_DOWN, "backend: pid 101 exited"),
        (T0 + 230, folder.SERVICE_RESTART, "backend: pid 101 -> pid 102 after 30.0 s down"),
    ]
    timings = timing_rows(T0 + 30 + rng.uniform(0, 500, 3000), "WS", "ws round trip", rng.lognormal(2.3, 0.4, 3000))
    scenario = {
        "name": "corruptions",
        "targets": {"latency": [{"name": "ws round trip", "percentile": 95, "max_ms": 50}]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = build_run(Path(tmp) / "run", series, scenario=scenario, latency=timings)
        write_events(path / folder.EVENTS, sorted(events))
        return {name: (path / name).read_bytes() for name in (*FILES, folder.SCENARIO, folder.LATENCY)}


# One corruption: (what, which file, where as a fraction of the file or of its rows, a payload).
where = st.floats(0.0, 1.0)
corruption = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), where, st.just(b"")),
    st.tuples(st.just("garbage"), st.sampled_from(FILES), where, st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("duplicate"), st.sampled_from(FILES), where, st.integers(1, 50).map(lambda n: str(n).encode())),
    st.tuples(st.just("shuffle"), st.sampled_from(FILES), where, st.integers(0, 2**32).map(lambda n: str(n).encode())),
    st.tuples(st.sampled_from(("ts", "value")), st.sampled_from(FILES), where, st.sampled_from(WEIRD_NUMBERS)),
    st.tuples(st.just("field"), st.sampled_from(FILES), where, st.sampled_from((b"drop", b"add", b"empty"))),
    st.tuples(st.just("blank"), st.sampled_from(FILES), where, st.sampled_from((b"\n", b"\n\n\n", b"\r\n", b" \n"))),
)


def corrupt(data: bytes, what: str, at: float, payload: bytes) -> bytes:
    """One corruption of a CSV file's bytes; row operations leave the header line alone."""
    if what == "truncate":
        return data[: int(at * len(data))]
    if what == "garbage":
        cut = int(at * len(data))
        return data[:cut] + payload + data[cut:]
    header, _, body = data.partition(b"\n")
    rows = body.split(b"\n")
    i = min(int(at * len(rows)), len(rows) - 1)
    if what == "duplicate":  # a stretch of rows appended again, as a writer restarted on the same file would
        rows = rows + rows[i : i + int(payload)]
    elif what == "shuffle":
        random.Random(int(payload)).shuffle(rows)
    elif what == "blank":
        rows.insert(i, payload.rstrip(b"\n"))
    else:
        fields = rows[i].split(b",")
        column = int(at * 997) % max(len(fields), 1)
        if what in ("ts", "value"):  # the first field or the last (in events.csv: the detail)
            fields[0 if what == "ts" else -1] = payload
        elif payload == b"drop":
            del fields[column]
        elif payload == b"add":
            fields.insert(column, b"3.5")
        else:
            fields[column] = b""
        rows[i] = b",".join(fields)
    return header + b"\n" + b"\n".join(rows)


def analyze(corruptions: list[tuple], command: str = "analyze") -> int:
    """Run the command on the pristine folder with the corruptions applied; returns the exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run"
        path.mkdir()
        files = dict(pristine())
        for what, name, at, payload in corruptions:
            files[name] = corrupt(files[name], what, at, payload)
        for name, data in files.items():
            (path / name).write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([command, str(path)])  # an exception here fails the example with its traceback
        err_text = err.getvalue()
        assert "Traceback" not in err_text and "Traceback" not in out.getvalue()
        if code == folder.EXIT_BAD_INPUT:
            assert err_text.startswith(f"soak {command}: error: ") and err_text.count("\n") == 1, err_text
            return code
        assert err_text == ""
        verdict = json.loads((path / folder.VERDICT).read_text(encoding="utf-8"))
        assert code in (folder.exit_code(verdict["status"]), 0 if command == "report" else -1), code
        if command == "report":
            assert (path / folder.REPORT).stat().st_size > 0
        return code


@settings(max_examples=EXAMPLES, **FUZZ_SETTINGS)
@given(corruptions=st.lists(corruption, min_size=1, max_size=3))
def test_analyze_never_ends_in_a_traceback(corruptions):
    analyze(corruptions)


@settings(max_examples=REPORT_EXAMPLES, **FUZZ_SETTINGS)
@given(corruptions=st.lists(corruption, min_size=1, max_size=2))
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # garbage in a service name is drawn as boxes
def test_report_never_ends_in_a_traceback(corruptions):
    analyze(corruptions, "report")


def test_the_pristine_folder_passes():
    assert analyze([]) == folder.exit_code(folder.PASSED)


HUGE = [("value", folder.SAMPLES, 0.5, b"1e308")]  # an absurd reading in the middle of a series
HUGE_BOTH_WAYS = [("value", folder.SAMPLES, 0.0, b"1e308"), ("value", folder.SAMPLES, 0.001, b"-1e308")]
KNOWN = {
    "huge reading": (HUGE, None),
    "huge readings both ways": (HUGE_BOTH_WAYS, None),
    "appended twice and shuffled": (
        [("duplicate", folder.SAMPLES, 0.2, b"50"), ("shuffle", folder.SAMPLES, 0, b"3")],
        0,
    ),
    "phases cut short": ([("truncate", folder.EVENTS, 0.5, b"")], folder.exit_code(folder.INCOMPLETE)),
    "binary junk after the last newline": ([("garbage", folder.SAMPLES, 1.0, b"\x00\xff\xfe")], 2),
    "overflowing number": ([("value", folder.SAMPLES, 0.3, b"1e400")], 2),
    "a time years ahead": ([("ts", folder.SAMPLES, 0.3, b"4102444800")], 2),
    "a tiny number": ([("value", folder.SAMPLES, 0.3, b"1e-320")], None),
}


@pytest.mark.parametrize("case", list(KNOWN))
def test_known_corruptions(case):
    corruptions, expected = KNOWN[case]
    code = analyze(corruptions)
    assert expected is None or code == expected


@pytest.mark.parametrize("case", ["huge reading", "huge readings both ways", "phases cut short"])
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_known_corruptions_in_the_report(case):
    analyze(KNOWN[case][0], "report")
