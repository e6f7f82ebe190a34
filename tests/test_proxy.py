"""The userspace proxy against a real TCP echo server on loopback: bytes, latency, cuts, bounds and a clean close."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from soak.proxy import Proxy, ProxyError, url_target, url_via

SHORT = 0.5  # seconds a hanging exchange is given before it counts as hanging
MAX_ECHO_CONNECTIONS = 64


class EchoServer:
    """A threaded echo server on 127.0.0.1:<free port>; counts the connections it has seen end."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.ended = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._accept, name="echo-accept", daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while len(self.threads) <= MAX_ECHO_CONNECTIONS:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), name="echo", daemon=True)
            self.threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()  # before it counts: a test that waits for the count then finds the descriptor gone
            with self.lock:
                self.ended += 1

    def close(self) -> None:
        for sock in [self.listener, *self.conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self.threads:
            thread.join(5)


def exchange(sock: socket.socket, data: bytes = b"ping") -> bytes:
    """Send ``data`` and read back as many bytes (with a concurrent reader: big payloads never deadlock)."""
    got = bytearray()

    def read() -> None:
        while len(got) < len(data):
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            got.extend(chunk)

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            read()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)

    reader = threading.Thread(target=guarded, daemon=True)
    reader.start()
    sock.sendall(data)
    reader.join(30)
    if errors:
        raise errors[0]
    return bytes(got)


def connect(port: int, timeout: float = SHORT) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    with Proxy(("127.0.0.1", echo.port)) as running:
        yield running


def test_bytes_pass_both_ways_unchanged(proxy):
    with connect(proxy.port, timeout=10) as sock:
        assert exchange(sock) == b"ping"
        payload = os.urandom(3 * 1024 * 1024)  # many chunks and more than BUFFER_MAX: backpressure on the way
        assert exchange(sock, payload) == payload
    assert proxy.counts["bytes_up"] >= len(payload) + 4
    assert proxy.counts["bytes_down"] >= len(payload) + 4


def test_half_close_is_passed_on(proxy, echo):
    with connect(proxy.port, timeout=5) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # the echo server sees EOF, answers, and closes: we see EOF after the data
        data = b""
        while chunk := sock.recv(100):
            data += chunk
    assert data == b"last words"
    deadline = time.monotonic() + 5
    while proxy.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.connections == 0


def test_latency_is_added_in_each_direction(proxy):
    with connect(proxy.port, timeout=5) as sock:
        began = time.monotonic()
        exchange(sock)
        fast = time.monotonic() - began
        proxy.latency = 0.15
        began = time.monotonic()
        assert exchange(sock) == b"ping"
        slow = time.monotonic() - began
        proxy.latency = 0.0
        began = time.monotonic()
        exchange(sock)
        back = time.monotonic() - began
    assert slow >= 2 * 0.15, f"round trip {slow:.3f} s: the latency was not added both ways"
    assert slow < 2 * 0.15 + 1.0
    assert fast < 0.25 and back < 0.25, (fast, back)  # well under the 0.3 s a latency-added round trip takes


def test_latency_rejects_nonsense(proxy):
    with pytest.raises(ValueError, match="latency"):
        proxy.latency = -1
    with pytest.raises(ValueError, match="mode"):
        proxy.cut("wobble")


def test_blackhole_holds_connections_and_restore_releases_them(proxy):
    old = connect(proxy.port)
    assert exchange(old) == b"ping"
    proxy.cut("blackhole")
    with pytest.raises(TimeoutError):
        exchange(old, b"lost?")
    new = connect(proxy.port)  # accepted and held, as a silent network would
    with pytest.raises(TimeoutError):
        exchange(new, b"hello")
    assert proxy.connections == 2
    proxy.restore()
    old.settimeout(5)
    new.settimeout(5)
    assert old.recv(100) == b"lost?"  # nothing dropped: it waited
    assert new.recv(100) == b"hello"
    assert exchange(old) == b"ping"
    old.close()
    new.close()


def test_reset_resets_every_connection_and_refuses_new_ones(proxy, echo):
    old = connect(proxy.port)
    assert exchange(old) == b"ping"
    proxy.cut("reset")
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        exchange(old)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        with connect(proxy.port) as new:
            exchange(new)
    assert proxy.counts["refused"] >= 1
    deadline = time.monotonic() + 5
    while echo.ended < 1 and time.monotonic() < deadline:  # the proxy's side to the server was reset too
        time.sleep(0.02)
    assert echo.ended >= 1
    proxy.restore()
    proxy.restore()  # idempotent
    with connect(proxy.port) as again:
        assert exchange(again) == b"ping"
    old.close()


def test_more_than_max_connections_are_reset(echo):
    with Proxy(("127.0.0.1", echo.port), max_connections=2) as small:
        kept = [connect(small.port) for _ in range(2)]
        for sock in kept:
            assert exchange(sock) == b"ping"
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            with connect(small.port) as extra:
                exchange(extra)
        assert small.counts["refused"] == 1
        for sock in kept:
            sock.close()


def test_a_target_that_refuses_resets_the_client():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with Proxy(("127.0.0.1", port)) as dead:
        with pytest.raises((ConnectionResetError, BrokenPipeError, TimeoutError)):
            with connect(dead.port) as sock:
                exchange(sock)
        assert dead.counts["upstream_failed"] == 1


def test_close_leaves_no_thread_and_no_socket(echo):
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    running = Proxy(("127.0.0.1", echo.port), latency=0.05)
    socks = [connect(running.port) for _ in range(3)]
    for sock in socks:
        assert exchange(sock) == b"ping"
    running.cut("blackhole")
    running.close()
    running.close()  # idempotent
    for sock in socks:
        sock.close()
    assert not [t for t in threading.enumerate() if t not in threads_before and t.name.startswith("proxy-")]
    # The echo server's threads close their ends once they read the proxy's FIN; that is theirs, not the proxy's,
    # and it happens a moment later, so wait for it before counting descriptors.
    deadline = time.monotonic() + 10
    while echo.ended < len(socks) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo.ended == len(socks)
    # Other tests' daemon threads in this worker may still be closing files of their own: wait, then judge.
    while open_fds() > fds_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_fds() <= fds_before
    with pytest.raises(ConnectionRefusedError):
        connect(running.port)
    with pytest.raises(ProxyError, match="closed"):
        running.cut("reset")


def test_url_helpers():
    assert url_target("redis://127.0.0.1:6380/0", 6379) == ("127.0.0.1", 6380)
    assert url_target("redis://localhost/0", 6379) == ("localhost", 6379)
    assert url_target("postgresql+psycopg://postgres@127.0.0.1/test", 5432) == ("127.0.0.1", 5432)
    assert url_target("postgresql+psycopg:///test?host=/var/run/postgresql", 5432) is None
    assert url_via("redis://:secret@10.0.0.1:6379/2", 41000) == "redis://:secret@127.0.0.1:41000/2"
    assert (
        url_via("postgresql+psycopg://u:p@db:5432/test?sslmode=disable", 41001)
        == "postgresql+psycopg://u:p@127.0.0.1:41001/test?sslmode=disable"
    )
