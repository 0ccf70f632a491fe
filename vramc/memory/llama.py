"""Per-device memory of the llama.cpp family (llama-server, llama-cpp-python, Ollama).

Models what the pinned llama.cpp (llama-cpp-python 0.3.36, commit 0c1e570) allocates when it
loads a model and creates a context: model buffers (llama_placement), KV cache and recurrent
state (llama_kv), compute buffers (llama_compute, which rebuilds the reserve graph and replays
the scheduler and allocator) and the host output buffer. Checked against llama.cpp's own dry run
by vramc.dev.oracle and bench/accuracy; see docs/memory-model.md.
"""

from __future__ import annotations

from vramc.memory.llama_archs import ArchSpec, graph_spec
from vramc.memory.llama_compute import ComputeResult, estimate_compute, flash_attn_strays
from vramc.memory.llama_cparams import QUANTIZED_KV, Cparams, resolve_cparams
from vramc.memory.llama_hparams import LlamaHparams, llama_hparams
from vramc.memory.llama_kv import LayerCache, cache_bytes_by_device, layer_caches
from vramc.memory.llama_params import LlamaParams
from vramc.memory.llama_placement import HOST, Placement, backend_kind, buffer_rules, place_model
from vramc.memory.usage import DeviceUse, GpuBudget, HostUse, MemoryEstimate
from vramc.model.ggml import GGML_TYPES, TYPE_BY_NAME
from vramc.model.modelmeta import ModelMeta

CUDA_NOTES = (
    "CUDA: the CUDA context, cuBLAS workspaces and the driver's own memory are not part of these "
    "figures (the planner adds the hardware profile's overhead)",
    "CUDA: with layers on the CPU, prompt batches of 32+ tokens run the CPU layers' matrix "
    "multiplications on the first GPU (op offload), which copies those weights through its compute "
    "buffer; this is modelled, but the RPC oracle cannot show it",
)


def estimate_llama(meta: ModelMeta, gpus: list[GpuBudget], p: LlamaParams, *, dry_run: bool = False) -> MemoryEstimate:
    """Bytes per device for loading `meta` with `p` on `gpus` (launch order; empty: CPU only).

    dry_run=True models llama.cpp's own no_alloc projection (llama-fit-params, --fit) instead of
    a real launch: the dry run loses the scheduler pins of graph_get_cb and --no-kv-offload, which
    changes compute buffers at multi-device splits and without KV offload (see llama_compute).
    """
    notes: list[str] = []
    errors: list[tuple[str, str]] = []
    hp = llama_hparams(meta)
    c = resolve_cparams(p, hp.n_ctx_train)
    split_mode = p.split_mode
    if split_mode == "row" and gpus:
        # make_gpu_buft_list: the pinned CUDA and RPC backends export no split buffer type
        errors.append(("llama-split-row", f"device {gpus[0].id} does not support split buffers"))
        notes.append("split_mode row is estimated as layer split (llama.cpp refuses to load it)")
        split_mode = "layer"
    pl = place_model(
        meta, gpus, hp.n_layer, hp.n_layer_all, p.n_gpu_layers, split_mode, p.tensor_split, p.main_gpu, p.overrides
    )
    errors += _context_errors(p, hp, meta.architecture)
    flash_attn = _flash_attn(p, hp, [backend_kind(gpus[d]) for d in pl.devices], notes)
    caches = layer_caches(hp, c, pl.layer_dev, p.offload_kqv, p.type_k, p.type_v, p.swa_full)
    rules = {HOST: buffer_rules("host"), **{d: buffer_rules(backend_kind(g)) for d, g in enumerate(gpus)}}
    kv = cache_bytes_by_device(caches, rules)
    spec, compute_model = compute_model_of(meta, hp)
    cr, flash_attn = _compute(
        spec, compute_model, meta, hp, c, pl, caches, gpus, p, split_mode, flash_attn, dry_run, notes, errors
    )
    if flash_attn and p.flash_attn == "auto" and p.type_v not in QUANTIZED_KV:
        notes.append("flash_attn auto resolves to enabled (llama_context::resolve_fused_ops)")
    compute = cr.by_device if cr else {}
    if any(backend_kind(gpus[d]) == "cuda" for d in pl.devices):
        notes.append(CUDA_NOTES[0])
        if HOST in pl.layer_dev:  # op offload only concerns layers left on the CPU
            notes.append(CUDA_NOTES[1])

    devices = []
    for i, g in enumerate(gpus):
        span, n_layers, output = _layer_span(pl.layer_dev, i, hp.n_layer_all)
        devices.append(
            DeviceUse(
                id=g.id,
                name=g.name,
                gpu=g.gpu,
                capacity_bytes=g.capacity_bytes,
                reserve_bytes=g.reserve_bytes,
                tenants_bytes=g.tenants_bytes,
                weights_bytes=pl.weights.get(i, 0),
                kv_bytes=kv.get(i, 0),
                compute_bytes=compute.get(i, 0),
                layers=span,
                n_layers=n_layers,
                output=output,
                detail=_detail(pl, caches, cr, i),
                host=g.host,
                endpoint=g.endpoint,
                backend=g.backend,
            )
        )
    host = HostUse(
        weights_bytes=pl.weights.get(HOST, 0),
        kv_bytes=kv.get(HOST, 0),
        compute_bytes=compute.get(HOST, 0),
        other_bytes=_output_buffer_bytes(hp, c),
        detail={**_detail(pl, caches, cr, HOST), "output_buffer_initial_bytes": 4 * hp.n_vocab * c.n_seq_max},
    )
    return MemoryEstimate(
        devices=devices,
        host=host,
        notes=notes,
        errors=errors,
        resolved=_resolved(c, pl, flash_attn, cr, hp),
        compute_model=compute_model,
    )


