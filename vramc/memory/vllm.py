"""What `vllm serve` (vLLM 0.33.0) does with GPU memory at start, per GPU of its tensor-parallel
group, and the errors it stops with.

Start-up order in vLLM, which this module follows:
1. EngineArgs.create_engine_config: batch defaults, max_model_len, SchedulerConfig checks.
2. Worker.init_device: snapshot after NCCL/cuBLAS init; requested = ceil(total x utilization);
   the snapshot's free memory must cover it (request_memory).
3. Worker.determine_available_memory: weights, profile run (activation peak), non-torch growth,
   CUDA graph estimate; available KV = requested - all of them.
4. kv_cache_planning.get_kv_cache_configs: blocks, the null block, auto-fit, the
   "To serve at least one request ..." check.
The formulas and their sources are in docs/vllm-model.md.
"""

from __future__ import annotations

import itertools
import math

from vramc.load import schema
from vramc.memory import vllm_arch as arch
from vramc.memory.usage import DeviceUse, GpuBudget, HostUse, MemoryEstimate
from vramc.units import GiB

VLLM_VERSION = "0.33.0"
DOCS_URL = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"

# Rule codes (registered as lint rules by the lead; documented in docs/vllm-model.md).
START_CHECK = "VR330"  # free memory at start < total x gpu_memory_utilization
MODEL_LEN_TOO_LONG = "VR331"  # one request at max_model_len needs more KV than is available
NO_KV_MEMORY = "VR332"  # nothing left for KV blocks (or auto-fit cannot fit one token)
SCHEDULER_INVALID = "VR333"  # SchedulerConfig.verify_max_model_len
MODEL_LEN_EXCEEDS_DERIVED = "VR334"  # max_model_len above what config.json allows
COLOCATED_OVERSUBSCRIBED = "VR335"  # instances on one GPU whose fractions add up past 1
COLOCATED_START_FAILS = "VR336"  # a later instance fails its start check given the start order
PARALLEL_INVALID = "VR337"  # heads not divisible by TP, or fewer GPUs than TP


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


def default_utilization(version: str = VLLM_VERSION) -> float:
    # CacheConfig.gpu_memory_utilization: 0.92 in 0.33.0; 0.9 in the releases llm-d measured.
    return 0.92 if _version(version) >= (0, 21) else 0.9


def cudagraphs_in_budget(version: str = VLLM_VERSION) -> bool:
    # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS: "the default as of v0.21.0" (gpu_worker.py log).
    return _version(version) >= (0, 21)


def gib(n: float) -> str:
    """vLLM's format_gib: round to two decimals, printed as Python prints a float."""
    return f"{round(n / GiB, 2)}"


def start_check_message(device: int, free: int, total: int, util: float, requested: int) -> str:
    # vllm/v1/worker/utils.py request_memory
    return (
        f"Free memory on device cuda:{device} ({gib(free)}/{gib(total)} GiB) on startup is less "
        f"than desired GPU memory utilization ({util}, {gib(requested)} GiB). Decrease GPU "
        "memory utilization or reduce GPU memory used by other processes."
    )


