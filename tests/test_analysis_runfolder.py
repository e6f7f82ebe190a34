"""Loading a run folder: bad inputs give one line naming the file, row and column; odd but valid ones load."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import RunFolderError, load_run
from analysis.synthetic import T0, build_run
from soak.cli import main

GOOD_SAMPLES = "ts,service,metric,value\n" + "".join(f"{T0 + i},backend,mem_rss_bytes,{1000 + i}\n" for i in range(60))
STATS_HEADER = "Type,Name,Request Count,Failure Count,Median Response Time\n"


def _folder(tmp_path, files: dict[str, str | bytes]):
    folder = tmp_path / "run"
    folder.mkdir()
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
    folder = _folder(tmp_path, {"samples.csv": GOOD_SAMPLES + GOOD_SAMPLES})
    run = load_run(folder)
    assert len(run.samples) == 120
    assert run.samples["value"].dtype == np.float64


def test_samples_only_folder_loads_with_defaults(tmp_path):
    run = load_run(_folder(tmp_path, {}))
    assert run.latency is None and run.stats is None and run.events.empty
    assert run.settings.found is False
    assert [t["name"] for t in run.settings.latency_targets] == ["api", "ws round trip", "agent startup"]


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
