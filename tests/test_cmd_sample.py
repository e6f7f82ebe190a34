"""`soak sample` as a user runs it: bad input is one line and exit 2 (a bad spec, --out naming a file or a finished
run); it samples until --duration or SIGTERM; kill -9 at any moment leaves samples.csv whole up to the last tick;
health checks write service_down once."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from soak.cli import main

ROOT = Path(__file__).resolve().parent.parent


def soak_sample(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "soak", "sample", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--service", "backend"], "--service 'backend': expected NAME=SPEC"),
        (["--service", "backend=prt:8001"], "service 'backend': source spec 'prt:8001'"),
        (["--service", "b a=pid:1"], "service name 'b a'"),
        (["--service", "x=pid:1", "--interval", "fast"], "--interval 'fast'"),
        (["--service", "x=pid:1", "--interval", "0"], "--interval '0': must be above 0"),
        (["--service", "x=pid:1", "--uss-interval", "-1"], "--uss-interval '-1'"),
        (
            ["--service", "web=health:127.0.0.1:8001/health"],
            "service 'web': source spec 'health:127.0.0.1:8001/health'",
        ),
        (["--service", "db=tcp:127.0.0.1"], "service 'db': source spec 'tcp:127.0.0.1': expected HOST:PORT"),
        ([], "no --service given"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, says, tmp_path, capsys):
    assert main(["sample", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_an_unwritable_out_folder_is_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["sample", "--service", "me=pid:self", "--out", str(blocker / "run")]) == 2
    assert "--out" in capsys.readouterr().err


def test_out_naming_a_file_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    done = subprocess.run(
        [sys.executable, "-m", "soak", "sample", "--service", "me=pid:self", "--out", str(blocker)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"--out '{blocker}': is a file, not a folder" in done.stderr
    assert blocker.read_text() == "keep me"


def test_a_finished_run_is_refused_unless_append(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "verdict.json").write_text('{"passed": true}')
    (run / "samples.csv").write_text("ts,service,metric,value\n1700000000.000,backend,mem_rss_bytes,1\n")
    before = (run / "samples.csv").read_text()
    assert main(["sample", "--service", "me=pid:self", "--duration", "0.2s", "--quiet", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out '{run}': holds a finished run (verdict.json)" in err and "--append" in err
    assert (run / "samples.csv").read_text() == before  # not a byte added

    args = ["sample", "--service", "me=pid:self", "--interval", "0.05", "--duration", "0.3s", "--quiet"]
    assert main([*args, "--append", "--out", str(run)]) == 0
    lines = (run / "samples.csv").read_text().splitlines()
    assert lines[:2] == before.splitlines() and any(",me,mem_rss_bytes," in line for line in lines[2:])


def test_a_health_check_writes_service_down_once(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    port = closed.getsockname()[1]
    try:
        proc = soak_sample(
            "--service", f"db=tcp:127.0.0.1:{port}", "--interval", "0.1s", "--duration", "1s", "--out", str(tmp_path)
        )  # fmt: skip
        _out, err = proc.communicate(timeout=60)
    finally:
        closed.close()
    assert proc.returncode == 0, err
    with (tmp_path / "events.csv").open(newline="") as file:
        events = [(row["event"], row["detail"]) for row in csv.DictReader(file)]
    assert events == [("service_down", "db: connection refused")]
    rows = [line.split(",") for line in (tmp_path / "samples.csv").read_text().splitlines()[1:]]
    ups = [float(value) for _ts, service, metric, value in rows if (service, metric) == ("db", "health_up")]
    assert len(ups) >= 5 and set(ups) == {0.0}


def test_samples_for_duration_and_never_matches_itself(tmp_path):
    marker = f"soak-sample-self-{os.getpid()}-{time.monotonic_ns()}"
    target = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(60)  # {marker}"])
    try:
        proc = soak_sample(
            "--service", f"svc=cmd:{marker}", "--service", "me=pid:self", "--interval", "0.1s", "--duration", "1s",
            "--uss-interval", "0.5s", "--out", str(tmp_path),
        )  # fmt: skip
        _out, err = proc.communicate(timeout=60)
    finally:
        target.kill()
        target.wait()
    assert proc.returncode == 0, err
    assert "tick(s)" in err
    rows = [line.split(",") for line in (tmp_path / "samples.csv").read_text().splitlines()[1:]]
    svc = {metric: float(value) for _ts, service, metric, value in rows if service == "svc"}
    me = {metric: float(value) for _ts, service, metric, value in rows if service == "me"}
    # its own command line holds the pattern too; the match is the sleeping one-thread process, not the sampler
    assert svc["threads"] == 1 and me["threads"] > 1
    assert "mem_uss_bytes" in svc


def test_sigterm_stops_it_cleanly(tmp_path):
    proc = soak_sample("--service", "me=pid:self", "--interval", "0.05", "--out", str(tmp_path))
    samples = tmp_path / "samples.csv"
    wait_for_lines(samples, 10)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "row(s) written" in err


def test_kill_9_leaves_every_tick_whole(tmp_path):
    # short ticks, so the kill is likely to land while one is being written; one source, whose rows are all or
    # nothing in a tick (several sources could be time-boxed out of a tick on a busy machine, a different thing)
    proc = soak_sample(
        "--service", "me=pid:self", "--interval", "0.01", "--uss-interval", "0.01", "--out", str(tmp_path)
    )
    samples = tmp_path / "samples.csv"
    wait_for_lines(samples, 100)
    time.sleep(0.137)
    proc.kill()
    proc.wait()
    text = samples.read_text()
    assert text.endswith("\n")  # no half line
    header, *lines = text.splitlines()
    assert header == "ts,service,metric,value"
    ticks: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for line in lines:
        ts, service, metric, value = line.split(",")
        float(ts), float(value)
        ticks[ts].add((service, metric))
    stamps = sorted(ticks, key=float)
    assert len(stamps) > 5
    full = {
        ("me", m) for m in ("mem_rss_bytes", "mem_uss_bytes", "mem_pss_bytes", "cpu_percent", "open_fds", "threads")
    }
    for ts in stamps[1:]:  # the last tick too: all of it or none of it
        assert ticks[ts] >= full and ticks[ts] == ticks[stamps[1]], (ts, sorted(ticks[ts]), stamps[:3])


def wait_for_lines(path: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines")
