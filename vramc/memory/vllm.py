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
from dataclasses import dataclass

from vramc.load import schema
from vramc.memory import vllm_arch as arch
from vramc.memory.usage import DeviceUse, GpuBudget, HostUse, MemoryEstimate
from vramc.units import GiB

VLLM_VERSION = "0.33.0"
DOCS_URL = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"

# The checks vLLM stops at, as Refusal kinds: a memory model names no lint rule (the table in
# vramc.plan.refusals gives each kind its rule; the rules are documented in docs/vllm-model.md).
START_CHECK = "vllm-start-check"  # free memory at start < total x gpu_memory_utilization
MODEL_LEN_TOO_LONG = "vllm-kv-short-of-max-model-len"  # one request at max_model_len needs more KV than is available
NO_KV_MEMORY = "vllm-no-kv-memory"  # nothing left for KV blocks (or auto-fit cannot fit one token)
SCHEDULER_INVALID = "vllm-scheduler-invalid"  # SchedulerConfig.verify_max_model_len
MODEL_LEN_EXCEEDS_DERIVED = "vllm-max-model-len-over-derived"  # max_model_len above what config.json allows
COLOCATED_OVERSUBSCRIBED = "vllm-colocated-oversubscribed"  # instances on one GPU whose fractions add up past 1
COLOCATED_START_FAILS = "vllm-colocated-start-fails"  # a later instance fails its start check given the start order
PARALLEL_INVALID = "vllm-parallel-invalid"  # heads not divisible by TP, or fewer GPUs than TP x PP on one node
PP_STAGE_EMPTY = "vllm-pp-stage-empty"  # a pipeline stage without layers (PP above the layer count)
PP_PARTITION_INVALID = "vllm-pp-partition-invalid"  # VLLM_PP_LAYER_PARTITION that get_pp_indices refuses
WORLD_SIZE_INVALID = "vllm-world-size-invalid"  # across machines: world size vs nodes (mp) or the cluster's GPUs (Ray)
NODE_GPUS_INVALID = "vllm-node-gpus-invalid"  # mp across machines: a node with fewer GPUs than world_size / nnodes


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


@dataclass(frozen=True)
class Layout:
    """Where the TP x PP workers of one `vllm serve` run: vLLM numbers ranks with TP fastest
    (vllm/distributed/parallel_state.py initialize_model_parallel: rank = pp_rank x TP + tp_rank),
    and the mp backend starts world_size / nnodes of them on each node, node-major
    (v1/executor/multiproc_executor.py: global_start_rank = local_world_size x node_rank)."""

    tp: int
    pp: int
    backend: str  # "mp" or "ray" (vLLM's default on CUDA is mp, with --nnodes across machines)
    nodes: tuple[tuple[str | None, int], ...]  # (host, GPUs given) in node-rank order; None: this machine
    ranks: tuple[GpuBudget, ...]  # the GPU of each rank that has one, in rank order
    local_world_size: int  # workers per node (mp across nodes); the world size on one node

    @property
    def world(self) -> int:
        return self.tp * self.pp

    @property
    def nnodes(self) -> int:
        return len(self.nodes)


def nodes_of(gpus: list[GpuBudget], hosts: tuple[str, ...] = ()) -> list[tuple[str | None, list[GpuBudget]]]:
    """The GPUs grouped by machine: this machine first, then each of `hosts` (node ranks 1..N,
    a host without GPUs included), or without `hosts` in the order the GPUs come."""
    if hosts:
        return [(None, [g for g in gpus if g.host is None])] + [(h, [g for g in gpus if g.host == h]) for h in hosts]
    out: list[tuple[str | None, list[GpuBudget]]] = []
    for g in gpus:
        if out and out[-1][0] == g.host:
            out[-1][1].append(g)
        else:
            out.append((g.host, [g]))
    return out or [(None, [])]


