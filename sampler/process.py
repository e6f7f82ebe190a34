"""A service as a process tree: found by pid, by the port it listens on, or by its command line; summed over
the root and all its descendants (uvicorn workers, Locust --processes workers).

Per tick and per process it reads ``/proc/PID/stat`` and the fd count (tens of microseconds); the tree itself is
re-read every TREE_REFRESH seconds or when a member exits. When the root process is gone the service is looked for
again (port and cmd specs); finding a different process writes ``service_restart``. While it is down nothing is
written for it: a gap in the series, not a made-up zero.
"""

from __future__ import annotations

import logging
import os
import re

from runspec.units import LOAD_GENERATOR
from sampler import procfs
from sampler.sources import Source, Tick
from sampler.spec import SourceSpec

log = logging.getLogger("sampler")

TREE_REFRESH = 5.0  # seconds between re-reads of the process tree (new workers appear within this)
LISTEN_RESCAN = 300.0  # seconds between scans of a service's fds for listening sockets it opened later
FIRST_LISTEN_RESCAN = 2.0  # the same while it has no listening socket yet (a service just started binds soon)
OWNER_RETRY = 5.0  # seconds between searches for the owner of a port whose owner could not be found


class ProcessSource(Source):
    def __init__(self, service: str, spec: SourceSpec) -> None:
        super().__init__(service, spec)
        self.root: int | None = None
        self._root_start = 0
        self._members: dict[int, int] = {}  # pid -> start time
        self._tree_read = float("-inf")
        self._tree_dirty = True
        self._cpu: dict[tuple[int, int], int] = {}  # (pid, start) -> cpu ticks at the previous tick
        self._cpu_at: float | None = None
        self._listen: dict[int, int] = {}  # inode -> port of listening sockets held by the tree
        self._listen_seen: frozenset[int] = frozenset()
        self._listen_scan = float("-inf")
        self._scanned_members: frozenset[int] = frozenset()
        self._owner_retry = float("-inf")
        self._ever_up = False
        self._count_failing = False
        self._last_pid: int | None = None
        self._down_since = 0.0
        self._waiting_logged = False
        self._fixed_port = int(spec.target) if spec.kind == "port" else None
        self._regex = re.compile(spec.target) if spec.kind == "cmd" else None

    # -- which process is the service -------------------------------------------------------------------------
    def _alive(self) -> bool:
        if self.root is None:
            return False
        try:
            return procfs.read_stat(self.root).start == self._root_start
        except OSError:
            return False

    def _discover(self, tick: Tick) -> int | None:
        if self.spec.kind == "pid":
            if self._ever_up:  # a pid names one process; once it is gone the service is gone
                return None
            return os.getpid() if self.spec.target == "self" else int(self.spec.target)
        if self.spec.kind == "port":
            return self._port_owner(tick)
        return self._cmd_match(tick)

    def _port_owner(self, tick: Tick) -> int | None:
        if tick.net is None or tick.mono < self._owner_retry:
            return None
        inodes = tick.net.listeners.get(self._fixed_port, set())
        if not inodes:
            return None
        owner = None
        for pid in sorted(procfs.all_pids(), reverse=True):  # high pids first: a restarted service is usually one
            if procfs.socket_inodes(pid) & inodes:
                owner = pid
                break
        if owner is None:  # held by a process we cannot see (another pid namespace); do not rescan every tick
            self._owner_retry = tick.mono + OWNER_RETRY
            return None
        parents = tick.parents()
        # uvicorn --workers: the workers inherit the listening socket from the master; the master is the service
        while parents.get(owner, 0) > 1 and procfs.socket_inodes(parents[owner]) & inodes:
            owner = parents[owner]
        return owner

    def _cmd_match(self, tick: Tick) -> int | None:
        assert self._regex is not None
        parents = tick.parents()
        excluded, pid = set(), os.getpid()
        while pid > 0 and pid not in excluded:  # our own command line holds the pattern: skip us and our parents
            excluded.add(pid)
            pid = parents.get(pid, 0)
        matches = {p for p in parents if p not in excluded and self._regex.search(procfs.cmdline(p))}
        roots = [p for p in matches if parents.get(p) not in matches]
        starts = {}
        for pid in roots:
            try:
                starts[pid] = procfs.read_stat(pid).start
            except OSError:
                continue
        return min(starts, key=lambda p: (starts[p], p)) if starts else None

    # -- one tick ---------------------------------------------------------------------------------------------
    def read(self, tick: Tick) -> dict[str, float]:
        if not self._alive():
            old = self.root
            if old is not None:
                self._last_pid, self._down_since = old, tick.mono
                self.root = None
                self._members, self._cpu, self._cpu_at, self._listen = {}, {}, None, {}
                self._scanned_members = frozenset()
            new = self._discover(tick)
            start = None
            if new is not None:
                try:
                    start = procfs.read_stat(new).start
                except OSError:
                    new = None
            if new is None:
                if old is not None and self.service != LOAD_GENERATOR:
                    # Locust exits at every load stop; whether it died early is the runner's to say (load_generator_gone)
                    self.events.append(("service_down", f"{self.service}: pid {old} exited"))
                elif not self._waiting_logged and not self._ever_up:
                    self._waiting_logged = True
                    log.info(
                        "sampler: %s (%s) not found yet; sampling starts when it appears", self.service, self.spec.text
                    )
                return {}
            if self._ever_up:
                down = "" if old is not None else f" after {tick.mono - self._down_since:.1f} s down"
                self.events.append(("service_restart", f"{self.service}: pid {self._last_pid} -> pid {new}{down}"))
            self.root, self._root_start, self._ever_up, self._last_pid = new, start, True, new
            self._tree_dirty = True
        return self._measure(tick)

    def _measure(self, tick: Tick) -> dict[str, float]:
        assert self.root is not None
        if self._tree_dirty or tick.mono - self._tree_read >= TREE_REFRESH:
            self._members = {}
            for pid in procfs.descendants(self.root, tick.parents()):
                try:
                    self._members[pid] = procfs.read_stat(pid).start
                except OSError:
                    continue
            self._tree_read, self._tree_dirty = tick.mono, False
        rss = threads = fds = 0
        cpu: dict[tuple[int, int], int] = {}
        for pid, start in list(self._members.items()):
            try:
                stat = procfs.read_stat(pid)
                if stat.start != start:
                    raise ProcessLookupError(pid)
                count = procfs.fd_count(pid)
            except OSError:
                del self._members[pid]
                self._tree_dirty = True
                continue
            rss += stat.rss_bytes
            threads += stat.threads
            fds += count
            cpu[(pid, start)] = stat.cpu_ticks
        if self.root not in self._members:  # the root went away during this tick: report it down next tick
            return {}
        out: dict[str, float] = {
            "mem_rss_bytes": rss,
            "threads": threads,
            "open_fds": fds,
            "processes": len(self._members),
        }
        if self._cpu_at is not None and tick.mono > self._cpu_at:
            used = sum(ticks - self._cpu[key] for key, ticks in cpu.items() if key in self._cpu)
            out["cpu_percent"] = 100.0 * used / procfs.CLOCK_TICKS / (tick.mono - self._cpu_at)
        self._cpu, self._cpu_at = cpu, tick.mono
        if tick.uss_due:
            uss = pss = 0
            for pid in self._members:
                try:
                    u, p = procfs.private_memory(pid)
                except OSError:
                    continue
                uss += u
                pss += p
            out["mem_uss_bytes"], out["mem_pss_bytes"] = uss, pss
        ports = self._ports(tick)
        if ports and tick.net is not None:
            try:
                count = tick.net.established(ports)
            except OSError as exc:  # the other metrics are good: keep them, leave the count out
                if not self._count_failing:
                    log.warning("sampler: %s: cannot count TCP connections: %s (logged once)", self, exc)
                self._count_failing, count = True, None
            else:
                self._count_failing = False
            if count is not None:  # None: this tick skips counting to stay in its CPU budget
                out["tcp_established"] = count
        return out

    def _ports(self, tick: Tick) -> set[int]:
        """The service's listening ports: the spec's port, plus any the tree's processes hold listening sockets on."""
        net = tick.net
        if net is None:
            return {self._fixed_port} if self._fixed_port else set()
        self._listen = {inode: port for inode, port in self._listen.items() if inode in net.listener_inodes}
        listeners = frozenset(net.listener_inodes)
        members = frozenset(self._members)
        new_listeners = bool(listeners - self._listen_seen)
        settled = bool(self._listen) or self._fixed_port is not None
        # New listeners appear whenever anything on the machine starts a server; scanning a tree's fds (a readlink
        # each: 10 ms at 5,000 sockets) for them is rationed, and done at once only when the tree itself changed.
        wait = LISTEN_RESCAN if settled else FIRST_LISTEN_RESCAN
        if members != self._scanned_members or (new_listeners and tick.mono - self._listen_scan >= wait):
            found = {}
            for pid in members:
                for inode in procfs.socket_inodes(pid) & listeners:
                    found[inode] = net.listener_inodes[inode]
            self._listen = found
            self._listen_seen, self._listen_scan, self._scanned_members = listeners, tick.mono, members
        ports = set(self._listen.values())
        if self._fixed_port is not None:
            ports.add(self._fixed_port)
        return ports

    def wanted_ports(self) -> set[int]:
        ports = set(self._listen.values())
        if self._fixed_port is not None:
            ports.add(self._fixed_port)
        return ports