def estimate_vllm(
    model: schema.Model, gpus: list[GpuBudget], settings: schema.Settings, *, version: str = VLLM_VERSION
) -> MemoryEstimate:
    cfg = model.config
    if cfg is None:
        raise ValueError("the vLLM memory model needs the model's config (config.json)")
    errors: list[tuple[str, str]] = []
    notes: list[str] = []
    # `auto` values are vramc's to resolve (vramc.plan.vllm_fit) before this is called; one that
    # reaches here is read as vLLM's default
    tp = _concrete(settings.tensor_parallel_size) or 1
    _check_parallel(cfg, tp, len(gpus), errors)
    ranks = gpus[:tp]
    if not ranks:
        raise ValueError("estimate_vllm needs at least one GPU")

    # 1. engine config: EngineArgs._set_default_max_num_seqs_and_batched_tokens_args
    derived = arch.derived_max_model_len(cfg)
    auto_len = settings.max_model_len == "auto"
    max_model_len = derived if settings.max_model_len in (None, "auto") else settings.max_model_len
    if not auto_len and settings.max_model_len is not None and settings.max_model_len > derived:
        errors.append((MODEL_LEN_EXCEEDS_DERIVED, _exceeds_derived(max_model_len, derived)))
    tokens_default, seqs_default = arch.batch_defaults(ranks[0].capacity_bytes, ranks[0].name, tp)
    seqs_set = _concrete(settings.max_num_seqs)
    max_num_seqs = seqs_set or seqs_default
    tokens = settings.max_num_batched_tokens
    if tokens is None:  # chunked prefill is on for generative models, so no max_model_len floor
        tokens = min(max_num_seqs * max_model_len, tokens_default)
    if seqs_set is None:
        max_num_seqs = min(max_num_seqs, tokens)
    _check_scheduler(tokens, max_num_seqs, max_model_len, errors, notes)

    # 2.-3. per rank: requested, start check, non-KV memory
    util = _concrete(settings.gpu_memory_utilization) or default_utilization(version)
    dbytes = arch.dtype_bytes(settings.dtype)
    kv_dtype = settings.kv_cache_dtype or "auto"
    spec = arch.kv_spec(cfg, tp, 1 if kv_dtype.startswith("fp8") else dbytes, settings.block_size)
    weights = arch.weights_per_gpu(model, tp, dbytes)
    offload = min(weights, int((settings.cpu_offload_gb or 0) * GiB))
    act = arch.activation_peak(cfg, tp, dbytes, tokens, max_num_seqs)
    graphs, n_graphs = (0, 0) if settings.enforce_eager else arch.cudagraph_estimate(cfg, dbytes, max_num_seqs, tokens)
    in_budget = cudagraphs_in_budget(version)
    non_torch = arch.non_torch(tp)
    non_kv = weights - offload + act["peak"] + non_torch + (graphs if in_budget else 0)

    requested = [math.ceil(g.capacity_bytes * util) for g in ranks]
    for i, (g, req) in enumerate(zip(ranks, requested)):
        if g.free_at_start_bytes < req:
            errors.append((START_CHECK, start_check_message(i, g.free_at_start_bytes, g.capacity_bytes, util, req)))
    # CacheConfig.kv_cache_memory_bytes: Worker.determine_available_memory returns it as is (after
    # a profile run) instead of requested - non-KV; request_memory's start check still runs
    kv_fixed = settings.kv_cache_memory_bytes
    available = [kv_fixed if kv_fixed else req - non_kv for req in requested]

    # 4. KV planning: the smallest rank sets num_blocks for all (get_kv_cache_configs)
    per_block = spec.bytes_per_block
    check = min(available) - per_block  # BlockPool's null block is held back
    fit = _fit_model_len(spec, check, derived if auto_len else max_model_len, tokens)
    # the longest max_model_len whose one request fits (estimate_max_model_len over 1..derived)
    fit_derived = fit if auto_len else _fit_model_len(spec, check, derived, tokens)
    if auto_len and fit <= 0:  # auto-fit runs before the capacity check and raises first
        errors.append(
            (
                NO_KV_MEMORY,
                "Cannot auto-fit max_model_len: not enough GPU memory "
                "available to serve even a single token. Try increasing "
                "`gpu_memory_utilization`.",
            )
        )
    elif auto_len:
        max_model_len = fit
        notes.append(f"max_model_len auto-fit: {max_model_len} (derived {derived})")
    elif check <= 0:
        errors.append((NO_KV_MEMORY, _no_kv_message()))
    elif (need := spec.request_bytes(max_model_len, tokens)) > check:
        errors.append((MODEL_LEN_TOO_LONG, _too_long_message(max_model_len, need, check, fit)))
    num_blocks = max(0, min(available) // per_block)
    kv_bytes = num_blocks * per_block
    blocks_per_req = spec.blocks_per_request(max_model_len, tokens)
    concurrency = num_blocks / blocks_per_req
    if not in_budget and graphs:
        notes.append(
            "CUDA graphs are captured after the KV cache is allocated and are not "
            "counted in gpu_memory_utilization in this vLLM version"
        )

    devices = []
    for g, req, avail in zip(ranks, requested, available):
        compute = act["peak"] + non_torch + graphs
        devices.append(
            DeviceUse(
                id=g.id,
                name=g.name,
                gpu=g.gpu,
                capacity_bytes=g.capacity_bytes,
                reserve_bytes=g.reserve_bytes,
                tenants_bytes=g.tenants_bytes,
                weights_bytes=weights - offload,
                kv_bytes=kv_bytes,
                compute_bytes=compute,
                detail={
                    "requested": req,
                    "free_at_start": g.free_at_start_bytes,
                    "weights": weights - offload,
                    "cpu_offload": offload,
                    "activation": act["peak"],
                    "activation_forward": act["forward"],
                    "activation_sampler": act["sampler"],
                    "non_torch": non_torch,
                    "cudagraph": graphs,
                    "cudagraphs": n_graphs,
                    "cudagraph_in_budget": in_budget,
                    "kv_available": avail,
                    "kv_page_bytes": spec.page_bytes,
                    "kv_bytes_per_block": per_block,
                    "kv_blocks": num_blocks,
                    "kv_tokens": num_blocks * spec.block_size,
                    "kv_capacity_tokens": int(concurrency * max_model_len),
                    "max_concurrency": round(concurrency, 2),
                    "blocks_per_request": blocks_per_req,
                    "max_model_len_fit": fit_derived,
                    "derived_max_model_len": derived,
                    # what the process holds: its budget, or weights + activation + KV when
                    # kv_cache_memory_bytes replaces the budget
                    "held": req if not kv_fixed else non_kv + kv_bytes + (0 if in_budget else graphs),
                    "start_headroom": g.free_at_start_bytes - req,
                    # Held once started and idle: profile_run's forward activations are released by
                    # empty_cache; the sampler warm-up after graph capture stays cached.
                    "idle": weights - offload + non_torch + graphs + kv_bytes + act["sampler"],
                },
            )
        )
    resolved = {
        "vllm_version": version,
        "gpu_memory_utilization": util,
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": tokens,
        "kv_cache_dtype": kv_dtype,
        "block_size": spec.block_size,
        "tensor_parallel_size": tp,
        "dtype": settings.dtype or "auto",
        "enforce_eager": bool(settings.enforce_eager),
        "cpu_offload_gb": settings.cpu_offload_gb or 0,
    }
    if kv_fixed:  # only when set: plan JSON of existing profiles stays as it was
        resolved["kv_cache_memory_bytes"] = kv_fixed
    return MemoryEstimate(
        devices=devices, host=HostUse(weights_bytes=offload * tp), notes=notes, errors=errors, resolved=resolved
    )


def _concrete(value):
    return None if value == "auto" else value


def _check_parallel(cfg: schema.HFConfig, tp: int, n_gpus: int, errors: list) -> None:
    # ModelConfig.verify_with_parallel_config and ParallelConfig (vllm/config/parallel.py)
    if cfg.num_attention_heads % tp:
        errors.append(
            (
                PARALLEL_INVALID,
                f"Total number of attention heads "
                f"({cfg.num_attention_heads}) must be divisible by tensor parallel size "
                f"({tp}).",
            )
        )
    if n_gpus < tp:
        errors.append(
            (
                PARALLEL_INVALID,
                f"World size ({tp}) is larger than the number of "
                f"available GPUs ({n_gpus}) in this node. If this is intentional and you "
                # vLLM's words, its line breaks and bullets made one line: a diagnostic
                # is one line (report._one_line would print them as a literal \n)
                "are using: ray, set '--distributed-executor-backend ray'; "
                "multiprocessing, set '--nnodes' appropriately.",
            )
        )


def _check_scheduler(tokens: int, seqs: int, max_model_len: int, errors: list, notes: list) -> None:
    # SchedulerConfig.verify_max_model_len (chunked prefill on, so no max_model_len floor)
    if tokens < seqs:
        errors.append(
            (
                SCHEDULER_INVALID,
                f"max_num_batched_tokens ({tokens}) must be greater than or equal to max_num_seqs ({seqs}).",
            )
        )
    if tokens > seqs * max_model_len:
        notes.append(
            f"max_num_batched_tokens ({tokens}) exceeds max_num_seqs * max_model_len "
            f"({seqs * max_model_len}). This may lead to unexpected behavior."
        )


def _exceeds_derived(max_model_len: int, derived: int) -> str:
    # ModelConfig: _get_and_verify_max_len (model_max_length of the HF config is not modelled)
    return (
        f"User-specified max_model_len ({max_model_len}) is greater than the derived "
        f"max_model_len (max_position_embeddings={derived} or model_max_length=None in "
        "model's config.json). To allow overriding this maximum, set the env var "
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
    )


def _no_kv_message() -> str:
    return (
        "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
        "when initializing the engine (this flag also controls CPU memory reservation on the "
        "CPU backend, despite its name). "
        f"See {DOCS_URL} for more details."
    )


def _too_long_message(max_model_len: int, need: int, available: int, fit: int) -> str:
    estimated = f"Based on the available memory, the estimated maximum model length is {fit}. " if fit > 0 else ""
    return (
        f"To serve at least one request with the model's max seq len ({max_model_len}), "
        f"({gib(need)} GiB KV cache is needed, which is larger than the available KV cache "
        f"memory ({gib(available)} GiB). {estimated}Try increasing `gpu_memory_utilization` "
        "(which also controls CPU memory on the CPU backend) or decreasing `max_model_len` "
        f"when initializing the engine. See {DOCS_URL} for more details."
    )


def _fit_model_len(spec: arch.KVSpec, available: int, upper: int, tokens: int) -> int:
    """_estimate_max_model_len_from_groups: binary search over [1, upper]; 0 if 1 token fails."""

    def fits(n: int) -> bool:
        return spec.request_bytes(n, tokens) <= available

    if not fits(1):
        return 0
    lo, hi, best = 1, upper, 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def check_colocated(instances: list[tuple[str, MemoryEstimate]], gpus: list[GpuBudget]) -> list[tuple[str, str, str]]:
    """Several vLLM processes on the same GPU(s), listed in start order.

    gpu_memory_utilization is a fraction of the GPU's *total* memory per process, so the
    fractions of everything sharing a GPU must add up to at most 1 less the CUDA contexts and
    other tenants (VR335). And every process must pass its own start check against what the
    earlier ones already hold (VR336); when the given order fails, the message names an order
    that passes, if one exists.
    """
    by_gpu = {g.gpu: g for g in gpus}
    findings: list[tuple[str, str, str]] = []
    for gpu, budget in by_gpu.items():
        here = [
            (name, d, est.resolved["gpu_memory_utilization"])
            for name, est in instances
            for d in est.devices
            if d.gpu == gpu
        ]
        if len(here) < 2:
            continue
        findings += _oversubscribed(budget, here)
        findings += _start_order(budget, here)
    return findings


def _oversubscribed(budget: GpuBudget, here: list) -> list[tuple[str, str, str]]:
    # kv_cache_memory_bytes can make a process hold more than its utilization share
    wanted = sum(max(d.detail["requested"], d.detail.get("held", 0)) + budget.overhead_bytes for _, d, _ in here)
    room = budget.capacity_bytes - budget.tenants_bytes
    if wanted <= room:
        return []
    fractions = " + ".join(f"{u:g}" for _, _, u in here)
    total = sum(u for _, _, u in here)
    msg = (
        f"{budget.name}: gpu_memory_utilization {fractions} = {total:.2f} of its total "
        f"{gib(budget.capacity_bytes)} GiB; with {len(here)} CUDA contexts "
        f"({gib(len(here) * budget.overhead_bytes)} GiB) and other tenants "
        f"({gib(budget.tenants_bytes)} GiB) the instances want {gib(wanted)} GiB of "
        f"{gib(room)} GiB. Each fraction is of the whole GPU, per instance: lower them so "
        f"they add up to at most {(room - len(here) * budget.overhead_bytes) / budget.capacity_bytes:.2f}."
    )
    return [(name, COLOCATED_OVERSUBSCRIBED, msg) for name, _, _ in here]


def _start_failures(budget: GpuBudget, order: list) -> list[tuple[str, str]]:
    held = budget.tenants_bytes
    failures = []
    for name, d, util in order:
        free = budget.capacity_bytes - held - budget.overhead_bytes
        if free < d.detail["requested"]:
            failures.append(
                (
                    name,
                    start_check_message(
                        int(d.id[4:]) if d.id.startswith("CUDA") else 0,
                        free,
                        budget.capacity_bytes,
                        util,
                        d.detail["requested"],
                    ),
                )
            )
        held += d.detail["idle"] + budget.overhead_bytes
    return failures


def _start_order(budget: GpuBudget, here: list) -> list[tuple[str, str, str]]:
    first = here[0][0]
    # The first instance's own start check is already in its estimate (VR330).
    failures = [(n, m) for n, m in _start_failures(budget, here) if n != first]
    if not failures:
        return []
    working = next((p for p in itertools.permutations(here) if not _start_failures(budget, list(p))), None)
    if working is None:
        hint = "no start order lets every instance pass its start check"
    else:
        hint = "starting them in the order " + ", ".join(n for n, _, _ in working) + " passes"
    after = {n: [m for m, _, _ in here[:i]] for i, (n, _, _) in enumerate(here)}
    return [
        (name, COLOCATED_START_FAILS, f"{msg} (started after {', '.join(after[name])} on {budget.name}; {hint})")
        for name, msg in failures
    ]
