"""Benchmark: wall time of `vramc check profiles/` against `yamllint profiles/` on the same files.

`vramc check` runs in pre-commit, so it must cost about what a YAML linter costs. Each command is
run as a fresh process (as pre-commit runs it), alternating, and the medians are compared.
Target: vramc <= 1.5x yamllint. Three vramc figures: "warm" is a run on unchanged files (the
check cache answers, vramc/lint/check_cache.py), "edited" a run after a profile was edited (a comment
line added: the check cache misses; the estimate cache, vramc/plan/estimate_cache.py, still holds the estimates of
unchanged deployments: what pre-commit sees after an edit), "cold" plans every deployment from
scratch (VRAMC_NO_CACHE=1). "imports floor" is a process that only imports PyYAML, Typer and
pydantic (the stack the issue prescribes) and builds one model: what any such CLI pays first.
vramc's bytecode is compiled first, as any installed package's is (this machine sets
PYTHONDONTWRITEBYTECODE, which would recompile it every run).

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


def wall(cmd: list[str], env: dict | None = None, edit: Path | None = None) -> float:
    if edit is not None:  # a new comment line: the content changes, the plan does not
        with open(edit, "a") as f:
            f.write(f"# edited {time.perf_counter_ns()}\n")
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("paths", nargs="*", default=["profiles/"])
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    vramc = [str(bindir / "vramc"), "check", *args.paths]
    yamllint = [shutil.which("yamllint", path=str(bindir)) or "yamllint", *args.paths]
    files = [
        p
        for a in args.paths
        for p in (sorted(Path(ROOT, a).rglob("*.y*ml")) if Path(ROOT, a).is_dir() else [Path(ROOT, a)])
    ]
    lines = sum(len(p.read_text().splitlines()) for p in files)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "vramc")], check=True)
    cold_env = dict(os.environ, VRAMC_NO_CACHE="1")
    for cmd in (vramc, yamllint):  # warm the file cache and the estimate cache
        wall(cmd)
    edited = files[0]
    original = edited.read_bytes()
    # what any CLI built on the mandated stack pays before it reads a file: the interpreter and
    # the imports of PyYAML, Typer and pydantic, with one model class built
    floor = [sys.executable, "-c", "import yaml, typer, pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0"]
    times = {"vramc (warm)": [], "vramc (edited)": [], "vramc (cold)": [], "yamllint": [], "imports floor": []}
    try:
        for _ in range(args.runs):
            times["vramc (warm)"].append(wall(vramc))
            times["vramc (edited)"].append(wall(vramc, edit=edited))
            times["vramc (cold)"].append(wall(vramc, cold_env))
            times["yamllint"].append(wall(yamllint))
            times["imports floor"].append(wall(floor))
    finally:
        edited.write_bytes(original)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines_out = [
        f"# {' '.join(['python', 'bench/check_speed.py', '--runs', str(args.runs), *args.paths])}",
        f"files: {len(files)} YAML files, {lines} lines; runs: {args.runs} each, alternating; cpus: {os.cpu_count()}",
    ]
    for k, v in times.items():
        lines_out.append(f"{k:<14} median {med[k] * 1000:7.1f} ms  (min {min(v) * 1000:.1f})")
    for k in ("vramc (warm)", "vramc (edited)", "vramc (cold)"):
        ratio = med[k] / med["yamllint"]
        lines_out.append(f"ratio {k} / yamllint: {ratio:.2f}  (target <= 1.50: {'met' if ratio <= 1.5 else 'NOT met'})")
    lines_out.append(
        f"ratio imports floor / yamllint: {med['imports floor'] / med['yamllint']:.2f}  "
        "(python -c 'import yaml, typer, pydantic' and one pydantic model: no vramc code)"
    )
    report = "\n".join(lines_out) + "\n"
    sys.stdout.write(report)
    out = ROOT / "bench" / "results" / "check_speed.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
