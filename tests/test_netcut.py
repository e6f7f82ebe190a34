"""nftables cuts against a real TCP echo server on loopback: blackhole hangs, reset refuses, restore heals, and no
``chat_soak_`` table outlives its process (close, exit, SIGTERM, kill -9 then cleanup_stale).

Needs root (CAP_NET_ADMIN): skipped otherwise, saying so; under CI (CI=true) a missing root fails instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soak import netcut
from tests.test_proxy import SHORT, EchoServer, connect, exchange

pytestmark = pytest.mark.xdist_group("nft")  # nft tables are machine-wide: one worker makes them

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 20.0


def require_nft() -> None:
    if os.geteuid() != 0:
        message = "nftables cuts need root (CAP_NET_ADMIN); run the tests as root to run these"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    reason = netcut.unavailable_reason(refresh=True)
    assert not reason, f"root, but nft cannot cut here: {reason} (install nftables: tests/provision.sh)"


@pytest.fixture
def echo():
    require_nft()
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def cutter():
    with netcut.NetCut() as cuts:
        yield cuts
    assert cuts.table not in netcut.tables()


def test_available_as_root():
    require_nft()
    assert netcut.available()


def test_blackhole_hangs_both_ways_and_restore_heals(echo, cutter):
    old = connect(echo.port)
    assert exchange(old) == b"ping"
    cutter.cut(echo.port, "blackhole")
    assert cutter.table in netcut.tables()
    with pytest.raises(TimeoutError):
        connect(echo.port)  # the SYN is dropped: no answer at all
    with pytest.raises(TimeoutError):
        exchange(old, b"lost?")
    cutter.restore(echo.port)
    assert cutter.table not in netcut.tables()  # no cut left: no table left
    with connect(echo.port) as new:
        assert exchange(new) == b"ping"
    old.settimeout(10)  # TCP retransmits what was dropped; the old connection goes on
    assert old.recv(100) == b"lost?"
    old.close()


def test_reset_refuses_new_and_resets_old_connections(echo, cutter):
    old = connect(echo.port)
    assert exchange(old) == b"ping"
    cutter.cut(echo.port, "reset")
    began = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        connect(echo.port)
    assert time.monotonic() - began < SHORT  # refused at once, not a timeout
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        exchange(old)
    cutter.restore(echo.port)
    cutter.restore(echo.port)  # idempotent
    with connect(echo.port) as new:
        assert exchange(new) == b"ping"
    old.close()


def test_a_cut_hits_only_its_port(echo, cutter):
    other = EchoServer()
    try:
        cutter.cut(echo.port, "blackhole")
        with connect(other.port) as sock:
            assert exchange(sock) == b"ping"
    finally:
        other.close()


def test_close_removes_the_table_and_refuses_more_cuts(echo):
    cuts = netcut.NetCut()
    cuts.cut(echo.port, "reset")
    cuts.cut(echo.port, "blackhole")  # a second cut of the port replaces its mode
    assert cuts.cuts == {echo.port: "blackhole"}
    cuts.close()
    cuts.close()  # idempotent
    assert cuts.table not in netcut.tables()
    with connect(echo.port) as sock:
        assert exchange(sock) == b"ping"
    with pytest.raises(netcut.NetCutError, match="closed"):
        cuts.cut(echo.port, "reset")
    with pytest.raises(ValueError, match="mode"):
        netcut.NetCut().cut(echo.port, "wobble")


def test_cleanup_stale_removes_only_tables_of_dead_processes():
    require_nft()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = f"chat_soak_{dead.pid}", f"chat_soak_{os.getpid()}_keep"
    subprocess.run(["nft", "add", "table", "inet", stale], check=True)
    subprocess.run(["nft", "add", "table", "inet", live], check=True)
    try:
        removed = netcut.cleanup_stale()
        assert stale in removed
        assert stale not in netcut.tables()
        assert live in netcut.tables()
    finally:
        for name in (stale, live):
            subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True, check=False)


def _child(port: int, ending: str) -> subprocess.Popen:
    """A python process that cuts ``port`` and then ends by ``ending``: exit, sigterm or hang (for kill -9)."""
    code = f"""
import os, signal, sys, time
from soak import netcut
cuts = netcut.NetCut()
if {ending!r} == "sigterm":
    def on_term(*_):
        cuts.close()
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
cuts.cut({port}, "blackhole")
print(cuts.table, flush=True)
if {ending!r} != "exit":
    time.sleep({CHILD_TIMEOUT})
"""
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("ending", ["exit", "sigterm", "kill"])
def test_nothing_outlives_the_process(echo, ending):
    child = _child(echo.port, ending)
    try:
        table = child.stdout.readline().strip()  # type: ignore[union-attr]
        assert table.startswith("chat_soak_")
        if ending == "sigterm":
            child.send_signal(signal.SIGTERM)
        elif ending == "kill":
            assert table in netcut.tables()
            child.kill()
        child.wait(CHILD_TIMEOUT)
        if ending == "kill":  # nothing ran in the child: the next start cleans up
            assert table in netcut.tables()
            assert table in netcut.cleanup_stale()
        assert table not in netcut.tables()
        with connect(echo.port) as sock:
            assert exchange(sock) == b"ping"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(CHILD_TIMEOUT)
        child.stdout.close()  # type: ignore[union-attr]
