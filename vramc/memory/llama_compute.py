"""Compute buffers: replay llama.cpp's worst-case graph reserve on the estimated placement.

`llama_context::sched_reserve` (src/llama-context.cpp) builds the prompt graph for
n_tokens = min(n_ctx, n_ubatch) tokens, n_seq_max sequences and min(n_tokens, n_outputs_max)
outputs, and sizes one compute buffer per backend from it; in the no_alloc dry run that first
reserve is what llama.cpp reports. This module sets up the same backends (the model's devices,
then the CPU), pipeline parallelism and the layer pins of graph_get_cb, then hands the graph from
llama_archs to llama_sched.
"""

from __future__ import annotations

import gc
import operator
from dataclasses import dataclass

from vramc.memory import llama_graph as gg
from vramc.memory.llama_archs import ArchSpec, GraphParams, LayerKV, build_graph
from vramc.memory.llama_cparams import Cparams
from vramc.memory.llama_hparams import LlamaHparams
from vramc.memory.llama_kv import LayerCache
from vramc.memory.llama_placement import HOST, Placement
from vramc.memory.llama_sched import Backend, allocate, schedule
from vramc.modelmeta import ModelMeta

GGML_SCHED_MAX_COPIES = 4


@dataclass
class ComputeResult:
    by_device: dict[int, int]  # device (HOST included) -> compute buffer bytes
    peak: dict[int, list[tuple[str, int]]]  # device -> the largest tensors live at its peak
    n_copies: int
    n_splits: int


def pipeline_parallel(n_devices: int, n_gpu_layers: int, n_layer_all: int, split_mode: str,
                      offload_kqv: bool, has_overrides: bool) -> bool:
    """llama_context ctor: more than one device, everything offloaded, layer split, no overrides
    (RPC and CUDA devices support the async compute and events it also needs)."""
    ngl = n_gpu_layers if n_gpu_layers >= 0 else n_layer_all + 1
    return n_devices > 1 and ngl > n_layer_all and split_mode == "layer" and offload_kqv and not has_overrides


def layer_signatures(meta: ModelMeta, hp: LlamaHparams, with_types: bool) -> list[tuple]:
    """What makes two layers' graphs allocate alike: their tensors' names and shapes (dense vs
    MoE, NAS-pruned widths), the cache they attend, and, when host weights may be copied to a
    GPU (CUDA op offload), the weights' types (the copies' sizes). In the file's tensor order."""
    layers: list[list] = [[hp.is_swa[il], hp.n_head_kv[il]] for il in range(hp.n_layer_all)]
    for t in meta.tensors:
        il = t.block
        if il is not None and il < hp.n_layer_all:
            suffix = t.name.split(".", 2)[2]
            layers[il].append((suffix, t.shape, t.type) if with_types else (suffix, t.shape))
    return [tuple(x) for x in layers]


class _Model:
    """What an estimate reads from a model's tensor table, read once per model (the fit solver
    and `vramc check` estimate one model many times). Checked against the model on every use."""

    def __init__(self, meta: ModelMeta):
        self.meta = meta
        self.tensors = tuple(meta.tensors)
        self.by_name = {t.name: t for t in self.tensors}
        self._sigs: dict[tuple, list[int]] = {}
        self._ids: dict[tuple, int] = {}  # signature -> a small number (cheap to compare)

    def holds(self, meta: ModelMeta) -> bool:
        ts = meta.tensors
        return self.meta is meta and len(ts) == len(self.tensors) and all(map(operator.is_, ts, self.tensors))

    def _numbered(self, sigs: list[tuple]) -> list[int]:
        ids = self._ids
        return [ids.setdefault(x, len(ids)) for x in sigs]

    def signatures(self, hp: LlamaHparams, with_types: bool) -> list[int]:
        """layer_signatures, numbered: equal numbers for equal signatures."""
        key = ("file", with_types, hp.n_layer_all, tuple(hp.is_swa), tuple(hp.n_head_kv))
        sigs = self._sigs.get(key)
        if sigs is None:
            sigs = self._sigs[key] = self._numbered(layer_signatures(self.meta, hp, with_types))
        return sigs

    def kinds(self, hp: LlamaHparams, typed: list[bool]) -> list[int]:
        """Numbered signatures whose tensors are in name order (a lock file lists a model's
        tensors grouped by type, so its order differs from layer to layer), with the weights'
        types where `typed` says so: layers whose weights CUDA's op offload copies."""
        key = ("kind", hp.n_layer_all, tuple(hp.is_swa), tuple(hp.n_head_kv))
        both = self._sigs.get(key)
        if both is None:
            plain = [tuple(x[:2]) + tuple(sorted(x[2:])) for x in layer_signatures(self.meta, hp, True)]
            both = self._sigs[key] = (self._numbered([x[:2] + tuple(e[:2] for e in x[2:]) for x in plain]),
                                      self._numbered(plain))
        untyped, with_types = both
        return [w if t else u for u, w, t in zip(untyped, with_types, typed)]


