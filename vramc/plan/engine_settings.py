"""Each engine's defaults and semantics, applied to a profile's settings.

The same profile keys mean what the engine means by them, so a user can translate a command line
key for key: `ctx` is llama-server's `-c` (the total across slots), Ollama's `num_ctx` (per slot:
Ollama launches llama-server with `-c num_ctx*num_parallel`), llama-cpp-python's `n_ctx`.
Sources: the pinned llama.cpp (common/common.h, common/arg.cpp, tools/server/server.cpp,
tools/server/server-context.cpp), llama-cpp-python 0.3.36 llama_cpp/llama.py, and Ollama 0.32.15
(commit b7871fc) api/types.go DefaultOptions and llm/llama_server.go startLlamaServer; what Ollama's
scheduler decides on top of these defaults (batch, context cap, GPUs, parallel) is
vramc.plan.ollama_sched, applied by vramc.plan.planner.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramc.engines import ENGINES
from vramc.memory.llama_params import LlamaParams

# Each llama.cpp-family engine's defaults are in its registry entry (vramc.engines).
DEFAULTS = {e.name: e.defaults for e in ENGINES.values() if e.defaults is not None}


def ollama_default_ctx(total_vram_bytes: int) -> int:
    """OLLAMA_CONTEXT_LENGTH=0: a tier on total VRAM (server/routes.go Serve); the plan then applies
    the rest of Ollama's context decision (env, cap at the trained length: ollama_sched)."""
    from vramc.plan.ollama_sched import default_context

    return default_context(total_vram_bytes, 1)


@dataclass(frozen=True)
class LlamaChoice:
    """Settings with every engine default filled in; `auto` values are still 'auto'."""

    engine: str
    ctx: int | str  # per the engine's meaning (see module doc); "auto" or an int
    parallel: int
    kv_unified: bool
    batch: int
    ubatch: int
    gpu_layers: int | str  # int, "all" or "auto"
    split_mode: str
    tensor_split: tuple[float, ...] | str | None  # None: by free memory; "auto": chosen
    main_gpu: int
    flash_attn: str
    cache_type_k: str
    cache_type_v: str
    kv_offload: bool
    swa_full: bool
    overrides: tuple[tuple[str, str], ...]


# the settings llama_choice reads
_PLANNED = (
    "ctx",
    "parallel",
    "kv_unified",
    "batch",
    "ubatch",
    "gpu_layers",
    "split_mode",
    "tensor_split",
    "main_gpu",
    "flash_attn",
    "cache_type_k",
    "cache_type_v",
    "kv_offload",
    "swa_full",
    "override_tensor",
    "cpu_moe",
    "n_cpu_moe",
)


