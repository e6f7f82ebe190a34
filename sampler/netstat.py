"""TCP sockets of the whole machine, read once per tick for every service: listeners and established counts.

psutil's ``net_connections`` parses every socket of every process (30-120 ms per call with thousands open). Here a
netlink ``sock_diag`` query, as ``ss`` makes, asks the kernel for listening sockets (few) and for the established
sockets whose local port is one of ours, filtered in the kernel by a small bytecode program, and only counts them.
Where netlink is refused (some sandboxes), ``/proc/net/tcp`` and ``tcp6`` are parsed instead (slower, same answer).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST_DUMP = 0x1 | 0x300  # NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE = 1, 2, 3
TCP_ESTABLISHED, TCP_LISTEN = 1, 10
FAMILIES = (socket.AF_INET, socket.AF_INET6)
TCP_CPU_BUDGET = 0.004  # share of one core that counting connections may use (0 = no cap)
NETLINK_TIMEOUT = 1.0  # seconds; a dump of 10,000 sockets takes a few ms
RECV_BUFFER = 1 << 20  # the socket's receive queue
RECV_CHUNK = 1 << 16  # per recv: the kernel sends dumps in skbs of at most 32 KiB; 1 MiB per call costs 2 ms at 5,000
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_DIAG_MSG = 16  # offset of inet_diag_msg in a message
_SPORT = _DIAG_MSG + 4  # idiag_sport, big-endian
_INODE = _DIAG_MSG + 68  # idiag_inode


class Snapshot:
    """One tick's view of TCP: ``listeners`` maps port -> inodes of listening sockets; ``established(ports)`` counts.

    ``counting`` is False on a tick where counting would overrun the CPU budget (see TcpTable); established()
    then returns None and no count is written for that tick.
    """

    def __init__(
        self,
        table: TcpTable,
        listeners: dict[int, set[int]],
        families: dict[int, set[int]],
        mono: float = 0.0,
        counting: bool = True,
    ) -> None:
        self._table = table
        self.listeners = listeners
        self._families = families  # port -> address families it listens on; no listener, no query
        self.listener_inodes = {inode: port for port, inodes in listeners.items() for inode in inodes}
        self.mono = mono
        self.counting = counting
        self.cost = 0.0  # CPU seconds spent counting in this tick
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def established(self, ports: set[int] | frozenset[int]) -> int | None:
        """Established connections whose local port is in ``ports`` (the service's side of each connection)."""
        if not self.counting:
            return None
        with self._lock:
            missing = set(ports) - self._counts.keys()
            if missing:
                families = {family for port in missing for family in self._families.get(port, ())}
                started = time.thread_time()
                counts = self._table.count_established(missing, families) if families else {}
                self.cost += time.thread_time() - started
                self._table.spent(self.mono, self.cost)
                for port in missing:
                    self._counts[port] = counts.get(port, 0)
            return sum(self._counts[port] for port in ports)

    def prefetch(self, ports: set[int]) -> None:
        """Count all ports known to be wanted this tick in one query instead of one per service."""
        if ports:
            self.established(ports)


class TcpTable:
    """The machine's TCP sockets, by netlink (one socket kept open) or by /proc/net/tcp as a fallback.

    Counting is the one cost that grows with the load: the kernel formats a message per connection (3-4 ms of CPU
    a count at 5,000 connections, measured by bench/bench_sampler.py). ``cpu_budget`` caps it: after a count that cost C seconds of CPU the next
    one waits C / cpu_budget seconds, so at most that share of one core goes to counting however many
    connections there are; the ticks in between write no tcp_established (a sparser series, never a stale one).
    """

    def __init__(self, use_netlink: bool = True, cpu_budget: float | None = None) -> None:
        self.cpu_budget = TCP_CPU_BUDGET if cpu_budget is None else cpu_budget
        self._next_count = float("-inf")
        self._sock: socket.socket | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self.method = "proc"
        if use_netlink:
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
                sock.settimeout(NETLINK_TIMEOUT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
                self._sock = sock
                self._dump(socket.AF_INET, 1 << TCP_LISTEN)  # refused here rather than on the first tick
                self.method = "netlink"
            except OSError:
                self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def spent(self, mono: float, cost: float) -> None:
        """Record that the tick started at ``mono`` spent ``cost`` CPU seconds counting; schedule the next count."""
        if self.cpu_budget > 0:
            self._next_count = mono + cost / self.cpu_budget

    def snapshot(self, mono: float | None = None) -> Snapshot:
        """Listening sockets now; ``mono`` (the tick's monotonic time) enables the counting budget."""
        counting = mono is None or mono >= self._next_count
        listeners: dict[int, set[int]] = {}
        families: dict[int, set[int]] = {}
        if self._sock is not None:
            for family in FAMILIES:
                for buf, offsets in self._dump(family, 1 << TCP_LISTEN):
                    for off in offsets:
                        (port,) = struct.unpack_from(">H", buf, off + _SPORT)
                        (inode,) = struct.unpack_from("=I", buf, off + _INODE)
                        listeners.setdefault(port, set()).add(inode)
                        families.setdefault(port, set()).add(family)
        else:
            for family, port, state, inode in _proc_sockets():
                if state == TCP_LISTEN:
                    listeners.setdefault(port, set()).add(inode)
                    families.setdefault(port, set()).add(family)
        return Snapshot(self, listeners, families, mono if mono is not None else time.monotonic(), counting)

    def count_established(self, ports: set[int], families: set[int] | tuple[int, ...] = FAMILIES) -> dict[int, int]:
        """Established sockets per local port, for the address families given (a dump per family costs ~0.3 ms)."""
        if not ports:
            return {}
        if self._sock is None:
            wanted = [(f, p) for f, p, state, _ in _proc_sockets() if state == TCP_ESTABLISHED and p in ports]
            return dict(Counter(port for family, port in wanted if family in families))
        counts: Counter[int] = Counter()
        bytecode = _port_filter(sorted(ports))
        for family in sorted(families):
            for buf, offsets in self._dump(family, 1 << TCP_ESTABLISHED, bytecode):
                if len(ports) == 1:
                    counts[next(iter(ports))] += len(offsets)
                else:
                    for (hi, lo), n in _port_bytes(buf, offsets).items():
                        counts[hi << 8 | lo] += n
        return dict(counts)

    def _dump(self, family: int, states: int, bytecode: bytes = b"") -> list[tuple[bytes, list[int]]]:
        """Send one sock_diag dump request; return each received buffer with the offsets of its socket messages."""
        assert self._sock is not None
        with self._lock:
            self._seq += 1
            seq = self._seq
            # inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48 bytes)
            request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
            if bytecode:
                request += struct.pack("=HH", 4 + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
            self._sock.send(
                _HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, seq, 0) + request
            )
            out = []
            while True:
                buf, _anc, flags, _addr = self._sock.recvmsg(RECV_CHUNK)
                if flags & socket.MSG_TRUNC:
                    raise OSError("sock_diag: netlink message larger than the receive buffer")
                uniform = _uniform_run(buf, seq)
                offsets: range | list[int] = uniform
                off, end = uniform.stop, len(buf)
                if off < end:
                    offsets = list(uniform)
                while off + _HEADER.size <= end:
                    length, kind, _flags, msg_seq, _pid = _HEADER.unpack_from(buf, off)
                    if length < _HEADER.size:
                        raise OSError("sock_diag: malformed netlink message")
                    if msg_seq == seq:
                        if kind == NLMSG_DONE:
                            out.append((buf, offsets))
                            return out
                        if kind == NLMSG_ERROR:
                            (errno,) = struct.unpack_from("=i", buf, off + _HEADER.size)
                            raise OSError(-errno, "sock_diag request refused")
                        offsets.append(off)
                    off += (length + 3) & ~3
                out.append((buf, offsets))


def _uniform_run(buf: bytes, seq: int) -> range:
    """Offsets of the leading run of same-length socket messages, checked with byte slices instead of a loop.

    A dump of 5,000 sockets is 5,000 messages of one length; walking them in Python costs ~10 ms a tick, slicing
    every length, type and sequence field at that stride and comparing them costs ~0.1 ms.
    """
    if len(buf) < _HEADER.size:
        return range(0)
    length, kind, _flags, msg_seq, _pid = _HEADER.unpack_from(buf, 0)
    if kind != SOCK_DIAG_BY_FAMILY or msg_seq != seq or length < _INODE + 4 or length & 3:
        return range(0)
    n = len(buf) // length
    while n > 0:
        stop = n * length
        head = buf[: _HEADER.size]
        if all(buf[i:stop:length] == head[i : i + 1] * n for i in (0, 1, 2, 3, 4, 5, 8, 9, 10, 11)):
            return range(0, stop, length)
        n //= 2  # a different message inside (rare): settle for a shorter run, the loop takes the rest
    return range(0)


def _port_bytes(buf: bytes, offsets: range | list[int]) -> Counter[tuple[int, int]]:
    """Counts of (high byte, low byte) of the local port of each message, at C speed for a uniform run."""
    if isinstance(offsets, range):
        if not offsets:
            return Counter()
        stop = offsets.stop
        high = buf[offsets.start + _SPORT : stop : offsets.step]
        low = buf[offsets.start + _SPORT + 1 : stop : offsets.step]
        return Counter(zip(high, low, strict=True))
    return Counter((buf[off + _SPORT], buf[off + _SPORT + 1]) for off in offsets)


def _port_filter(ports: list[int]) -> bytes:
    """inet_diag bytecode accepting a socket whose local port is one of ``ports``.

    Per port: S_GE port, S_LE port, then (except after the last port) a JMP to the end, which accepts. A failed
    comparison jumps to the next port's ops, or after the last port 4 bytes past the end, which rejects. The
    kernel's audit wants every jump target on the chain of "yes" steps from the start, hence the JMP ops in line.
    """
    total = 20 * len(ports) - 4
    code = b""
    for i, port in enumerate(ports):
        at = 20 * i
        last = i == len(ports) - 1
        fail_ge = total - at + 4 if last else 20
        fail_le = total - at - 8 + 4 if last else 12
        code += struct.pack("=BBHBBH", INET_DIAG_BC_S_GE, 8, fail_ge, 0, 0, port)
        code += struct.pack("=BBHBBH", INET_DIAG_BC_S_LE, 8, fail_le, 0, 0, port)
        if not last:
            code += struct.pack("=BBH", INET_DIAG_BC_JMP, 4, total - at - 16)
    return code


def _proc_sockets() -> list[tuple[int, int, int, int]]:
    """(family, local port, state, inode) of every TCP socket, from /proc/net/tcp and tcp6.

    The kernel prints these files a page at a time, and sockets opened or closed meanwhile can shift the listing:
    a socket may be printed twice, so each inode is kept once.
    """
    out, seen = [], set()
    for family, name in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        try:
            with open(name, "rb") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            inode = int(fields[9])
            if inode:
                if inode in seen:
                    continue
                seen.add(inode)
            out.append((family, int(fields[1].rsplit(b":", 1)[1], 16), int(fields[3], 16), inode))
    return out
