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
import os
from pathlib import Path

from vramc.memory.usage import DeviceUse, HostUse, MemoryEstimate

_memory: dict[str, str] = {}  # key -> the estimate as JSON (copies are cheap and independent)
_code_hash: str | None = None
_meta_keys: dict[int, str] = {}


def _enabled() -> bool:
    return not os.environ.get("VRAMC_NO_CACHE")


def cache_dir() -> Path:
    root = os.environ.get("VRAMC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vramc")
    return Path(root) / "estimates"


def _code() -> str:
    global _code_hash
    if _code_hash is None:
        h = hashlib.sha256()
        here = Path(__file__).parent
        for p in sorted((here / "memory").glob("*.py")) + [here / "ggml.py", here / "modelmeta.py"]:
            h.update(p.name.encode())
            h.update(p.read_bytes())
        _code_hash = h.hexdigest()
    return _code_hash


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
                          errors=[tuple(e) for e in d["errors"]], resolved=d["resolved"])


def estimate_llama(meta, gpus, params) -> MemoryEstimate:
    """`vramc.memory.llama.estimate_llama`, remembered. Returns a fresh copy every time (plans
    add their overhead to the result)."""
    from vramc.memory import llama

    if not _enabled():
        return llama.estimate_llama(meta, gpus, params)
    key = _key(meta, gpus, params)
    text = _memory.get(key)
    if text is None:
        path = cache_dir() / key[:2] / f"{key}.json"
        try:
            text = path.read_text()
            _from_json(text)
        except (OSError, ValueError, KeyError, TypeError):
            est = llama.estimate_llama(meta, gpus, params)
            try:
                text = _to_json(est)
            except TypeError:  # something in `detail` that JSON cannot hold: just don't cache
                return est
            _store(path, text)
        _memory[key] = text
    return _from_json(text)


def _store(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home or a full disk only costs speed
