"""Loading a run folder: bad inputs give one line naming the file, row and column; odd but valid ones load."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import RunFolderError, load_run
from analysis.synthetic import T0, build_run
from soak.cli import main

SAMPLES_HEADER = "ts,service,metric,value\n"
GOOD_SAMPLES = SAMPLES_HEADER + "".join(f"{T0 + i},backend,mem_rss_bytes,{1000 + i}\n" for i in range(60))
STATS_HEADER = "Type,Name,Request Count,Failure Count,Median Response Time\n"


def _folder(tmp_path, files: dict[str, str | bytes]):
    folder = tmp_path / "run"
    folder.mkdir(parents=True)
    files = {"samples.csv": GOOD_SAMPLES, **files}
    for name, content in files.items():
        if content is None:
            continue
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")
    return folder


# name: (files, words the one-line error must contain)
MALFORMED = {
    "empty samples.csv": ({"samples.csv": ""}, ["samples.csv", "empty file"]),
    "header only": ({"samples.csv": "ts,service,metric,value\n"}, ["samples.csv", "no data rows"]),
    "missing column": ({"samples.csv": "ts,service,metric\n1,a,b\n"}, ["samples.csv", "row 1", "'value'"]),
    "unknown format": ({"samples.csv": '{"ts": 1, "value": 2}\n'}, ["samples.csv", "row 1", "unknown format"]),
    "binary file": ({"samples.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00"}, ["samples.csv", "unknown format"]),
    "non-numeric value": (
        {"samples.csv": GOOD_SAMPLES + f"{T0 + 99},backend,mem_rss_bytes,lots\n" + GOOD_SAMPLES.split("\n", 1)[1]},
        ["samples.csv", "row 62", "'value'", "lots"],
    ),
    "non-numeric ts": (
        {"samples.csv": "ts,service,metric,value\n" + f"{T0},a,m,1\n" + "yesterday,a,m,2\n" + f"{T0 + 2},a,m,3\n"},
        ["samples.csv", "row 3", "'ts'", "yesterday"],
    ),
    "empty service": (
        {"samples.csv": "ts,service,metric,value\n" + f"{T0},,m,1\n" + f"{T0 + 1},a,m,2\n"},
        ["samples.csv", "row 2", "'service'", "empty"],
    ),
    "short row in the middle": (
        {"samples.csv": "ts,service,metric,value\n" + f"{T0},a,m,1\n{T0 + 1},a\n{T0 + 2},a,m,3\n"},
        ["samples.csv", "row 3", "'metric'", "missing"],
    ),
    "events: bad time": ({"events.csv": "ts,event,detail\nsoon,load_start,\n"}, ["events.csv", "row 2", "'ts'"]),
    "events: no event column": ({"events.csv": "ts,what\n1,load_start\n"}, ["events.csv", "row 1", "'event'"]),
    "latency: non-numeric ms": (
        {"latency.csv": f"ts,type,name,ms,count\n{T0},WS,ws round trip,fast,3\n"},
        ["latency.csv", "row 2", "'ms'", "fast"],
    ),
    "latency: fractional count": (
        {"latency.csv": f"ts,type,name,ms,count\n{T0},WS,ws round trip,12.5,1\n{T0},WS,ws round trip,13,2.5\n"},
        ["latency.csv", "row 3", "'count'"],
    ),
    "latency: negative time": (
        {"latency.csv": f"ts,type,name,ms,count\n{T0},WS,ws round trip,-4,1\n"},
        ["latency.csv", "row 2", "'ms'", "negative"],
    ),
    "locust stats: no Aggregated row": (
        {"locust_stats.csv": STATS_HEADER + "GET,/x,10,0,5\n"},
        ["locust_stats.csv", "Aggregated"],
    ),
    "locust stats: bad count": (
        {"locust_stats.csv": STATS_HEADER + "GET,/x,ten,0,5\n,Aggregated,10,0,5\n"},
        ["locust_stats.csv", "row 2", "'Request Count'"],
    ),
    "locust history: missing column": (
        {"locust_stats_history.csv": "Timestamp,Name,Requests/s\n1,Aggregated,3\n"},
        ["locust_stats_history.csv", "row 1", "'User Count'"],
    ),
    "scenario: not TOML": ({"scenario.toml": "name = \n"}, ["scenario.toml", "not valid TOML"]),
    "scenario: wrong type": (
        {"scenario.toml": '[targets]\nerror_rate_max = "low"\n'},
        ["scenario.toml", "error_rate_max", "'low'"],
    ),
    "scenario: target without max_ms": (
        {"scenario.toml": '[[targets.latency]]\nname = "api"\npercentile = 95\n'},
        ["scenario.toml", "targets.latency[0]", "max_ms"],
    ),
    "no samples.csv": ({"samples.csv": None}, ["samples.csv", "missing"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_one_clear_line_and_exit_2(tmp_path, capsys, case):
    files, words = MALFORMED[case]
    folder = _folder(tmp_path, files)
    with pytest.raises(RunFolderError) as info:
        load_run(folder)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert main(["analyze", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err == f"soak analyze: error: {message}\n"


def test_not_a_folder(tmp_path):
    with pytest.raises(RunFolderError, match="no such run folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "file.csv").write_text("x", encoding="utf-8")
    with pytest.raises(RunFolderError, match="not a folder"):
        load_run(tmp_path / "file.csv")


def test_torn_last_line_of_a_killed_run_is_ignored(tmp_path):
    folder = _folder(tmp_path, {"samples.csv": GOOD_SAMPLES + f"{T0 + 60},backend,mem_rs"})
    run = load_run(folder)
    assert len(run.samples) == 60
    assert any("torn last line" in note for note in run.notes)


def test_torn_number_on_the_last_line_is_ignored_too(tmp_path):
    folder = _folder(tmp_path, {"samples.csv": GOOD_SAMPLES + f"{T0 + 60},backend,mem_rss_bytes,1.5e"})
    assert len(load_run(folder).samples) == 60


def test_repeated_header_from_a_restarted_writer_is_skipped(tmp_path):
    later = "".join(f"{T0 + 100 + i},backend,mem_rss_bytes,{1000 + i}\n" for i in range(60))
    folder = _folder(tmp_path, {"samples.csv": GOOD_SAMPLES + SAMPLES_HEADER + later})
    run = load_run(folder)
    assert len(run.samples) == 120
    assert run.samples["value"].dtype == np.float64
    assert any("repeated header" in note for note in run.notes)


def test_duplicate_rows_are_dropped_with_a_note(tmp_path):
    # The same file appended twice (header and all), and one reading copied in again with another value.
    again = f"{T0 + 5},backend,mem_rss_bytes,99999\n"
    other = "".join(f"{T0 + i},auth,mem_rss_bytes,{2000 + i}\n" for i in range(60))  # same times, another service
    folder = _folder(tmp_path, {"samples.csv": GOOD_SAMPLES + GOOD_SAMPLES + again + other})
    run = load_run(folder)
    backend = run.samples[run.samples["service"] == "backend"]
    assert len(backend) == 60 and len(run.samples) == 120
    assert backend["value"].iat[5] == 1005  # the first reading is kept
    note = next(note for note in run.notes if "duplicate" in note)
    assert "samples.csv" in note and "61 duplicate row(s)" in note


def test_duplicates_are_found_in_a_shuffled_file_too(tmp_path):
    rows = GOOD_SAMPLES.splitlines(keepends=True)[1:]
    shuffled = rows[::-1] + rows[10:20]
    run = load_run(_folder(tmp_path, {"samples.csv": SAMPLES_HEADER + "".join(shuffled)}))
    assert len(run.samples) == 60
    assert any("dropped 10 duplicate" in note for note in run.notes)


def test_no_note_without_duplicates(tmp_path):
    assert not any("duplicate" in note for note in load_run(_folder(tmp_path, {})).notes)


# name: (files, the value quoted and words the one-line error must contain)
BAD_TIMES = {
    "samples: far future": (
        {"samples.csv": GOOD_SAMPLES + "1e12,backend,mem_rss_bytes,1\n" + f"{T0 + 61},backend,mem_rss_bytes,1\n"},
        ["samples.csv", "row 62", "'ts'", "'1e12'", "more than a day after the file was last written"],
    ),
    "samples: milliseconds": (
        {"samples.csv": SAMPLES_HEADER + f"{T0 * 1000:.0f},backend,mem_rss_bytes,1\n" + GOOD_SAMPLES[24:]},
        ["samples.csv", "row 2", "'ts'", f"'{T0 * 1000:.0f}'", "milliseconds?"],
    ),
    "samples: before 2000": (
        {"samples.csv": GOOD_SAMPLES + "12.5,backend,mem_rss_bytes,1\n" + f"{T0 + 61},backend,mem_rss_bytes,1\n"},
        ["samples.csv", "row 62", "'ts'", "'12.5'", "before 2000-01-01"],
    ),
    "samples: negative": (
        {"samples.csv": SAMPLES_HEADER + "-1760000000,backend,mem_rss_bytes,1\n" + GOOD_SAMPLES[24:]},
        ["samples.csv", "row 2", "'-1760000000'", "before 2000-01-01"],
    ),
    "samples: infinite": (
        {"samples.csv": SAMPLES_HEADER + "inf,backend,mem_rss_bytes,1\n" + GOOD_SAMPLES[24:]},
        ["samples.csv", "row 2", "'ts'", "'inf'", "not a finite number"],
    ),
    "events: far future": (
        {"events.csv": f"ts,event,detail\n{T0},load_start,\n4102444800,load_stop,\n"},
        ["events.csv", "row 3", "'ts'", "'4102444800'", "more than a day"],
    ),
    "latency: before 2000": (
        {"latency.csv": f"ts,type,name,ms,count\n{T0},WS,ws round trip,12,1\n0,WS,ws round trip,12,1\n"},
        ["latency.csv", "row 3", "'ts'", "'0'", "before 2000-01-01"],
    ),
    "locust history: far future": (
        {"locust_stats_history.csv": "Timestamp,User Count,Name,Requests/s,Failures/s\n99999999999,3,Aggregated,1,0\n"},
        ["locust_stats_history.csv", "row 2", "'Timestamp'", "'99999999999'", "more than a day"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_TIMES))
@pytest.mark.parametrize("command", ["analyze", "report"])
def test_implausible_times_are_refused_naming_row_and_value(tmp_path, capsys, case, command):
    files, words = BAD_TIMES[case]
    folder = _folder(tmp_path, files)
    with pytest.raises(RunFolderError) as info:
        load_run(folder)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert main([command, str(folder)]) == 2
    assert capsys.readouterr().err == f"soak {command}: error: {message}\n"
    assert not (folder / "report.html").exists()


def test_the_future_is_judged_from_when_the_file_was_written(tmp_path):
    import os

    # Written a year ago (an archived run): readings from today are a year after the file was last written.
    folder = _folder(tmp_path, {})
    written = T0 - 365 * 86400
    os.utime(folder / "samples.csv", (written, written))
    with pytest.raises(RunFolderError, match="row 2, .*after the file was last written"):
        load_run(folder)
    # A store that resets modification times to 1980 says nothing: then the limit is a day from now.
    os.utime(folder / "samples.csv", (315532800, 315532800))
    assert len(load_run(folder).samples) == 60


def test_torn_time_on_the_last_line_is_a_torn_line_not_a_bad_time(tmp_path):
    folder = _folder(tmp_path, {"samples.csv": GOOD_SAMPLES + "17600"})
    run = load_run(folder)
    assert len(run.samples) == 60
    assert any("torn last line" in note for note in run.notes)


def test_a_row_with_too_many_fields_is_refused(tmp_path):
    # Two rows run together when a newline was lost: the value read from it would be wrong.
    merged = f"{T0 + 60},backend,mem_rss_bytes,1{T0 + 61},backend,mem_rss_bytes,2\n"
    folder = _folder(tmp_path, {"samples.csv": GOOD_SAMPLES + merged + f"{T0 + 62},backend,mem_rss_bytes,3\n"})
    with pytest.raises(RunFolderError, match=r"samples\.csv: row 62, 7 fields, the header has 4"):
        load_run(folder)


@pytest.mark.parametrize(
    "header",
    [b"ts,service,metric,value \n", b"\xef\xbb\xbfts,service,metric,value\n", b" ts , service,metric,value\r\n"],
)
def test_header_with_spaces_or_a_byte_order_mark_loads(tmp_path, header):
    folder = _folder(tmp_path, {"samples.csv": header + GOOD_SAMPLES.split("\n", 1)[1].encode()})
    samples = load_run(folder).samples
    assert list(samples.columns) == ["ts", "service", "metric", "value"] and len(samples) == 60


def test_a_field_too_many_on_the_first_row_is_refused_too(tmp_path):
    # pandas would take the first field of such a row as an index and read the rest as if nothing were wrong
    folder = _folder(tmp_path, {"samples.csv": SAMPLES_HEADER + f"{T0},{T0},backend,mem_rss_bytes,5\n"})
    with pytest.raises(RunFolderError, match="row 2, 5 fields, the header has 4"):
        load_run(folder)


def test_names_pandas_would_read_as_missing_are_names(tmp_path):
    text = SAMPLES_HEADER + "".join(f"{T0 + i},NA,null,{i}\n" for i in range(5))
    run = load_run(_folder(tmp_path, {"samples.csv": text}))
    assert list(run.samples["service"].unique()) == ["NA"] and list(run.samples["metric"].unique()) == ["null"]


def test_absent_events_file_is_noted(tmp_path):
    run = load_run(_folder(tmp_path, {}))
    assert run.events_found is False
    assert any("events.csv: absent" in note for note in run.notes)
    run = load_run(_folder(tmp_path / "other", {"events.csv": f"ts,event\n{T0},load_start\n"}))
    assert run.events_found is True and not any("absent" in note for note in run.notes)


def test_samples_only_folder_loads_with_defaults(tmp_path):
    run = load_run(_folder(tmp_path, {}))
    assert run.latency is None and run.stats is None and run.events.empty
    assert run.settings.found is False
    names = ["api", "ws round trip", "agent startup", "time to first token", "token gap"]
    assert [t["name"] for t in run.settings.latency_targets] == names


def test_partial_scenario_keeps_the_other_defaults(tmp_path):
    run = load_run(_folder(tmp_path, {"scenario.toml": "[leaks]\nmemory_mb_per_hour = 5\n"}))
    assert run.settings.memory_mb_per_hour == 5.0
    assert run.settings.error_rate_max == 0.01 and run.settings.warmup_s == 30.0


def test_events_detail_is_optional_and_unknown_events_are_kept(tmp_path):
    run = load_run(_folder(tmp_path, {"events.csv": f"ts,event\n{T0 + 5},load_start\n{T0 + 1},custom_thing\n"}))
    assert list(run.events["event"]) == ["custom_thing", "load_start"]
    assert run.first_event("load_start") == T0 + 5


def test_header_only_failures_file_is_no_failures(tmp_path):
    build = build_run(
        tmp_path / "r",
        {("a", "mem_rss_bytes"): (T0 + np.arange(50.0), np.ones(50))},
        locust={("GET", "/x"): (10, 0)},
    )
    run = load_run(build)
    assert run.failures is not None and run.failures.empty


def test_analysis_imports_nothing_of_locust_gevent_or_the_other_parts():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, analysis, analysis.report, analysis.synthetic\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'locust', 'gevent', 'soak', 'sampler', 'sut', 'locustfiles'}))"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
