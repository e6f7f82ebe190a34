"""Load and validate a run folder (see DESIGN.md): samples, events, the exact timing record, Locust's CSVs.

Every input mistake becomes one ``RunFolderError`` line naming the file, the row (1 = the header line) and the
column, so ``soak analyze`` can print it and exit 2. The fast path is pandas' C parser; only when it reports a
problem is the file walked again line by line to say exactly where.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.csvcheck import (
    TEXT_ENCODING,
    ends_with_newline,
    header,
    implausible,
    is_number,
    latest_time,
    preview,
    read_checked,
    time_problem,
)
from analysis.settings import RunFolderError, Settings, read_settings
from runspec import folder

SAMPLES_COLUMNS = folder.SAMPLES_COLUMNS
EVENTS_REQUIRED = folder.EVENTS_COLUMNS[:2]  # detail is optional: other tools write ts,event
LATENCY_COLUMNS = folder.LATENCY_COLUMNS
LOCUST_EXCEPTIONS = f"{folder.LOCUST_CSV_PREFIX}_exceptions.csv"
SAMPLE_KEY = ("ts", "service", "metric")  # one reading: a second row with the same key is a duplicate
STATS_COLUMNS = ("Type", "Name", "Request Count", "Failure Count")
HISTORY_COLUMNS = ("Timestamp", "User Count", "Name", "Requests/s", "Failures/s")
FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences")
EXCEPTIONS_COLUMNS = ("Count", "Message")
META_FILES = ("meta.json", "run.json")


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
    events_found: bool = True  # False: no events.csv, the phases are unknown (not: the run was killed)

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
    samples_path = path / folder.SAMPLES
    if not samples_path.exists():
        raise RunFolderError(f"{samples_path}: missing; a run folder holds at least {folder.SAMPLES}")
    notes: list[str] = []
    latency_notes: list[str] = []
    events_path, latency_path = path / folder.EVENTS, path / folder.LATENCY
    settings = read_settings(path / folder.SCENARIO)
    # The two big files side by side: pandas' C parser lets go of the GIL, so a 24-hour folder loads on two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        latency = pool.submit(read_latency, latency_path, latency_notes) if latency_path.exists() else None
        run = Run(
            path=path,
            settings=settings,
            samples=read_samples(samples_path, notes),
            events=read_events(events_path, notes),
            events_found=events_path.exists(),
            notes=notes,
        )
        if latency is not None:
            run.latency = latency.result()
    if not run.events_found:
        notes.append(f"{folder.EVENTS}: absent, so the run's phases are unknown (a folder from another tool?)")
    notes.extend(latency_notes)
    stats_path = path / folder.LOCUST_STATS
    if stats_path.exists():
        run.stats = read_small_csv(stats_path, STATS_COLUMNS, numeric=("Request Count", "Failure Count"))
        if not (run.stats["Name"] == "Aggregated").any():
            raise RunFolderError(f"{stats_path}: no 'Aggregated' row (is this Locust's --csv output?)")
    if (path / folder.LOCUST_HISTORY).exists():
        run.history = read_history(path / folder.LOCUST_HISTORY)
    if (path / folder.LOCUST_FAILURES).exists():
        run.failures = read_small_csv(path / folder.LOCUST_FAILURES, FAILURES_COLUMNS, numeric=("Occurrences",))
    if (path / LOCUST_EXCEPTIONS).exists():
        run.exceptions = read_small_csv(path / LOCUST_EXCEPTIONS, EXCEPTIONS_COLUMNS, numeric=("Count",))
    run.meta = read_meta(path)
    return run


def read_samples(path: Path, notes: list[str] | None = None) -> pd.DataFrame:
    """samples.csv; a second reading with the same ts, service and metric (a file appended to twice, rows copied
    in by hand) is dropped with a note: counted twice it would double a sample count and weigh a fit."""
    notes = notes if notes is not None else []
    dtype = {"ts": "float64", "value": "float64", "service": "category", "metric": "category"}
    frame = read_checked(path, SAMPLES_COLUMNS, ("ts", "value"), ("service", "metric"), dtype, notes)
    duplicate = _duplicates(frame)
    if duplicate.any():
        notes.append(
            f"{path.name}: dropped {int(duplicate.sum())} duplicate row(s) (the same ts, service and metric as an "
            "earlier row; the first was kept)"
        )
        frame = frame[~duplicate].reset_index(drop=True)
    return frame


def _duplicates(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose (ts, service, metric) came earlier. A 24-hour file has 5 million rows: pandas' duplicated() on
    the three columns takes 3 s, this 0.15 s in the usual case and 0.4 s otherwise."""
    ts = frame["ts"].to_numpy()
    services, metrics = frame["service"].cat, frame["metric"].cat
    n_series = len(services.categories) * len(metrics.categories)
    wide = "uint16" if n_series < 2**16 else "int64"
    series = services.codes.to_numpy().astype(wide) * len(metrics.categories) + metrics.codes.to_numpy().astype(wide)
    if wide == "uint16" and np.all(ts[1:] >= ts[:-1]):
        # In time order, as the sampler writes: grouped by series (a stable radix sort of small codes), a repeated
        # reading is the neighbour with the same time, and the later row in the file is the one to drop.
        order = np.argsort(series, kind="stable")
        grouped, times = series[order], ts[order]
        repeated = (grouped[1:] == grouped[:-1]) & (times[1:] == times[:-1])
        out = np.zeros(ts.size, dtype=bool)
        out[order[1:][repeated]] = True
        return out
    when = pd.factorize(ts)[0]
    if (int(when.max(initial=0)) + 1) * n_series >= 2**62:  # garbage with a name per row: the plain way
        return frame.duplicated(subset=list(SAMPLE_KEY), keep="first").to_numpy()
    return pd.Series(when.astype("int64") * n_series + series.astype("int64")).duplicated(keep="first").to_numpy()


