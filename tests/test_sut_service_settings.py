"""Per-service settings of the launcher (``start_sut(service_settings=...)``), on real processes and the real Redis
and Postgres: one service reaches its dependency through a TCP forwarder of the test's, and cutting that forwarder
cuts that service alone, as the fault runner's proxy does."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
import requests

from sut.client import Client
from sut.launcher import SutConfig, SutError, start_sut

AGENT_SEQUENCE = ["ack", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


class Forwarder:
    """Loopback TCP to ``127.0.0.1:target_port``; ``cut()`` closes it and every connection through it, so from then
    on its port refuses connections. A thread per direction: a test forwards a handful of connections."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return  # cut (or the target is gone: the test fails on what the service then says)
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        # shutdown before close: it wakes the threads blocked in accept() and recv() on Linux
        with self._lock:
            socks, self._socks = [self.server, *self._socks], []
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def via(self, url: str) -> str:
        """``url`` with its host and port replaced by this forwarder's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))


def health(url: str) -> tuple[int, dict]:
    response = requests.get(url + "/health", timeout=10)
    return response.status_code, response.json()


def wait_for(check, timeout: float = 15.0):
    """Poll ``check()`` until it returns something truthy; that value, or an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {timeout:g} s"
        time.sleep(0.1)
    return value


def failing(url: str) -> list[str]:
    status, body = health(url)
    return body["failing"] if status == 503 else []


@pytest.fixture
def forwarders():
    made: list[Forwarder] = []

    def make(url: str) -> Forwarder:
        made.append(Forwarder(urlsplit(url).port))
        return made[-1]

    yield make
    for forwarder in made:
        forwarder.cut()


def test_cutting_one_services_dependency_leaves_the_other_services_healthy(
    tmp_path, redis_url, database_url, forwarders
):
    to_redis, to_pg = forwarders(redis_url), forwarders(database_url)
    backend_redis, auth_db = to_redis.via(redis_url), to_pg.via(database_url)
    config = SutConfig(redis_url=redis_url, database_url=database_url, agent_step=0.0)
    own = {"backend": {"redis_url": backend_redis}, "auth": {"database_url": auth_db}}
    with start_sut(config, log_dir=tmp_path, service_settings=own) as sut:
        assert sut.settings.redis_url == redis_url and sut.settings.database_url == database_url
        assert sut.service_settings("backend").redis_url == backend_redis
        assert sut.service_settings("agent").redis_url == redis_url
        assert sut.service_settings("auth").database_url == auth_db
        assert {sut.service_settings(name).redis_prefix for name in sut.urls} == {sut.settings.redis_prefix}
        assert sut.data_dir is None  # every service has a database_url: no SQLite folder
        assert to_redis.accepted > 0 and to_pg.accepted > 0  # they really went through the forwarders

        # a restart keeps the service's own settings (its own environment); the others keep theirs
        sut.restart("backend")
        environ = {name: psutil.Process(pid).environ() for name, pid in sut.pids.items()}
        assert environ["backend"]["SUT_REDIS_URL"] == backend_redis
        assert environ["agent"]["SUT_REDIS_URL"] == redis_url
        assert environ["auth"]["SUT_DATABASE_URL"] == auth_db
        assert environ["backend"]["SUT_DATABASE_URL"] == database_url

        # the backend (through the forwarder) and the agent (direct) still meet on one Redis prefix
        client = Client(sut.urls["auth"], sut.urls["backend"])
        client.login()
        tab = client.tab()
        assert [e["type"] for e in tab.until_type("agent_completed", tab.chat("both ways"))] == AGENT_SEQUENCE
        tab.close()

        to_redis.cut()
        assert "redis" in wait_for(lambda: failing(sut.urls["backend"]))
        assert health(sut.urls["agent"])[0] == 200  # the agent's own Redis connections were never cut
        assert health(sut.urls["auth"])[0] == 200
        assert "database" not in failing(sut.urls["backend"])

        to_pg.cut()
        assert wait_for(lambda: failing(sut.urls["auth"])) == ["database"]
        assert health(sut.urls["agent"])[0] == 200
        assert "database" not in failing(sut.urls["backend"])  # the backend's Postgres is direct


def test_an_override_of_database_url_for_one_service_keeps_the_sqlite_folder_for_the_others(tmp_path, database_url):
    with start_sut(
        SutConfig(agent_step=0.0), log_dir=tmp_path, service_settings={"auth": {"database_url": database_url}}
    ) as sut:
        assert sut.data_dir is not None and sut.data_dir.is_dir()
        environ = {name: psutil.Process(pid).environ() for name, pid in sut.pids.items()}
        assert environ["backend"]["SUT_DATA_DIR"] == str(sut.data_dir)
        assert environ["auth"]["SUT_DATA_DIR"] == ""  # Postgres: the folder is not its business
        assert health(sut.urls["auth"])[1]["checks"]["database"] == "ok (postgresql+psycopg)"
        assert health(sut.urls["backend"])[1]["checks"]["database"] == "ok (sqlite)"
        client = Client(sut.urls["auth"], sut.urls["backend"])
        client.login()  # a user in Postgres, a token the SQLite backend accepts
        assert client.api("GET", "/api/threads").status_code == 200


def test_a_subscription_lost_mid_reply_fails_the_job_at_once(tmp_path, redis_url, forwarders):
    to_redis = forwarders(redis_url)
    config = SutConfig(redis_url=redis_url, agent_step=0.5)
    with start_sut(
        config, log_dir=tmp_path, service_settings={"backend": {"redis_url": to_redis.via(redis_url)}}
    ) as sut:
        client = Client(sut.urls["auth"], sut.urls["backend"])
        client.login()
        tab = client.tab()
        msg = tab.chat("cut me off")
        tab.until_type("agent_started", msg)
        to_redis.cut()
        cut_at = time.monotonic()
        got = tab.until(lambda e: e.get("type") == "error" and e.get("reply_to") == msg, timeout=5)
        assert time.monotonic() - cut_at < 3.0
        error = got[-1]
        assert error["code"] == "AGENT_UNAVAILABLE" and "Redis event subscription failed" in error["message"]
        assert "agent_completed" not in [e["type"] for e in got]
        tab.close()


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ({"frontend": {"agent_step": 0.1}}, "unknown service 'frontend'"),
        ({"backend": {"redis_uri": "redis://127.0.0.1:1/0"}}, "unknown setting 'redis_uri' for backend"),
        ({"agent": {"redis_prefix": "mine:"}}, "redis_prefix cannot differ per service"),
        ({"auth": {"jwt_secret": "x"}}, "jwt_secret cannot differ per service"),
        ({"backend": {"agent_step": "fast"}}, "backend.agent_step must be a float"),
        ({"backend": {"supervise": 1}}, "backend.supervise must be a bool"),
        ({"backend": {"redis_url": "redis://127.0.0.1:1/0"}}, "the backend and the agent must both use Redis"),
    ],
)
def test_bad_service_settings_are_refused_before_anything_starts(tmp_path, own, expected):
    with pytest.raises(SutError, match=expected):
        start_sut(SutConfig(), log_dir=tmp_path, service_settings=own)
    assert list(tmp_path.iterdir()) == []  # no service was started (none wrote a log)
