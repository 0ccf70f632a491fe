import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_plan(tmp_path, cache: bool) -> tuple[dict, list[Path]]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VRAMC_CACHE": str(tmp_path / "cache")}
    if not cache:
        env["VRAMC_NO_CACHE"] = "1"
    proc = subprocess.run([sys.executable, "-m", "vramc", "plan", "--format", "json", "profiles/"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), sorted((tmp_path / "cache").rglob("*.json"))


def test_cached_plans_equal_fresh_plans(tmp_path):
    fresh, none = run_plan(tmp_path, cache=False)
    assert none == []  # VRAMC_NO_CACHE writes nothing
    first, entries = run_plan(tmp_path, cache=True)
    assert entries, "the first run fills the cache"
    second, again = run_plan(tmp_path, cache=True)
    assert again == entries  # the second run only reads
    assert fresh == first == second


def test_a_corrupt_entry_is_recomputed(tmp_path):
    _, entries = run_plan(tmp_path, cache=True)
    for e in entries:
        e.write_text("{not json")
    fresh, _ = run_plan(tmp_path, cache=False)
    healed, entries = run_plan(tmp_path, cache=True)
    assert healed == fresh
    assert all(json.loads(e.read_text()) for e in entries)
