"""samples.csv and events.csv: the formats of DESIGN.md, torn rows repaired, events from many processes at once."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from sampler import append_event
from sampler.writer import SampleWriter, format_value

ROOT = Path(__file__).resolve().parent.parent


def test_values_keep_integers_exact_and_floats_short():
    assert format_value(123456789012.0) == "123456789012"
    assert format_value(0.0) == "0"
    assert format_value(12.3456789) == "12.3457"
    assert format_value(1e-7) == "1e-07"


def test_rows_are_appended_under_one_header_and_nan_is_skipped(tmp_path):
    writer = SampleWriter(tmp_path / "samples.csv")
    writer.write([(1700000000.1234, "backend", "mem_rss_bytes", 1048576.0), (1700000000.1234, "x", "m", float("nan"))])
    writer.close()
    writer = SampleWriter(tmp_path / "samples.csv")  # reopened: appends, no second header
    writer.write([(1700000001.0, "backend", "cpu_percent", 12.5)])
    writer.close()
    assert (tmp_path / "samples.csv").read_text() == (
        "ts,service,metric,value\n1700000000.123,backend,mem_rss_bytes,1048576\n1700000001.000,backend,cpu_percent,12.5\n"
    )
    assert writer.rows_written == 1


def test_a_torn_last_row_is_cut_when_the_file_is_opened_again(tmp_path):
    path = tmp_path / "samples.csv"
    path.write_text("ts,service,metric,value\n1.000,a,m,1\n2.000,a,m,")  # a kill in the middle of a write
    writer = SampleWriter(path)
    writer.write([(3.0, "a", "m", 3.0)])
    writer.close()
    assert path.read_text() == "ts,service,metric,value\n1.000,a,m,1\n3.000,a,m,3\n"


def test_events_have_one_header_and_quote_details(tmp_path):
    append_event(tmp_path, "load_start")
    append_event(tmp_path, "fault", detail='kill backend, "hard"', ts=5.0)
    rows = list(csv.reader((tmp_path / "events.csv").open()))
    assert rows[0] == ["ts", "event", "detail"]
    assert rows[1][1:] == ["load_start", ""]
    assert rows[2] == ["5.000", "fault", 'kill backend, "hard"']


def test_events_from_many_processes_at_once_keep_one_header_and_every_line(tmp_path):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from sampler import append_event\n"
        "for i in range(50): append_event(sys.argv[2], 'tick', detail=f'{sys.argv[3]}-{i}')"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(tmp_path), str(n)], cwd=ROOT) for n in range(6)
    ]
    assert all(proc.wait(timeout=60) == 0 for proc in procs)
    rows = list(csv.reader((tmp_path / "events.csv").open()))
    assert rows[0] == ["ts", "event", "detail"]
    assert sorted(row[2] for row in rows[1:]) == sorted(f"{n}-{i}" for n in range(6) for i in range(50))
    assert not list(tmp_path.glob(".events.*"))  # no private files left behind


def test_two_writers_share_one_file_without_cutting_each_other(tmp_path):
    """The runner's sampler and the one for Locust append to one samples.csv: one header, every batch whole."""
    path = tmp_path / "samples.csv"
    first = SampleWriter(path)
    first.write([(1.0, "backend", "m", 1.0)])
    with open(path, "a") as raw:  # a batch caught mid-write by the second writer's open
        raw.write("2.000,backend,m,")
    second = SampleWriter(path)  # another writer is open: the tail is not its to cut
    with open(path, "a") as raw:
        raw.write("2\n")
    second.write([(3.0, "locust", "m", 3.0)])
    first.write([(4.0, "backend", "m", 4.0)])
    first.close()
    second.close()
    assert path.read_text() == (
        "ts,service,metric,value\n1.000,backend,m,1\n2.000,backend,m,2\n3.000,locust,m,3\n4.000,backend,m,4\n"
    )
