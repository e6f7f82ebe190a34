"""The run status: each way a night can fail to reach its end, from small hand-made run folders."""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Callable

import pytest

from analysis import load_run
from analysis.health import plot_health
from analysis.status import RunStatus, run_status, split_detail
from runspec import folder
from soak.cli import main

T0 = 1_760_000_000.0
START = T0 + 10  # load_start: times in reasons are relative to it
SECONDS = 600  # samples every second from T0
PHASES = [
    (START, folder.LOAD_START, ""),
    (START + 30, folder.WARMUP_END, ""),
    (T0 + 550, folder.LOAD_STOP, ""),
    (T0 + 580, folder.DRAIN_END, ""),
]
UP: Callable[[float], float] = lambda t: 1.0  # noqa: E731


def write_run(
    tmp_path,
    events: list[tuple[float, str, str]] | None,
    health: dict[str, Callable[[float], float]] | None = None,
    seconds: int = SECONDS,
):
    """A run folder: backend memory every second, health_up per service as given, events.csv when given."""
    path = tmp_path / "run"
    path.mkdir(parents=True)
    health = {"backend": UP, "auth": UP} if health is None else health
    with (path / folder.SAMPLES).open("w", encoding="utf-8") as handle:
        handle.write(folder.SAMPLES_HEADER)
        for i in range(seconds):
            t = T0 + i
            handle.write(f"{t},backend,mem_rss_bytes,{100e6 + 1000 * (i % 7)}\n")
            for service, up in health.items():
                handle.write(f"{t},{service},health_up,{up(t):g}\n")
    if events is not None:
        with (path / folder.EVENTS).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(folder.EVENTS_COLUMNS)
            writer.writerows(sorted(events))
    return path


def status_of(tmp_path, events, health=None, seconds: int = SECONDS) -> RunStatus:
    return run_status(load_run(write_run(tmp_path, events, health, seconds)))


def down_between(start: float, end: float) -> Callable[[float], float]:
    return lambda t: 0.0 if start <= t < end else 1.0


def test_a_complete_run_stays_complete(tmp_path):
    status = status_of(tmp_path, PHASES)
    assert status.complete is True and status.reason == "" and status.reasons == []
    assert status.downtime == [] and status.restarts == []


def test_without_events_file_the_run_is_complete_with_a_note(tmp_path):
    run = load_run(write_run(tmp_path, None))
    status = run_status(run)
    assert status.complete is True and status.reason == ""
    assert any(folder.EVENTS in note and "phases are unknown" in note for note in run.notes)


def test_interrupted(tmp_path):
    status = status_of(tmp_path, [*PHASES[:2], (START + 130, folder.INTERRUPTED, "SIGTERM")])
    assert status.complete is False
    assert status.reason == "interrupted by SIGTERM at +2 min"


def test_interrupted_even_when_the_runner_still_wrote_its_phases(tmp_path):
    status = status_of(tmp_path, [*PHASES, (START + 130, folder.INTERRUPTED, "SIGINT")])
    assert status.complete is False and status.reason.startswith("interrupted by SIGINT")


@pytest.mark.parametrize(
    ("events", "missing"),
    [(PHASES[:2], folder.LOAD_STOP), (PHASES[:3], folder.DRAIN_END), (PHASES[:1], folder.LOAD_STOP)],
)
def test_killed_runner_leaves_a_phase_missing(tmp_path, events, missing):
    status = status_of(tmp_path, events)
    assert status.complete is False
    assert status.reason.startswith(f"killed: no {missing} in {folder.EVENTS}"), status.reason
    assert "the last record is at +10 min" in status.reason


def test_a_new_test_started_during_the_drain_is_judged_on_its_own_phases(tmp_path):
    # The web UI: test 1 stops, test 2 starts during the drain (no drain_end for test 1), then stops and drains.
    events = [
        (START, folder.LOAD_START, ""),
        (T0 + 200, folder.LOAD_STOP, ""),
        (T0 + 210, folder.LOAD_START, ""),
        (T0 + 500, folder.LOAD_STOP, ""),
        (T0 + 530, folder.DRAIN_END, ""),
    ]
    assert status_of(tmp_path, events).complete is True
    assert status_of(tmp_path / "b", events[:4]).reason.startswith("killed: no drain_end")


