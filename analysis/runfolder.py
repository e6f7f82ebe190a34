"""Load and validate a run folder (see DESIGN.md): samples, events, the exact timing record, Locust's CSVs.

Every input mistake becomes one ``RunFolderError`` line naming the file, the row (1 = the header line) and the
column, so ``soak analyze`` can print it and exit 2. The fast path is pandas' C parser; only when it reports a
problem is the file walked again line by line to say exactly where.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.settings import RunFolderError, Settings, read_settings

SAMPLES_COLUMNS = ("ts", "service", "metric", "value")
EVENTS_COLUMNS = ("ts", "event")
LATENCY_COLUMNS = ("ts", "type", "name", "ms", "count")
STATS_COLUMNS = ("Type", "Name", "Request Count", "Failure Count")
HISTORY_COLUMNS = ("Timestamp", "User Count", "Name", "Requests/s", "Failures/s")
FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences")
EXCEPTIONS_COLUMNS = ("Count", "Message")
META_FILES = ("meta.json", "run.json")
TEXT_PREVIEW = 60  # characters of a bad value or header quoted in an error


@dataclass
class Run:
    """Everything read from one run folder; absent optional files are None."""

    path: Path
    settings: Settings
    samples: pd.DataFrame  # ts, service, metric, value (service and metric categorical)
    events: pd.DataFrame  # ts, event, detail (sorted by ts)
    latency: pd.DataFrame | None = None  # ts, type, name, ms, count
    stats: pd.DataFrame | None = None  # locust_stats.csv
    history: pd.DataFrame | None = None  # locust_stats_history.csv, Aggregated rows only
    failures: pd.DataFrame | None = None  # locust_failures.csv
    exceptions: pd.DataFrame | None = None  # locust_exceptions.csv
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # things tolerated while loading (a torn last line, ...)

    @property
    def has_locust(self) -> bool:
        return self.stats is not None

    def event_times(self, name: str) -> list[float]:
        rows = self.events[self.events["event"] == name]
        return [float(t) for t in rows["ts"]]

    def first_event(self, name: str) -> float | None:
        times = self.event_times(name)
        return min(times) if times else None

    def last_event(self, name: str) -> float | None:
        times = self.event_times(name)
        return max(times) if times else None


def load_run(run_dir: str | Path) -> Run:
    """Read and validate a run folder; raises RunFolderError (one line) on any bad input."""
    path = Path(run_dir)
    if not path.exists():
        raise RunFolderError(f"{path}: no such run folder")
    if not path.is_dir():
        raise RunFolderError(f"{path}: not a folder (give the run folder, not a file in it)")
    samples_path = path / "samples.csv"
    if not samples_path.exists():
        raise RunFolderError(f"{samples_path}: missing; a run folder holds at least samples.csv")
    notes: list[str] = []
    run = Run(
        path=path,
        settings=read_settings(path / "scenario.toml"),
        samples=read_samples(samples_path, notes),
        events=read_events(path / "events.csv", notes),
        notes=notes,
    )
    if (path / "latency.csv").exists():
        run.latency = read_latency(path / "latency.csv", notes)
    if (path / "locust_stats.csv").exists():
        run.stats = read_small_csv(path / "locust_stats.csv", STATS_COLUMNS, numeric=("Request Count", "Failure Count"))
        if not (run.stats["Name"] == "Aggregated").any():
            raise RunFolderError(f"{path / 'locust_stats.csv'}: no 'Aggregated' row (is this Locust's --csv output?)")
    if (path / "locust_stats_history.csv").exists():
        run.history = read_history(path / "locust_stats_history.csv")
    if (path / "locust_failures.csv").exists():
        run.failures = read_small_csv(path / "locust_failures.csv", FAILURES_COLUMNS, numeric=("Occurrences",))
    if (path / "locust_exceptions.csv").exists():
        run.exceptions = read_small_csv(path / "locust_exceptions.csv", EXCEPTIONS_COLUMNS, numeric=("Count",))
    run.meta = read_meta(path)
    return run


def _preview(text: str) -> str:
    return repr(text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "...")


def _header(path: Path, required: tuple[str, ...]) -> list[str]:
    """The header line, checked: an empty file, a binary file or a header without the required columns is an error."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            first = handle.readline()
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: row 1: not UTF-8 text (unknown format)") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not first.strip():
        raise RunFolderError(f"{path}: empty file (expected a header line: {','.join(required)})")
    if "\x00" in first:
        raise RunFolderError(f"{path}: row 1: binary data (unknown format)")
    columns = [c.strip() for c in next(csv.reader([first]))]
    missing = [c for c in required if c not in columns]
    if missing and not set(required) & set(columns):
        raise RunFolderError(
            f"{path}: row 1: unknown format: header {_preview(first.strip())}, expected {','.join(required)}"
        )
    if missing:
        raise RunFolderError(f"{path}: row 1: missing column {missing[0]!r} (header: {_preview(first.strip())})")
    return columns


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _scan(
    path: Path, columns: list[str], numeric: tuple[str, ...], text: tuple[str, ...]
) -> tuple[list[int], str, int]:
    """Walk the file line by line: (repeated header lines to skip, the first problem or "", good rows before it).

    The count is -1 unless the problem is on the very last row (a torn line, when the file lacks its newline).
    """
    index = {name: columns.index(name) for name in (*numeric, *text)}
    repeated: list[int] = []
    good = 0
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for row in reader:
                problem = _row_problem(row, columns, index, numeric, text)
                if problem == "header":
                    repeated.append(reader.line_num - 1)  # 0-based line index, as read_csv's skiprows wants
                elif problem:
                    line = reader.line_num
                    at_end = next(reader, None) is None
                    return repeated, f"{path}: row {line}, {problem}", good if at_end else -1
                elif row:
                    good += 1
    except UnicodeDecodeError as exc:
        return repeated, f"{path}: byte {exc.start}: not UTF-8 text (unknown format)", -1
    except csv.Error as exc:
        return repeated, f"{path}: row {reader.line_num}: {exc}", -1
    return repeated, "", -1


