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
import weakref
from pathlib import Path

from vramc.cache import cache_root, enabled, read_entry, write_entry
from vramc.memory.usage import DeviceUse, HostUse, MemoryEstimate

_memory: dict[str, str] = {}  # key -> the estimate as JSON (copies are cheap and independent)
_code_hash: str | None = None
_solver_code_hash: str | None = None
_meta_keys: dict[int, tuple] = {}  # id(meta) -> (weak reference to it, its key)


def cache_dir() -> Path:
    return cache_root() / "estimates"


def _code(solver: bool = False) -> str:
    """The hash of the code an entry depends on: the memory model, and for solver results also the
    solver and the engine mapping it searches with (fit.py, engines.py)."""
    global _code_hash, _solver_code_hash
    if _code_hash is None:
        here = Path(__file__).resolve().parents[1]  # the vramc package
        memory = sorted((here / "memory").glob("*.py")) + [here / "model" / "ggml.py", here / "model" / "modelmeta.py"]
        _code_hash = _hash_files(memory)
        _solver_code_hash = _hash_files(
            [*memory, here / "plan" / "fit.py", here / "plan" / "engine_settings.py", here / "engines.py"]
        )
    return _solver_code_hash if solver else _code_hash


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _meta_key(meta) -> str:
    # by id, checked against a weak reference: a model freed and another allocated at the same
    # address (a long-lived process, a test run) must not inherit the first one's key
    held = _meta_keys.get(id(meta))
    key = held[1] if held is not None and held[0]() is meta else None
    if key is None:
        h = hashlib.sha256()
        h.update(repr((meta.architecture, sorted(meta.hparams.items()), meta.vocab_size)).encode())
        for t in meta.tensors:
            h.update(f"{t.name}|{t.type}|{t.shape}\n".encode())
        key = h.hexdigest()
        _meta_keys[id(meta)] = (weakref.ref(meta), key)
    return key


def _key(meta, gpus, params) -> str:
    text = repr((_code(), _meta_key(meta), [dataclasses.astuple(g) for g in gpus], params))
    return hashlib.sha256(text.encode()).hexdigest()


def _to_json(est: MemoryEstimate) -> str:
    return json.dumps(dataclasses.asdict(est), sort_keys=True)


def _from_json(text: str) -> MemoryEstimate:
    """The estimate stored as `text`; ValueError unless every field has the type it was stored
    with (an entry is only ever a hint: a wrong one must be a miss, not a crash later on)."""
    d = json.loads(text)
    _expect(isinstance(d, dict) and isinstance(d["devices"], list), "estimate")
    devices = []
    for dev in d["devices"]:
        _expect(isinstance(dev, dict) and set(dev) == _DEVICE_FIELDS, "device")
        _expect(all(isinstance(dev[k], str) for k in ("id", "name")), "device name")
        _expect(
            all(
                _is_int(dev[k])
                for k in _DEVICE_FIELDS - {"id", "name", "layers", "output", "detail", "host", "endpoint", "backend"}
            ),
            "device figures",
        )
        _expect(
            all(dev[k] is None or isinstance(dev[k], str) for k in ("host", "endpoint"))
            and isinstance(dev["backend"], str),
            "device host",
        )
        _expect(type(dev["output"]) is bool and isinstance(dev["detail"], dict), "device output")
        layers = dev["layers"]
        _expect(
            layers is None or (isinstance(layers, list) and len(layers) == 2 and all(map(_is_int, layers))),
            "device layers",
        )
        dev["layers"] = tuple(layers) if layers is not None else None
        devices.append(DeviceUse(**dev))
    host = d["host"]
    _expect(
        isinstance(host, dict)
        and set(host) == _HOST_FIELDS
        and isinstance(host["detail"], dict)
        and all(_is_int(host[k]) for k in _HOST_FIELDS - {"detail"}),
        "host",
    )
    notes, errors, resolved, how = d["notes"], d["errors"], d["resolved"], d.get("compute_model")
    _expect(isinstance(notes, list) and all(isinstance(n, str) for n in notes), "notes")
    _expect(
        isinstance(errors, list)
        and all(isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in errors),
        "errors",
    )
    _expect(
        isinstance(resolved, dict)
        and all(isinstance(v, (int, float, str, bool)) or v is None for v in resolved.values()),
        "resolved",
    )
    _expect(how is None or isinstance(how, str), "compute_model")
    return MemoryEstimate(
        devices=devices,
        host=HostUse(**host),
        notes=notes,
        errors=[tuple(e) for e in errors],
        resolved=resolved,
        compute_model=how,
    )


_DEVICE_FIELDS = {f.name for f in dataclasses.fields(DeviceUse)}
_HOST_FIELDS = {f.name for f in dataclasses.fields(HostUse)}


def _number(v) -> bool:
    return type(v) in (int, float)