def layout(gpus: list[GpuBudget], tp: int, pp: int, backend: str | None, hosts: tuple[str, ...] = ()) -> Layout:
    """The ranks' GPUs: the first world_size of one machine; across machines with mp the first
    world_size / nnodes of each node; with Ray the first world_size of all, this machine's first
    (RayDistributedExecutor sorts workers driver node first)."""
    world = tp * pp
    nodes = nodes_of(gpus, hosts)
    chosen = backend or "mp"
    if len(nodes) == 1:
        ranks = nodes[0][1][:world]
        lws = world
    elif chosen == "mp":
        lws = -(-world // len(nodes))
        ranks = [g for _, node in nodes for g in node[:lws]][:world]
    else:
        lws = world
        ranks = [g for _, node in nodes for g in node][:world]
    return Layout(tp, pp, chosen, tuple((h, len(n)) for h, n in nodes), tuple(ranks), lws)


def node_name(host: str | None) -> str:
    return host or "this machine"


def estimate_vllm(
    model: schema.Model,
    gpus: list[GpuBudget],
    settings: schema.Settings,
    *,
    version: str = VLLM_VERSION,
    layer_partition: str | None = None,
    hosts: tuple[str, ...] = (),
) -> MemoryEstimate:
    """`gpus`: this machine's GPUs in launch order, then (a deployment across machines) each
    host's (GpuBudget.host), node rank by node rank; `hosts`: the hosts' names in node-rank order
    (one without GPUs is a node too). `layer_partition`: VLLM_PP_LAYER_PARTITION from the
    deployment's environment."""
    cfg = model.config
    if cfg is None:
        raise ValueError("the vLLM memory model needs the model's config (config.json)")
    errors: list[tuple[str, str]] = []
    notes: list[str] = []
    # `auto` values are vramc's to resolve (vramc.plan.vllm_fit) before this is called; one that
    # reaches here is read as vLLM's default
    tp = _concrete(settings.tensor_parallel_size) or 1
    pp = settings.pipeline_parallel_size or 1
    lay = layout(gpus, tp, pp, settings.distributed_executor_backend, hosts)
    _check_parallel(cfg, lay, errors, notes)
    partition = _partition(cfg, pp, layer_partition, errors)
    ranks = list(lay.ranks)
    if not ranks:
        raise ValueError("estimate_vllm needs at least one GPU")
    world = len(ranks)

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

    # 2.-3. per rank: requested, start check, non-KV memory; under pipeline parallelism each rank
    # holds its stage's layers only (stage = rank // TP)
    util = _concrete(settings.gpu_memory_utilization) or default_utilization(version)
    dbytes = arch.dtype_bytes(settings.dtype)
    kv_dtype = settings.kv_cache_dtype or "auto"
    kv_bytes_per = 1 if kv_dtype.startswith("fp8") else dbytes
    stage_of = [min(r // tp, pp - 1) for r in range(world)]
    specs = [arch.kv_spec(cfg, tp, kv_bytes_per, settings.block_size, partition[s]) for s in range(pp)]
    weights = arch.stage_weights(model, tp, dbytes, partition)
    acts = [
        arch.activation_peak(cfg, tp, dbytes, tokens, max_num_seqs, first=s == 0, last=s == pp - 1) for s in range(pp)
    ]
    graphs, n_graphs = (0, 0) if settings.enforce_eager else arch.cudagraph_estimate(cfg, dbytes, max_num_seqs, tokens)
    in_budget = cudagraphs_in_budget(version)
    non_torch = arch.non_torch(tp * pp)
    offload = [min(weights[s], int((settings.cpu_offload_gb or 0) * GiB)) for s in stage_of]
    non_kv = [
        weights[s] - off + acts[s]["peak"] + non_torch + (graphs if in_budget else 0)
        for s, off in zip(stage_of, offload)
    ]

    requested = [math.ceil(g.capacity_bytes * util) for g in ranks]
    local = _local_indices(ranks)
    for g, req, i in zip(ranks, requested, local):
        if g.free_at_start_bytes < req:
            msg = start_check_message(i, g.free_at_start_bytes, g.capacity_bytes, util, req)
            errors.append((START_CHECK, msg if g.host is None else f"{msg} (on {g.host})"))
    # CacheConfig.kv_cache_memory_bytes: Worker.determine_available_memory returns it as is (after
    # a profile run) instead of requested - non-KV; request_memory's start check still runs
    kv_fixed = settings.kv_cache_memory_bytes
    available = [kv_fixed if kv_fixed else req - nk for req, nk in zip(requested, non_kv)]

    # 4. KV planning (kv_cache_planning.get_kv_cache_configs): every worker checks its own layers
    # against its own memory, then the smallest worker's num_blocks is every worker's
    per_block = [specs[s].bytes_per_block for s in stage_of]
    checks = [a - b for a, b in zip(available, per_block)]  # BlockPool's null block is held back
    with_layers = [r for r in range(world) if specs[stage_of[r]].layers > 0]
    upper = derived if auto_len else max_model_len
    fits = {r: _fit_model_len(specs[stage_of[r]], checks[r], upper, tokens) for r in with_layers}
    fit = min(fits.values(), default=0)
    # the longest max_model_len whose one request fits (estimate_max_model_len over 1..derived)
    fit_derived = (
        fit
        if auto_len
        else min((_fit_model_len(specs[stage_of[r]], checks[r], derived, tokens) for r in with_layers), default=0)
    )
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
    else:  # _check_enough_kv_cache_memory, worker by worker: vLLM raises at the first that fails
        for r in with_layers:
            spec = specs[stage_of[r]]
            if checks[r] <= 0:
                errors.append((NO_KV_MEMORY, _no_kv_message()))
                break
            if (need := spec.request_bytes(max_model_len, tokens)) > checks[r]:
                errors.append((MODEL_LEN_TOO_LONG, _too_long_message(max_model_len, need, checks[r], fits[r])))
                break
    num_blocks = max(0, min(a // b for a, b in zip(available, per_block) if b > 0)) if with_layers else 0
    blocks_per_req = specs[0].blocks_per_request(max_model_len, tokens)
    concurrency = num_blocks / blocks_per_req
    if not in_budget and graphs:
        notes.append(
            "CUDA graphs are captured after the KV cache is allocated and are not "
            "counted in gpu_memory_utilization in this vLLM version"
        )
    if pp > 1:
        notes.append(_split_note(partition, layer_partition is not None))

    devices = []
    starts = [sum(partition[:s]) for s in range(pp)]
    for r, (g, req, avail, off) in enumerate(zip(ranks, requested, available, offload)):
        s = stage_of[r]
        act, spec = acts[s], specs[s]
        compute = act["peak"] + non_torch + graphs
        kv_bytes = num_blocks * spec.bytes_per_block
        detail = {
            "requested": req,
            "free_at_start": g.free_at_start_bytes,
            "weights": weights[s] - off,
            "cpu_offload": off,
            "activation": act["peak"],
            "activation_forward": act["forward"],
            "activation_sampler": act["sampler"],
            "non_torch": non_torch,
            "cudagraph": graphs,
            "cudagraphs": n_graphs,
            "cudagraph_in_budget": in_budget,
            "kv_available": avail,
            "kv_page_bytes": spec.page_bytes,
            "kv_bytes_per_block": spec.bytes_per_block,
            "kv_blocks": num_blocks,
            "kv_tokens": num_blocks * spec.block_size,
            "kv_capacity_tokens": int(concurrency * max_model_len),
            "max_concurrency": round(concurrency, 2),
            "blocks_per_request": blocks_per_req,
            "max_model_len_fit": fit_derived,
            "derived_max_model_len": derived,
            # what the process holds: its budget, or weights + activation + KV when
            # kv_cache_memory_bytes replaces the budget
            "held": req if not kv_fixed else non_kv[r] + kv_bytes + (0 if in_budget else graphs),
            "start_headroom": g.free_at_start_bytes - req,
            # Held once started and idle: profile_run's forward activations are released by
            # empty_cache; the sampler warm-up after graph capture stays cached.
            "idle": weights[s] - off + non_torch + graphs + kv_bytes + act["sampler"] + act.get("intermediate", 0),
        }
        if pp > 1 or lay.nnodes > 1:  # only then: plan JSON of one-stage deployments stays as it was
            detail.update({"rank": r, "pp_rank": s, "tp_rank": r % tp, "node_rank": _node_rank(lay, g)})
        if pp > 1:
            detail["activation_intermediate"] = act.get("intermediate", 0)
        use = DeviceUse(
            id=g.id,
            name=g.name,
            gpu=g.gpu,
            capacity_bytes=g.capacity_bytes,
            reserve_bytes=g.reserve_bytes,
            tenants_bytes=g.tenants_bytes,
            weights_bytes=weights[s] - off,
            kv_bytes=kv_bytes,
            compute_bytes=compute,
            detail=detail,
        )
        if g.host is not None:
            use.host = g.host
        if pp > 1:  # the stage's decoder layers; the last stage holds the final norm and lm_head
            use.layers = (starts[s], starts[s] + partition[s] - 1) if partition[s] else None
            use.n_layers = partition[s]
            use.output = s == pp - 1
        devices.append(use)
    resolved = {
        "vllm_version": version,
        "gpu_memory_utilization": util,
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": tokens,
        "kv_cache_dtype": kv_dtype,
        "block_size": specs[0].block_size,
        "tensor_parallel_size": tp,
        "dtype": settings.dtype or "auto",
        "enforce_eager": bool(settings.enforce_eager),
        "cpu_offload_gb": settings.cpu_offload_gb or 0,
    }
    if kv_fixed:  # only when set: plan JSON of existing profiles stays as it was
        resolved["kv_cache_memory_bytes"] = kv_fixed
    if pp > 1:
        resolved["pipeline_parallel_size"] = pp
        resolved["pp_layer_partition"] = ",".join(str(n) for n in partition)
    if lay.nnodes > 1 or settings.distributed_executor_backend:
        resolved["distributed_executor_backend"] = lay.backend
    if lay.nnodes > 1:
        resolved["nnodes"] = lay.nnodes
    return MemoryEstimate(
        devices=devices, host=HostUse(weights_bytes=sum(offload)), notes=notes, errors=errors, resolved=resolved
    )


def _local_indices(ranks: list[GpuBudget]) -> list[int]:
    """Each rank's cuda:N on its own machine (what vLLM's messages call the device)."""
    seen: dict[str | None, int] = {}
    out = []
    for g in ranks:
        out.append(seen.get(g.host, 0))
        seen[g.host] = out[-1] + 1
    return out


def _node_rank(lay: Layout, g: GpuBudget) -> int:
    return next(i for i, (h, _) in enumerate(lay.nodes) if h == g.host)


def _split_note(partition: list[int], override: bool) -> str:
    where = "VLLM_PP_LAYER_PARTITION" if override else "get_pp_indices"
    stages = ", ".join(f"stage {s}: {n}" for s, n in enumerate(partition))
    return (
        f"pipeline parallel: {sum(partition)} layers in {len(partition)} stages ({where}): {stages}; "
        "the embeddings are on stage 0, the final norm and lm_head on the last"
    )


def _partition(cfg: schema.HFConfig, pp: int, override: str | None, errors: list) -> list[int]:
    """The layers of each stage (get_pp_indices); an invalid VLLM_PP_LAYER_PARTITION is VR371 and
    the default split is planned instead; a stage without layers is VR370."""
    layers = cfg.num_hidden_layers
    try:
        partition = arch.pp_partition(layers, pp, override)
    except ValueError as e:
        errors.append((PP_PARTITION_INVALID, f"VLLM_PP_LAYER_PARTITION={override}: {e}"))
        partition = arch.pp_partition(layers, pp)
    if any(n < 0 for n in partition):
        errors.append(
            (PP_PARTITION_INVALID, f"VLLM_PP_LAYER_PARTITION={override} gives a stage a negative number of layers")
        )
        partition = arch.pp_partition(layers, pp)
    empty = [s for s, n in enumerate(partition) if n == 0]
    if empty:
        why = (
            f"pipeline_parallel_size ({pp}) is larger than the model's {layers} hidden layers"
            if pp > layers
            else f"VLLM_PP_LAYER_PARTITION={override} gives stages {', '.join(map(str, empty))} no layers"
        )
        errors.append(
            (
                PP_STAGE_EMPTY,
                f"{why}: the split is [{', '.join(map(str, partition))}] (get_pp_indices), so stage "
                f"{empty[0]} holds no decoder layer and no KV cache, and vLLM's KV planning cannot give it blocks",
            )
        )
    return partition


def _concrete(value):
    return None if value == "auto" else value


def _check_parallel(cfg: schema.HFConfig, lay: Layout, errors: list, notes: list) -> None:
    # ModelConfig.verify_with_parallel_config and ParallelConfig (vllm/config/parallel.py)
    tp, world = lay.tp, lay.world
    if cfg.num_attention_heads % tp:
        errors.append(
            (
                PARALLEL_INVALID,
                f"Total number of attention heads "
                f"({cfg.num_attention_heads}) must be divisible by tensor parallel size "
                f"({tp}).",
            )
        )
    if lay.nnodes == 1:
        n_gpus = lay.nodes[0][1]
        if n_gpus < world:
            errors.append(
                (
                    PARALLEL_INVALID,
                    f"World size ({world}) is larger than the number of "
                    f"available GPUs ({n_gpus}) in this node. If this is intentional and you "
                    # vLLM's words, its line breaks and bullets made one line: a diagnostic
                    # is one line (report._one_line would print them as a literal \n)
                    "are using: ray, set '--distributed-executor-backend ray'; "
                    "multiprocessing, set '--nnodes' appropriately.",
                )
            )
        return
    counts = ", ".join(f"{node_name(h)} {n}" for h, n in lay.nodes)
    total = sum(n for _, n in lay.nodes)
    if lay.backend == "ray":
        # ray_utils.initialize_ray_cluster: a placement group of world_size {"GPU": 1} bundles
        if total < world:
            errors.append(
                (
                    WORLD_SIZE_INVALID,
                    f"the Ray cluster has {total} GPUs ({counts}) for world_size {world} "
                    f"(tensor_parallel_size {tp} x pipeline_parallel_size {lay.pp}): vLLM's placement "
                    f"group of {world} GPU bundles cannot be placed, and it waits for GPUs that never come",
                )
            )
        elif total > world:
            notes.append(
                f"Ray places {world} workers on the cluster's {total} GPUs ({counts}): {total - world} "
                f"{'stays' if total - world == 1 else 'stay'} idle"
            )
        return
    # MultiprocExecutor._get_parallel_sizes (an assert) and its local_world_size workers per node
    if world % lay.nnodes:
        errors.append(
            (
                WORLD_SIZE_INVALID,
                f"global world_size ({world}) must be divisible by nnodes_within_dp ({lay.nnodes}). "
                f"(tensor_parallel_size {tp} x pipeline_parallel_size {lay.pp} over {lay.nnodes} nodes)",
            )
        )
        return
    lws = lay.local_world_size
    for h, n in lay.nodes:
        if n < lws:
            errors.append(
                (
                    NODE_GPUS_INVALID,
                    f"{node_name(h)} has {n} GPU{'s' if n != 1 else ''} for vLLM's {lws} workers per node: the mp "
                    f"backend starts world_size / nnodes = {world} / {lay.nnodes} workers on every node "
                    f"(cuda:0..{lws - 1}), and a missing device fails at start (invalid device ordinal)",
                )
            )
        elif n > lws:
            notes.append(f"{node_name(h)} has {n} GPUs; vLLM's mp backend uses {lws} of them (world_size / nnodes)")


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
    # a GPU is (host, index): this machine's (host None) and, for deployments across machines
    # (issue 17), a host's. A host's GPUs are checked for their sum only: each deployment's unit
    # there starts on its own, in no order a deployments file can set
    by_gpu = {(g.host, g.gpu): g for g in gpus}
    findings: list[tuple[str, str, str]] = []
    for (host, gpu), budget in by_gpu.items():
        here = [
            (name, d, est.resolved["gpu_memory_utilization"])
            for name, est in instances
            for d in est.devices
            if d.gpu == gpu and d.host == host
        ]
        if len(here) < 2:
            continue
        findings += _oversubscribed(budget, here)
        if host is None:
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
    where = f"{budget.id} on {budget.host} ({budget.name})" if budget.host is not None else budget.name
    msg = (
        f"{where}: gpu_memory_utilization {fractions} = {total:.2f} of its total "
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
