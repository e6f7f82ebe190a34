"""Benchmark: `soak analyze` + `soak report` on a synthetic 24-hour run, against plain pandas.read_csv.

The run: 5 services x 12 metrics sampled at 1 Hz (5.2 M rows in samples.csv), Locust's history every second for
12 request names, and a timing record of 60 requests/s. Each step runs in a process of its own so its peak memory
(VmHWM) is its own. Goal: analyze + report under 30 s and under 2 GB together.

    .venv/bin/python bench/bench_analysis.py [--hours 24] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 30.0
GOAL_MB = 2048.0

# Peak memory is VmHWM of the child's own address space: ru_maxrss would also count the forked copy of this
# (large, after generating the run) process from before exec.
CHILD = """
import json, sys, time
start = time.perf_counter()
{body}
elapsed = time.perf_counter() - start
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": elapsed, "peak_mb": int(hwm.split()[1]) / 1024}}))
"""
READ_CSV = "import pandas as pd\npd.read_csv(sys.argv[1] + '/samples.csv')"
ANALYZE = "from soak.cli import main\nmain(['analyze', sys.argv[1]])"
REPORT = "from soak.cli import main\nmain(['report', sys.argv[1]])"


def measure(body: str, run_dir: Path) -> dict[str, float]:
    """Time from before the imports to the end, and the peak RSS, of one fresh Python process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(body=body), str(run_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode not in (0, 1):
        sys.exit(f"bench: step failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the synthetic run here instead of a temp folder")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from analysis.synthetic import day_run

    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        if not (run_dir / "samples.csv").exists():
            start = time.perf_counter()
            day_run(run_dir, hours=args.hours, interval=1.0)
            print(f"generated {args.hours:g} h run in {time.perf_counter() - start:.0f} s: {run_dir}")
        sizes = {p.name: p.stat().st_size / 1e6 for p in sorted(run_dir.glob("*.csv"))}
        print("inputs: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in sizes.items()))
        rows = sum(1 for _ in (run_dir / "samples.csv").open()) - 1
        print(f"samples.csv: {rows:,} rows")

        read = measure(READ_CSV, run_dir)
        analyze = measure(ANALYZE, run_dir)
        report = measure(REPORT, run_dir)
        total_s = analyze["seconds"] + report["seconds"]
        peak = max(analyze["peak_mb"], report["peak_mb"])
        print(f"{'step':<34}{'seconds':>9}{'peak MB':>10}{'x read_csv':>12}")
        for name, figures in (
            ("pandas.read_csv(samples.csv)", read),
            ("soak analyze", analyze),
            ("soak report (analyses again)", report),
        ):
            ratio = figures["seconds"] / read["seconds"]
            print(f"{name:<34}{figures['seconds']:>9.2f}{figures['peak_mb']:>10.0f}{ratio:>12.1f}")
        print(f"{'analyze + report':<34}{total_s:>9.2f}{peak:>10.0f}{total_s / read['seconds']:>12.1f}")
        verdict = json.loads((run_dir / "verdict.json").read_text())
        print(f"verdict: {'passed' if verdict['passed'] else 'failed'}: {', '.join(verdict['failed_checks']) or '-'}")
        ok = total_s < GOAL_S and peak < GOAL_MB
        print(f"goal < {GOAL_S:.0f} s and < {GOAL_MB:.0f} MB: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