_MODELS: dict[int, _Model] = {}


def _model(meta: ModelMeta) -> _Model:
    m = _MODELS.get(id(meta))
    if m is None or not m.holds(meta):
        if len(_MODELS) >= 16:
            del _MODELS[next(iter(_MODELS))]
        m = _MODELS[id(meta)] = _Model(meta)
    return m


def kept_layers(signatures: list[tuple], layer_dev: list[int], n_layer: int, periods: int = 2) -> list[int]:
    """The trunk with repeated layers dropped where they cannot change a compute buffer.

    Within a device's run of layers, each repetition of the same layer (or of the same pattern
    of layers, e.g. Gemma's five SWA layers and one global one) allocates and frees the same
    tensors, so ggml-alloc's free list settles after a repetition or two into a layout that
    repeats every one or two repetitions, and later ones reach the same peak. What differs is
    the start of a run (split inputs), its end (the copy to the next device) and the model's
    last layer (out_ids). A periodic run keeps its first `periods` periods and drops pairs of
    periods after them; an irregular run (Nemotron's pruned layers) does the same within each
    block of identical layers. tests/test_memory_llama.py checks the result against the full
    graph.
    """
    out: list[int] = []
    n = n_layer
    start = 0
    while start < n:
        end = start
        while end < n and layer_dev[end] == layer_dev[start]:
            end += 1
        run = list(range(start, end))
        sig = [signatures[il] for il in run]
        period = next(p for p in range(1, len(run) + 1)
                      if all(sig[i] == sig[i + p] for i in range(len(run) - p)))
        step = period if period % 2 == 0 else 2 * period
        drop = (len(run) - (periods + 1) * period) // step * step
        if drop > 0:
            # an even number of layers: the free list may alternate between two layouts
            out += run[:periods * period] + run[periods * period + drop:]
        else:
            i = 0
            while i < len(run):
                j = i
                while j < len(run) and sig[j] == sig[i]:
                    j += 1
                block = run[i:j]
                drop = (len(block) - periods - 1) // 2 * 2
                out += block[:periods] + block[periods + drop:] if drop > 0 else block
                i = j
        start = end
    return out


def _signatures(model: _Model, hp: LlamaHparams, pl: Placement, cuda_offload: bool,
                has_overrides: bool) -> list[int]:
    """The layer signatures kept_layers compares.

    Weight types only matter where CUDA's op offload copies weights into a compute buffer: for
    layers left on the CPU. Without tensor overrides every weight of a layer lives on the layer's
    device, so only the CPU's layers carry their types, and the tensors' order in the file is
    irrelevant. With overrides the signatures stay those of layer_signatures (the file's order,
    every layer's types under CUDA op offload)."""
    if has_overrides:
        return model.signatures(hp, cuda_offload)
    return model.kinds(hp, [cuda_offload and d == HOST for d in pl.layer_dev[:hp.n_layer_all]])


class _Weights:
    """Weight leaves by GGUF name, created on first use with the device placement gave them
    (`get` returns None for a tensor the model does not have)."""

    def __init__(self, model: _Model, hp: LlamaHparams, pl: Placement):
        self.by_name = model.by_name
        self.pl = pl
        self.made: dict[str, gg.Tensor | None] = {}
        tok = self.get("token_embd.weight")
        if "output.weight" not in self.by_name and tok is not None:
            # tied embeddings: the output head reads the copy in the output device's buffer
            devs = pl.tensor_dev["token_embd.weight"]
            self.made["output.weight"] = tok if len(devs) == 1 else gg.weight(tok.type, tok.ne, devs[1], "output.weight")
        # per-layer RoPE factors: each layer reads the copy in its own buffer (TENSOR_DUPLICATED)
        name = next((n for n in ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")
                     if n in self.by_name), None)
        if name is not None:
            first = self.get(name)
            copies = {first.dev: first}
            for il in range(hp.n_layer):
                dev = pl.layer_dev[il]
                if dev not in copies:
                    copies[dev] = gg.weight(first.type, first.ne, dev, name)
                self.made[f"rope_freqs.weight@{il}"] = copies[dev]

    def get(self, name: str) -> gg.Tensor | None:
        made = self.made
        if name in made:
            return made[name]
        t = self.by_name.get(name)
        devs = self.pl.tensor_dev.get(name) if t is not None else None
        w = made[name] = gg.weight(t.type, t.shape, devs[0], name) if devs else None
        return w


