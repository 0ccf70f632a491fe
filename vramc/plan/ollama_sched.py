"""Ollama's own load decisions for a GGUF model, as the pinned Ollama makes them before it starts
llama-server, so that a plan describes what Ollama will actually run.

Pinned: Ollama 0.32.15 (tag v0.32.15, commit b7871fc); server/sched.go, llm/ and envconfig/ are
byte-identical in v0.33.0-rc2 (commit fb30760). Each function names the Ollama function it
mirrors. The decisions, in the order `Scheduler.load` (server/sched.go) makes them:

- context: `num_ctx` from the request, the Modelfile, `OLLAMA_CONTEXT_LENGTH`, or a tier on the
  total VRAM (server/routes.go `Serve`: 262144 at 47 GiB and more, 32768 at 23 GiB, else 4096);
  `NewLlamaServer` (llm/server.go) caps it at the model's trained context, explicit or not, and
  llama-server gets `-c num_ctx*num_parallel -np num_parallel` (llm/llama_server.go
  `startLlamaServer`).
- parallel: `OLLAMA_NUM_PARALLEL` (default 1), but 1 for the architectures listed in `load` and
  for models without the completion capability (embeddings).
- GPUs: `selectLlamaServerPlacement`: with an explicit `main_gpu`, that GPU alone; otherwise,
  unless `OLLAMA_SCHED_SPREAD`, the best single GPU whose free memory holds the prediction within
  80% (`bestSingleGPUFit`, `betterPlacementGPU`: discrete first, then most free); only when none
  does, every GPU of the best library group. A single GPU is started with only it visible and
  `--split-mode none --main-gpu 0` (`singleLlamaServerGPUPlacement`, `appendMainGPUArgs`).
- batch: when neither the request nor the Modelfile sets `num_batch`,
  `automaticGenerationBatch`; llama-server gets `-b N -ub N` (`appendBatchArgs`: the ubatch
  always equals the batch).
- pre-load check: with other models resident, the prediction plus the batch surcharge must stay
  within 80% of the free memory, or Ollama evicts them first.
- mmap: `disableMmapDefaultReason` and `disableMmapForHostPressure`.
- fit: Ollama passes neither `--fit` nor `--fit-target` (startLlamaServer); llama-server's own fit
  (on by default, 1024 MiB kept free per device, or `LLAMA_ARG_FIT_TARGET` from the environment
  Ollama passes through, `SetupLlamaServerCommandEnv`) runs unless `-ngl` is given
  (`num_gpu`; llama.cpp common/fit.cpp aborts on a user-set `n_gpu_layers`) or `LLAMA_ARG_FIT=off`.
  With a projector Ollama raises the fit target by the projector + 1 GiB (`extraEnvsForStart`).
- OOM: an automatic context that fails to load is retried once at 32768, then 4096
  (`reduceAutoNumCtxForLoadOOM`, `nextLowerAutoNumCtx`).

Ollama's own reserve figures (`MinimumMemory` 457 MiB per non-Metal GPU and
`OLLAMA_GPU_OVERHEAD`) are only logged by this version's `load`; what keeps memory free on the
GPUs is llama-server's fit margin, when fit runs. `OLLAMA_GPU_OVERHEAD` also lowers the total VRAM
of the default-context tier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramc.units import GiB, MiB

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

VERSION = "0.32.15"
COMMIT = "b7871fc"
PIN = f"Ollama {VERSION} (commit {COMMIT})"

BATCH_DEFAULT = 512  # llamaServerGenerationBatchDefault, and api.DefaultOptions NumBatch
BATCH_CONSTRAINED = 256
BATCH_MEDIUM = 1024
BATCH_LARGE = 2048
MEDIUM_HEADROOM_PERCENT = 75
LARGE_HEADROOM_PERCENT = 60
FIT_TARGET_DEFAULT = 1024 * MiB  # llama.cpp common/common.h fit_params_target
MMPROJ_HEADROOM = 1 * GiB  # llm/llama_server.go mmprojOffloadHeadroom
MINIMUM_MEMORY = 457 * MiB  # ml/device.go DeviceInfo.MinimumMemory (not Metal)

# server/sched.go load: "Some architectures are not safe with num_parallel > 1"
PARALLEL_ONE_ARCHS = frozenset(
    {
        "mllama",
        "qwen3vl",
        "qwen3vlmoe",
        "qwen35",
        "qwen35moe",
        "qwen3next",
        "lfm2",
        "lfm2moe",
        "nemotron_h",
        "nemotron_h_moe",
        "nemotron_h_omni",
    }
)

# ml/device.go cudaFlashAttentionSupported: compute capability 6.0 and later, except 7.2 (Xavier).
# vramc knows GPUs by name, so the GPUs below 6.0 are recognised by their families' names.
_NO_FA_RE = re.compile(
    r"\b(gtx\s*(9\d\d|7\d\d|6\d\d)|tesla\s*[km]\d+|quadro\s*[km]\d+|"
    r"gtx\s*titan(\s*(x|black|z))?$|jetson\s*(agx\s*)?xavier)",
    re.I,
)


@dataclass(frozen=True)
class EngineChoice:
    """A setting the engine decides (not the user), as the plan assumes it."""

    value: object
    why: str
    source: str  # the Ollama file and function it mirrors
    pinned: str = ""  # what vramc writes so that Ollama keeps it ("" when it cannot be pinned)

    def record(self) -> dict:
        return {"value": self.value, "by": PIN, "why": self.why, "source": self.source, "pinned": self.pinned or None}


# --- context --------------------------------------------------------------------------------------


def default_context(total_vram_bytes: int, n_gpus: int, gpu_overhead: int = 0) -> int:
    """server/routes.go Serve: the tier of `sum(TotalMemory - OLLAMA_GPU_OVERHEAD)` over the GPUs
    (47/23 GiB, a little under 48/24 so that a card reporting slightly less still counts)."""
    total = total_vram_bytes - gpu_overhead * n_gpus
    if total >= 47 * GiB:
        return 262144
    if total >= 23 * GiB:
        return 32768
    return 4096


def effective_context(num_ctx: int, n_ctx_train: int) -> int:
    """server/sched.go effectiveContext; llm/server.go NewLlamaServer applies the same cap to the
    num_ctx llama-server is started with."""
    if n_ctx_train > 0 and num_ctx > n_ctx_train:
        return n_ctx_train
    return num_ctx


def next_lower_auto_num_ctx(num_ctx: int) -> int | None:
    """server/sched.go nextLowerAutoNumCtx: the context of the one retry after an OOM."""
    if num_ctx > 32768:
        return 32768
    if num_ctx > 4096:
        return 4096
    return None


def num_parallel(arch: str, parallel: int, completion: bool = True) -> int:
    """server/sched.go load: embeddings and some architectures run one sequence."""
    if not completion or arch in PARALLEL_ONE_ARCHS:
        return 1
    return max(parallel, 1)


# --- prediction -----------------------------------------------------------------------------------


def predict_server_vram(file_size: int, meta, num_ctx: int) -> int:
    """llm/llama_server.go PredictServerVRAM: the file size plus an f16 KV estimate,
    2 * layers * min(kv heads) * (n_embd / max(heads)) * ctx * 2 bytes."""
    layers = int(meta.hp("block_count", 0) or 0)
    kv = meta.hp("attention.head_count_kv", 0)
    heads = meta.hp("attention.head_count", 0)
    kv_heads = min(int(x) for x in kv) if isinstance(kv, list) and kv else int(kv or 0)
    if kv_heads == 0:
        kv_heads = 1
    head_max = max(int(x) for x in heads) if isinstance(heads, list) and heads else int(heads or 0)
    head_dim = int(meta.hp("embedding_length", 0) or 0) // head_max if head_max > 0 else 0
    return file_size + 2 * layers * kv_heads * head_dim * num_ctx * 2


def model_file_size(meta) -> int:
    """os.Stat of the model file; the locked size, else the tensor data (the header is small)."""
    return meta.file_size if meta.file_size else meta.total_bytes


# --- batch ----------------------------------------------------------------------------------------


def generation_batch_for_context(effective_ctx: int) -> int:
    """server/sched.go generationBatchForContext."""
    if effective_ctx > 32768:
        return BATCH_LARGE
    if effective_ctx > 4096:
        return BATCH_MEDIUM
    return BATCH_DEFAULT


def generation_batch_surcharge(batch: int) -> int:
    """server/sched.go generationBatchSurcharge: what a larger batch adds to the prediction."""
    if batch >= BATCH_LARGE:
        return 2 * GiB
    if batch >= BATCH_MEDIUM:
        return 768 * MiB
    return 0


def generation_batch_has_headroom(batch: int, predicted: int, available: int) -> bool:
    """server/sched.go generationBatchHasHeadroom (Go's integer arithmetic: a*p/100)."""
    if batch >= BATCH_LARGE:
        return predicted <= available * LARGE_HEADROOM_PERCENT // 100
    if batch >= BATCH_MEDIUM:
        return predicted <= available * MEDIUM_HEADROOM_PERCENT // 100
    return True


def generation_batch_fits(batch: int, predicted: int, available: int) -> bool:
    """server/sched.go generationBatchFits."""
    if predicted == 0 or available == 0:
        return True
    threshold = available * 80 // 100
    if predicted > threshold:
        return False
    if not generation_batch_has_headroom(batch, predicted, available):
        return False
    return generation_batch_surcharge(batch) <= threshold - predicted


def next_lower_generation_batch(batch: int) -> int:
    """server/sched.go nextLowerGenerationBatch."""
    return BATCH_MEDIUM if batch > BATCH_MEDIUM else BATCH_DEFAULT


def constrained_cuda_without_fa(effective_ctx: int, cuda_memory: list[int]) -> bool:
    """server/sched.go constrainedCUDAWithoutFlashAttention: a CUDA GPU of 8 GiB or less
    (min of its free and total memory) and an effective context above 4096."""
    if effective_ctx <= 4096:
        return False
    return any(0 < m <= 8 * GiB for m in cuda_memory)


def automatic_generation_batch(
    effective_ctx: int, predicted: int, available: int, fa_disabled: bool, cuda_memory: list[int]
) -> int:
    """server/sched.go automaticGenerationBatch. `cuda_memory`: per CUDA GPU of the placement,
    min(free, total); empty when no GPU is CUDA."""
    if fa_disabled and cuda_memory:
        if constrained_cuda_without_fa(effective_ctx, cuda_memory):
            return BATCH_CONSTRAINED
        return BATCH_DEFAULT
    batch = generation_batch_for_context(effective_ctx)
    while batch > BATCH_DEFAULT and not generation_batch_fits(batch, predicted, available):
        batch = next_lower_generation_batch(batch)
    return batch


# --- GPUs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OllamaGpu:
    """A GPU as Ollama's discovery reports it."""

    free: int  # FreeMemory
    total: int  # TotalMemory
    integrated: bool = False
    library: str = "CUDA"


def better_placement_gpu(cand: OllamaGpu, cand_avail: int, cur: OllamaGpu, cur_avail: int) -> bool:
    """server/sched.go betterPlacementGPU: discrete before integrated, then more available."""
    if cand.integrated != cur.integrated:
        return not cand.integrated
    return cand_avail > cur_avail


def best_single_gpu_fit(gpus: list[OllamaGpu], predicted: int) -> int | None:
    """server/sched.go bestSingleGPUFit: the best GPU whose 80% holds the prediction (the index;
    groups are by library, and vramc's GPUs are all CUDA, so one group)."""
    best = None
    for i, g in enumerate(gpus):
        if predicted > g.free * 80 // 100:
            continue
        if best is None or better_placement_gpu(g, g.free, gpus[best], gpus[best].free):
            best = i
    return best


def select_placement(
    gpus: list[OllamaGpu], predicted: int, main_gpu: int | None, sched_spread: bool, num_gpu: int = -1
) -> tuple[list[int], int | None]:
    """server/sched.go selectLlamaServerPlacement: the GPUs llama-server is started with (indices
    into `gpus`) and the main_gpu it is given (None: not passed)."""
    if len(gpus) <= 1 or num_gpu == 0:
        return list(range(len(gpus))), main_gpu
    if main_gpu is not None:
        if 0 <= main_gpu < len(gpus):  # bestExplicitMainGPU: one CUDA group
            return [main_gpu], 0
        return list(range(len(gpus))), main_gpu  # passed through; llama-server refuses it
    if not sched_spread and predicted > 0:
        best = best_single_gpu_fit(gpus, predicted)
        if best is not None:
            return [best], 0
    return list(range(len(gpus))), None


def available_for_placement(gpus: list[OllamaGpu]) -> int:
    """server/sched.go availableMemoryForPlacement for discrete GPUs: the sum of their free
    memory (one GPU: its free memory)."""
    return sum(g.free for g in gpus)


def preload_fits(predicted_for_load: int, available: int) -> bool:
    """server/sched.go load: next to resident models, the prediction (plus the batch surcharge)
    must stay within 80% of the free memory, or Ollama evicts them first."""
    return predicted_for_load <= available * 80 // 100


def flash_attention_supported(gpu_names: list[str]) -> bool:
    """ml/device.go FlashAttentionSupported for CUDA GPUs, by name (see _NO_FA_RE)."""
    return not any(_NO_FA_RE.search(n) for n in gpu_names)


def flash_attention(setting: str, gpu_names: list[str]) -> str:
    """llm/llama_server.go LlamaServerFlashAttention: OLLAMA_FLASH_ATTENTION when set (vramc writes
    it for `on` and `off`), else auto where every GPU supports it, else off."""
    if setting in ("on", "off"):
        return setting
    return "auto" if flash_attention_supported(gpu_names) else "off"


# --- mmap -----------------------------------------------------------------------------------------


def mmap_host_pressure_headroom(total_memory: int) -> int:
    """server/sched.go mmapHostPressureHeadroom (format.GigaByte is 10^9)."""
    if total_memory == 0:
        return 8 * 10**9
    return max(8 * 10**9, total_memory // 10)


def disable_mmap_reason(use_mmap: bool | None, num_gpu: int, n_gpus: int) -> str:
    """server/sched.go disableMmapDefaultReason on Linux with CUDA GPUs (Windows CUDA and Metal
    partial offload are the other reasons)."""
    if use_mmap is not None:
        return ""
    if num_gpu == 0 or n_gpus == 0:
        return "cpu"
    return ""


def disable_mmap_for_host_pressure(
    use_mmap: bool | None,
    model_size: int,
    host_free: int,
    host_total: int,
    predicted: int,
    available: int,
    loaded_mmap: int = 0,
) -> bool:
    """server/sched.go disableMmapForHostPressure on Linux with discrete GPUs."""
    if use_mmap is not None or model_size == 0 or host_free == 0:
        return False
    if predicted == 0 or available == 0 or predicted > available * 80 // 100:
        return False
    return host_free < model_size + loaded_mmap + mmap_host_pressure_headroom(host_total)


# --- applied to a plan ----------------------------------------------------------------------------


def _env_uint(env: dict, key: str) -> int:
    """envconfig.Uint / Uint64: an unparsable value is Ollama's default (0 for these)."""
    v = env.get(key)
    try:
        return max(int(str(v).strip()), 0) if v is not None else 0
    except ValueError:
        return 0


def _gib(b: int) -> str:
    return f"{b / GiB:.2f} GiB"


def _ollama_gpus(gpus) -> list[OllamaGpu]:
    # Ollama's discovery sees the memory other processes hold, not the user's policy reserve
    return [OllamaGpu(free=g.capacity_bytes - g.tenants_bytes, total=g.capacity_bytes) for g in gpus]


def _completion(meta) -> bool:
    # A GGUF with `<arch>.pooling_type` is an embedding model: no completion capability.
    return meta.hp("pooling_type") is None


def before_solve(plan: Plan, meta, choice):
    """Ollama's decisions that the memory plan depends on: context, parallel, GPUs, flash
    attention and batch. Restricts `plan.gpus` to the GPUs Ollama will start llama-server with,
    records each decision in `plan.engine_choices`, and returns the choice Ollama will run."""
    from dataclasses import replace

    s, env = plan.dep.settings, plan.dep.env
    ch = plan.engine_choices
    train = int(meta.hp("context_length", 0) or 0)
    completion = _completion(meta)

    # context (server/routes.go Serve; llm/server.go NewLlamaServer)
    ctx = choice.ctx
    if ctx == 0 and train:  # vramc's "the trained context", which it writes as num_ctx
        ctx = train
    if s.ctx is None:
        env_ctx = _env_uint(env, "OLLAMA_CONTEXT_LENGTH")
        total = sum(g.capacity_bytes for g in plan.gpus)
        if env_ctx:
            ctx, why = env_ctx, f"OLLAMA_CONTEXT_LENGTH={env_ctx} (envconfig.ContextLength)"
        else:
            ctx = default_context(total, len(plan.gpus), _env_uint(env, "OLLAMA_GPU_OVERHEAD"))
            why = (
                f"Ollama's default context for {_gib(total)} of VRAM (server/routes.go Serve: 4096, "
                "32768 from 23 GiB, 262144 from 47 GiB)"
            )
        capped = effective_context(ctx, train)
        if capped != ctx:
            why += f", capped at the model's trained {train} (llm/server.go NewLlamaServer)"
        ctx = capped
        retry = next_lower_auto_num_ctx(ctx)
        if not env_ctx and retry:
            why += (
                "; pinned as num_ctx, so Ollama's retry of an automatic context after an out-of-"
                f"memory load (at {retry}, server/sched.go reduceAutoNumCtxForLoadOOM) never happens"
            )
        ch["ctx"] = EngineChoice(
            ctx, why, "server/routes.go Serve, llm/server.go NewLlamaServer", f"PARAMETER num_ctx {ctx}"
        )
    elif isinstance(ctx, int) and train and ctx > train:
        ch["ctx"] = EngineChoice(
            train,
            f"num_ctx {ctx} is capped at the model's trained {train} (llm/server.go NewLlamaServer)",
            "llm/server.go NewLlamaServer",
            f"PARAMETER num_ctx {train}",
        )
        ctx = train
    if isinstance(ctx, int) and plan.dep.model.obj.mmproj and ctx < 2048:
        ch["ctx"] = EngineChoice(
            2048,
            f"num_ctx {ctx} is raised to 2048 for a model with vision (server/sched.go getRunner)",
            "server/sched.go getRunner",
            "PARAMETER num_ctx 2048",
        )
        ctx = 2048

    # parallel (server/sched.go load)
    parallel = num_parallel(meta.architecture, choice.parallel, completion)
    if parallel != choice.parallel:
        why = (
            f"Ollama runs {meta.architecture} models with one sequence"
            if completion
            else "Ollama runs embedding models with one sequence"
        )
        ch["parallel"] = EngineChoice(
            parallel, f"{why} whatever OLLAMA_NUM_PARALLEL says (server/sched.go load)", "server/sched.go load"
        )

    # GPUs (server/sched.go selectLlamaServerPlacement)
    # Ollama passes neither the deployment's split mode nor a tensor split (VR400): llama-server
    # runs its default layer split by free memory unless main_gpu makes it `none` (below)
    split_mode, main_gpu = "layer", choice.main_gpu
    ogpus = _ollama_gpus(plan.gpus)
    eff_ctx = ctx * parallel if isinstance(ctx, int) else (train or 4096) * parallel
    size = model_file_size(meta)
    predicted = predict_server_vram(size, meta, eff_ctx)
    if len(plan.gpus) > 1 and s.main_gpu is not None and 0 <= s.main_gpu < len(plan.gpus):
        kept = plan.gpus[s.main_gpu]
        ch["gpus"] = EngineChoice(
            [kept.gpu],
            f"main_gpu {s.main_gpu}: Ollama starts llama-server with only that GPU visible "
            "and --split-mode none --main-gpu 0 (server/sched.go bestExplicitMainGPU, "
            "llm/llama_server.go appendMainGPUArgs); the deployment's other GPUs are not used",
            "server/sched.go selectLlamaServerPlacement",
            "main_gpu 0, CUDA_VISIBLE_DEVICES",
        )
        plan.margins = [plan.margins[s.main_gpu]]
        plan.gpus = [replace(kept, id="CUDA0")]
        ogpus = [ogpus[s.main_gpu]]
        split_mode, main_gpu = "none", 0
        ch["split_mode"] = EngineChoice(
            "none",
            "one GPU given by main_gpu: Ollama passes --split-mode none (llm/llama_server.go appendMainGPUArgs)",
            "llm/llama_server.go appendMainGPUArgs",
            "main_gpu 0",
        )
    elif len(plan.gpus) > 1:
        alone = best_single_gpu_fit(ogpus, predicted)
        if alone is not None:
            why = (
                f"OLLAMA_SCHED_SPREAD=1 is written: without it Ollama would load the model on "
                f"{plan.gpus[alone].id} alone, whose free memory holds its prediction of "
                f"{_gib(predicted)} within 80% (server/sched.go bestSingleGPUFit)"
            )
        else:
            why = (
                f"no single GPU holds Ollama's prediction of {_gib(predicted)} within 80% of its "
                "free memory, so Ollama uses them all (server/sched.go bestGPUGroupByAvailableMemory); "
                "OLLAMA_SCHED_SPREAD=1 is written all the same"
            )
        ch["gpus"] = EngineChoice(
            [g.gpu for g in plan.gpus], why, "server/sched.go selectLlamaServerPlacement", "OLLAMA_SCHED_SPREAD=1"
        )

    # flash attention (llm/llama_server.go LlamaServerFlashAttention)
    fa = flash_attention(choice.flash_attn, [g.name for g in plan.gpus])
    if fa != choice.flash_attn:
        ch["flash_attn"] = EngineChoice(
            fa,
            "a GPU without flash attention (compute capability below "
            "6.0): Ollama passes --flash-attn off (ml/device.go "
            "FlashAttentionSupported)",
            "llm/llama_server.go LlamaServerFlashAttention",
        )

    # batch (server/sched.go automaticGenerationBatch; llm/llama_server.go appendBatchArgs)
    batch = choice.batch
    if s.batch is None and plan.gpus is not None:
        batch, why = auto_batch(meta, ogpus, eff_ctx, fa, completion, ctx, parallel)
        ch["batch"] = EngineChoice(
            batch,
            why,
            "server/sched.go automaticGenerationBatch"
            if completion
            else "llm/llama_server.go DefaultEmbeddingNumBatchForContext",
            f"PARAMETER num_batch {batch}",
        )
    elif not completion:
        batch = min(batch, eff_ctx)  # embeddingBatchSize
    ch["ubatch"] = EngineChoice(
        batch,
        f"Ollama passes -b {batch} -ub {batch}: the micro-batch is always "
        "num_batch (llm/llama_server.go appendBatchArgs)",
        "llm/llama_server.go appendBatchArgs",
        f"PARAMETER num_batch {batch}",
    )
    return replace(
        choice,
        ctx=ctx,
        parallel=parallel,
        split_mode=split_mode,
        tensor_split=None,
        main_gpu=main_gpu,
        flash_attn=fa,
        batch=batch,
        ubatch=batch,
    )


def auto_batch(meta, ogpus: list[OllamaGpu], eff_ctx: int, fa: str, completion: bool, ctx, parallel: int):
    """The num_batch Ollama picks when none is set, and why."""
    if not completion:  # server/routes.go shouldApplyEmbeddingBatchDefault
        n = min(2048, ctx if isinstance(ctx, int) else 2048, eff_ctx)
        return n, f"an embedding model: num_batch min(2048, num_ctx) = {n}"
    size = model_file_size(meta)
    predicted = predict_server_vram(size, meta, eff_ctx)
    available = available_for_placement(ogpus)
    cuda = [min(g.free, g.total) for g in ogpus if g.library == "CUDA"]
    batch = automatic_generation_batch(eff_ctx, predicted, available, fa == "off", cuda)
    what = f"num_batch unset: Ollama's automatic batch for an effective context of {eff_ctx}"
    if isinstance(ctx, int) and parallel > 1:
        what += f" (num_ctx {ctx} x {parallel})"
    if fa == "off" and cuda:
        why = f"{what} with flash attention off on CUDA: {batch}"
    else:
        first = generation_batch_for_context(eff_ctx)
        why = f"{what}: {first}"
        if batch != first:
            why += (
                f", stepped down to {batch} because Ollama's prediction of {_gib(predicted)} "
                f"leaves too little of {_gib(available)} free (60%/75%/80% thresholds)"
            )
        elif available:
            why += f" (Ollama's prediction {_gib(predicted)} of {_gib(available)} free)"
    return batch, why


def rebatch(plan: Plan, meta, choice) -> int | None:
    """After the solver chose the context: the batch Ollama picks for it, when it differs."""
    if plan.dep.settings.batch is not None or not isinstance(choice.ctx, int):
        return None
    ogpus = _ollama_gpus(plan.gpus)
    eff_ctx = choice.ctx * choice.parallel
    batch, why = auto_batch(meta, ogpus, eff_ctx, choice.flash_attn, _completion(meta), choice.ctx, choice.parallel)
    old = plan.engine_choices.get("batch")
    plan.engine_choices["batch"] = EngineChoice(batch, why, old.source if old else "", f"PARAMETER num_batch {batch}")
    plan.engine_choices["ubatch"] = EngineChoice(
        batch,
        f"Ollama passes -b {batch} -ub {batch}: the micro-batch is always num_batch "
        "(llm/llama_server.go appendBatchArgs)",
        "llm/llama_server.go appendBatchArgs",
        f"PARAMETER num_batch {batch}",
    )
    return batch if batch != choice.batch else None


def after_solve(plan: Plan, meta) -> None:
    """Ollama's decisions that follow from the resolved plan: fit, mmap, the projector and the
    pre-load check; recorded, they change no memory figure."""
    p, s = plan.params, plan.dep.settings
    ch = plan.engine_choices
    n_layers = meta.n_layer + 1
    ngl = n_layers if p.n_gpu_layers < 0 else min(p.n_gpu_layers, n_layers)
    ogpus = _ollama_gpus(plan.gpus)
    mmproj = plan.dep.model.obj.mmproj_size if plan.dep.model.obj.mmproj else 0
    target = "1024 MiB" + (" plus the projector and 1 GiB" if mmproj else "")
    ch["fit"] = EngineChoice(
        "off",
        f"llama-server's own fit does not run: vramc writes num_gpu {ngl} (-ngl, which makes fit "
        "abort: llama.cpp common/fit.cpp) and LLAMA_ARG_FIT=off, which applies because Ollama puts no "
        f"--fit argument on llama-server's command line (llm/llama_server.go startLlamaServer); left "
        f"on, it would keep {target} free per GPU and lower the GPU layers",
        "llm/llama_server.go startLlamaServer, extraEnvsForStart",
        f"PARAMETER num_gpu {ngl}, LLAMA_ARG_FIT=off",
    )

    use_mmap = {"none": False, "mmap": True}.get(s.load_mode or "")  # as parameters() writes it
    reason = disable_mmap_reason(use_mmap, ngl if plan.gpus else 0, len(plan.gpus))
    host_total = getattr(plan.dep.hardware.obj, "host_ram", None) or 0
    eff_ctx = p.n_ctx
    size = model_file_size(meta)
    predicted = predict_server_vram(size, meta, eff_ctx)
    available = available_for_placement(ogpus)
    if use_mmap is False:
        ch["mmap"] = EngineChoice(
            False,
            "use_mmap false (load_mode none): --load-mode none",
            "llm/llama_server.go appendLoadModeArgs",
            "PARAMETER use_mmap false",
        )
    elif use_mmap:
        ch["mmap"] = EngineChoice(
            True,
            "use_mmap true (load_mode mmap): Ollama keeps mmap on, without its own checks "
            "(no GPU layers, host memory pressure) that turn it off when use_mmap is unset",
            "server/sched.go disableMmapDefaultReason, disableMmapForHostPressure",
            "PARAMETER use_mmap true",
        )
    elif reason == "cpu":
        ch["mmap"] = EngineChoice(
            False,
            "no GPU layers: Ollama turns mmap off and passes --load-mode "
            'none (server/sched.go disableMmapDefaultReason "cpu")',
            "server/sched.go disableMmapDefaultReason",
        )
    elif host_total and disable_mmap_for_host_pressure(None, size, host_total, host_total, predicted, available):
        ch["mmap"] = EngineChoice(
            False,
            f"host memory pressure: {_gib(host_total)} of RAM is less than the "
            f"model file ({_gib(size)}) plus max(8 GB, 10% of RAM), so Ollama turns "
            "mmap off (server/sched.go disableMmapForHostPressure; it compares the free "
            "memory at load time, which vramc takes as all of host_ram)",
            "server/sched.go disableMmapForHostPressure",
        )
    else:
        ch["mmap"] = EngineChoice(
            True,
            "mmap stays on (Linux, discrete GPUs, "
            + (
                "no host memory pressure at host_ram)"
                if host_total
                else "host_ram not given, so host memory pressure is not checked)"
            ),
            "server/sched.go applyLlamaServerMmapDefaults",
        )

    if plan.dep.model.obj.mmproj and plan.gpus:
        free = [min(g.free, g.total) for g in ogpus]
        if ngl < n_layers:
            why = f"num_gpu {ngl} < {n_layers} layers (partial offload)"
        elif any(f < (mmproj or 0) + MMPROJ_HEADROOM for f in free):
            why = "a GPU has less free memory than the projector plus 1 GiB"
        else:
            why = ""
        if why:
            ch["mmproj_offload"] = EngineChoice(
                False,
                f"{why}: Ollama passes --no-mmproj-offload and "
                "the projector runs on the CPU (llm/llama_server.go "
                "shouldDisableMMProjOffload); the plan still counts it "
                "on the first GPU",
                "llm/llama_server.go shouldDisableMMProjOffload",
            )

    if plan.gpus:
        for_load = predicted + generation_batch_surcharge(p.n_batch)
        ch["coresident"] = EngineChoice(
            preload_fits(for_load, available),
            f"Ollama's prediction with the batch surcharge, {_gib(for_load)}, against 80% of "
            f"{_gib(available)} free: "
            + (
                "it may load next to other resident models"
                if preload_fits(for_load, available)
                else "it evicts every other resident model first"
            ),
            "server/sched.go load (pre-flight check)",
        )
