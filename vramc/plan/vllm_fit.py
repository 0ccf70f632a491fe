"""`auto` settings of a vLLM deployment, chosen so that vLLM's own arithmetic (vramc.memory.vllm)
starts and leaves the margin free.

vLLM takes `gpu_memory_utilization x total` on every GPU whatever the model needs and fills it
with KV cache, so what vramc chooses for it is in vLLM's terms:

* `gpu_memory_utilization: auto`: the share of each GPU that leaves the margin free, after other
  tenants, the reserve, the process's own CUDA context and (with several deployments on one GPU)
  what the others on it take; floored to 0.01, the smallest over the tensor-parallel group.
* `max_num_seqs: auto`: the number of requests at `max_model_len` that the KV cache holds
  (vLLM's "Maximum concurrency for L tokens per request"), at most vLLM's default.
* `tensor_parallel_size: auto`: the smallest size that divides the attention heads, has a GPU
  per rank, and starts. Across machines (`hosts:`, issue 17) vLLM's advice instead: TP = the
  GPUs of a node and, with `pipeline_parallel_size` unset, PP = the nodes (then PP is chosen too);
  failing that, the largest TP that starts, TP groups that stay on one machine first.
* `kv_cache_dtype: auto`: vLLM's `auto` (the model dtype) when that starts, else `fp8` where
  the GPU has fp8 (compute capability 8.9 and newer).
* `max_model_len: auto` is vLLM's own (-1): the longest length whose one request fits, which
  vramc.memory.vllm computes as vLLM does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from vramc.plan.refusals import shown_code
from vramc.units import GiB

VLLM_AUTO_KEYS = ("gpu_memory_utilization", "max_model_len", "max_num_seqs", "tensor_parallel_size", "kv_cache_dtype")
UTIL_STEP = 0.01  # a share written as two decimals (what vLLM users write)
_SEQ_ROUNDS = 4  # max_num_seqs changes the activation peak a little: a few rounds settle it

# GPUs with fp8 (compute capability >= 8.9: Ada, Hopper, Blackwell), by the names vramc reads
_FP8 = re.compile(
    r"\b(h100|h200|h800|h20|gh200|b100|b200|gb200|b300|gb300|l4|l40s?|l20|"
    r"rtx\s*(40\d\d|50\d\d)|rtx\s*\d000\s*ada|rtx\s*pro\s*\d000|blackwell|ada)\b"
)


def fp8_kv_supported(gpu_name: str) -> bool:
    return bool(_FP8.search(gpu_name.lower()))


@dataclass
class VllmFit:
    settings: object  # schema.Settings with every `auto` but max_model_len's replaced
    estimate: object
    gpus: list
    auto: tuple[str, ...] = ()
    log: list[str] = field(default_factory=list)


def asked(settings) -> tuple[str, ...]:
    return tuple(k for k in VLLM_AUTO_KEYS if getattr(settings, k) == "auto")


def concurrency(est) -> float:
    """get_max_concurrency_for_kv_cache_config: num_blocks / blocks per request at max_model_len."""
    d = est.devices[0].detail
    return d["kv_blocks"] / d["blocks_per_request"] if d.get("blocks_per_request") else 0.0


def floor_share(x: float) -> float:
    return max(0.0, math.floor(round(x / UTIL_STEP, 6)) * UTIL_STEP)


def solo_share(gpus, margins, held: dict[int, int] | None = None) -> float:
    """The largest share of every GPU that leaves `margins` free, after tenants, reserve, the
    process's CUDA context and what others hold on it (`held`: bytes per hardware GPU index)."""
    held = held or {}
    shares = [
        (
            g.capacity_bytes
            - g.tenants_bytes
            - g.reserve_bytes
            - g.overhead_bytes
            - m
            - (held.get(g.gpu, 0) if g.host is None else 0)  # others on this machine only
        )
        / g.capacity_bytes
        for g, m in zip(gpus, margins)
    ]
    return round(min(1.0, floor_share(min(shares))), 2) if shares else 0.0


