"""Malformed profiles of every kind give diagnostics, never an exception: a seeded random walk over
the profile's keys with values of the wrong type, size, sign and shape (nested, aliased, huge),
the model's locked metadata included. A larger run goes through a child process with an address
space limit and a per-case alarm: no exit 3, no hang, bounded memory."""

import copy
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cli_support import assert_exits_0_or_1
from vramc.lint.check import run_check

ROOT = Path(__file__).resolve().parent.parent
LLAMA8B = str(ROOT / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml")
BASE = {
    "name": "f",
    "hardware": {"gpus": [{"name": "RTX 4090", "vram": "24GiB"}, {"name": "RTX 3060", "vram": "12GiB"}]},
    "model": LLAMA8B,
    "engine": "llama-server",
    "settings": {"ctx": 8192, "gpu_layers": "all"},
}
VALUES = [
    None,
    0,
    -1,
    1,
    3,
    2**40,
    1e30,
    "",
    "x",
    [],
    {},
    [1],
    {"a": 1},
    True,
    "auto",
    "all",
    "24GiB",
    "0MiB",
    0.0,
    "-5GiB",
    "nan",
    [0, 0],
    [1e-9, 1e9],
    "a\nb",
    "$(id)",
    # non-finite and huge numbers, a glob where a regex belongs, a newline-ended name, GPU
    # indices the hardware lacks, names no file system takes
    float("inf"),
    float("nan"),
    1e308,
    [float("inf"), 1],
    ["*=CPU"],
    "ok\n",
    {"ok\n": {}},
    [5],
    [0, 0, 0],
    [-1],
    "x" * 300,
    "a\0b",
    "24T",
    24,
]
SETTINGS = [
    "ctx",
    "parallel",
    "batch",
    "ubatch",
    "gpu_layers",
    "split_mode",
    "tensor_split",
    "main_gpu",
    "flash_attn",
    "cache_type_k",
    "cache_type_v",
    "kv_unified",
    "kv_offload",
    "load_mode",
    "override_tensor",
    "n_cpu_moe",
    "cpu_moe",
    "port",
    "ctx_min",
    "host",
    "gpu_memory_utilization",
    "max_model_len",
    "max_num_seqs",
    "tensor_parallel_size",
]
PATHS = (
    [("settings", k) for k in SETTINGS]
    + [("hardware", "gpus", 0, k) for k in ("vram", "reserve", "overhead", "tenants", "free", "name")]
    + [("variants", "v", k) for k in ("settings", "margin", "env")]
    + [(k,) for k in ("hardware", "model", "engine", "settings", "variants", "env", "lint", "gpus", "name")]
)


LOCK_KEYS = [
    "block_count",
    "context_length",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "feed_forward_length",
    "expert_count",
    "rope.dimension_count",
    "vocab_size",
]
PATHS += (
    [("model", "lock", "hparams", k) for k in LOCK_KEYS]
    + [("model", "lock", k) for k in ("vocab_size", "architecture", "tensors", "hparams")]
    + [("model", "lock", "tensors", "output.weight")]
)


def _inline_model() -> dict:
    doc = yaml.safe_load(Path(LLAMA8B).read_text())
    return {k: doc[k] for k in ("lock",)}


INLINE_MODEL = _inline_model()


def mutate(rng: random.Random) -> dict:
    doc = copy.deepcopy(BASE)
    if rng.random() < 0.25:  # the model's lock inline, where the walk can reach its values
        doc["model"] = copy.deepcopy(INLINE_MODEL)
    for _ in range(rng.randint(1, 3)):
        path, value = rng.choice(PATHS), copy.deepcopy(rng.choice(VALUES))
        node = doc
        for part in path[:-1]:
            if isinstance(node, dict):
                node = node.setdefault(part, {})
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                break
        if isinstance(node, dict):
            node[path[-1]] = value
    if rng.random() < 0.3:
        doc["engine"] = rng.choice(["ollama", "llama-cpp-python", "vllm", "llama-server"])
    return doc


def test_random_malformed_profiles_never_raise(tmp_path):
    rng = random.Random(20261122)
    for i in range(250):
        p = tmp_path / f"p{i}.yaml"
        p.write_text(yaml.safe_dump(mutate(rng)))
        result = run_check([p])  # must not raise
        assert all(d.file and d.line >= 1 for d in result.diagnostics)


# --- the same walk, longer, bounded in time and memory ---------------------------------------
CHILD_CASES = 2500
CASE_SECONDS = 10
MEMORY_LIMIT = 4 << 30
RSS_LIMIT_MIB = 1024


def run_cases(folder: Path, n: int) -> dict:
    """run_check on p0.yaml .. p{n-1}.yaml with an alarm per case; what went wrong."""
    import resource
    import signal
    import traceback

    class Timeout(Exception):
        pass

    def alarm(*_):
        raise Timeout()

    signal.signal(signal.SIGALRM, alarm)
    failures, slowest = [], (0.0, "")
    for i in range(n):
        p = folder / f"p{i}.yaml"
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        try:
            result = run_check([p])
            if not all(d.file and d.line >= 1 for d in result.diagnostics):
                failures.append(f"{p.name}: a diagnostic without a place")
        except Timeout:
            failures.append(f"{p.name}: still running after {CASE_SECONDS} s")
        except BaseException:
            failures.append(f"{p.name}: {traceback.format_exc(limit=-6)}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, (time.perf_counter() - start, p.name))
    return {
        "failures": failures,
        "slowest": slowest,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def test_many_malformed_profiles_in_bounded_time_and_memory(tmp_path):
    rng = random.Random(20261206)
    for i in range(CHILD_CASES):
        (tmp_path / f"p{i}.yaml").write_text(yaml.safe_dump(mutate(rng)))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path), str(CHILD_CASES)],
        capture_output=True,
        text=True,
        timeout=CHILD_CASES * CASE_SECONDS,
        cwd=tmp_path,
    )
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["failures"] == [], "\n".join(summary["failures"][:5])
    assert summary["rss_mib"] < RSS_LIMIT_MIB, summary
    assert summary["slowest"][0] < CASE_SECONDS / 2, summary["slowest"]
    print(
        f"{CHILD_CASES} profiles in {took:.1f} s, slowest {summary['slowest']}, peak RSS {summary['rss_mib']:.0f} MiB"
    )


def test_malformed_profiles_through_the_cli_never_exit_3(tmp_path):
    rng = random.Random(20261207)
    for i in range(8):
        p = tmp_path / f"p{i}.yaml"
        p.write_text(yaml.safe_dump(mutate(rng)))
        for args in (["check", p.name], ["plan", "--format", "json", p.name]):
            assert_exits_0_or_1(args, tmp_path, p.read_text())


if __name__ == "__main__":
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):  # a platform without the limit: the RSS check still holds
        pass
    os.environ["VRAMC_NO_CACHE"] = "1"
    print(json.dumps(run_cases(Path(sys.argv[1]), int(sys.argv[2]))))
