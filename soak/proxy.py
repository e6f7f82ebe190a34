"""A small userspace TCP proxy on loopback: latency, cuts and restores for the connections that pass through it.

The kernel here has no netem, so the ``slow`` fault adds its latency here: every chunk read from one side is held
``latency`` seconds before it is written to the other, in each direction. Put in front of the sut's Redis or
Postgres (the runner points ``redis_url`` / ``database_url`` at ``url_via(url, proxy.port)``), cutting the proxy cuts
only the sut's own connections, never the shared servers. Where nftables is not available it is also the fallback
``cut``: ``blackhole`` stops forwarding and holds every socket, ``reset`` closes every connection with a TCP reset
and resets new ones at once while cut.

One thread per proxy runs a selector loop over every connection: no thread per connection, no gevent, no asyncio
in the caller's thread. Bounded: at most MAX_CONNECTIONS connections (more are reset), at most BUFFER_MAX bytes
waiting per direction (the proxy stops reading that side until they are written).
"""

from __future__ import annotations

import collections
import errno
import itertools
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

CHUNK = 64 * 1024  # bytes per recv
BUFFER_MAX = 256 * 1024  # bytes per direction waiting to be written before the proxy stops reading that side
MAX_CONNECTIONS = 256
BACKLOG = 128
CONNECT_TIMEOUT = 10.0  # seconds for the connection to the target; then the client is reset
TICK = 0.5  # longest select wait: bounds how late a lost wake-up can make the loop
CALL_TIMEOUT = 5.0  # how long cut/restore/close wait for the loop to carry them out
KEEPALIVE = (30, 10, 3)  # idle s, interval s, probes: a peer cut by nft (no RST ever comes) is noticed and closed
MODES = ("blackhole", "reset")
_ids = itertools.count(1)


class ProxyError(RuntimeError):
    """The proxy is closed, or its thread did not answer in time."""


def _abort(sock: socket.socket | None) -> None:
    # SO_LINGER 0: close() sends a RST instead of a FIN, as a reset network does.
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = KEEPALIVE
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class _Flow:
    """One direction of a connection: chunks read from ``src``, each due for ``dst`` at its time."""

    def __init__(self) -> None:
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.eof = False  # src sent FIN
        self.shut = False  # the FIN was passed on to dst
        self.blocked = False  # dst's send buffer is full: wait for it to be writable


