"""The fault schedule on a fake clock, with real proxies, real nftables cuts, a real echo server and the real Redis.

The actions object is a recording stand-in for the runner (it owns processes there); everything the schedule does
itself (cuts, latency, events.csv) is real. nftables cases need root: skipped otherwise, failed under CI=true.
"""

from __future__ import annotations

import csv
import threading
import time

import pytest
import redis

from runspec import folder
from soak import faults, netcut
from soak.faults import POLL, FaultSchedule, check_faults
from soak.proxy import Proxy, url_target, url_via
from tests.test_netcut import require_nft
from tests.test_proxy import EchoServer, connect, exchange

pytestmark = pytest.mark.xdist_group("nft")  # nft tables are machine-wide: one worker makes them

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands for the runner: records kill/restart calls, lends ports and proxies."""

    def __init__(self, ports=None, proxies=None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.ports: dict[str, int] = ports or {}
        self.proxies: dict[tuple[str, str], Proxy] = proxies or {}
        self.gate: threading.Event | None = None  # restart waits for it: a service slow to come back
        self.broken: set[str] = set()  # services whose restart fails

    def kill(self, service: str) -> str:
        self.calls.append(("kill", service))
        return "pid=4242"

    def restart(self, service: str) -> str:
        self.calls.append(("restart", service))
        if self.gate is not None:
            self.gate.wait(10)
        if service in self.broken:
            raise RuntimeError(f"{service} not healthy within 60 s:\nconnection refused")
        return "pid=4343"

    def port(self, service: str) -> int | None:
        return self.ports.get(service)

    def proxy(self, service: str, to: str) -> Proxy | None:
        return self.proxies.get((service, to))


def fault(kind: str, service: str = "backend", **keys) -> dict:
    base = {"at": 0.0, "every": 0.0, "kind": kind, "service": service, "for": 0.0}
    base.update({"mode": "blackhole", "to": "", "latency": 0.0})
    base.update({"for" if key == "for_" else key: value for key, value in keys.items()})
    return base


def events(run_dir) -> list[tuple[float, str, str]]:
    with open(run_dir / folder.EVENTS, newline="") as handle:
        return [(float(row["ts"]), row["event"], row["detail"]) for row in csv.DictReader(handle)]


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert predicate()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def redis_proxy(redis_url):
    with Proxy(url_target(redis_url, 6379)) as proxy:
        yield proxy


@pytest.mark.parametrize("via", ["proxy", "nft"])
@pytest.mark.parametrize("mode", ["blackhole", "reset"])
def test_a_cut_of_redis_hits_only_the_services_connections(tmp_path, clock, redis_url, redis_proxy, via, mode):
    if via == "nft":
        require_nft()
    sut_side = redis.Redis.from_url(
        url_via(redis_url, redis_proxy.port), socket_timeout=0.5, socket_connect_timeout=0.5
    )
    shared = redis.Redis.from_url(redis_url, socket_timeout=2)
    actions = Recorder(proxies={("backend", "redis"): redis_proxy})
    schedule = FaultSchedule(
        [fault("cut", at=1, for_=2, mode=mode, to="redis")], tmp_path, actions, clock, use_nft=via == "nft"
    )
    try:
        assert sut_side.ping()
        schedule.start(T0)
        assert schedule.seconds_to_next() == 1.0
        clock.now = T0 + 1
        start = f"cut backend id=0 n=1 mode={mode} to=redis for=2 via={via} port={redis_proxy.port}"
        assert schedule.advance() == [f"fault_start {start}"]
        assert schedule.seconds_to_next() == 2.0
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            sut_side.ping()
        assert shared.ping()  # the shared server is untouched
        clock.now = T0 + 3
        assert schedule.advance() == ["fault_end cut backend id=0 n=1 outcome=ok lasted=2.000"]
        assert sut_side.ping()
        assert schedule.seconds_to_next() is None
    finally:
        schedule.stop()
        sut_side.close()
        shared.close()
    assert events(tmp_path) == [
        (T0 + 1, folder.FAULT_START, start),
        (T0 + 3, folder.FAULT_END, "cut backend id=0 n=1 outcome=ok lasted=2.000"),
    ]
    if via == "nft":
        assert schedule.netcut.table not in netcut.tables()
    else:
        assert schedule.netcut is None  # use_nft=False: no table was ever made


def test_a_cut_of_a_services_own_port_uses_nft(tmp_path, clock, echo):
    require_nft()
    schedule = FaultSchedule([fault("cut", at=0, for_=5)], tmp_path, Recorder(ports={"backend": echo.port}), clock)
    schedule.start(T0)
    assert schedule.advance() == [f"fault_start cut backend id=0 n=1 mode=blackhole for=5 via=nft port={echo.port}"]
    with pytest.raises(TimeoutError):
        connect(echo.port)
    table = schedule.netcut.table
    assert table in netcut.tables()
    clock.now = T0 + 2
    schedule.stop()  # before its time: restored now, said so
    assert table not in netcut.tables()
    with connect(echo.port) as sock:
        assert exchange(sock) == b"ping"
    ends = [detail for _, event, detail in events(tmp_path) if event == folder.FAULT_END]
    assert ends == ["cut backend id=0 n=1 outcome=stopped lasted=2.000"]


def test_slow_sets_the_proxys_latency_for_its_time(tmp_path, clock, echo):
    with Proxy(("127.0.0.1", echo.port)) as front:
        actions = Recorder(proxies={("agent", ""): front})
        schedule = FaultSchedule([fault("slow", "agent", at=2, for_=3, latency=0.1)], tmp_path, actions, clock)
        schedule.start(T0)
        with connect(front.port, timeout=5) as sock:
            clock.now = T0 + 2
            assert schedule.advance() == [
                f"fault_start slow agent id=0 n=1 latency=0.1 for=3 via=proxy port={front.port}"
            ]
            began = time.monotonic()
            assert exchange(sock) == b"ping"
            assert time.monotonic() - began >= 0.2
            clock.now = T0 + 5
            assert schedule.advance() == ["fault_end slow agent id=0 n=1 outcome=ok lasted=3.000"]
            assert front.latency == 0.0
            began = time.monotonic()
            assert exchange(sock) == b"ping"
            assert time.monotonic() - began < 0.2  # the 2 x 0.1 s are gone
        schedule.stop()


def test_kill_and_restart_end_when_their_action_is_done(tmp_path, clock):
    actions = Recorder()
    actions.gate = threading.Event()
    schedule = FaultSchedule(
        [fault("kill", "agent", at=1), fault("restart", "backend", at=1), fault("restart", "auth", at=2)],
        tmp_path,
        actions,
        clock,
    )
    actions.broken.add("auth")
    schedule.start(T0)
    clock.now = T0 + 1
    assert schedule.advance() == ["fault_start kill agent id=0 n=1", "fault_start restart backend id=1 n=1"]
    wait_for(lambda: len(schedule.active) == 1)  # the kill is done, the restart waits
    assert schedule.advance()[0].startswith("fault_end kill agent id=0 n=1 outcome=ok took=")
    assert schedule.seconds_to_next() == POLL  # the restart is still waiting for its service
    clock.now = T0 + 1.5
    assert schedule.advance() == []
    actions.gate.set()
    wait_for(lambda: not schedule.active)
    clock.now = T0 + 2
    written = schedule.advance()
    assert written[0].startswith("fault_end restart backend id=1 n=1 outcome=ok took=")
    assert written[0].endswith(" pid=4343")
    assert written[1] == "fault_start restart auth id=2 n=1"
    wait_for(lambda: not schedule.active)
    (end,) = schedule.advance()
    assert end.startswith("fault_end restart auth id=2 n=1 outcome=failed took=")
    assert end.endswith("reason=auth not healthy within 60 s: connection refused")  # one line
    schedule.stop()
    assert [event for _, event, _ in events(tmp_path)] == [folder.FAULT_START, folder.FAULT_START] + [
        folder.FAULT_END,
        folder.FAULT_END,
        folder.FAULT_START,
        folder.FAULT_END,
    ]
    assert sorted(actions.calls) == [("kill", "agent"), ("restart", "auth"), ("restart", "backend")]


def test_every_repeats_until_the_load_ends_and_skips_what_a_late_call_missed(tmp_path, clock, echo):
    with Proxy(("127.0.0.1", echo.port)) as dependency:
        actions = Recorder(proxies={("backend", "postgres"): dependency})
        cut = fault("cut", at=5, every=10, for_=2, mode="reset", to="postgres")
        schedule = FaultSchedule([cut], tmp_path, actions, clock, use_nft=False)
        schedule.start(T0, until=T0 + 50)
        for second in range(0, 31):  # on time: 5, 15, 25
            clock.now = T0 + second
            schedule.advance()
            if second in (6, 16, 26):
                assert dependency.mode == "reset"
            if second in (8, 18, 28):
                assert dependency.mode == ""
        clock.now = T0 + 47  # the runner was blocked: 35 and 45 are due; one cut starts, the missed one is said
        (late,) = schedule.advance()
        assert (
            late
            == f"fault_start cut backend id=0 n=5 skipped=1 mode=reset to=postgres for=2 via=proxy port={dependency.port}"
        )
        clock.now = T0 + 49
        schedule.advance()
        clock.now = T0 + 60  # 55 would be next, but the load ends at 50
        assert schedule.advance() == []
        assert schedule.seconds_to_next() is None
        schedule.stop()
        with connect(dependency.port) as sock:
            assert exchange(sock) == b"ping"
    rows = events(tmp_path)
    starts = [(ts - T0, detail.split()[3]) for ts, event, detail in rows if event == folder.FAULT_START]
    ends = [(ts - T0, detail.split()[3]) for ts, event, detail in rows if event == folder.FAULT_END]
    assert starts == [(5, "n=1"), (15, "n=2"), (25, "n=3"), (47, "n=5")]
    assert ends == [(7, "n=1"), (17, "n=2"), (27, "n=3"), (49, "n=5")]


def test_stop_restores_everything_and_writes_off_what_is_still_running(tmp_path, clock, echo, monkeypatch):
    monkeypatch.setattr(faults, "STOP_WAIT", 0.3)
    with Proxy(("127.0.0.1", echo.port)) as dependency:
        actions = Recorder(proxies={("backend", "redis"): dependency})
        actions.gate = threading.Event()  # the restart never comes back while stop() waits
        schedule = FaultSchedule(
            [fault("cut", to="redis", for_=30), fault("slow", to="redis", at=100, for_=5, latency=1), fault("restart")],
            tmp_path,
            actions,
            clock,
            use_nft=False,
        )
        schedule.start(T0)
        schedule.advance()
        assert dependency.mode == "blackhole"
        clock.now = T0 + 10
        began = time.monotonic()
        stopped = schedule.stop()
        assert time.monotonic() - began < 2
        assert schedule.stop() == []  # idempotent
        clock.now = T0 + 200
        assert schedule.advance() == []  # nothing starts after stop
        assert dependency.mode == "" and dependency.latency == 0.0
        with connect(dependency.port) as sock:
            assert exchange(sock) == b"ping"
        actions.gate.set()
        wait_for(lambda: not any(t.name.startswith("fault-") for t in threading.enumerate()))
    ends = [detail for _, event, detail in events(tmp_path) if event == folder.FAULT_END]
    assert stopped == [f"fault_end {detail}" for detail in ends]
    assert ends == [
        "cut backend id=0 n=1 outcome=stopped lasted=10.000",
        "restart backend id=2 n=1 outcome=unfinished reason=the run stopped while the restart was running",
    ]  # and the late restart wrote nothing more


def test_faults_that_cannot_run_say_why_in_a_start_end_pair(tmp_path, clock, echo):
    with Proxy(("127.0.0.1", echo.port)) as dependency:
        actions = Recorder(proxies={("backend", "redis"): dependency})
        schedule = FaultSchedule(
            [
                fault("cut", to="postgres", for_=5),  # no proxy there
                fault("slow", "auth", for_=5, latency=0.1),  # no proxy in front of auth
                fault("cut", to="redis", for_=5),
                fault("slow", to="redis", for_=5, latency=0.1),  # the same connections are already cut
            ],
            tmp_path,
            actions,
            clock,
            use_nft=False,
        )
        schedule.start(T0)
        written = schedule.advance()
        schedule.stop()
    assert written == [
        "fault_start cut backend id=0 n=1 mode=blackhole to=postgres for=5",
        "fault_end cut backend id=0 n=1 outcome=failed reason=no proxy on backend's postgres connections",
        "fault_start slow auth id=1 n=1 latency=0.1 for=5",
        "fault_end slow auth id=1 n=1 outcome=failed reason=no proxy on auth's own connections",
        f"fault_start cut backend id=2 n=1 mode=blackhole to=redis for=5 via=proxy port={dependency.port}",
        "fault_start slow backend id=3 n=1",
        "fault_end slow backend id=3 n=1 outcome=skipped reason=cut backend id=2 n=1 still holds the same connections",
    ]


def test_check_faults_names_the_key():
    services = {"auth", "backend", "agent"}
    ok = [fault("kill"), fault("restart"), fault("cut", for_=5), fault("slow", to="redis", for_=5, latency=0.1)]
    check_faults(ok, services, can_kill=True, proxied={("backend", "redis")}, nft=True)
    check_faults([fault("cut", for_=5)], services, can_kill=False, proxied={("backend", "")}, nft=False)
    cases = [
        (fault("kill", "redis"), r"faults\[0\]\.service: unknown service 'redis' \(known: agent, auth, backend\)"),
        (fault("restart"), r"faults\[0\]\.kind: restart needs control of 'backend'"),
        (fault("kill", for_=10), r"faults\[0\]\.for: a kill has no 'for'"),
        (fault("cut", for_=5, to="postgres"), r"faults\[0\]\.to: 'backend' has no proxy on its postgres"),
        (fault("slow", for_=5, latency=0.1), r"faults\[0\]\.to: slow on 'backend''s own port needs a proxy"),
        (fault("cut", for_=5), r"faults\[0\]\.kind: a cut of 'backend' needs nftables"),
        (fault("cut", for_=5, latency=1), r"faults\[0\]\.latency: a cut has no latency"),
        (fault("wobble"), r"faults\[0\]\.kind: unknown kind 'wobble'"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            check_faults([bad], services, can_kill=bad["kind"] != "restart", nft=False)
    with pytest.raises(ValueError, match=r"^faults\[1\]\.service"):
        check_faults([fault("kill"), fault("kill", "nope")], services, can_kill=True, nft=True)
