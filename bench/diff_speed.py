"""Benchmark: `vramc diff HEAD~1` over the shipped profiles, one of them changed, against the two
`vramc plan --format json` runs (one per revision, in two checkouts) it replaces.

A throwaway repository gets the shipped profiles/ (and templates/, and a link to models/), is
committed, one profile is changed (16gb.yaml: ctx 8192 -> 16384) and committed again. Every
command is a fresh process, run warm (the estimate cache already holds both revisions' answers,
as it does on a developer's machine or a cached CI run), alternating, and the medians are
compared. Target (issue 13): the diff well under a second warm; the ratio diff / (plan + plan)
says what pairing, rendering out/ and reading git's objects cost over planning both sides.

    python bench/diff_speed.py [--runs 11]     (writes bench/results/diff_speed.txt)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def wall(cmd: list[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    took = time.perf_counter() - t
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.decode()[-500:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    vramc = str(Path(sys.executable).parent / "vramc")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "vramc")], check=True)
    with tempfile.TemporaryDirectory(prefix="vramc-bench-diff-") as tmp:
        tmp = Path(tmp)
        repo, old = tmp / "repo", tmp / "old"
        repo.mkdir()
        shutil.copytree(ROOT / "profiles", repo / "profiles")
        if (ROOT / "templates").is_dir():
            shutil.copytree(ROOT / "templates", repo / "templates")
        (repo / ".gitignore").write_text("/models/\n")
        if (ROOT / "models").is_dir():
            os.symlink(ROOT / "models", repo / "models")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "base")
        git(repo, "worktree", "add", "-q", "--detach", str(old), "HEAD")
        if (ROOT / "models").is_dir():
            os.symlink(ROOT / "models", old / "models")
        prof = repo / "profiles" / "16gb.yaml"
        prof.write_text(prof.read_text().replace("ctx: 8192 ", "ctx: 16384", 1))
        git(repo, "commit", "-q", "-am", "16gb: ctx 16384")
        env = dict(os.environ, VRAMC_CACHE=str(tmp / "cache"))
        env.pop("VRAMC_NO_CACHE", None)
        diff = [vramc, "diff", "HEAD~1", "--format", "json"]
        plan = [vramc, "plan", "--format", "json"]
        for cmd, cwd in ((diff, repo), (plan, repo), (plan, old)):  # warm the estimate cache
            wall(cmd, cwd, env)
        times = {"diff": [], "plan (new)": [], "plan (old)": []}
        for _ in range(args.runs):
            times["diff"].append(wall(diff, repo, env))
            times["plan (new)"].append(wall(plan, repo, env))
            times["plan (old)"].append(wall(plan, old, env))
        n_files = len(list((repo / "profiles").rglob("*.yaml")))
    med = {k: statistics.median(v) for k, v in times.items()}
    both = med["plan (new)"] + med["plan (old)"]
    out = [
        f"# python bench/diff_speed.py --runs {args.runs}",
        f"profiles: {n_files} YAML files (the shipped profiles/), 16gb.yaml changed in HEAD; "
        f"runs: {args.runs} each, alternating, warm; cpus: {os.cpu_count()}",
    ]
    for k, v in times.items():
        out.append(f"{k:<11} median {med[k] * 1000:7.1f} ms  (min {min(v) * 1000:.1f})")
    out.append(f"two plans   {both * 1000:7.1f} ms  (the medians added)")
    out.append(
        f"ratio diff / two plans: {med['diff'] / both:.2f}; diff under a second: {'yes' if med['diff'] < 1.0 else 'NO'}"
    )
    report = "\n".join(out) + "\n"
    sys.stdout.write(report)
    dest = ROOT / "bench" / "results" / "diff_speed.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