def read_latency(path: Path, notes: list[str] | None = None) -> pd.DataFrame:
    dtype = {"ts": "float64", "ms": "float64", "count": "float64", "type": "category", "name": "category"}
    frame = read_checked(
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
    columns = header(path, EVENTS_REQUIRED)
    latest = latest_time(path)
    rows: list[tuple[float, str, str]] = []
    detail_at = columns.index("detail") if "detail" in columns else None
    ts_at, event_at = columns.index("ts"), columns.index("event")
    try:
        with path.open(encoding=TEXT_ENCODING, newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for row in reader:
                line = reader.line_num
                if not row or [c.strip() for c in row] == columns:
                    continue
                if len(row) <= max(ts_at, event_at):
                    torn = not ends_with_newline(path) and handle.read(1) == ""
                    if torn:
                        (notes if notes is not None else []).append(f"{path.name}: ignored a torn last line")
                        break
                    raise RunFolderError(f"{path}: row {line}, column 'event': missing")
                if not is_number(row[ts_at]):
                    raise RunFolderError(f"{path}: row {line}, column 'ts': not a finite number: {preview(row[ts_at])}")
                problem = time_problem(float(row[ts_at]), row[ts_at], latest)
                if problem:
                    raise RunFolderError(f"{path}: row {line}, column 'ts': {problem}")
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
    columns = header(path, required)
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
            raise RunFolderError(f"{path}: row {i + 2}, column {name!r}: not a number: {preview(frame[name].iat[i])}")
        frame[name] = values
    return frame


def read_history(path: Path) -> pd.DataFrame:
    """The Aggregated rows of locust_stats_history.csv: users, requests/s, failures/s over time."""
    columns = header(path, HISTORY_COLUMNS)
    wanted = [c for c in (*HISTORY_COLUMNS, "50%", "95%", "99%") if c in columns]
    try:
        frame = pd.read_csv(path, usecols=wanted, na_values=["N/A"], engine="c", dtype={"Name": "category"})
    except (ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{path}: {str(exc).strip().splitlines()[-1]}") from None
    frame = frame[frame["Name"] == "Aggregated"].copy()
    latest = latest_time(path)
    for name in ("Timestamp", "User Count", "Requests/s", "Failures/s"):
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
        finite = np.isfinite(values)
        bad = ~finite | (implausible(values, latest) if name == "Timestamp" else False)
        if bad.any():
            i = int(np.argmax(bad))
            text = str(frame[name].iat[i])
            problem = time_problem(values[i], text, latest) if finite[i] else f"not a number: {preview(text)}"
            raise RunFolderError(f"{path}: row {int(frame.index[i]) + 2}, column {name!r}: {problem}")
        frame[name] = values
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
