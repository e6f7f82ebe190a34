"""Benchmark: `soak analyze` and `soak report` on a synthetic 24-hour run, against plain pandas.read_csv.

The run: 5 services x 12 metrics sampled at 1 Hz (5.2 M rows in samples.csv), Locust's history every second for
12 request names, and a timing record of 60 requests/s. Each step runs in a process of its own so its peak memory
(VmHWM) is its own. `soak report` judges the run once and writes verdict.json, junit.xml and report.html from that
one result (what `soak run` does at its end): that step is "analyze + report". Goal: under 10 s and under 2 GB.

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
GOAL_S = 10.0
GOAL_MB = 2048.0

# Peak memory is VmHWM of the child's own address space: ru_maxrss would also count the forked copy of this
# (large, after generating the run) process from before exec.
# CPU seconds beside the wall clock: on a shared machine the wall clock also counts waiting for a core.
CHILD = """
import json, resource, sys, time
start = time.perf_counter()
{body}
elapsed = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": elapsed, "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": int(hwm.split()[1]) / 1024}}))
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
    if done.returncode not in (0, 1, 3, 4):  # a verdict, whatever the run's status
        sys.exit(f"bench: step failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the synthetic run here instead of a temp folder")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from analysis.synthetic import day_run
    from runspec import folder

    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        if not (run_dir / folder.SAMPLES).exists():
            start = time.perf_counter()
            day_run(run_dir, hours=args.hours, interval=1.0)
            print(f"generated {args.hours:g} h run in {time.perf_counter() - start:.0f} s: {run_dir}")
        sizes = {p.name: p.stat().st_size / 1e6 for p in sorted(run_dir.glob("*.csv"))}
        print("inputs: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in sizes.items()))
        rows = sum(1 for _ in (run_dir / folder.SAMPLES).open()) - 1
        print(f"{folder.SAMPLES}: {rows:,} rows")

        read = measure(READ_CSV, run_dir)
        analyze = measure(ANALYZE, run_dir)
        report = measure(REPORT, run_dir)
        total_s, peak = report["seconds"], report["peak_mb"]
        print(f"{'step':<44}{'seconds':>9}{'cpu s':>8}{'peak MB':>10}{'x read_csv':>12}")
        for name, figures in (
            ("pandas.read_csv(samples.csv)", read),
            ("soak analyze (verdict.json, junit.xml)", analyze),
            ("soak report = analyze + report, judged once", report),
        ):
            ratio = figures["seconds"] / read["seconds"]
            print(
                f"{name:<44}{figures['seconds']:>9.2f}{figures['cpu']:>8.2f}{figures['peak_mb']:>10.0f}{ratio:>12.1f}"
            )
        verdict = json.loads((run_dir / folder.VERDICT).read_text())
        print(f"verdict: {verdict['status']}: {', '.join(verdict['failed_checks']) or '-'}")
        ok = total_s < GOAL_S and peak < GOAL_MB
        print(f"goal < {GOAL_S:.0f} s and < {GOAL_MB:.0f} MB: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
