"""Compute buffers: replay llama.cpp's worst-case graph reserve on the estimated placement.

`llama_context::sched_reserve` (src/llama-context.cpp) builds the prompt graph for
n_tokens = min(n_ctx, n_ubatch) tokens, n_seq_max sequences and min(n_tokens, n_outputs_max)
outputs, and sizes one compute buffer per backend from it; in the no_alloc dry run that first
reserve is what llama.cpp reports. This module sets up the same backends (the model's devices,
then the CPU), pipeline parallelism and the layer pins of graph_get_cb, then hands the graph from
llama_archs to llama_sched. For speed the graph leaves out repeated layers (plan_layers); the
allocator's states show whether that changed anything (_verify), and where it could have, the
graph is replayed with more layers, at worst all of them: the result is the full graph's.
"""

from __future__ import annotations

import gc
import operator
from bisect import bisect_left
from dataclasses import dataclass

from vramc.memory import llama_graph as gg
from vramc.memory.llama_archs import ArchSpec, GraphParams, LayerKV, build_graph
from vramc.memory.llama_cparams import Cparams
from vramc.memory.llama_hparams import LlamaHparams
from vramc.memory.llama_kv import LayerCache
from vramc.memory.llama_mamba import LayerRS
from vramc.memory.llama_placement import HOST, Placement
from vramc.memory.llama_sched import AllocState, Backend, Scheduled, allocate, schedule
from vramc.model.modelmeta import ModelMeta

GGML_SCHED_MAX_COPIES = 4


@dataclass
class ComputeResult:
    by_device: dict[int, int]  # device (HOST included) -> compute buffer bytes
    peak: dict[int, list[tuple[str, int]]]  # device -> the largest tensors live at its peak
    n_copies: int
    n_splits: int


def pipeline_parallel(
    n_devices: int, n_gpu_layers: int, n_layer_all: int, split_mode: str, offload_kqv: bool, has_overrides: bool
) -> bool:
    """llama_context ctor: more than one device, everything offloaded, layer split, no overrides
    (RPC and CUDA devices support the async compute and events it also needs)."""
    ngl = n_gpu_layers if n_gpu_layers >= 0 else n_layer_all + 1
    return n_devices > 1 and ngl > n_layer_all and split_mode == "layer" and offload_kqv and not has_overrides


def layer_signatures(meta: ModelMeta, hp: LlamaHparams, with_types: bool) -> list[tuple]:
    """What makes two layers' graphs alike: their tensors' names and shapes (dense vs MoE,
    NAS-pruned widths), the cache they attend, and, when host weights may be copied to a GPU
    (CUDA op offload), the weights' types (the copies' sizes). In the file's tensor order."""
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
        self._sigs: dict[tuple, object] = {}
        self._ids: dict[tuple, int] = {}  # signature -> a small number (cheap to compare)
        # the layers' tensors in name order: (layer, name suffix, shape, type, name)
        self.layer_tensors = sorted(
            (t.block, t.name.split(".", 2)[2], t.shape, t.type, t.name) for t in self.tensors if t.block is not None
        )

    def holds(self, meta: ModelMeta) -> bool:
        ts = meta.tensors
        return self.meta is meta and len(ts) == len(self.tensors) and all(map(operator.is_, ts, self.tensors))

    def _numbered(self, sigs: list[tuple]) -> list[int]:
        ids = self._ids
        return [ids.setdefault(x, len(ids)) for x in sigs]

    def kinds(self, hp: LlamaHparams, typed: list[bool]) -> list[int]:
        """Numbered signatures of layers whose tensors all live on the layer's device: the tensors'
        names and shapes in name order (a lock file lists a model's tensors grouped by type, so its
        order differs from layer to layer), with the weights' types where `typed` says so: layers
        whose weights CUDA's op offload copies."""
        key = ("kind", hp.n_layer_all, tuple(hp.is_swa), tuple(hp.n_head_kv))
        both = self._sigs.get(key)
        if both is None:
            plain = [tuple(x[:2]) + tuple(sorted(x[2:])) for x in layer_signatures(self.meta, hp, True)]
            both = self._sigs[key] = (
                self._numbered([x[:2] + tuple(e[:2] for e in x[2:]) for x in plain]),
                self._numbered(plain),
            )
        untyped, with_types = both
        return [w if t else u for u, w, t in zip(untyped, with_types, typed)]

    def placed(self, hp: LlamaHparams, tensor_dev: dict[str, list[int]], cuda_offload: bool) -> list[int]:
        """Numbered signatures under tensor overrides: each tensor's name, shape and device (the
        device decides which backend runs the ops on it, and so the splits and the copies between
        them), and its type where a host tensor may be copied to a GPU (CUDA op offload)."""
        n = hp.n_layer_all
        layers: list[list] = [[hp.is_swa[il], hp.n_head_kv[il]] for il in range(n)]
        for il, suffix, shape, type_, name in self.layer_tensors:
            if il < n:
                devs = tensor_dev.get(name)
                dev = devs[0] if devs else None
                layers[il].append((suffix, shape, dev, type_ if cuda_offload and dev == HOST else None))
        return self._numbered([tuple(x) for x in layers])