# Head sizes with a CUDA flash-attention kernel for K and V of the same size
# (ggml_cuda_get_best_fattn_kernel; the MLA sizes 192/320/512/576 need more conditions).
CUDA_FA_HEADS = frozenset({40, 64, 72, 80, 96, 112, 128, 256})


def _context_errors(p: LlamaParams, hp: LlamaHparams, arch: str) -> list[tuple[str, str]]:
    """What llama_init_from_model refuses (src/llama-context.cpp), in its words."""
    out = []
    if (hp.is_mla or arch == "deepseek4") and p.type_k != p.type_v:
        out.append(
            ("llama-kv-types-differ", f"model does not support different K ({p.type_k}) and V ({p.type_v}) cache types")
        )
    if p.type_v in QUANTIZED_KV and p.flash_attn == "off":
        out.append(("llama-quantized-v-needs-fa", "quantized V cache requires flash_attn to be enabled"))
    if p.flash_attn != "off":
        for kind, type_, heads in (("K", p.type_k, hp.head_k), ("V", p.type_v, hp.head_v)):
            blck = GGML_TYPES[TYPE_BY_NAME[type_]][1]
            bad = next((h for h in heads[: hp.n_layer] if h % blck), None)
            if bad is not None:
                out.append(
                    (
                        "llama-kv-type-block",
                        f"{kind} cache type {type_} with block size {blck} "
                        f"does not divide n_embd_head_{kind.lower()}={bad}",
                    )
                )
    return out


def _flash_attn(p: LlamaParams, hp: LlamaHparams, kinds: list[str], notes: list[str]) -> bool:
    if p.flash_attn != "auto":
        return p.flash_attn == "on"
    if p.type_v in QUANTIZED_KV:
        notes.append("flash_attn auto: enabled since it is required for quantized V cache")
        return True
    # llama_context::resolve_fused_ops keeps FA when every FLASH_ATTN_EXT node runs on its
    # layer's device; CPU and RPC devices support it, CUDA only has kernels for some head sizes
    heads = {(hp.head_k[il], hp.head_v[il]) for il in range(hp.n_layer) if hp.n_head_kv[il]}
    bad = sorted({k for k, v in heads if k != v or k not in CUDA_FA_HEADS})
    if "cuda" in kinds and bad:
        notes.append(
            f"flash_attn auto resolves to disabled: CUDA has no flash-attention kernel for "
            f"head size {bad[0]} (resolve_fused_ops)"
        )
        return False
    return True  # unless the scheduler moves an attention op (_compute); estimate_llama says which


def compute_model_of(meta: ModelMeta, hp: LlamaHparams) -> tuple[ArchSpec | None, str]:
    """The graph that sizes the compute buffers, and how well: "exact", "approximate" (the llama
    graph for an unknown architecture with llama's tensors) or "none" (not modelled)."""
    spec, exact = graph_spec(meta.architecture, (t.name for t in meta.tensors))
    if spec is None or (any(hp.is_recr) and not (spec.blocks or spec.mixers)) or (hp.is_mla and not spec.mla):
        return None, "none"
    return spec, "exact" if exact else "approximate"


