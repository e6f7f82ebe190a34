"""The run folder's append-only files: ``samples.csv`` (one write per tick) and ``events.csv``.

Each tick's rows go to the kernel in a single ``os.write`` on an ``O_APPEND`` descriptor, so a process killed with
``kill -9`` leaves every completed tick on disk and never a half-written buffer of Python's. A row torn by a kill in
the middle of that write (possible only at a page boundary) is cut off when the file is opened again. Several
writers may append to one file at once: each batch is one O_APPEND write, so batches never interleave.
"""

from __future__ import annotations

import csv
import fcntl
import io
import math
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from runspec import folder

FSYNC_EVERY = 60.0  # seconds; kill -9 needs no fsync, a power cut on hour 23 of a soak does

Row = tuple[float, str, str, float]


def format_value(value: float) -> str:
    """Whole numbers without a fraction (byte counts stay exact), others to 6 significant digits."""
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return f"{value:.6g}"


def format_rows(rows: Iterable[Row]) -> str:
    return "".join(
        f"{ts:.3f},{service},{metric},{format_value(value)}\n"
        for ts, service, metric, value in rows
        if value is not None and math.isfinite(value)
    )


def _repair_tail(fd: int) -> None:
    """Cut a torn last row (no newline) left by a process killed mid-write, so new rows start on a line of their own."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    chunk = min(size, 65536)
    tail = os.pread(fd, chunk, size - chunk)
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    os.ftruncate(fd, size - chunk + cut + 1 if cut >= 0 else 0)


class SampleWriter:
    """Appends rows to ``samples.csv`` (header when new); ``write`` hands each batch to the kernel in one call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        # Several writers may share one file (the runner's sampler and the one for Locust). Each holds a shared
        # lock while open; only a writer that finds no other may cut a torn row or write the header.
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        if alone:
            _repair_tail(self._fd)
            if os.fstat(self._fd).st_size == 0:
                os.write(self._fd, folder.SAMPLES_HEADER.encode())
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        self._last_sync = time.monotonic()
        self.rows_written = 0

    def write(self, rows: list[Row]) -> None:
        data = format_rows(rows).encode()
        if not data or self._fd < 0:
            return
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.rows_written += data.count(b"\n")
        if time.monotonic() - self._last_sync >= FSYNC_EVERY:
            os.fsync(self._fd)
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


def _csv_field(text: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([text])
    return buffer.getvalue()


def append_event(run_dir: str | Path, event: str, detail: str = "", ts: float | None = None) -> None:
    """Append ``ts,event,detail`` to ``run_dir/events.csv``; safe with several processes appending at once.

    The first writer creates the file with its header atomically (a private file hard-linked into place), so two
    processes starting together never write the header twice or a row above it.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / folder.EVENTS
    line = f"{time.time() if ts is None else ts:.3f},{_csv_field(event)},{_csv_field(detail)}\n".encode()
    if not path.exists():
        tmp = run_dir / f".events.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_bytes(folder.EVENTS_HEADER.encode() + line)
        try:
            os.link(tmp, path)
            return
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
