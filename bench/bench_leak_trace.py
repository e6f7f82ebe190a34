"""Real traces for the leak detector: the embedded sut under steady chat load with a small leak switch
(``leak_bytes_per_message``) and its clean twin, recorded once, committed as compressed test data, and judged.

    .venv/bin/python bench/bench_leak_trace.py record [--minutes 30] [--users 8] [--leak-bytes 300]  # ~minutes
    .venv/bin/python bench/bench_leak_trace.py [judge] [--data tests/data/leak_trace]                # seconds

``record`` runs both twins side by side (two `soak run`, each its own sut, small load so both fit on 2 cores) and
packs what the analysis reads (memory and count gauges, events, scenario, Locust's totals and aggregated history)
into ``--data``. ``judge`` analyses both folders, then finds the smallest leak a run of this length catches with no
false alarm on the clean twin: the threshold is the lowest on a grid at which the clean twin passes, and leaks of
k bytes per chat message are added to the clean twin's backend memory (k x the messages sent so far, from Locust's
counts) until the detector calls it. The baseline, measured in the same run: the clean twin's own growth per
message, and the recorded leak twin's figure against the switch's bytes (a ratio).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis import analyze  # noqa: E402
from analysis.leaks import judge_growth, leak_window  # noqa: E402
from analysis.metrics import metric_kind  # noqa: E402
from analysis.perwork import work_record  # noqa: E402
from analysis.runfolder import load_run  # noqa: E402
from runspec import folder  # noqa: E402
from runspec.units import MB  # noqa: E402

DATA = ROOT / "tests" / "data" / "leak_trace"
TWINS = ("leak", "clean")
THRESHOLDS_MB = tuple(float(x) for x in range(1, 61))  # MB/h, the grid the clean twin must pass on
LEAKS_B = tuple(range(10, 2001, 10))  # bytes per chat message added to the clean twin
SCENARIO = """description = "bench_leak_trace: {minutes} minutes of steady chat, leak_bytes_per_message={leak}"

[sut]
leak_bytes_per_message = {leak}
rate_limit = 0

[users.ChattingUser]
weight = 1
wait_min = "0.5s"
wait_max = "1.5s"

[shape]
kind = "steady"
users = {users}
spawn_rate = 4
duration = "{minutes}m"

[phases]
warmup = "2m"
drain = "1m"

[sampler]
interval = "1s"
uss_interval = "5s"

[leaks]
memory_mb_per_hour = 5.0
"""


def record(args: argparse.Namespace) -> int:
    """Both twins at once, then pack each into the data folder."""
    work = Path(tempfile.mkdtemp(prefix="leak-trace-"))
    runs = []
    for twin in TWINS:
        leak = args.leak_bytes if twin == "leak" else 0
        toml = work / f"trace-{twin}.toml"
        toml.write_text(SCENARIO.format(minutes=args.minutes, leak=leak, users=args.users), encoding="utf-8")
        out = work / f"run-{twin}"
        log = (work / f"{twin}.log").open("w")
        command = [sys.executable, "-m", "soak", "run", str(toml), "--out", str(out)]
        runs.append((twin, out, subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)))
    print(f"recording {args.minutes} min of each twin in {work}")
    for twin, out, process in runs:
        process.wait(timeout=args.minutes * 60 + 900)
        print(f"{twin}: soak run exited {process.returncode}")
        pack(out, args.data / twin)
    return 0


def pack(run_dir: Path, dest: Path) -> None:
    """What the leak analysis reads, small: judged gauges only, gzip'd; Locust's aggregated history only."""
    dest.mkdir(parents=True, exist_ok=True)
    with (run_dir / folder.SAMPLES).open(encoding="utf-8") as src, gzip.open(dest / "samples.csv.gz", "wt") as out:
        out.write(src.readline())
        for line in src:
            metric = line.split(",", 3)[2]
            if metric_kind(metric) is not None:
                out.write(line)
    for name in (folder.EVENTS, folder.SCENARIO, folder.LOCUST_STATS):
        shutil.copy(run_dir / name, dest / name)
    with (run_dir / folder.LOCUST_HISTORY).open(encoding="utf-8", newline="") as src:
        rows = list(csv.reader(src))
    name_at = rows[0].index("Name")
    with gzip.open(dest / f"{folder.LOCUST_HISTORY}.gz", "wt", newline="") as out:
        csv.writer(out).writerows([rows[0]] + [r for r in rows[1:] if r[name_at] == "Aggregated"])
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"packed {run_dir} -> {dest} ({size / 1e6:.2f} MB)")


def unpack(src: Path, dest: Path, memory_mb_per_hour: float | None = None) -> Path:
    """A run folder from packed data (and the memory threshold set, when given)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as packed, (dest / path.stem).open("wb") as out:
                shutil.copyfileobj(packed, out)
        else:
            shutil.copy(path, dest / path.name)
    if memory_mb_per_hour is not None:
        scenario = dest / folder.SCENARIO
        text = scenario.read_text(encoding="utf-8")
        scenario.write_text(
            text.replace("memory_mb_per_hour = 5.0", f"memory_mb_per_hour = {memory_mb_per_hour}"), encoding="utf-8"
        )
    return dest