def test_load_generator_gone(tmp_path):
    status = status_of(tmp_path, [*PHASES, (START + 300, folder.LOAD_GENERATOR_GONE, "exit code -9")])
    assert status.complete is False
    assert status.reason == "load generator gone at +5 min (exit code -9)"


def test_stopped_early_gives_its_detail(tmp_path):
    detail = "backend down for 31 s (health.down_max 30 s)"
    status = status_of(tmp_path, [*PHASES, (START + 95, folder.STOPPED_EARLY, detail)])
    assert status.complete is False
    assert status.reason == f"stopped early at +95 s: {detail}"


def test_service_down_event_and_not_back(tmp_path):
    events = [*PHASES, (START + 65, folder.SERVICE_DOWN, "backend: pid 4242 exited")]
    status = status_of(tmp_path, events, health={})
    assert status.complete is False
    assert status.reason == "backend down since +65 s and not back (pid 4242 exited)"
    [down] = status.downtime
    assert down["service"] == "backend" and down["start"] == START + 65 and down["end"] is None
    assert down["cause"] == "pid 4242 exited" and down["seconds"] == pytest.approx(T0 + SECONDS - 1 - (START + 65))


def test_health_checks_failing_until_the_end(tmp_path):
    status = status_of(tmp_path, PHASES, health={"backend": UP, "auth": down_between(START + 300, T0 + SECONDS)})
    assert status.complete is False
    assert status.reason == "auth down since +5 min and not back (health check failed)"
    assert [(d["service"], d["start"], d["end"]) for d in status.downtime] == [("auth", START + 300, None)]


def test_a_service_that_came_back_is_downtime_not_incomplete(tmp_path):
    events = [
        *PHASES,
        (START + 65, folder.SERVICE_DOWN, "backend: pid 4242 exited"),
        (START + 80, folder.SERVICE_RESTART, "backend: pid 4242 -> pid 4300 after 15.0 s down"),
    ]
    status = status_of(tmp_path, events, health={"backend": down_between(START + 65.5, START + 82)})
    assert status.complete is True and status.reason == ""
    [down] = status.downtime
    # One outage (the sampler's event and the failed health checks are the same), until the checks answer again.
    assert (down["start"], down["end"], down["seconds"]) == (START + 65, START + 82, 17.0)
    assert down["cause"] == "pid 4242 exited"
    assert status.restarts == [
        {"service": "backend", "ts": START + 80, "detail": "pid 4242 -> pid 4300 after 15.0 s down"}
    ]


def test_health_answering_again_ends_an_outage_without_a_restart_event(tmp_path):
    # The process sampler could not find the new process (no service_restart), but /health answers: it is back.
    events = [*PHASES, (START + 65, folder.SERVICE_DOWN, "backend (connection refused)")]
    status = status_of(tmp_path, events, health={"backend": down_between(START + 65, START + 100)})
    assert status.complete is True
    [down] = status.downtime
    assert (down["end"], down["cause"]) == (START + 100, "connection refused")


def test_service_up_event_ends_an_outage(tmp_path):
    events = [
        *PHASES,
        (START + 65, folder.SERVICE_DOWN, "auth: health check failed"),
        (START + 70, folder.SERVICE_UP, "auth"),
    ]
    status = status_of(tmp_path, events, health={})
    assert status.complete is True
    assert [(d["service"], d["seconds"]) for d in status.downtime] == [("auth", 5.0)]


def test_oom_killed_names_the_cause_and_explains_the_service_not_coming_back(tmp_path):
    """The kill is the run's finding (a failed check, analysis/oom.py), not a run that went wrong: what it caused is
    ``explained``, not a reason to call the run incomplete."""
    events = [*PHASES, (START + 65, folder.OOM_KILLED, "backend: container chat-backend")]
    status = status_of(tmp_path, events, health={})
    assert status.complete is True and status.reason == ""
    assert status.explained == ["backend down since +65 s and not back (OOM killed: container chat-backend)"]
    assert [(d["service"], d["cause"]) for d in status.downtime] == [("backend", "OOM killed: container chat-backend")]


