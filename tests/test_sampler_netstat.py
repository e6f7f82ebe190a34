"""Counting TCP connections once per tick for every service: netlink sock_diag, checked against /proc/net/tcp and
against the sockets this test opens itself (IPv4 and IPv6, one port or several, hundreds of connections)."""

from __future__ import annotations

import socket

import pytest

from sampler.netstat import TcpTable


def listener(family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.listen(512)
    return sock


def connect(server: socket.socket, count: int, held: list[socket.socket]) -> None:
    host, port = server.getsockname()[:2]
    for _ in range(count):
        held.append(socket.create_connection((host, port)))
        held.append(server.accept()[0])


@pytest.fixture
def held():
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


@pytest.mark.parametrize("use_netlink", [True, False], ids=["netlink", "proc"])
def test_counts_the_server_side_of_each_connection(use_netlink, held):
    table = TcpTable(use_netlink=use_netlink)
    if use_netlink:
        assert table.method == "netlink"  # this machine allows sock_diag; the fallback is tested on its own
    v4, v6, idle = listener(), listener(socket.AF_INET6), listener()
    held += [v4, v6, idle]
    connect(v4, 300, held)  # 300 messages of one length: the sliced fast path
    connect(v6, 7, held)
    ports = {name: sock.getsockname()[1] for name, sock in (("v4", v4), ("v6", v6), ("idle", idle))}
    snapshot = table.snapshot()
    for port in ports.values():
        assert port in snapshot.listeners
        assert all(inode in snapshot.listener_inodes for inode in snapshot.listeners[port])
    assert snapshot.established({ports["v4"]}) == 300
    assert snapshot.established({ports["v6"]}) == 7
    assert snapshot.established({ports["idle"]}) == 0
    assert snapshot.established(set(ports.values())) == 307
    # several ports in one query: the kernel-side filter program with more than one port
    counts = table.count_established(set(ports.values()))
    assert counts.get(ports["v4"]) == 300 and counts.get(ports["v6"]) == 7 and ports["idle"] not in counts
    table.close()


def test_closed_connections_leave_the_count(held):
    table = TcpTable()
    server = listener()
    held.append(server)
    extra: list[socket.socket] = []
    connect(server, 20, extra)
    port = server.getsockname()[1]
    assert table.snapshot().established({port}) == 20
    for sock in extra:
        sock.close()
    assert table.snapshot().established({port}) == 0
    table.close()


def test_a_port_nobody_listens_on_costs_no_query_and_counts_zero():
    table = TcpTable()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    free = probe.getsockname()[1]
    probe.close()
    snapshot = table.snapshot()
    assert free not in snapshot.listeners
    assert snapshot.established({free}) == 0
    table.close()


def test_counting_keeps_to_its_cpu_budget(held):
    """After a count that cost C CPU seconds the next waits C / budget: a tick in between gets None, not a count."""
    table = TcpTable(cpu_budget=0.004)
    server = listener()
    held.append(server)
    connect(server, 3, held)
    port = server.getsockname()[1]
    assert table.snapshot(100.0).established({port}) == 3  # nothing spent yet: due
    table.spent(100.0, 0.01)  # as if that count had cost 10 ms of CPU: next one 2.5 s later
    early = table.snapshot(101.0)
    assert not early.counting and early.established({port}) is None
    assert table.snapshot(102.6).established({port}) == 3
    assert TcpTable(cpu_budget=0).snapshot(0.0).counting  # 0 = no cap
    table.close()
