"""A cache of llama.cpp memory estimates, in memory and on disk.

`vramc check` runs in pre-commit: most runs see the same deployments as the last one. An estimate
depends only on the model's tensor table and hyper-parameters, the GPUs and llama.cpp's
parameters, and on the memory model's own code, so the key hashes exactly those (the code by its
source text, so an edited model never reads a stale entry). Entries are JSON, one small file
each, under $VRAMC_CACHE/estimates (default ~/.cache/vramc). `VRAMC_NO_CACHE=1` turns it off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from vramc.cache import cache_root, enabled, write_atomic
from vramc.memory.usage import DeviceUse, HostUse, MemoryEstimate

_memory: dict[str, str] = {}  # key -> the estimate as JSON (copies are cheap and independent)
_code_hash: str | None = None
_solver_code_hash: str | None = None
_meta_keys: dict[int, str] = {}


def cache_dir() -> Path:
    return cache_root() / "estimates"


def _code(solver: bool = False) -> str:
    """The hash of the code an entry depends on: the memory model, and for solver results also the
    solver and the engine mapping it searches with (fit.py, engines.py)."""
    global _code_hash, _solver_code_hash
    if _code_hash is None:
        here = Path(__file__).parent
        memory = sorted((here / "memory").glob("*.py")) + [here / "ggml.py", here / "modelmeta.py"]
        _code_hash = _hash_files(memory)
        _solver_code_hash = _hash_files([*memory, here / "fit.py", here / "engines.py"])
    return _solver_code_hash if solver else _code_hash


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _meta_key(meta) -> str:
    key = _meta_keys.get(id(meta))
    if key is None:
        h = hashlib.sha256()
        h.update(repr((meta.architecture, sorted(meta.hparams.items()), meta.vocab_size)).encode())
        for t in meta.tensors:
            h.update(f"{t.name}|{t.type}|{t.shape}\n".encode())
        key = h.hexdigest()
        _meta_keys[id(meta)] = key
    return key


def _key(meta, gpus, params) -> str:
    text = repr((_code(), _meta_key(meta), [dataclasses.astuple(g) for g in gpus], params))
    return hashlib.sha256(text.encode()).hexdigest()


def _to_json(est: MemoryEstimate) -> str:
    return json.dumps(dataclasses.asdict(est), sort_keys=True)


def _from_json(text: str) -> MemoryEstimate:
    d = json.loads(text)
    devices = []
    for dev in d["devices"]:
        if dev.get("layers") is not None:
            dev["layers"] = tuple(dev["layers"])
        devices.append(DeviceUse(**dev))
    return MemoryEstimate(devices=devices, host=HostUse(**d["host"]), notes=d["notes"],
                          errors=[tuple(e) for e in d["errors"]], resolved=d["resolved"],
                          compute_model=d.get("compute_model"))


def estimate_llama(meta, gpus, params) -> MemoryEstimate:
    """`vramc.memory.llama.estimate_llama`, remembered. Returns a fresh copy every time (plans
    add their overhead to the result)."""

    def compute():
        from vramc.memory import llama

        return llama.estimate_llama(meta, gpus, params)

    return remembered(_key(meta, gpus, params), compute, _to_json, _from_json)


def solve(meta, gpus, choice, margins, ctx_min):
    """`vramc.fit.solve`, remembered: a deployment whose inputs did not change is not searched
    again (nor is the memory model even imported)."""
    from vramc import fit

    def compute():
        return fit.solve(meta, gpus, choice, margins, ctx_min)

    def to_json(r) -> str:
        c = dataclasses.asdict(r.choice)
        return json.dumps({"choice": c, "fits": r.fits, "log": r.log, "estimates": r.estimates,
                           "moved_experts": r.moved_experts})

    def from_json(text: str):
        from vramc.engines import LlamaChoice, to_llama_params

        d = json.loads(text)
        c = d["choice"]
        if isinstance(c["tensor_split"], list):
            c["tensor_split"] = tuple(c["tensor_split"])
        c["overrides"] = tuple(tuple(o) for o in c["overrides"])
        ch = LlamaChoice(**c)
        est = estimate_llama(meta, gpus, to_llama_params(ch, meta.n_layer, int(meta.hp("context_length", 0) or 0)))
        return fit.FitResult(ch, d["fits"], d["log"], d["estimates"], d["moved_experts"], est)

    key = hashlib.sha256(repr(("solve", _code(solver=True), _key(meta, gpus, choice), tuple(margins),
                               ctx_min)).encode()).hexdigest()
    return remembered(key, compute, to_json, from_json)


def remembered(key: str, compute, to_json, from_json):
    """from_json(the cached JSON for `key`), computing and storing it on a miss."""
    if not enabled():
        return compute()
    text = _memory.get(key)
    if text is not None:
        return from_json(text)  # a fresh copy: callers change what they get
    path = cache_dir() / key[:2] / f"{key}.json"
    try:
        text = path.read_text()
        value = from_json(text)
    except (OSError, ValueError, KeyError, TypeError):
        value = compute()
        try:
            text = to_json(value)
        except TypeError:  # something JSON cannot hold: just don't cache it
            return value
        write_atomic(path, text)
    _memory[key] = text
    return value