def test_an_oom_kill_does_not_explain_another_service_down_or_an_interrupted_run(tmp_path):
    events = [
        *PHASES,
        (START + 65, folder.OOM_KILLED, "backend: container chat-backend"),
        (START + 70, folder.SERVICE_DOWN, "auth: pid 12 exited"),
        (START + 80, folder.INTERRUPTED, "SIGINT"),
    ]
    status = status_of(tmp_path, events, health={})
    assert status.reasons == ["interrupted by SIGINT at +80 s", "auth down since +70 s and not back (pid 12 exited)"]
    assert status.explained == ["backend down since +65 s and not back (OOM killed: container chat-backend)"]


def test_the_verdict_names_an_oom_kill_with_the_growth_before_it(tmp_path):
    """A backend growing 36 MB/h (10 KB/s) until the OOM killer ends it at +5 min: failed, said in one line."""
    from analysis import analyze

    path = write_run(tmp_path, [*PHASES, (START + 300, folder.OOM_KILLED, "backend: container c1 OOM-killed")], {})
    with (path / folder.SAMPLES).open("a", encoding="utf-8") as handle:
        for i in range(290):  # the working set up to the kill, the figure the kill is decided on
            handle.write(f"{START + i},backend,mem_working_set_bytes,{50 * 2**20 + 10240 * i}\n")
    (path / folder.RUNTIME).write_text(json.dumps({"services": {"backend": {"memory_limit_bytes": 96 * 2**20}}}))
    verdict = analyze(path).verdict
    assert verdict["status"] == "failed"
    assert verdict["status_reason"].startswith(
        "backend was OOM-killed at +5 min after growing 35.2 MB/h (mem_working_set_bytes at 53 MB, limit 96 MB); "
    ), verdict["status_reason"]
    [kill] = verdict["oom_kills"]
    assert kill["growth_per_hour"] == pytest.approx(10240 * 3600) and kill["limit_bytes"] == 96 * 2**20
    assert verdict["checks"][0] == {
        "kind": "oom",
        "title": "backend OOM kill",
        "status": "failed",
        "reason": verdict["oom_kills"][0]["reason"],
    }


def test_the_memory_plots_mark_the_oom_kill(tmp_path, monkeypatch):
    from analysis import analyze_and_write, plots

    marked: list[list[str]] = []
    real = plots._phases

    def phases(ax, clock, events, warmup_to):  # noqa: ANN001, ANN202
        real(ax, clock, events, warmup_to)
        marked.append([line.get_label() for line in ax.get_lines()])

    monkeypatch.setattr(plots, "_phases", phases)
    path = write_run(tmp_path, [*PHASES, (START + 300, folder.OOM_KILLED, "backend: container c1 OOM-killed")], {})
    with (path / folder.SAMPLES).open("a", encoding="utf-8") as handle:
        for i in range(290):
            handle.write(f"{START + i},backend,mem_working_set_bytes,{50 * 2**20 + 10240 * i}\n")
    analyze_and_write(path)
    assert marked and all("OOM kill" in labels for labels in marked), marked


def test_flapping_health_gives_one_span_per_outage(tmp_path):
    flaps = lambda t: 0.0 if (START + 100 <= t < START + 103) or (START + 200 <= t < START + 201) else 1.0  # noqa: E731
    status = status_of(tmp_path, PHASES, health={"backend": flaps})
    assert status.complete is True
    assert [(d["start"] - START, d["seconds"]) for d in status.downtime] == [(100, 3.0), (200, 1.0)]


def test_services_stopped_after_the_drain_are_the_shutdown(tmp_path):
    events = [*PHASES, (T0 + 585, folder.SERVICE_DOWN, "backend: pid 4242 exited")]
    status = status_of(tmp_path, events, health={"backend": down_between(T0 + 582, T0 + SECONDS)})
    assert status.complete is True and status.downtime == []


def test_the_first_reason_is_the_most_important(tmp_path):
    events = [
        *PHASES[:2],
        (START + 65, folder.SERVICE_DOWN, "backend: pid 4242 exited"),
        (START + 130, folder.INTERRUPTED, "SIGTERM"),
    ]
    status = status_of(tmp_path, events, health={})
    assert status.reason == "interrupted by SIGTERM at +2 min"
    assert status.reasons == [
        "interrupted by SIGTERM at +2 min",
        "killed: no load_stop in events.csv (the last record is at +10 min)",
        "backend down since +65 s and not back (pid 4242 exited)",
    ]


