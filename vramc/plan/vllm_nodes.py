"""vLLM across machines (issue 17): the nodes of one `vllm serve`, node rank by node rank.

Node rank 0 is this machine (the hardware profile's `gpus:`, where `vllm serve` answers the API);
the deployment's `hosts:` are node ranks 1..N in their order, each with the GPUs it names (all of
its GPUs by default). vLLM starts tensor_parallel_size x pipeline_parallel_size workers over them:
with its mp backend world_size / nnodes on every node (`--nnodes N --node-rank R --master-addr
HEAD`, the other nodes `--headless`), with Ray wherever the cluster's placement group puts them
(`ray start --head` here, `ray start --address=HEAD:6379` there, `vllm serve` here only).
vramc.memory.vllm.layout decides which GPU each rank gets; this module builds the GPUs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vramc.memory.usage import GpuBudget

if TYPE_CHECKING:
    from vramc.load.profiles import Deployment, HostSpan

RAY_PORT = 6379  # `ray start --head`'s default GCS port
MASTER_PORT = 29501  # ParallelConfig.master_port's default (vllm/config/parallel.py)


def spans(dep: Deployment) -> list[HostSpan]:
    """The hosts a vLLM deployment spans, node ranks 1..N ([] for one machine)."""
    from vramc.engines import ENGINES
    from vramc.load.profiles import host_spans

    body = dep.doc.obj
    if not getattr(body, "hosts", None) or ENGINES[body.engine].family != "vllm":
        return []
    return host_spans(body, dep.hardware.obj)


def host_names(dep: Deployment) -> tuple[str, ...]:
    """The hosts' names, node ranks 1..N."""
    return tuple(s.name for s in spans(dep))


def device_id(host: str, launch: int) -> str:
    """A host's GPU as the plan names it: the host, then CUDA<i> in that host's launch order."""
    return f"{host}:CUDA{launch}"


def node_budgets(dep: Deployment, default_overhead: Callable[[str], int], display_reserve: int) -> list[GpuBudget]:
    """The GPUs of every host `dep` spans, host by host, each in index order (its
    CUDA_VISIBLE_DEVICES there). `default_overhead(gpu name)` and `display_reserve` are the
    planner's, for a GPU whose profile says neither."""
    hw = dep.hardware.obj
    out: list[GpuBudget] = []
    for span in spans(dep):
        h = span.host
        order = sorted(span.gpus, key=lambda i: (h.gpus[i].index if h.gpus[i].index is not None else i, i))
        for launch, i in enumerate(order):
            g = h.gpus[i]
            reserve = g.reserve if g.reserve is not None else (display_reserve if g.display else 0)
            overhead = next((x for x in (g.overhead, h.overhead, hw.overhead) if x is not None), None)
            out.append(
                GpuBudget(
                    id=device_id(h.name, launch),
                    name=g.name,
                    gpu=i,
                    capacity_bytes=g.vram,
                    tenants_bytes=sum(t.vram for t in g.tenants),
                    reserve_bytes=reserve,
                    overhead_bytes=overhead if overhead is not None else default_overhead(g.name),
                    host=h.name,
                )
            )
    return out


def visible_devices(dep: Deployment, host: str, gpus: list[GpuBudget]) -> str:
    """CUDA_VISIBLE_DEVICES on `host` for the GPUs of it in `gpus`: UUIDs when every one has one,
    else the indices (the host's `index`, or its position), as Plan.cuda_visible_devices does here."""
    h = next(x for x in dep.hardware.obj.hosts if x.name == host)
    chosen = [h.gpus[g.gpu] for g in gpus if g.host == host]
    if chosen and all(g.uuid for g in chosen):
        return ",".join(g.uuid or "" for g in chosen)
    return ",".join(
        str(h.gpus[g.gpu].index if h.gpus[g.gpu].index is not None else g.gpu) for g in gpus if g.host == host
    )


def layer_partition(dep: Deployment) -> str | None:
    """VLLM_PP_LAYER_PARTITION from the deployment's `env:` (as the process reads it), or None."""
    value = dep.env.get("VLLM_PP_LAYER_PARTITION")
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