def backend_memory(run_dir: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], np.ndarray]:
    """(ts, RSS, judged window, chat messages sent by each ts) of the backend."""
    run = load_run(run_dir)
    samples = run.samples
    pick = (samples["service"] == "backend") & (samples["metric"] == "mem_rss_bytes")
    ts, values = samples.loc[pick, "ts"].to_numpy(), samples.loc[pick, "value"].to_numpy()
    start, end, origin, _ = leak_window(run)
    work = work_record(run)
    if work is None or "message" not in work.cumulative:
        raise SystemExit(f"{run_dir}: no record of chat messages")
    times, totals = work.cumulative["message"]
    return ts, values, (start, end, origin), np.interp(ts, times, totals, left=0.0)


def judge(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="leak-trace-") as tmp:
        dirs = {twin: unpack(args.data / twin, Path(tmp) / twin) for twin in TWINS}
        for twin, path in dirs.items():
            verdict = analyze(path).verdict
            entry = next(e for e in verdict["leaks"] if e["service"] == "backend" and e["metric"] == "mem_rss_bytes")
            per = (entry.get("per_unit") or {}).get("message")
            print(f"{twin:>5}: {entry['status']:<7} rule {entry['rule']!r}: {entry['reason']}")
            if per is not None:
                print(
                    f"{'':>7}backend keeps {per:,.0f} B per chat message at {entry['work_per_hour']['message']:,.0f}/h"
                )
        ts, clean, window, sent = backend_memory(dirs["clean"])
        lts, leaky, lwindow, lsent = backend_memory(dirs["leak"])
        rate = float(sent[-1] - sent[0]) / ((ts[-1] - ts[0]) / 3600.0)
        hours = (window[1] - window[0]) / 3600.0
        print(f"judged {hours * 60:.0f} min of load; {rate:,.0f} chat messages per hour")
        # The threshold: on the grid, at or above the high end of the clean twin's own 95% interval (a repeat of the
        # clean run would likely pass too), and from there up the clean twin passes at every step.
        fits = {t: judge_growth(ts, clean, t * MB, "memory", window, []) for t in THRESHOLDS_MB}
        margin = fits[THRESHOLDS_MB[0]].ci_high / MB
        passing = [
            t for t in THRESHOLDS_MB if t >= margin and all(fits[u].leaking is False for u in THRESHOLDS_MB if u >= t)
        ]
        if not passing:
            print(f"the clean twin fails at some threshold up to {THRESHOLDS_MB[-1]:g} MB/h")
            return 1
        threshold = passing[0]
        clean_fit = fits[threshold]
        lowest = next(t for t in THRESHOLDS_MB if all(fits[u].leaking is False for u in THRESHOLDS_MB if u >= t))
        print(
            f"threshold {threshold:g} MB/h: the lowest at or above the clean twin's 95% CI high end ({margin:.1f} MB/h) "
            f"that it passes (it passes from {lowest:g} MB/h up); clean grows {clean_fit.slope / MB:.1f} MB/h "
            f"= {clean_fit.slope / rate:,.0f} B per message: the baseline"
        )
        caught = next(
            (
                k
                for k in LEAKS_B
                if judge_growth(ts, clean + k * sent, threshold * MB, "memory", window, []).leaking is True
            ),
            None,
        )
        if caught is None:
            print(f"no leak up to {LEAKS_B[-1]} B per message is caught at {threshold:g} MB/h")
            return 1
        print(
            f"smallest leak caught at {threshold:g} MB/h with the clean twin passing: {caught} B per chat message "
            f"= {caught * rate / MB:.1f} MB/h at this load"
        )
        recorded = judge_growth(lts, leaky, threshold * MB, "memory", lwindow, [])
        lrate = float(lsent[-1] - lsent[0]) / ((lts[-1] - lts[0]) / 3600.0)
        extra = (recorded.slope / lrate) - (clean_fit.slope / rate)
        print(
            f"recorded leak twin at {threshold:g} MB/h: {'caught' if recorded.leaking else 'MISSED'}, "
            f"{recorded.slope / MB:.1f} MB/h; {extra:,.0f} B per message above the clean twin "
            f"(x{extra / args.leak_bytes:.2f} the {args.leak_bytes} B the switch writes: object and allocator overhead)"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("judge", "record"), default="judge")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--leak-bytes", type=int, default=300)
    args = parser.parse_args()
    return record(args) if args.mode == "record" else judge(args)


if __name__ == "__main__":
    sys.exit(main())