def test_times_before_the_load_start_are_said_so(tmp_path):
    events = [*PHASES, (T0 + 2, folder.SERVICE_DOWN, "redis: pid 7 exited")]
    assert (
        status_of(tmp_path, events, health={}).reason
        == "redis down since 8 s before load start and not back (pid 7 exited)"
    )


def test_without_a_load_start_times_count_from_the_first_sample(tmp_path):
    status = status_of(tmp_path, None, health={"backend": down_between(T0 + 90, T0 + SECONDS)})
    assert status.reason == "backend down since +90 s and not back (health check failed)"


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ("backend: pid 12 exited", ("backend", "pid 12 exited")),
        ("backend (connection refused)", ("backend", "connection refused")),
        ("backend", ("backend", "")),
        ("", ("", "")),
        ("  auth:", ("auth", "")),
    ],
)
def test_split_detail(detail, expected):
    assert split_detail(detail) == expected


def test_a_reason_is_one_line_whatever_the_detail_holds(tmp_path):
    status = status_of(tmp_path, [*PHASES, (START + 95, folder.STOPPED_EARLY, "backend down\nfor 31 s\r\n")])
    assert status.reason == "stopped early at +95 s: backend down for 31 s"


def test_verdict_and_exit_code_through_the_cli(tmp_path, capsys):
    path = write_run(tmp_path, [*PHASES[:2], (START + 130, folder.INTERRUPTED, "SIGTERM")])
    code = main(["analyze", str(path)])
    out = capsys.readouterr().out
    assert code == folder.exit_code(folder.INCOMPLETE)
    assert "interrupted by SIGTERM at +2 min" in out
    verdict = json.loads((path / folder.VERDICT).read_text(encoding="utf-8"))
    assert verdict["status"] == folder.INCOMPLETE and verdict["passed"] is False
    assert verdict["status_reason"].startswith("interrupted by SIGTERM")


def test_health_timeline_is_drawn_only_with_health_samples(tmp_path):
    png = plot_health(load_run(write_run(tmp_path, PHASES, health={"backend": down_between(START + 60, START + 90)})))
    assert png is not None and base64.b64decode(png).startswith(b"\x89PNG")
    assert plot_health(load_run(write_run(tmp_path / "none", PHASES, health={}))) is None


def test_a_run_stopped_on_a_confirmed_leak_that_the_verdict_does_not_bear_out_is_incomplete(tmp_path):
    # the backend's memory here is flat: the early stop was wrong, and the run did not go to its end
    stop = (START + 120, folder.STOPPED_DECIDED, "leak confirmed: backend mem_rss_bytes: grows 50 MB/h")
    events = [*PHASES[:2], stop, (START + 121, folder.LOAD_STOP, ""), (START + 151, folder.DRAIN_END, "")]
    path = write_run(tmp_path, events)
    assert status_of(tmp_path / "again", events).decided.startswith("stopped early at +2 min: leak confirmed")
    code = main(["analyze", str(path)])
    verdict = json.loads((path / folder.VERDICT).read_text(encoding="utf-8"))
    assert code == folder.exit_code(folder.INCOMPLETE), verdict["status_reason"]
    assert "no check failed" in verdict["status_reason"] and "leak confirmed" in verdict["status_reason"]


def test_a_run_stopped_on_a_confirmed_leak_that_the_verdict_bears_out_is_failed(tmp_path):
    stop = (START + 120, folder.STOPPED_DECIDED, "leak confirmed: backend mem_rss_bytes")
    events = [*PHASES[:2], stop, (START + 121, folder.LOAD_STOP, ""), (START + 151, folder.DRAIN_END, "")]
    path = tmp_path / "run"
    path.mkdir()
    with (path / folder.SAMPLES).open("w", encoding="utf-8") as handle:
        handle.write(folder.SAMPLES_HEADER)
        for i in range(200):  # 1 MB a second: a leak no threshold lets pass
            handle.write(f"{T0 + i},backend,mem_rss_bytes,{100e6 + 1e6 * i}\n")
    with (path / folder.EVENTS).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(folder.EVENTS_COLUMNS)
        writer.writerows(sorted(events))
    code = main(["analyze", str(path)])
    verdict = json.loads((path / folder.VERDICT).read_text(encoding="utf-8"))
    assert code == folder.exit_code(folder.FAILED), verdict["status_reason"]
    assert verdict["status"] == folder.FAILED and "stopped early at +2 min" in verdict["status_reason"]