def llama_choice(engine: str, s, total_vram_bytes: int = 0) -> LlamaChoice:
    """Fill in `engine`'s defaults for the unset settings of `s` (a schema.Settings)."""
    d = DEFAULTS[engine]
    # a setting the engine does not take (VR400) never reaches it, so it is not planned either:
    # llama-cpp-python's override_tensor or parallel, Ollama's tensor_split or kv_offload
    ignored = {k: None for k in _PLANNED if k not in ENGINES[engine].settings and getattr(s, k, None) is not None}
    if ignored:
        s = s.model_copy(update=ignored)
    parallel = s.parallel if isinstance(s.parallel, int) else d.parallel
    kv_unified = (
        s.kv_unified if s.kv_unified is not None else (d.kv_unified if not isinstance(s.parallel, int) else False)
    )
    batch = s.batch or d.batch
    ubatch = s.ubatch or d.ubatch
    ctx = s.ctx if s.ctx is not None else d.ctx
    if ctx == "vram-tier":
        ctx = ollama_default_ctx(total_vram_bytes)
    if engine == "llama-cpp-python":
        # Llama() clamps both batch sizes: n_batch = min(n_ctx, n_batch), n_ubatch <= n_batch.
        if isinstance(ctx, int) and ctx > 0:
            batch = min(ctx, batch)
        ubatch = min(batch, ubatch)
    gpu_layers = s.gpu_layers if s.gpu_layers is not None else d.gpu_layers
    ts = s.tensor_split
    if isinstance(ts, list):
        ts = tuple(ts)
    overrides = tuple(_parse_override(o) for o in (s.override_tensor or []))
    if s.cpu_moe:
        overrides += ((FFN_EXPS_REGEX, "CPU"),)
    elif s.n_cpu_moe:
        overrides += (experts_on_cpu(range(s.n_cpu_moe)),)
    cache_k = s.cache_type_k or d.cache_type
    cache_v = s.cache_type_v or d.cache_type
    return LlamaChoice(
        engine=engine,
        ctx=ctx,
        parallel=parallel,
        kv_unified=kv_unified,
        batch=batch,
        ubatch=ubatch,
        gpu_layers=gpu_layers,
        split_mode=s.split_mode or "layer",
        tensor_split=ts,
        main_gpu=s.main_gpu or 0,
        flash_attn=s.flash_attn or d.flash_attn,
        cache_type_k=cache_k,
        cache_type_v=cache_v,
        kv_offload=s.kv_offload if s.kv_offload is not None else True,
        # llama_context_default_params() has swa_full true; llama-server's common params false
        swa_full=s.swa_full if s.swa_full is not None else engine == "llama-cpp-python",
        overrides=overrides,
    )


# llama.cpp's own pattern for MoE expert tensors (common/common.h LLM_FFN_EXPS_REGEX), as
# --cpu-moe and --n-cpu-moe use it.
FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


def experts_on_cpu(blocks) -> tuple[str, str]:
    """One --override-tensor that keeps the expert tensors of `blocks` in host memory."""
    ids = "|".join(str(b) for b in blocks)
    return (rf"blk\.({ids}){FFN_EXPS_REGEX}", "CPU")


def _parse_override(spec: str) -> tuple[str, str]:
    # as llama.cpp splits -ot: at the first '=' (the schema refuses a spec without one)
    pattern, _, buft = spec.partition("=")
    return pattern, buft


def total_context(c: LlamaChoice, n_ctx_train: int) -> int:
    """llama_context_params.n_ctx the engine will pass (0 is resolved to the trained context)."""
    ctx = c.ctx
    if ctx == 0:
        ctx = n_ctx_train
    assert isinstance(ctx, int), "auto context must be resolved before planning"
    if c.engine == "ollama":
        return ctx * c.parallel  # Ollama starts llama-server with -c num_ctx*num_parallel
    return ctx


def to_llama_params(c: LlamaChoice, n_layer: int, n_ctx_train: int) -> LlamaParams:
    """The llama.cpp parameters the engine passes for a fully resolved choice."""
    if c.gpu_layers == "all":
        ngl = -1
    elif isinstance(c.gpu_layers, int):
        ngl = c.gpu_layers
    else:
        raise ValueError("auto gpu_layers must be resolved before planning")
    if c.tensor_split == "auto":
        raise ValueError("auto tensor_split must be resolved before planning")
    if c.engine in ("llama-server", "ollama"):
        # server_output_limits(): logits are only reserved for one token per slot.
        n_outputs_max = max(1, min(c.batch, c.parallel))
    else:
        n_outputs_max = None  # llama_context default: n_batch
    return LlamaParams(
        n_ctx=total_context(c, n_ctx_train),
        n_seq_max=c.parallel,
        kv_unified=c.kv_unified,
        n_batch=c.batch,
        n_ubatch=c.ubatch,
        n_gpu_layers=ngl,
        split_mode=c.split_mode,
        tensor_split=c.tensor_split,
        main_gpu=c.main_gpu,
        flash_attn=c.flash_attn,
        type_k=c.cache_type_k,
        type_v=c.cache_type_v,
        offload_kqv=c.kv_offload,
        swa_full=c.swa_full,
        n_outputs_max=n_outputs_max,
        overrides=c.overrides,
    )