_MODELS: dict[int, _Model] = {}


def _model(meta: ModelMeta) -> _Model:
    m = _MODELS.get(id(meta))
    if m is None or not m.holds(meta):
        if len(_MODELS) >= 16:
            del _MODELS[next(iter(_MODELS))]
        m = _MODELS[id(meta)] = _Model(meta)
    return m


def _signatures(model: _Model, hp: LlamaHparams, pl: Placement, cuda_offload: bool, has_overrides: bool) -> list[int]:
    """The layer signatures plan_layers compares: equal numbers for layers whose graphs are
    identical, node for node, and scheduled alike when they sit on the same device.

    Weight types only matter where CUDA's op offload copies weights into a compute buffer: for
    weights on the host. Without tensor overrides every weight of a layer lives on the layer's
    device, so only the CPU's layers carry their types; with overrides each tensor's own device
    (and, on the host, its type) is part of the signature."""
    if has_overrides:
        return model.placed(hp, pl.tensor_dev, cuda_offload)
    return model.kinds(hp, [cuda_offload and d == HOST for d in pl.layer_dev[: hp.n_layer_all]])


# The shortcut (plan_layers, _verify). A periodic stretch of layers keeps at least KEEP of its
# periods and drops a multiple of DROP_MULTIPLE; a stretch whose check failed is planned again
# with RETRY_KEEP and RETRY_MULTIPLE (which also cover cycles of three, four and six periods).
# Patterns up to MAX_PERIOD layers long.
KEEP, DROP_MULTIPLE = 3, 2
RETRY_KEEP, RETRY_MULTIPLE = 6, 6
MAX_PERIOD = 8


@dataclass(frozen=True)
class Stretch:
    """`n` periods of `period` layers from layer `start`, on one device, alike period for period;
    the graph drops the `dropped` periods before the last one."""

    start: int
    period: int
    n: int
    dropped: int

    def kept_periods(self) -> list[int]:
        return [*range(self.n - 1 - self.dropped), self.n - 1]


