"""Malformed profiles of every kind give diagnostics, never an exception: a seeded random walk over
the profile's keys with values of the wrong type, size, sign and shape (nested, aliased, huge)."""

import copy
import random
from pathlib import Path

import yaml

from vramc.check import run_check

ROOT = Path(__file__).resolve().parent.parent
LLAMA8B = str(ROOT / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml")
BASE = {"name": "f", "hardware": {"gpus": [{"name": "RTX 4090", "vram": "24GiB"},
                                           {"name": "RTX 3060", "vram": "12GiB"}]},
        "model": LLAMA8B, "engine": "llama-server", "settings": {"ctx": 8192, "gpu_layers": "all"}}
VALUES = [None, 0, -1, 1, 3, 2**40, 1e30, "", "x", [], {}, [1], {"a": 1}, True, "auto", "all",
          "24GiB", "0MiB", 0.0, "-5GiB", "nan", [0, 0], [1e-9, 1e9], "a\nb", "$(id)",
          # non-finite and huge numbers, a glob where a regex belongs, a newline-ended name, GPU
          # indices the hardware lacks, names no file system takes
          float("inf"), float("nan"), 1e308, [float("inf"), 1], ["*=CPU"], "ok\n", {"ok\n": {}},
          [5], [0, 0, 0], [-1], "x" * 300, "a\0b", "24T", 24]
SETTINGS = ["ctx", "parallel", "batch", "ubatch", "gpu_layers", "split_mode", "tensor_split",
            "main_gpu", "flash_attn", "cache_type_k", "cache_type_v", "kv_unified", "kv_offload",
            "load_mode", "override_tensor", "n_cpu_moe", "cpu_moe", "port", "ctx_min", "host",
            "gpu_memory_utilization", "max_model_len", "max_num_seqs", "tensor_parallel_size"]
PATHS = ([("settings", k) for k in SETTINGS]
         + [("hardware", "gpus", 0, k) for k in ("vram", "reserve", "overhead", "tenants", "free", "name")]
         + [("variants", "v", k) for k in ("settings", "margin", "env")]
         + [(k,) for k in ("hardware", "model", "engine", "settings", "variants", "env", "lint", "gpus", "name")])


def mutate(rng: random.Random) -> dict:
    doc = copy.deepcopy(BASE)
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