def _layer_kv(caches: list[LayerCache], c: Cparams, type_k: str, type_v: str, v_trans: bool,
              hp: LlamaHparams, layers=None) -> dict[int, LayerKV]:
    """The KV cache of every layer; K and V tensors only for `layers` (None: all), the ones the
    graph reads."""
    v_max = max(hp.n_embd_v_gqa(il) for il in range(hp.n_layer_all))
    wanted = None if layers is None else set(layers)
    out = {}
    for lc in caches:
        if lc.kind == "rs":
            continue
        k = v = None
        if wanted is None or lc.il in wanted:
            k = gg.new_tensor(type_k, (hp.n_embd_k_gqa(lc.il), lc.cells, c.n_stream), name=f"cache_k_l{lc.il}")
            k.dev = lc.device
            if not hp.is_mla:
                v = gg.new_tensor(type_v, (v_max if v_trans else hp.n_embd_v_gqa(lc.il), lc.cells, c.n_stream),
                                  name=f"cache_v_l{lc.il}")
                v.dev = lc.device
        out[lc.il] = LayerKV(k, v, lc.cells, lc.kind == "kv_swa")
    return out


def estimate_compute(spec: ArchSpec, meta: ModelMeta, hp: LlamaHparams, c: Cparams, pl: Placement,
                     caches: list[LayerCache],
                     backend_kinds: dict[int, str], *, flash_attn: bool, offload_kqv: bool, type_k: str,
                     type_v: str, n_gpu_layers: int, split_mode: str, has_overrides: bool,
                     op_offload: bool, final_softcap: bool, dry_run: bool = False,
                     full_graph: bool = False) -> ComputeResult:
    # the replay makes thousands of tensors and drops them at the end, none of them in reference
    # cycles: the cyclic garbage collector would only rescan them (and the caller's heap) again
    # and again, a third of the time of a `vramc check` estimate
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _estimate_compute(spec, meta, hp, c, pl, caches, backend_kinds, flash_attn, offload_kqv, type_k,
                                 type_v, n_gpu_layers, split_mode, has_overrides, op_offload, final_softcap,
                                 dry_run, full_graph)
    finally:
        if enabled:
            gc.enable()


def _estimate_compute(spec, meta, hp, c, pl, caches, backend_kinds, flash_attn, offload_kqv, type_k, type_v,
                      n_gpu_layers, split_mode, has_overrides, op_offload, final_softcap, dry_run,
                      full_graph) -> ComputeResult:
    backends = []
    for d in pl.devices:
        kind = backend_kinds[d]
        backends.append(Backend(f"dev{d}", f"dev{d}", kind, 128 if kind == "cuda" else 32,
                                op_offload=kind == "cuda"))
    backends.append(Backend("CPU", "host", "cpu", 32))
    cpu = len(backends) - 1
    dev_backend = {d: i for i, d in enumerate(pl.devices)}
    dev_backend[HOST] = cpu

    n_tokens = min(c.n_ctx, c.n_ubatch)
    n_outputs = min(n_tokens, c.n_outputs_max)
    n_seqs = c.n_seq_max
    if n_tokens % n_seqs:
        n_tokens = (n_tokens + n_seqs - 1) // n_seqs * n_seqs
    ngl = n_gpu_layers if n_gpu_layers >= 0 else hp.n_layer_all + 1
    full_offload = ngl > hp.n_layer_all
    pin = {}
    if full_offload or n_tokens < 32:  # graph_get_cb: "norm" runs on its layer's device
        pin = {il: dev_backend[pl.layer_dev[il]] for il in range(hp.n_layer)}
    v_trans = not c.flash_attn_requested
    p = GraphParams(
        n_tokens=n_tokens, n_stream=c.n_stream, n_outputs=n_outputs,
        flash_attn=flash_attn, v_trans=v_trans, offload_kqv=offload_kqv, type_k=type_k, type_v=type_v,
        final_softcap=final_softcap, pin=pin, cpu_backend=cpu)
    model = _model(meta)
    layers = list(range(hp.n_layer)) if full_graph else kept_layers(
        _signatures(model, hp, pl, op_offload and any(b.op_offload for b in backends), has_overrides),
        pl.layer_dev, hp.n_layer)
    g = build_graph(spec, hp, _Weights(model, hp, pl), _layer_kv(caches, c, type_k, type_v, v_trans, hp, layers),
                    p, layers, meta.architecture, meta.hparams)
    pp = pipeline_parallel(len(pl.devices), n_gpu_layers, hp.n_layer_all, split_mode, offload_kqv, has_overrides)
    n_copies = GGML_SCHED_MAX_COPIES if pp else 1
    # the no_alloc dry run loses the pins: ggml_backend_sched_reserve_size resets the scheduler
    # after the graph (and its set_tensor_backend calls) was built
    s = schedule(g, backends, dev_backend, n_copies, op_offload, pins=not dry_run)
    a = allocate(s, backends)
    devices = [*pl.devices, HOST]  # in backend order: the CPU backend last
    return ComputeResult({d: a.sizes[i] for i, d in enumerate(devices)},
                         {d: a.peak[i] for i, d in enumerate(devices)}, n_copies, len(s.splits))