def plan_layers(
    signatures: list[int],
    layer_dev: list[int],
    n_layer: int,
    retry: frozenset[int] = frozenset(),
    whole: frozenset[int] = frozenset(),
) -> tuple[list[int], list[Stretch]]:
    """The trunk with repeated layers dropped, and the stretches they were dropped from (for
    _verify, which decides whether that made no difference).

    Each device's run of layers is cut, from its start, into periodic stretches: at each layer,
    the period (1 .. MAX_PERIOD layers) whose pattern of signatures runs longest, so that a run of
    identical layers, Gemma's five sliding-window layers and one global one, or the weight types
    of Q4_K_M's host layers (a pattern of three) each make one stretch. A stretch keeps its first
    periods and its last one, KEEP periods or more, and drops a multiple of DROP_MULTIPLE periods
    before the last; one starting at a layer in `retry` is cut at the same place but keeps
    RETRY_KEEP periods or more and drops a multiple of RETRY_MULTIPLE, one starting at a layer in
    `whole` is kept whole.
    """
    kept: list[int] = []
    stretches: list[Stretch] = []
    need = KEEP + DROP_MULTIPLE  # periods a stretch needs to drop any
    start = 0
    while start < n_layer:
        dev = layer_dev[start]
        end = start + 1
        while end < n_layer and layer_dev[end] == dev:
            end += 1
        i = start
        while i < end:
            best = None
            for p in range(1, MAX_PERIOD + 1):
                if i + need * p > end:
                    break
                j = i + p
                while j < end and signatures[j] == signatures[j - p]:
                    j += 1
                d = ((j - i) // p - KEEP) // DROP_MULTIPLE * DROP_MULTIPLE
                if d > 0 and (best is None or d * p > best[1] * best[0]):
                    best = (p, d, j)
                if j == end:
                    break  # a longer period cannot drop more
            if best is None:
                kept.append(i)
                i += 1
                continue
            p, d, j = best
            n = (j - i) // p
            if i in whole:
                d = 0
            elif i in retry:
                d = (n - RETRY_KEEP) // RETRY_MULTIPLE * RETRY_MULTIPLE
            if d > 0:
                kept += range(i, i + (n - 1 - d) * p)
                kept += range(i + (n - 1) * p, j)
                stretches.append(Stretch(i, p, n, d))
            else:
                kept += range(i, j)
            i = j
        start = end
    return kept, stretches


def _checkpoints(stretches: list[Stretch], entry: dict[int, gg.Tensor]) -> list[tuple[Stretch, list]]:
    """For each stretch, the first node of each kept period but the first, at the same layer of
    each period (none for a stretch whose layers have no nodes)."""
    out = []
    for st in stretches:
        p = st.period
        first = next((o for o in range(p) if st.start + p + o in entry), None)
        nodes = [] if first is None else [entry[st.start + k * p + first] for k in st.kept_periods()[1:]]
        out.append((st, nodes))
    return out


def _same_state(a: AllocState, b: AllocState, last: AllocState) -> bool:
    """Whether the allocators are in the same state at `a` and at `b`, one or more periods later:
    the same free blocks, and each buffer holding at the same offsets either the same tensors or
    corresponding ones: allocated at the same distance before `a` and `b`, alike, with as many
    consumers and views left. A tensor held at both must not be freed or have its memory taken
    over in place by a consumer in the periods that repeat: it has no consumer between `a` and
    `b`, or it is still held at `last`, before the stretch's last period (it has consumers after
    the repeating periods), or it is a graph output (never freed)."""
    if a.blocks != b.blocks:
        return False
    delta = b.pos - a.pos
    for la, lb, ca, cb in zip(a.live, b.live, a.left, b.left):
        if len(la) != len(lb):
            return False
        pa, pb = zip(la, ca), zip(lb, cb)
        if any(x.offset != y.offset for x, y in zip(la, lb)):
            # held in allocation order, which repeats with the states; else compare by offset
            pa, pb = sorted(pa, key=_at), sorted(pb, key=_at)
        for (ta, left_a), (tb, left_b) in zip(pa, pb):
            if ta.offset != tb.offset:
                return False
            if ta is tb:
                if left_a != left_b and not ta.flags & gg.OUTPUT and not any(ta in lv for lv in last.live):
                    return False
            elif (
                tb.pos - ta.pos != delta
                or left_a != left_b
                or ta.op != tb.op
                or ta.ne != tb.ne
                or ta.type != tb.type
                or ta.nb != tb.nb
                or ta.flags != tb.flags
            ):
                return False
    return True


def _at(x: tuple) -> tuple[int, int]:
    return x[0].offset, x[0].pos


def _verify(
    plan: list[tuple[Stretch, list]], states: list[AllocState], s: Scheduled, n_copies: int
) -> tuple[set[int], set[int], int]:
    """Which stretches' dropped periods could have changed a compute buffer (their starts): those
    whose states did not repeat, and those that cannot be shortened at all; and how many splits
    the dropped periods held (the full graph's count is the shortened one's plus these).

    The periods of a stretch have the same nodes, and the scheduler gives them the same backends
    except in the first period's input norm (every layer has ops on weights, which anchor its
    passes 1 to 4); the first period also makes the copies of graph inputs that the others share
    (the input norm reads none). What remains is pass 5: how a period is cut into splits, and
    where the copies between backends go, follows from its nodes and from pass 5's state where
    it starts (`entry_split`). So if pass 5 enters period a as it enters period a + 1, every
    period from a on is scheduled alike, up to the last (which can differ: the model's last layer,
    the next device), and each takes the allocators from the state before it to the state before
    the next by the same function, in the full graph as in the shortened one, whose periods from
    a on are the same, fewer. Once the states before two of them, a and a + c, are equal, they
    repeat every c periods: dropping a multiple of c periods changes neither the state in which
    the last period starts (so nothing after it) nor the states, and so the peaks, the periods go
    through. The states compared are those before the kept periods; the last of them follows a
    period followed by the last one, which differs from a middle period only in what it leaves
    for the last period (the copies a split spanning both makes at its start, and how many
    consumers its tensors have left), and that shows in the state. With pipeline parallelism a
    split's input copies are never freed, so a stretch whose periods hold splits is kept whole."""
    failed: set[int] = set()
    whole: set[int] = set()
    extra = 0
    k = 0
    for st, nodes in plan:
        if not nodes:
            continue  # periods without nodes
        got = states[k : k + len(nodes)]
        split_state = s.entry_split[k : k + len(nodes)]
        at = s.checkpoint_pos[k : k + len(nodes)]
        k += len(nodes)
        # the periods from `a` on are split alike if pass 5 enters period a as it enters the next
        alike = [split_state[a] == split_state[a + 1] for a in range(len(got) - 1)]
        ok = None
        for cycle in range(1, len(got)):
            if st.dropped % cycle == 0:
                ok = next(
                    (a for a in range(len(got) - cycle) if alike[a] and _same_state(got[a], got[a + cycle], got[-1])),
                    None,
                )
                if ok is not None:
                    break
        if ok is None:
            failed.add(st.start)
            continue
        splits = bisect_left(s.split_starts, at[ok + 1]) - bisect_left(s.split_starts, at[ok])
        if splits and n_copies > 1:
            whole.add(st.start)
        extra += splits * st.dropped
    return failed, whole, extra


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
            self.made["output.weight"] = (
                tok if len(devs) == 1 else gg.weight(tok.type, tok.ne, devs[1], "output.weight")
            )
        # per-layer RoPE factors: each layer reads the copy in its own buffer (TENSOR_DUPLICATED)
        name = next(
            (
                n
                for n in ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")
                if n in self.by_name
            ),
            None,
        )
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


def _layer_kv(
    caches: list[LayerCache], c: Cparams, type_k: str, type_v: str, v_trans: bool, hp: LlamaHparams, layers=None
) -> dict[int, LayerKV]:
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
                v = gg.new_tensor(
                    type_v,
                    (v_max if v_trans else hp.n_embd_v_gqa(lc.il), lc.cells, c.n_stream),
                    name=f"cache_v_l{lc.il}",
                )
                v.dev = lc.device
        out[lc.il] = LayerKV(k, v, lc.cells, lc.kind == "kv_swa")
    return out


def _layer_rs(caches: list[LayerCache], hp: LlamaHparams, layers) -> dict[int, LayerRS]:
    """The recurrent state tensors (f32 R and S rows) of the recurrent layers among `layers`."""
    wanted = set(layers)
    out = {}
    for lc in caches:
        if lc.kind == "rs" and lc.il in wanted:
            r = gg.new_tensor("f32", (hp.n_embd_r, lc.cells), name=f"cache_r_l{lc.il}")
            s = gg.new_tensor("f32", (hp.n_embd_s, lc.cells), name=f"cache_s_l{lc.il}")
            r.dev = s.dev = lc.device
            out[lc.il] = LayerRS(r, s)
    return out


def estimate_compute(
    spec: ArchSpec,
    meta: ModelMeta,
    hp: LlamaHparams,
    c: Cparams,
    pl: Placement,
    caches: list[LayerCache],
    backend_kinds: dict[int, str],
    *,
    flash_attn: bool,
    offload_kqv: bool,
    type_k: str,
    type_v: str,
    n_gpu_layers: int,
    split_mode: str,
    has_overrides: bool,
    op_offload: bool,
    final_softcap: bool,
    dry_run: bool = False,
    full_graph: bool = False,
) -> ComputeResult:
    # the replay makes thousands of tensors and drops them at the end, none of them in reference
    # cycles: the cyclic garbage collector would only rescan them (and the caller's heap) again
    # and again, a third of the time of a `vramc check` estimate
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _estimate_compute(
            spec,
            meta,
            hp,
            c,
            pl,
            caches,
            backend_kinds,
            flash_attn,
            offload_kqv,
            type_k,
            type_v,
            n_gpu_layers,
            split_mode,
            has_overrides,
            op_offload,
            final_softcap,
            dry_run,
            full_graph,
        )
    finally:
        if enabled:
            gc.enable()


def _backends(pl: Placement, backend_kinds: dict[int, str]) -> tuple[list[Backend], dict[int, int]]:
    """llama_context's backends (the model's devices, then the CPU) and each device's index."""
    backends = []
    for d in pl.devices:
        kind = backend_kinds[d]
        # an RPC device has no offload_op (ggml-rpc.cpp): only a local CUDA device pulls ops to it
        align = 128 if kind in ("cuda", "rpc-cuda") else 32
        backends.append(Backend(f"dev{d}", f"dev{d}", kind, align, op_offload=kind == "cuda"))
    backends.append(Backend("CPU", "host", "cpu", 32))
    dev_backend = {d: i for i, d in enumerate(pl.devices)}
    dev_backend[HOST] = len(backends) - 1
    return backends, dev_backend


def _pins(
    hp: LlamaHparams, pl: Placement, dev_backend: dict[int, int], n_gpu_layers: int, n_tokens: int
) -> dict[int, int]:
    """graph_get_cb: with everything offloaded, or a batch under 32 tokens, each layer's "norm"
    nodes run on the layer's device."""
    ngl = n_gpu_layers if n_gpu_layers >= 0 else hp.n_layer_all + 1
    if ngl > hp.n_layer_all or n_tokens < 32:
        return {il: dev_backend[pl.layer_dev[il]] for il in range(hp.n_layer)}
    return {}


def flash_attn_strays(
    spec: ArchSpec,
    meta: ModelMeta,
    hp: LlamaHparams,
    c: Cparams,
    pl: Placement,
    caches: list[LayerCache],
    backend_kinds: dict[int, str],
    *,
    offload_kqv: bool,
    type_k: str,
    type_v: str,
    n_gpu_layers: int,
    op_offload: bool,
    has_overrides: bool,
) -> int | None:
    """llama_context::resolve_fused_ops for flash_attn auto: the probe graph (one token per
    sequence, flash attention on, split but not allocated, the pins of its build kept) must run
    every FLASH_ATTN_EXT node on its layer's device. Returns the first layer whose node the
    scheduler put elsewhere (FA is then disabled), or None.

    Attention ops use no weights, so the scheduler places them by their neighbours: in a hybrid
    graph the next recurrent layer's state reads (which come before the attention's output
    projection in graph order) can pull a host layer's attention onto the next layer's GPU.

    The probe leaves out repeated layers as the compute replay does (plan_layers): every layer
    has ops on weights, which bound how far the scheduler carries an assignment, so a dropped
    middle period is placed as the kept middle periods are."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        backends, dev_backend = _backends(pl, backend_kinds)
        n_seqs = c.n_seq_max
        p = GraphParams(
            n_tokens=n_seqs,
            n_stream=c.n_stream,
            n_outputs=n_seqs,
            flash_attn=True,
            v_trans=not c.flash_attn_requested,
            offload_kqv=offload_kqv,
            type_k=type_k,
            type_v=type_v,
            n_seqs=n_seqs,
            pin=_pins(hp, pl, dev_backend, n_gpu_layers, n_seqs),
            cpu_backend=dev_backend[HOST],
        )
        model = _model(meta)
        sigs = _signatures(model, hp, pl, op_offload and any(b.op_offload for b in backends), has_overrides)
        layers, _ = plan_layers(sigs, pl.layer_dev, hp.n_layer, frozenset(), frozenset())
        g = build_graph(
            spec,
            hp,
            _Weights(model, hp, pl),
            _layer_kv(caches, c, type_k, type_v, p.v_trans, hp, layers),
            p,
            layers,
            meta.architecture,
            meta.hparams,
            _layer_rs(caches, hp, layers),
        )
        schedule(g, backends, dev_backend, 1, op_offload)
        return next((il for il, t in g.flash.items() if t.sb != dev_backend[pl.layer_dev[il]]), None)
    finally:
        if gc_was:
            gc.enable()


def _estimate_compute(
    spec,
    meta,
    hp,
    c,
    pl,
    caches,
    backend_kinds,
    flash_attn,
    offload_kqv,
    type_k,
    type_v,
    n_gpu_layers,
    split_mode,
    has_overrides,
    op_offload,
    final_softcap,
    dry_run,
    full_graph,
) -> ComputeResult:
    backends, dev_backend = _backends(pl, backend_kinds)
    cpu = dev_backend[HOST]
    n_tokens = min(c.n_ctx, c.n_ubatch)
    n_outputs = min(n_tokens, c.n_outputs_max)
    n_seqs = c.n_seq_max
    if n_tokens % n_seqs:
        n_tokens = (n_tokens + n_seqs - 1) // n_seqs * n_seqs
    pin = _pins(hp, pl, dev_backend, n_gpu_layers, n_tokens)
    v_trans = not c.flash_attn_requested
    p = GraphParams(
        n_tokens=n_tokens,
        n_stream=c.n_stream,
        n_outputs=n_outputs,
        flash_attn=flash_attn,
        v_trans=v_trans,
        offload_kqv=offload_kqv,
        type_k=type_k,
        type_v=type_v,
        final_softcap=final_softcap,
        n_seqs=n_seqs,
        pin=pin,
        cpu_backend=cpu,
    )
    model = _model(meta)
    pp = pipeline_parallel(len(pl.devices), n_gpu_layers, hp.n_layer_all, split_mode, offload_kqv, has_overrides)
    n_copies = GGML_SCHED_MAX_COPIES if pp else 1
    sigs = (
        None
        if full_graph
        else _signatures(model, hp, pl, op_offload and any(b.op_offload for b in backends), has_overrides)
    )
    retry: frozenset[int] = frozenset()
    whole: frozenset[int] = frozenset()
    # a shortened graph whose dropped layers could have made a difference is replayed again with
    # more of those stretches kept; if that one still does not check out, the full graph
    for attempt in range(3):
        if sigs is None or attempt == 2:
            layers, stretches = list(range(hp.n_layer)), []
        else:
            layers, stretches = plan_layers(sigs, pl.layer_dev, hp.n_layer, retry, whole)
        g = build_graph(
            spec,
            hp,
            _Weights(model, hp, pl),
            _layer_kv(caches, c, type_k, type_v, v_trans, hp, layers),
            p,
            layers,
            meta.architecture,
            meta.hparams,
            _layer_rs(caches, hp, layers),
        )
        # the no_alloc dry run loses the pins: ggml_backend_sched_reserve_size resets the scheduler
        # after the graph (and its set_tensor_backend calls) was built
        plan = _checkpoints(stretches, g.entry)
        checkpoints = [t for _, nodes in plan for t in nodes]
        s = schedule(g, backends, dev_backend, n_copies, op_offload, pins=not dry_run, checkpoints=checkpoints)
        # a checkpoint the scheduler skipped would shift every later state against its stretch
        assert len(s.checkpoint_pos) == len(checkpoints), "a checkpoint node is not in the scheduled graph"
        a = allocate(s, backends, checkpoints=s.checkpoint_pos)
        failed, kept_whole, extra_splits = _verify(plan, a.states, s, n_copies)
        if not failed and not kept_whole:
            break
        retry |= failed
        whole |= kept_whole
    devices = [*pl.devices, HOST]  # in backend order: the CPU backend last
    return ComputeResult(
        {d: a.sizes[i] for i, d in enumerate(devices)},
        {d: a.peak[i] for i, d in enumerate(devices)},
        n_copies,
        len(s.splits) + extra_splits,
    )
