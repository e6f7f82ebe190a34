"""Reading one CSV of a run folder without trusting it: the header, every row's fields, plausible times.

The fast path is pandas' C parser; only when it reports a problem (or a check after it finds one) is the file walked
again line by line, to say in one ``RunFolderError`` line exactly which file, row (1 = the header line) and column.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.settings import RunFolderError

TEXT_PREVIEW = 60  # characters of a bad value or header quoted in an error
TEXT_ENCODING = "utf-8-sig"  # UTF-8, and a byte order mark (a CSV saved from a spreadsheet) is not part of a name
# Plausible times. Earlier than 2000 is not a run's unix time (a counter, a torn number); more than a day after the
# file was last written is not either (milliseconds, a clock years off), and would overflow dates in the report.
EARLIEST_TS = 946_684_800.0  # 2000-01-01 00:00 UTC
FUTURE_SLACK_S = 86_400.0  # clock skew and time zones of a copied folder stay well inside a day


def preview(text: str) -> str:
    return repr(text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "...")


def header(path: Path, required: tuple[str, ...]) -> list[str]:
    """The header line, checked: an empty file, a binary file or a header without the required columns is an error."""
    try:
        with path.open(encoding=TEXT_ENCODING, newline="") as handle:
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
            f"{path}: row 1: unknown format: header {preview(first.strip())}, expected {','.join(required)}"
        )
    if missing:
        raise RunFolderError(f"{path}: row 1: missing column {missing[0]!r} (header: {preview(first.strip())})")
    return columns


def is_number(text: str) -> bool:
    if not text.isascii() or "_" in text:  # what Python's float() takes but pandas' parser does not
        return False
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def latest_time(path: Path) -> tuple[float, str]:
    """The latest plausible time in a file, and why: a day after the file was last written, or a day from now when
    its modification time is itself implausible (stores and archives that reset it to 1970 or 1980)."""
    now = time.time()
    try:
        written = path.stat().st_mtime
    except OSError:
        written = now
    if EARLIEST_TS <= written <= now:
        return written + FUTURE_SLACK_S, f"more than a day after the file was last written ({_utc(written)})"
    return now + FUTURE_SLACK_S, "more than a day in the future"


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_problem(value: float, text: str, latest: tuple[float, str]) -> str:
    """Why a finite unix time is not plausible, or "" when it is."""
    limit, why = latest
    if EARLIEST_TS <= value <= limit:
        return ""
    when = "before 2000-01-01" if value < EARLIEST_TS else why
    hint = "; in milliseconds? times are unix seconds" if EARLIEST_TS <= value / 1000 <= limit else ""
    return f"not a plausible time: {preview(text.strip())} is {when}{hint}"


def implausible(times: np.ndarray, latest: tuple[float, str]) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (times < EARLIEST_TS) | (times > latest[0])


def _scan(
    path: Path,
    columns: list[str],
    numeric: tuple[str, ...],
    text: tuple[str, ...],
    times: tuple[str, ...],
    latest: tuple[float, str],
) -> tuple[list[int], str, int]:
    """Walk the file line by line: (repeated header lines to skip, the first problem or "", good rows before it).

    The count is -1 unless the problem is on the very last row (a torn line, when the file lacks its newline).
    """
    index = {name: columns.index(name) for name in (*numeric, *text)}
    repeated: list[int] = []
    good = 0
    try:
        with path.open(encoding=TEXT_ENCODING, newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for row in reader:
                problem = _row_problem(row, columns, index, numeric, text, times, latest)
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


def _row_problem(
    row: list[str],
    columns: list[str],
    index: dict[str, int],
    numeric: tuple[str, ...],
    text: tuple[str, ...],
    times: tuple[str, ...],
    latest: tuple[float, str],
) -> str:
    if not row:
        return ""
    if [c.strip() for c in row] == columns:
        return "header"
    if len(row) < len(columns):
        return f"column {columns[len(row)]!r}: missing (the row has {len(row)} fields)"
    if len(row) > len(columns):  # two rows run together, or a stray comma: a value read from it would be wrong
        return f"{len(row)} fields, the header has {len(columns)}"
    for name in numeric:
        value = row[index[name]]
        if not is_number(value):
            return f"column {name!r}: " + ("empty" if not value.strip() else f"not a finite number: {preview(value)}")
    for name in text:
        if not row[index[name]].strip():
            return f"column {name!r}: empty"
    for name in times:
        problem = time_problem(float(row[index[name]]), row[index[name]], latest)
        if problem:
            return f"column {name!r}: {problem}"
    return ""


def ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return True
        handle.seek(-1, 2)
        return handle.read(1) in (b"\n", b"\r")


def read_checked(
    path: Path,
    required: tuple[str, ...],
    numeric: tuple[str, ...],
    text: tuple[str, ...],
    dtype: dict[str, str],
    notes: list[str],
    times: tuple[str, ...] = ("ts",),
) -> pd.DataFrame:
    """read_csv on the fast path; on any doubt, scan the file to name the bad row, tolerating a torn last line.

    Only "" is missing (not pandas' "NA", "null", ...: those are names), and every column is read, so a row with
    too many fields is an error rather than silently cut. Column names are the header's, stripped of spaces.
    """
    columns = header(path, required)
    latest = latest_time(path)
    # The header's own spelling for dtype and na_values (passing clean names instead makes read_csv 2x slower).
    try:
        raw = {str(c).strip(): c for c in pd.read_csv(path, nrows=0, engine="c").columns}
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: row 1: {str(exc).strip().splitlines()[-1]}") from None
    options: dict[str, Any] = {"dtype": {raw.get(k, k): v for k, v in dtype.items()}, "engine": "c"}  # skips a BOM
    options.update(keep_default_na=False, na_values={raw.get(name, name): [""] for name in numeric})
    # One pass over the whole file: half the CPU of chunks glued together (usecols= would avoid that too, but it
    # reads past extra fields silently); costs about the file's size in memory while parsing.
    options.update(low_memory=False)
    try:
        frame = _renamed(pd.read_csv(path, **options))
        if not isinstance(frame.index, pd.RangeIndex):  # a first row with a field too many became an index
            raise ValueError("row with extra fields")
        bad = _bad_rows(frame, numeric, text, times, latest)
        if not bad.any():
            return _non_empty(frame[list(required)], path)
        if bad[-1] and bad[:-1].sum() == 0 and not ends_with_newline(path):
            notes.append(f"{path.name}: ignored a torn last line (the run was stopped while writing it)")
            return _non_empty(frame[list(required)].iloc[:-1], path)
    except (ValueError, KeyError, TypeError, pd.errors.ParserError, UnicodeDecodeError):
        pass
    skip, problem, good = _scan(path, columns, numeric, text, times, latest)
    torn = bool(problem) and good >= 0 and not ends_with_newline(path)
    if problem and not torn:
        raise RunFolderError(problem)
    try:
        frame = _renamed(pd.read_csv(path, skiprows=skip or None, nrows=good if torn else None, **options))
    except (ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{path}: {str(exc).strip().splitlines()[-1]}") from None
    bad = _bad_rows(frame, numeric, text, times, latest)
    if bad.any():  # pandas read a value otherwise than Python's csv and float() in the scan: never leave it in
        i = int(np.argmax(bad))
        raise RunFolderError(f"{path}: data row {i + 1}: unreadable values {preview(str(frame.iloc[i].tolist()))}")
    if skip:
        notes.append(f"{path.name}: skipped {len(skip)} repeated header line(s)")
    if problem:
        notes.append(f"{path.name}: ignored a torn last line (the run was stopped while writing it)")
    return _non_empty(frame[list(required)], path)


def _bad_rows(
    frame: pd.DataFrame,
    numeric: tuple[str, ...],
    text: tuple[str, ...],
    times: tuple[str, ...],
    latest: tuple[float, str],
) -> np.ndarray:
    """Rows with a missing or non-finite number, an implausible time or an empty name."""
    bad = frame[list(numeric)].isna().any(axis=1).to_numpy(copy=True)
    for name in numeric:
        bad |= ~np.isfinite(frame[name].to_numpy())
    for name in times:
        bad |= implausible(frame[name].to_numpy(), latest)
    for name in text:
        blank = [c for c in frame[name].cat.categories if not str(c).strip()]
        bad |= frame[name].isna().to_numpy() | frame[name].isin(blank).to_numpy()
    return bad


def _renamed(frame: pd.DataFrame) -> pd.DataFrame:
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _non_empty(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if frame.empty:
        raise RunFolderError(f"{path}: no data rows after the header")
    return frame.reset_index(drop=True)
