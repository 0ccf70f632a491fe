"""Benchmark: wall time of `vramc check profiles/` against `yamllint profiles/` on the same files.

`vramc check` runs in pre-commit, so it must cost about what a YAML linter costs. Each command is
run as a fresh process (as pre-commit runs it), alternating, and the medians are compared.
Target: vramc <= 1.5x yamllint.

    python bench/check_speed.py [--runs 21] [PATHS...]     (writes bench/results/check_speed.txt)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("paths", nargs="*", default=["profiles/"])
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    vramc = [str(bindir / "vramc"), "check", *args.paths]
    yamllint = [shutil.which("yamllint", path=str(bindir)) or "yamllint", *args.paths]
    files = [p for a in args.paths for p in (sorted(Path(ROOT, a).rglob("*.y*ml")) if Path(ROOT, a).is_dir() else [Path(ROOT, a)])]
    lines = sum(len(p.read_text().splitlines()) for p in files)
    for cmd in (vramc, yamllint):  # warm the file cache and bytecode
        wall(cmd)
    times = {"vramc": [], "yamllint": []}
    for _ in range(args.runs):
        times["vramc"].append(wall(vramc))
        times["yamllint"].append(wall(yamllint))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["vramc"] / med["yamllint"]
    report = (
        f"# {' '.join(['python', 'bench/check_speed.py', '--runs', str(args.runs), *args.paths])}\n"
        f"files: {len(files)} YAML files, {lines} lines; runs: {args.runs} each, alternating; cpus: {os.cpu_count()}\n"
        f"vramc check   median {med['vramc'] * 1000:7.1f} ms  (min {min(times['vramc']) * 1000:.1f})\n"
        f"yamllint      median {med['yamllint'] * 1000:7.1f} ms  (min {min(times['yamllint']) * 1000:.1f})\n"
        f"ratio vramc / yamllint: {ratio:.2f}  (target <= 1.50: {'met' if ratio <= 1.5 else 'NOT met'})\n"
    )
    sys.stdout.write(report)
    out = ROOT / "bench" / "results" / "check_speed.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