def _compute(
    spec: ArchSpec | None,
    how: str,
    meta: ModelMeta,
    hp: LlamaHparams,
    c: Cparams,
    pl: Placement,
    caches: list[LayerCache],
    gpus: list[GpuBudget],
    p: LlamaParams,
    split_mode: str,
    flash_attn: bool,
    dry_run: bool,
    notes: list[str],
    errors: list[tuple[str, str]],
) -> tuple[ComputeResult | None, bool]:
    """The compute buffers (None where not modelled) and whether flash attention is on."""
    if spec is None:
        notes.append(
            f"compute buffers are not modelled for architecture {meta.architecture!r} "
            "(only weights, KV cache and recurrent state are); leave a margin"
        )
        return None, flash_attn
    if how == "approximate":
        notes.append(f"compute buffers of architecture {meta.architecture!r} are approximated with the llama graph")
    stray = sorted({gpus[d].id for devs in pl.tensor_dev.values() for d in devs if d != HOST and d not in pl.devices})
    if stray:
        # no backend of the context can use those buffers: ggml_backend_sched aborts
        errors.append(
            (
                "llama-override-device",
                f"tensor overrides target {', '.join(stray)}, which the model does not use (split_mode {split_mode})",
            )
        )
        return None, flash_attn
    kinds = {d: backend_kind(gpus[d]) for d in pl.devices}
    # resolve_fused_ops keeps auto FA if the scheduler runs every FLASH_ATTN_EXT node on its layer's
    # device. Attention ops use no weights; in the transformer layers the node sits between the
    # KV store (the cache's device) and the output projection (the layer's device), so it does,
    # unless tensor overrides move weights; a hybrid graph interleaves the next layer's state
    # reads, so there the scheduler is asked (when the layers span more than one backend).
    if (
        flash_attn
        and p.flash_attn == "auto"
        and p.type_v not in QUANTIZED_KV
        and (spec.blocks or spec.mixers or p.overrides)
        and len(set(pl.layer_dev)) > 1
    ):
        il = flash_attn_strays(
            spec,
            meta,
            hp,
            c,
            pl,
            caches,
            kinds,
            offload_kqv=p.offload_kqv,
            type_k=p.type_k,
            type_v=p.type_v,
            n_gpu_layers=p.n_gpu_layers,
            op_offload=p.op_offload,
            has_overrides=bool(p.overrides),
        )
        if il is not None:
            flash_attn = False
            notes.append(
                f"flash_attn auto resolves to disabled: the scheduler runs layer {il}'s flash "
                "attention off the layer's device (resolve_fused_ops)"
            )
    return estimate_compute(
        spec,
        meta,
        hp,
        c,
        pl,
        caches,
        kinds,
        flash_attn=flash_attn,
        offload_kqv=p.offload_kqv,
        type_k=p.type_k,
        type_v=p.type_v,
        n_gpu_layers=p.n_gpu_layers,
        split_mode=split_mode,
        has_overrides=bool(p.overrides),
        op_offload=p.op_offload,
        final_softcap=bool(meta.hp("final_logit_softcapping")),
        dry_run=dry_run,
    ), flash_attn


def _layer_span(layer_dev: list[int], dev: int, n_layer_all: int) -> tuple[tuple[int, int] | None, int, bool]:
    held = [il for il, d in enumerate(layer_dev) if d == dev]
    if not held:
        return None, 0, False
    return (held[0], held[-1]), len(held), layer_dev[n_layer_all] == dev


def _detail(pl: Placement, caches: list[LayerCache], cr: ComputeResult | None, dev: int) -> dict:
    """Layers held (the output layer is n_layer), KV per cache kind, the compute buffer's peak."""
    out = {"layers": [il for il, d in enumerate(pl.layer_dev) if d == dev], "kv": _kv_detail(caches, dev)}
    if cr is not None and cr.peak.get(dev):
        out["compute_peak"] = [{"tensor": name, "bytes": n} for name, n in cr.peak[dev]]
    return out


def _kv_detail(caches: list[LayerCache], dev: int) -> dict:
    out: dict[str, dict] = {}
    for lc in caches:
        if lc.device != dev:
            continue
        d = out.setdefault(lc.kind, {"layers": 0, "cells": lc.cells, "bytes": 0})
        d["layers"] += 1
        d["bytes"] += lc.bytes
    return out


def _output_buffer_bytes(hp: LlamaHparams, c: Cparams) -> int:
    """llama_context::output_reserve: logits (f32) for the rows of the largest batch's outputs.

    Starts at n_seq_max rows and grows on demand up to n_outputs_max; host memory (pinned on CUDA).
    """
    return 4 * hp.n_vocab * max(c.n_outputs_max, c.n_seq_max)


def _resolved(c: Cparams, pl: Placement, flash_attn: bool, cr: ComputeResult | None, hp: LlamaHparams) -> dict:
    out = {
        "n_ctx": c.n_ctx,
        "n_ctx_seq": c.n_ctx_seq,
        "n_seq_max": c.n_seq_max,
        "n_stream": c.n_stream,
        "n_batch": c.n_batch,
        "n_ubatch": c.n_ubatch,
        "n_outputs_max": c.n_outputs_max,
        "flash_attn": flash_attn,
        "n_gpu_layers": pl.n_gpu_layers,
        "i_gpu_start": pl.i_gpu_start,
        "n_layer": hp.n_layer_all,
    }
    if cr is not None:
        out.update({"pipeline_parallel": cr.n_copies > 1, "graph_splits": cr.n_splits})
    return out
