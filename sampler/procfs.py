"""Cheap per-process reads from /proc (Linux), where psutil would read several files per call.

One ``/proc/PID/stat`` read (~20 us) gives the parent, CPU time, threads, resident pages and start time; the fd
count is the size of ``/proc/PID/fd`` (Linux 6.2+, ~5 us) instead of listing thousands of entries (6.5 ms at 5,000
sockets); USS comes from ``smaps_rollup``, which walks the memory map (ms), so callers read it at a lower rate.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_SMAPS_FIELD = re.compile(rb"^(Pss|Private_Clean|Private_Dirty|Private_Hugetlb):\s+(\d+) kB", re.MULTILINE)


class Stat(NamedTuple):
    ppid: int
    cpu_ticks: int  # utime + stime, in clock ticks
    threads: int
    rss_bytes: int
    start: int  # start time in ticks since boot: with the pid, it names one process for good


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def read_stat(pid: int) -> Stat:
    """Raises OSError (FileNotFoundError, ProcessLookupError) once the process is gone."""
    data = _read(f"/proc/{pid}/stat")
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # a zombie holds no memory or fds any more: treat it as gone
        raise ProcessLookupError(pid)
    return Stat(
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        threads=int(fields[17]),
        rss_bytes=int(fields[21]) * PAGE_SIZE,
        start=int(fields[19]),
    )


def _fd_count_listing(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _fd_count_size(pid: int) -> int:
    return os.stat(f"/proc/{pid}/fd").st_size


# Linux 6.2+ reports the number of open fds as the size of /proc/PID/fd; older kernels report 0.
fd_count = _fd_count_size if os.stat(f"/proc/{os.getpid()}/fd").st_size > 0 else _fd_count_listing


def private_memory(pid: int) -> tuple[int, int]:
    """(USS, PSS) in bytes: private pages only, and pages shared with others split by the number of sharers."""
    try:
        data = _read(f"/proc/{pid}/smaps_rollup")
    except FileNotFoundError:  # kernels before 4.14: the full smaps, much slower
        with open(f"/proc/{pid}/smaps", "rb") as f:
            data = f.read()
    uss = pss = 0
    for name, kb in _SMAPS_FIELD.findall(data):
        if name == b"Pss":
            pss += int(kb)
        else:
            uss += int(kb)
    return uss * 1024, pss * 1024


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds open (one readlink per fd: call it on discovery, not every tick)."""
    out = set()
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def parent_map() -> dict[int, int]:
    """pid -> parent pid of every live process (one stat read each: ~2 ms for a hundred processes)."""
    out = {}
    for pid in all_pids():
        try:
            data = _read(f"/proc/{pid}/stat")
            out[pid] = int(data[data.rindex(b")") + 2 :].split(maxsplit=2)[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(root: int, parents: dict[int, int]) -> list[int]:
    """``root`` and every process below it, from a parent map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def cmdline(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