def solve(dep, margins, budgets, *, util: float | None = None, held=None) -> VllmFit:
    """Resolve `dep.settings`' vLLM `auto` values. `budgets(tp)` gives the GPUs as the engine
    sees them with that tensor-parallel size (the NCCL overhead depends on it), `budgets(tp, pp)`
    with a pipeline-parallel size the solver chose; `util` fixes an
    `auto` utilization that a joint fit decided; `held` is what co-located instances take."""
    from vramc.memory.vllm import estimate_vllm, layout
    from vramc.plan.vllm_nodes import host_names, layer_partition

    s = dep.settings
    model = dep.model.obj
    autos = asked(s)
    log: list[str] = []
    cfg = model.config
    n = len(budgets(1))
    pp = s.pipeline_parallel_size or 1
    split, hosts = layer_partition(dep), host_names(dep)
    # (tensor_parallel_size, pipeline_parallel_size vramc chose, or None: the settings' own)
    sizes: list[tuple[int, int | None]]
    if s.tensor_parallel_size != "auto":
        sizes = [(s.tensor_parallel_size or 1, None)]
    elif hosts:
        sizes = _across_machines(dep, budgets, hosts)
    else:  # each pipeline stage takes tensor_parallel_size GPUs
        sizes = [(t, None) for t in range(1, max(1, n // pp) + 1) if cfg.num_attention_heads % t == 0] or [(1, None)]
    best = None  # (length reached, settings, estimate, gpus)
    for tp, chose_pp in sizes:
        gpus = budgets(tp) if chose_pp is None else budgets(tp, chose_pp)
        pp = chose_pp or s.pipeline_parallel_size or 1
        autos = asked(s) + (("pipeline_parallel_size",) if chose_pp else ())
        # the GPUs the TP x PP ranks run on (across machines not always the first ones)
        position = {id(g): i for i, g in enumerate(gpus)}
        ranks = list(layout(gpus, tp, pp, s.distributed_executor_backend, hosts).ranks)
        if any(g.host is not None for g in gpus):  # the plan keeps only its ranks' GPUs (and margins)
            rank_margins = [dep.margin.of(g.capacity_bytes) for g in ranks]
        else:
            rank_margins = [margins[position[id(g)]] for g in ranks]
        dtypes = [s.kv_cache_dtype]
        if s.kv_cache_dtype == "auto" and ranks and all(fp8_kv_supported(g.name) for g in ranks):
            dtypes = ["auto", "fp8"]
        for kv in dtypes:
            update: dict = {"tensor_parallel_size": tp, "kv_cache_dtype": kv}
            if chose_pp:
                update["pipeline_parallel_size"] = chose_pp
            if s.gpu_memory_utilization == "auto":
                share = util if util is not None else solo_share(ranks, rank_margins, held)
                if share <= 0:
                    log.append(
                        "no share of the GPUs leaves the margin free: other processes, the "
                        "reserve, the CUDA context and the margin take it all"
                    )
                update["gpu_memory_utilization"] = share if share > 0 else UTIL_STEP
            trial = s.model_copy(update=update)
            est = (
                _seqs(model, gpus, trial, log, split, hosts)
                if s.max_num_seqs == "auto"
                else estimate_vllm(model, gpus, trial, layer_partition=split, hosts=hosts)
            )
            trial = (
                trial.model_copy(update={"max_num_seqs": est.resolved["max_num_seqs"]})
                if s.max_num_seqs == "auto"
                else trial
            )
            ok = not est.errors
            log.append(
                f"tensor_parallel_size {tp}"
                + (f" x pipeline_parallel_size {chose_pp}" if chose_pp else "")
                + f", kv_cache_dtype {kv or 'auto'}"
                + (
                    f", gpu_memory_utilization {trial.gpu_memory_utilization}"
                    if "gpu_memory_utilization" in autos
                    else ""
                )
                + (
                    f": starts, {concurrency(est):.2f} requests at max_model_len {est.resolved['max_model_len']}"
                    if ok
                    else ": " + ", ".join(sorted({shown_code(kind) for kind, _ in est.errors}))
                )
            )
            if s.max_model_len == "auto":  # pinned to the length vLLM's auto-fit arrives at
                trial = trial.model_copy(update={"max_model_len": est.resolved["max_model_len"]})
            # with max_model_len: auto any size starts (at a shorter length): what counts is
            # reaching the model's full length; failing that, the longest
            reach = (est.resolved["max_model_len"] if s.max_model_len == "auto" else 1) if ok else 0
            if chose_pp and ok:
                est.notes.append(
                    f"tensor_parallel_size {tp} x pipeline_parallel_size {chose_pp} chosen by vramc: across "
                    "machines vLLM advises tensor parallel within a node (GPUs per node) and pipeline "
                    "parallel across the nodes"
                )
            if best is None or reach > best[0]:
                best = (reach, trial, est, gpus, autos)
            if ok and (
                s.max_model_len != "auto"
                or est.resolved["max_model_len"] >= est.devices[0].detail["derived_max_model_len"]
            ):
                return VllmFit(trial, est, gpus, autos, log)
    _, trial, est, gpus, autos = best
    return VllmFit(trial, est, gpus, autos, log)


def _across_machines(dep, budgets, hosts) -> list[tuple[int, int | None]]:
    """`tensor_parallel_size: auto` of a deployment across machines: the sizes to try, in order.
    vLLM's advice for several nodes is TP = GPUs per node and PP = nodes, so that no TP group
    (an all-reduce every layer) crosses the network and no GPU stays idle: with
    `pipeline_parallel_size` unset, TP up to the fewest GPUs of a node x PP = nodes first (Ray:
    the nodes with GPUs; where the model has a layer per node); then the settings' own PP. Each
    largest first (the hosts are this deployment's), those whose TP groups stay on one machine
    and that give every node a rank before the others."""
    from vramc.memory.vllm import layout, nodes_of

    s = dep.settings
    cfg = dep.model.obj.config
    heads = cfg.num_attention_heads
    gpus = budgets(1)
    nodes = nodes_of(gpus, hosts)
    counts = [len(g) for _, g in nodes if g]
    # a stage per node: Ray places ranks on the nodes with GPUs only; mp starts workers on every
    # node (one without GPUs cannot start, and says so: VR373)
    stages = len(counts) if s.distributed_executor_backend == "ray" else len(nodes)
    out: list[tuple[int, int | None]] = []
    if s.pipeline_parallel_size is None and counts and stages <= cfg.num_hidden_layers:
        out += [(t, stages) for t in range(min(counts), 0, -1) if heads % t == 0]
    pp = s.pipeline_parallel_size or 1
    own = [(t, None) for t in range(max(1, len(gpus) // pp), 0, -1) if heads % t == 0] or [(1, None)]

    def apart(tp: int) -> bool:  # a TP group across machines, or a node without a rank
        ranks = layout(gpus, tp, pp, s.distributed_executor_backend, hosts).ranks
        crosses = any(len({g.host for g in ranks[i : i + tp]}) > 1 for i in range(0, len(ranks), tp))
        return crosses or {g.host for g in ranks} != {h for h, g in nodes if g}

    return out + sorted(own, key=lambda c: apart(c[0]))  # stable: largest first within each


def _seqs(model, gpus, settings, log, split=None, hosts=()):
    """max_num_seqs = the requests at max_model_len the KV cache holds (at most vLLM's default):
    fewer sequences shrink the sampler's activation peak, so the cache grows; a few rounds."""
    from vramc.memory.vllm import estimate_vllm

    est = estimate_vllm(
        model, gpus, settings.model_copy(update={"max_num_seqs": None}), layer_partition=split, hosts=hosts
    )
    default = est.resolved["max_num_seqs"]
    best = None
    seqs = max(1, min(default, int(concurrency(est))))
    for _ in range(_SEQ_ROUNDS):
        trial = estimate_vllm(
            model, gpus, settings.model_copy(update={"max_num_seqs": seqs}), layer_partition=split, hosts=hosts
        )
        if concurrency(trial) < seqs and best is not None:
            break
        best = trial
        more = max(1, min(default, int(concurrency(trial))))
        if more <= seqs:
            break
        seqs = more
    log.append(
        f"max_num_seqs {best.resolved['max_num_seqs']}: the KV cache holds "
        f"{concurrency(best):.2f} requests of {best.resolved['max_model_len']} tokens "
        f"(vLLM's default {default})"
    )
    return best


def joint_shares(members, margin_of, adjustable: set[int]) -> dict[int, float]:
    """`gpu_memory_utilization: auto` of several vLLM deployments sharing GPUs (one machine, in
    start order): what the fixed ones ask for (their share, or what kv_cache_memory_bytes makes
    them hold) and one CUDA context each come off first; the rest, less the largest margin, goes to
    the `auto` ones so that each holds the same number of requests at its max_model_len (each
    first gets its weights, activations and graphs). Bytes are those of each one's own estimate;
    the later ones' start checks then pass, since an idle instance holds less than it asked for.
    `adjustable`: id() of the plans whose share this decides. Returns id(plan) -> share."""
    by_gpu: dict[int, list] = {}
    for p in members:
        for d in p.estimate.devices:
            if getattr(d, "host", None) is None:  # a deployments file is one machine: its GPUs are here
                by_gpu.setdefault(d.gpu, []).append((p, d))
    shares: dict[int, float] = {}
    for gpu, here in by_gpu.items():
        autos = [
            (p, d)
            for p, d in here
            if id(p) in adjustable
            and p.requested is not None
            and getattr(p.requested, "gpu_memory_utilization", None) == "auto"
        ]
        if len(here) < 2 or not autos:
            continue
        budget = next(g for p, _ in here for g in p.gpus if g.gpu == gpu and g.host is None)
        room = (
            budget.capacity_bytes
            - budget.tenants_bytes
            - budget.reserve_bytes
            - max(margin_of(p, gpu) for p, _ in here)
            - len(here) * budget.overhead_bytes
        )
        for p, d in here:
            if (p, d) not in autos:
                room -= max(d.detail["requested"], d.detail.get("held", 0))
        fixed_need = sum(d.detail["requested"] - d.detail["kv_available"] for _, d in autos)
        per_request = sum(d.detail["blocks_per_request"] * d.detail["kv_bytes_per_block"] for _, d in autos)
        times = max(0.0, (room - fixed_need) / per_request) if per_request else 0.0
        for p, d in autos:
            need = (
                d.detail["requested"]
                - d.detail["kv_available"]
                + (times * d.detail["blocks_per_request"] + 1) * d.detail["kv_bytes_per_block"]
            )
            share = floor_share(need / budget.capacity_bytes)
            key = id(p)
            shares[key] = round(min(shares.get(key, 1.0), share), 2)
    return shares


def describe(est) -> str:
    """vLLM's own start-up figures, as it logs them, for the plan's text."""
    d = est.devices[0].detail
    r = est.resolved
    return (
        f"KV cache: {d['kv_blocks']:,} blocks x {r['block_size']} = {d['kv_tokens']:,} tokens "
        f"({d['kv_bytes_per_block'] * d['kv_blocks'] / GiB:.2f} GiB); maximum concurrency "
        f"{concurrency(est):.2f}x at max_model_len {r['max_model_len']:,} (vLLM logs "
        f'"GPU KV cache size: {d["kv_capacity_tokens"]:,} tokens"); longest max_model_len that '
        f"fits: {d['max_model_len_fit']:,}"
    )