class _Pair:
    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.connecting = False
        self.deadline = 0.0
        self.up = _Flow()  # client -> target
        self.down = _Flow()  # target -> client

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class Proxy:
    """``Proxy(("127.0.0.1", 6379))`` listens on 127.0.0.1:<port> and forwards every connection to the target."""

    def __init__(self, target: tuple[str, int], latency: float = 0.0, max_connections: int = MAX_CONNECTIONS):
        infos = socket.getaddrinfo(target[0], target[1], type=socket.SOCK_STREAM)
        self._family, _, _, _, self._address = infos[0]  # resolved once: no name lookups in the loop
        self.target = target
        self.max_connections = max_connections
        self._latency = 0.0
        self.latency = latency
        self.mode = ""  # '' forwarding, or the cut's mode
        self.counts = {"accepted": 0, "refused": 0, "upstream_failed": 0, "bytes_up": 0, "bytes_down": 0}
        self._pairs: dict[socket.socket, _Pair] = {}  # every socket of every connection -> its pair
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], threading.Event]] = queue.SimpleQueue()
        self._closing = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(BACKLOG)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._loop, name=f"proxy-{self.port}-{next(_ids)}", daemon=True)
        self._thread.start()

    # --- the caller's side ---------------------------------------------------------------------------------------
    @property
    def latency(self) -> float:
        """Seconds added to every chunk in each direction; a change applies to chunks read after it."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not 0 <= seconds < 3600:
            raise ValueError(f"latency: expected 0 <= seconds < 3600, got {seconds!r}")
        self._latency = float(seconds)

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return sum(1 for sock, pair in list(self._pairs.items()) if sock is pair.client)

    def cut(self, mode: str) -> None:
        """blackhole: stop forwarding, hold every socket; reset: reset every connection and each new one at once."""
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        self._call(lambda: self._cut(mode))

    def restore(self) -> None:
        """Forward again; held connections go on with what was waiting. Idempotent."""
        self._call(self._restore)

    def close(self) -> None:
        """Close every connection and the listener, and end the thread. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        self._thread.join(CALL_TIMEOUT + TICK)
        if self._thread.is_alive():
            raise ProxyError(f"proxy on port {self.port}: its thread did not end")

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed

    def _call(self, fn: Callable[[], Any]) -> None:
        if self._closing or not self._thread.is_alive():
            raise ProxyError(f"proxy on port {self.port}: closed")
        done = threading.Event()
        self._calls.put((fn, done))
        self._wake()
        if not done.wait(CALL_TIMEOUT):
            raise ProxyError(f"proxy on port {self.port}: no answer within {CALL_TIMEOUT:g} s")

    # --- the loop's side ------------------------------------------------------------------------------------------
    def _cut(self, mode: str) -> None:
        self.mode = mode
        if mode == "reset":
            for pair in self._live():
                self._drop(pair, reset=True)

    def _restore(self) -> None:
        self.mode = ""
        for pair in self._live():
            if pair.upstream is None:  # accepted while blackholed: connect now
                self._connect(pair)

    def _live(self) -> list[_Pair]:
        return [pair for sock, pair in self._pairs.items() if sock is pair.client]

    def _loop(self) -> None:
        try:
            while not self._closing:
                while not self._calls.empty():
                    fn, done = self._calls.get()
                    try:
                        fn()
                    finally:
                        done.set()
                now = time.monotonic()
                self._interests()
                for key, mask in self._selector.select(self._timeout(now)):
                    self._event(key.fileobj, mask)  # type: ignore[arg-type]
                now = time.monotonic()
                if self.mode != "blackhole":
                    for pair in self._live():
                        if pair.connecting and now >= pair.deadline:
                            self.counts["upstream_failed"] += 1
                            self._drop(pair, reset=True)
                        elif pair.client in self._pairs:  # not dropped by an earlier pair's error
                            self._flush(pair, now)
        finally:
            for pair in self._live():
                self._drop(pair, reset=False)
            while not self._calls.empty():
                self._calls.get()[1].set()
            self._selector.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()

    def _timeout(self, now: float) -> float:
        timeout = TICK
        if self.mode != "blackhole":
            for sock, pair in self._pairs.items():
                if sock is not pair.client:
                    continue
                if pair.connecting:
                    timeout = min(timeout, pair.deadline - now)
                if pair.upstream is None or pair.connecting:
                    continue  # nothing can be written before the connection is up: no busy loop on due chunks
                for flow in (pair.up, pair.down):
                    if flow.chunks and not flow.blocked:
                        timeout = min(timeout, flow.chunks[0][0] - now)
        return max(0.0, timeout)

    def _interests(self) -> None:
        registered = self._selector.get_map()
        for sock, pair in list(self._pairs.items()):
            events = 0
            if self.mode != "blackhole":
                if sock is pair.upstream and pair.connecting:
                    events = selectors.EVENT_WRITE
                else:
                    source = pair.up if sock is pair.client else pair.down
                    target = pair.down if sock is pair.client else pair.up
                    if not source.eof and source.queued < BUFFER_MAX:
                        events |= selectors.EVENT_READ
                    if target.blocked:
                        events |= selectors.EVENT_WRITE
            if sock in registered:
                if not events:
                    self._selector.unregister(sock)
                elif registered[sock].events != events:
                    self._selector.modify(sock, events)
            elif events:
                self._selector.register(sock, events)

    def _event(self, sock: socket.socket, mask: int) -> None:
        if sock is self._wake_r:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
            return
        if sock is self._listener:
            self._accept()
            return
        pair = self._pairs.get(sock)
        if pair is None:
            return
        try:
            self._transfer(pair, sock, mask)
        except OSError:
            self._drop(pair, reset=True)  # a reset on one side is passed on to the other

    def _transfer(self, pair: _Pair, sock: socket.socket, mask: int) -> None:
        if pair.connecting and sock is pair.upstream:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.counts["upstream_failed"] += 1
                self._drop(pair, reset=True)
            else:
                pair.connecting = False
            return
        if mask & selectors.EVENT_WRITE:
            (pair.down if sock is pair.client else pair.up).blocked = False
        if mask & selectors.EVENT_READ:
            flow = pair.up if sock is pair.client else pair.down
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                return
            if not data:
                flow.eof = True
                return
            flow.chunks.append((time.monotonic() + self._latency, data))
            flow.queued += len(data)

    def _accept(self) -> None:
        for _ in range(BACKLOG):  # bounded: the rest wait for the next round
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the client stays in the backlog, the loop goes on
            self.counts["accepted"] += 1
            if self.mode == "reset" or self.connections >= self.max_connections:
                self.counts["refused"] += 1
                _abort(client)
                continue
            client.setblocking(False)
            _keepalive(client)
            pair = _Pair(client)
            self._pairs[client] = pair
            if self.mode != "blackhole":
                self._connect(pair)

    def _connect(self, pair: _Pair) -> None:
        upstream = socket.socket(self._family, socket.SOCK_STREAM)
        upstream.setblocking(False)
        _keepalive(upstream)
        pair.upstream = upstream
        self._pairs[upstream] = pair
        error = upstream.connect_ex(self._address)
        if error == 0:
            return
        if error in (errno.EINPROGRESS, errno.EWOULDBLOCK):
            pair.connecting = True
            pair.deadline = time.monotonic() + CONNECT_TIMEOUT
            return
        self.counts["upstream_failed"] += 1
        self._drop(pair, reset=True)

    def _flush(self, pair: _Pair, now: float) -> None:
        if pair.upstream is None or pair.connecting:
            return
        for flow, dst, counter in ((pair.up, pair.upstream, "bytes_up"), (pair.down, pair.client, "bytes_down")):
            while flow.chunks and not flow.blocked and flow.chunks[0][0] <= now:
                due, data = flow.chunks[0]
                try:
                    sent = dst.send(data)
                except BlockingIOError:
                    flow.blocked = True
                    break
                except OSError:
                    self._drop(pair, reset=True)
                    return
                self.counts[counter] += sent
                flow.queued -= sent
                if sent < len(data):
                    flow.chunks[0] = (due, data[sent:])
                else:
                    flow.chunks.popleft()
            if flow.eof and not flow.chunks and not flow.shut:
                flow.shut = True
                try:
                    dst.shutdown(socket.SHUT_WR)  # pass the FIN on: half-closed connections keep working
                except OSError:
                    pass
        if pair.up.shut and pair.down.shut:
            self._drop(pair, reset=False)

    def _drop(self, pair: _Pair, reset: bool) -> None:
        for sock in pair.sockets():
            self._pairs.pop(sock, None)
            if sock in self._selector.get_map():
                self._selector.unregister(sock)
            if reset:
                _abort(sock)
            else:
                sock.close()


def url_target(url: str, default_port: int) -> tuple[str, int] | None:
    """(host, port) of a redis:// or postgresql+driver:// URL; None when it names no TCP host (a unix socket)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.hostname.startswith("/"):
        return None
    return parts.hostname, parts.port or default_port


def url_via(url: str, port: int, host: str = "127.0.0.1") -> str:
    """The same URL with its host:port replaced by a proxy's, keeping user, password, path and query."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))
