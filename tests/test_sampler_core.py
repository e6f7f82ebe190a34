"""The Sampler's tick: a slow source never holds up the others, a failing one is logged once, ticks stay on their
grid, latest() serves a live table, start/stop run it in a thread. Slow and failing sources are real HTTP servers."""

from __future__ import annotations

import http.server
import logging
import threading
import time

import pytest

from sampler import Sampler
from sampler.core import next_slot

GAUGE_PAGE = b"# TYPE ws_connections_active gauge\nws_connections_active 7\n"


class Exporter(http.server.ThreadingHTTPServer):
    """A /metrics page on a free loopback port that can be made slow or failing."""

    daemon_threads = True

    def __init__(self, delay: float = 0.0, failures: int = 0) -> None:
        self.delay, self.failures = delay, failures
        self.requests = 0
        self.in_flight = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/metrics"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        server: Exporter = self.server  # type: ignore[assignment]
        server.requests += 1
        if server.delay:
            server.in_flight.set()
            server.release.wait(server.delay)
            server.in_flight.clear()
        if server.requests <= server.failures:
            self.send_error(500, "not ready")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(GAUGE_PAGE)))
        self.end_headers()
        self.wfile.write(GAUGE_PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exporters():
    started: list[Exporter] = []

    def make(**kwargs) -> Exporter:
        started.append(Exporter(**kwargs))
        return started[-1]

    yield make
    for server in started:
        server.release.set()
        server.shutdown()
        server.server_close()


def services_in(rows) -> set[str]:
    return {service for _ts, service, _metric, _value in rows}


def test_a_slow_source_is_skipped_while_the_others_keep_ticking(exporters, tmp_path, caplog):
    slow = exporters(delay=10.0)  # answers when released (or after 10 s)
    sampler = Sampler({"me": "pid:self", "slow": f"prometheus:{slow.url}"}, tmp_path, interval=0.5)
    caplog.set_level(logging.WARNING, logger="sampler")
    ticks = []
    try:
        for _ in range(4):
            ticks.append(services_in(sampler.tick()))
            assert slow.in_flight.wait(10)  # each tick ended while the slow read was still waiting for its answer
        slow.release.set()
        for _ in range(100):  # once it answers, it is asked again and its rows come back
            rows = sampler.tick()
            if "slow" in services_in(rows):
                break
            time.sleep(0.05)
    finally:
        sampler.stop()
    assert all(tick == {"me"} for tick in ticks)
    assert slow.requests == 2  # never asked again while its first read hung: no pile of threads
    assert "slow" in services_in(rows)
    slow_logs = [r for r in caplog.records if "still reading" in r.getMessage()]
    assert len(slow_logs) == 1


def test_a_failing_source_is_logged_once_and_again_when_it_recovers(exporters, tmp_path, caplog):
    flaky = exporters(failures=4)
    sampler = Sampler({"gauges": f"prometheus:{flaky.url}"}, tmp_path, interval=1.0)
    caplog.set_level(logging.INFO, logger="sampler")
    results = [services_in(sampler.tick()) for _ in range(6)]
    sampler.stop()
    assert results == [set()] * 4 + [{"gauges"}] * 2
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "HTTP 500" in m]) == 1
    assert len([m for m in messages if "reading again" in m]) == 1


def test_ticks_stay_on_their_grid_and_skip_missed_slots():
    assert next_slot(100.0, 100.3, 1.0) == 101.0
    assert next_slot(100.0, 103.5, 1.0) == 104.0  # a 3.5 s stall: slots 101-103 skipped, the phase kept
    slot, now = 0.0, 0.0
    for _ in range(1000):  # a million small steps of 0.1 s: no accumulated drift
        now = slot + 0.05
        slot = next_slot(slot, now, 0.1)
    assert slot == pytest.approx(100.0, abs=1e-9)


def test_background_thread_latest_and_stop(exporters, tmp_path):
    page = exporters()
    sampler = Sampler({"me": "pid:self", "gauges": f"prometheus:{page.url}"}, tmp_path, interval=0.05)
    sampler.start()
    deadline = time.monotonic() + 20
    while sampler.ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    latest = sampler.latest()
    sampler.stop()
    sampler.stop()  # twice is harmless
    assert sampler.ticks >= 3
    assert latest[("gauges", "ws_connections_active")][1] == 7
    assert latest[("me", "mem_rss_bytes")][1] > 0
    lines = (tmp_path / "samples.csv").read_text().splitlines()
    assert lines[0] == "ts,service,metric,value"
    stamps = sorted({float(line.split(",")[0]) for line in lines[1:]})
    assert len(stamps) == sampler.ticks  # one timestamp per tick, shared by all of its rows