def _row_problem(row: list[str], columns: list[str], index: dict[str, int], numeric: tuple, text: tuple) -> str:
    if not row:
        return ""
    if [c.strip() for c in row] == columns:
        return "header"
    if len(row) < len(columns):
        return f"column {columns[len(row)]!r}: missing (the row has {len(row)} fields)"
    for name in numeric:
        value = row[index[name]]
        if not _is_number(value):
            return f"column {name!r}: " + ("empty" if not value.strip() else f"not a finite number: {_preview(value)}")
    for name in text:
        if not row[index[name]].strip():
            return f"column {name!r}: empty"
    return ""


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return True
        handle.seek(-1, 2)
        return handle.read(1) in (b"\n", b"\r")


def _read_checked(
    path: Path,
    required: tuple[str, ...],
    numeric: tuple[str, ...],
    text: tuple[str, ...],
    dtype: dict[str, str],
    notes: list[str],
) -> pd.DataFrame:
    """read_csv on the fast path; on any doubt, scan the file to name the bad row, tolerating a torn last line."""
    columns = _header(path, required)
    skip: list[int] = []
    try:
        frame = pd.read_csv(path, usecols=list(required), dtype=dtype, engine="c", skip_blank_lines=True)
        bad = frame[list(numeric)].isna().any(axis=1).to_numpy(copy=True)
        for name in numeric:
            bad |= ~np.isfinite(frame[name].to_numpy())
        for name in text:
            bad |= frame[name].isna().to_numpy()
        if not bad.any():
            return _non_empty(frame, path)
        if bad[-1] and bad[:-1].sum() == 0 and not _ends_with_newline(path):
            notes.append(f"{path.name}: ignored a torn last line (the run was stopped while writing it)")
            return _non_empty(frame.iloc[:-1], path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        pass
    skip, problem, good = _scan(path, columns, numeric, text)
    torn = bool(problem) and good >= 0 and not _ends_with_newline(path)
    if problem and not torn:
        raise RunFolderError(problem)
    try:
        frame = pd.read_csv(
            path, usecols=list(required), dtype=dtype, skiprows=skip or None, nrows=good if torn else None, engine="c"
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{path}: {str(exc).strip().splitlines()[-1]}") from None
    if skip:
        notes.append(f"{path.name}: skipped {len(skip)} repeated header line(s)")
    if problem:
        notes.append(f"{path.name}: ignored a torn last line (the run was stopped while writing it)")
    return _non_empty(frame, path)


def _non_empty(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if frame.empty:
        raise RunFolderError(f"{path}: no data rows after the header")
    return frame.reset_index(drop=True)


def read_samples(path: Path, notes: list[str] | None = None) -> pd.DataFrame:
    dtype = {"ts": "float64", "value": "float64", "service": "category", "metric": "category"}
    frame = _read_checked(
        path, SAMPLES_COLUMNS, ("ts", "value"), ("service", "metric"), dtype, notes if notes is not None else []
    )
    return frame[list(SAMPLES_COLUMNS)]


def read_latency(path: Path, notes: list[str] | None = None) -> pd.DataFrame:
    dtype = {"ts": "float64", "ms": "float64", "count": "float64", "type": "category", "name": "category"}
    frame = _read_checked(
        path, LATENCY_COLUMNS, ("ts", "ms", "count"), ("type", "name"), dtype, notes if notes is not None else []
    )
    bad = (frame["count"] < 1) | (frame["count"] != np.floor(frame["count"])) | (frame["ms"] < 0)
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        column = "ms" if frame["ms"].iat[i] < 0 else "count"
        what = "a negative time" if column == "ms" else "expected a whole number >= 1"
        raise RunFolderError(f"{path}: row {i + 2}, column {column!r}: {what}, got {frame[column].iat[i]!r}")
    frame["count"] = frame["count"].astype("int64")
    # Sorted by time taken once here, so every percentile of every subset (name, hour, plot bin) is a plain lookup.
    return frame[list(LATENCY_COLUMNS)].sort_values("ms", kind="stable", ignore_index=True)


def read_events(path: Path, notes: list[str] | None = None) -> pd.DataFrame:
    """events.csv is optional: an absent file is no events. ``detail`` is optional."""
    if not path.exists():
        return pd.DataFrame({"ts": pd.Series(dtype="float64"), "event": [], "detail": []})
    columns = _header(path, EVENTS_COLUMNS)
    rows: list[tuple[float, str, str]] = []
    detail_at = columns.index("detail") if "detail" in columns else None
    ts_at, event_at = columns.index("ts"), columns.index("event")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for row in reader:
                line = reader.line_num
                if not row or [c.strip() for c in row] == columns:
                    continue
                if len(row) <= max(ts_at, event_at):
                    torn = not _ends_with_newline(path) and handle.read(1) == ""
                    if torn:
                        (notes if notes is not None else []).append("events.csv: ignored a torn last line")
                        break
                    raise RunFolderError(f"{path}: row {line}, column 'event': missing")
                if not _is_number(row[ts_at]):
                    raise RunFolderError(
                        f"{path}: row {line}, column 'ts': not a finite number: {_preview(row[ts_at])}"
                    )
                if not row[event_at].strip():
                    raise RunFolderError(f"{path}: row {line}, column 'event': empty")
                detail = row[detail_at] if detail_at is not None and detail_at < len(row) else ""
                rows.append((float(row[ts_at]), row[event_at].strip(), detail.strip()))
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: not UTF-8 text (unknown format)") from None
    frame = pd.DataFrame(rows, columns=["ts", "event", "detail"])
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def read_small_csv(path: Path, required: tuple[str, ...], numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """Locust's summary CSVs: a header-only file is valid (no failures), numbers are checked row by row."""
    columns = _header(path, required)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, engine="c")
    except (ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{path}: {str(exc).strip().splitlines()[-1]}") from None
    frame.columns = [c.strip() for c in columns[: len(frame.columns)]] + list(frame.columns[len(columns) :])
    for name in numeric:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise RunFolderError(f"{path}: row {i + 2}, column {name!r}: not a number: {_preview(frame[name].iat[i])}")
        frame[name] = values
    return frame


def read_history(path: Path) -> pd.DataFrame:
    """The Aggregated rows of locust_stats_history.csv: users, requests/s, failures/s over time."""
    columns = _header(path, HISTORY_COLUMNS)
    wanted = [c for c in (*HISTORY_COLUMNS, "50%", "95%", "99%") if c in columns]
    try:
        frame = pd.read_csv(path, usecols=wanted, na_values=["N/A"], engine="c", dtype={"Name": "category"})
    except (ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{path}: {str(exc).strip().splitlines()[-1]}") from None
    frame = frame[frame["Name"] == "Aggregated"]
    for name in ("Timestamp", "User Count", "Requests/s", "Failures/s"):
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            row = int(frame.index[i]) + 2
            raise RunFolderError(
                f"{path}: row {row}, column {name!r}: not a number: {_preview(str(frame[name].iat[i]))}"
            )
        frame[name] = values.astype("float64")
    return frame.drop(columns=["Name"]).sort_values("Timestamp").reset_index(drop=True)


def read_meta(path: Path) -> dict[str, Any]:
    """Optional run metadata written by the runner (host, versions, ...); shown in the report as given."""
    import json

    for name in META_FILES:
        file = path / name
        if file.exists():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise RunFolderError(f"{file}: not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise RunFolderError(f"{file}: expected a JSON object")
            return data
    return {}