_CHOICE_TYPES = {  # engines.LlamaChoice's fields as JSON holds them
    "engine": lambda v: isinstance(v, str),
    "ctx": lambda v: type(v) in (int, str),
    "parallel": lambda v: _is_int(v),
    "kv_unified": lambda v: type(v) is bool,
    "batch": lambda v: _is_int(v),
    "ubatch": lambda v: _is_int(v),
    "gpu_layers": lambda v: type(v) in (int, str),
    "split_mode": lambda v: isinstance(v, str),
    "tensor_split": lambda v: v is None or isinstance(v, str) or (isinstance(v, list) and all(map(_number, v))),
    "main_gpu": lambda v: _is_int(v),
    "flash_attn": lambda v: isinstance(v, str),
    "cache_type_k": lambda v: isinstance(v, str),
    "cache_type_v": lambda v: isinstance(v, str),
    "kv_offload": lambda v: type(v) is bool,
    "swa_full": lambda v: type(v) is bool,
    "overrides": lambda v: (
        isinstance(v, list)
        and all(isinstance(o, list) and len(o) == 2 and all(isinstance(x, str) for x in o) for o in v)
    ),
}


def _is_int(v) -> bool:
    return type(v) is int


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"cache entry: bad {what}")


def estimate_llama(meta, gpus, params) -> MemoryEstimate:
    """`vramc.memory.llama.estimate_llama`, remembered. Returns a fresh copy every time (plans
    add their overhead to the result)."""
    params = one_way(gpus, params)

    def compute():
        from vramc.memory import llama

        return llama.estimate_llama(meta, gpus, params)

    if not enabled():  # no key to compute either (it hashes the model's tensors and vramc's code)
        return compute()
    return remembered(_key(meta, gpus, params), compute, _to_json, _from_json)


def one_way(gpus, params):
    """`params` with a tensor split that changes nothing left out: with one GPU every finite
    split puts all layers on it (llama_placement.split_points), so the fit solver's guess with
    the GPU's limit as its split and the layout without one are one estimate."""
    ts = params.tensor_split
    if len(gpus) == 1 and ts is not None and (not ts or 0 <= ts[0] < float("inf")):
        return dataclasses.replace(params, tensor_split=None)
    return params


def solve(meta, gpus, choice, margins, ctx_min):
    """`vramc.plan.fit.solve`, remembered: a deployment whose inputs did not change is not searched
    again (nor is the memory model even imported)."""
    from vramc.plan import fit

    def compute():
        return fit.solve(meta, gpus, choice, margins, ctx_min)

    def to_json(r) -> str:
        c = dataclasses.asdict(r.choice)
        return json.dumps(
            {"choice": c, "fits": r.fits, "log": r.log, "estimates": r.estimates, "moved_experts": r.moved_experts}
        )

    def from_json(text: str):
        from vramc.plan.engine_settings import LlamaChoice, to_llama_params

        d = json.loads(text)
        c = d["choice"]
        _expect(
            isinstance(c, dict)
            and set(c) == {f.name for f in dataclasses.fields(LlamaChoice)}
            and all(_CHOICE_TYPES[k](v) for k, v in c.items()),
            "solver choice",
        )
        _expect(
            isinstance(d["log"], list)
            and all(isinstance(x, str) for x in d["log"])
            and type(d["fits"]) is bool
            and _is_int(d["moved_experts"])
            and _is_int(d["estimates"]),
            "solver result",
        )
        if isinstance(c["tensor_split"], list):
            c["tensor_split"] = tuple(c["tensor_split"])
        c["overrides"] = tuple(tuple(o) for o in c["overrides"])
        ch = LlamaChoice(**c)
        est = estimate_llama(meta, gpus, to_llama_params(ch, meta.n_layer, int(meta.hp("context_length", 0) or 0)))
        return fit.FitResult(ch, d["fits"], d["log"], d["estimates"], d["moved_experts"], est)

    if not enabled():
        return compute()
    key = hashlib.sha256(
        repr(("solve", _code(solver=True), _key(meta, gpus, choice), tuple(margins), ctx_min)).encode()
    ).hexdigest()
    return remembered(key, compute, to_json, from_json)


def remembered(key: str, compute, to_json, from_json):
    """from_json(the cached JSON for `key`), computing and storing it on a miss."""
    if not enabled():
        return compute()
    text = _memory.get(key)
    if text is not None:
        return from_json(text)  # a fresh copy: callers change what they get
    path = cache_dir() / key[:2] / f"{key}.json"
    text = read_entry(path)  # None if absent, not a regular file, or not intact
    try:
        if text is None:
            raise ValueError("miss")
        value = from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        value = compute()  # a miss, or an entry of another shape: computed again and replaced
        try:
            text = to_json(value)
        except (TypeError, ValueError):  # something JSON cannot hold: just don't cache it
            return value
        write_entry(path, text)
    _memory[key] = text
    return value
