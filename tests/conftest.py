"""Shared fixtures: free loopback ports, and the real Redis and Postgres servers of this machine.

Outside CI a missing Redis or Postgres skips the tests that need it, saying so; under CI (CI=true) it fails them,
because .ci/run starts both and a test that quietly skipped its real backend proved nothing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = os.environ.get("SOAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get("SOAK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    # The Locust-importing run (Makefile: -m locust_inprocess) imports Locust before any test module imports ssl:
    # gevent's monkey-patching of an ssl already imported recurses without end when Locust builds its SSL context.
    if config.getoption("markexpr") == "locust_inprocess":
        import locust  # noqa: F401


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _missing(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc}); start it (see .ci/run) to run this test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis server, with a key prefix of its own so parallel test runs never share keys."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not usable
        _missing(f"Redis at {REDIS_URL}", exc)
    yield REDIS_URL
    client.close()


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh database on the real Postgres server, dropped afterwards; an SQLAlchemy URL (psycopg 3 driver)."""
    import psycopg

    name = f"soak_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001
        _missing(f"Postgres at {PG_ADMIN_URL}", exc)
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sut_factory(tmp_path) -> Iterator:
    """``start(**sut_config_keys)`` -> a running sut (sut.launcher.Sut), logs in tmp_path; all stopped afterwards.

    Extra service settings that are not scenario keys go in ``settings={...}``.
    """
    from sut.launcher import SutConfig, start_sut

    started = []

    def start(settings: dict | None = None, **config):
        running = start_sut(SutConfig(**config), log_dir=tmp_path / f"sut-{len(started)}", settings=settings)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
