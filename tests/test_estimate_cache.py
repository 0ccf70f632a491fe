import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_plan(tmp_path, cache: bool) -> tuple[dict, list[Path]]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VRAMC_CACHE": str(tmp_path / "cache")}
    if not cache:
        env["VRAMC_NO_CACHE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "vramc", "plan", "--format", "json", "profiles/"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
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


def test_a_solver_change_invalidates_cached_solutions(tmp_path, monkeypatch):
    from vramc.dev.synth import CATALOG, model_meta
    from vramc.memory.usage import GpuBudget
    from vramc.plan import estimate_cache, fit
    from vramc.plan.engine_settings import llama_choice

    monkeypatch.setenv("VRAMC_CACHE", str(tmp_path))
    monkeypatch.delenv("VRAMC_NO_CACHE", raising=False)
    meta = model_meta(CATALOG["llama-3.1-8b-instruct"], "Q4_K_M")
    gpus = [GpuBudget("CUDA0", "RTX 4070", 0, 12 << 30)]
    from vramc.load.schema import Settings

    choice = llama_choice("llama-server", Settings(ctx="auto", gpu_layers="auto"))
    calls = []
    real = fit.solve
    monkeypatch.setattr(fit, "solve", lambda *a: calls.append(1) or real(*a))

    def solve():
        estimate_cache._memory.clear()  # as a new process: only the disk remembers
        return estimate_cache.solve(meta, gpus, choice, [0], None)

    first = solve()
    assert solve().choice == first.choice and len(calls) == 1  # answered from disk
    estimate_cache._code()  # the hashes are computed once per process
    monkeypatch.setattr(estimate_cache, "_solver_code_hash", "fit.py edited")
    assert solve().choice == first.choice and len(calls) == 2  # the old answer is not reused
