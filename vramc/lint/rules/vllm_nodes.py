"""vLLM across GPUs and machines (issue 17): pipeline stages (VR370, VR371), the nodes of a
multi-node `vllm serve` (VR372-VR375) and the settings that start it (VR415-VR419).
vramc.memory.vllm raises VR370-VR373 as vLLM would stop; vramc.plan.vllm_nodes builds the nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule
from vramc.units import GiB

if TYPE_CHECKING:
    from vramc.plan.planner import Plan


def _vllm(plan: Plan) -> bool:
    return plan.engine == "vllm"


def _spans(plan: Plan):
    from vramc.plan.vllm_nodes import spans

    return spans(plan.dep)


def _setting(plan: Plan, key: str) -> tuple:
    """Where a finding about `key` points: the setting when the profile sets it, else settings."""
    if key in plan.dep.settings.model_fields_set:
        return ("settings", key)
    raw = plan.dep.doc.raw
    return ("settings",) if isinstance(raw, dict) and "settings" in raw else ("name",)


@rule("VR370", "vllm-pp-stage-empty", Severity.ERROR, "estimate")
def _vr370():
    """A pipeline stage gets no decoder layer: more stages than the model has layers.

    vLLM splits the layers with get_pp_indices (vllm/distributed/utils.py): `layers // pp` each,
    the remainder one more each to the stages before the last. With more stages than layers some
    stages get none: they hold no KV cache, and the KV planning, which gives every worker the
    smallest worker's number of blocks, has nothing to size them by. vLLM does not check this
    itself; it fails later. A VLLM_PP_LAYER_PARTITION with a 0 does the same.

    Bad:
        model:
          hf: example/two-layers
          config: {num_hidden_layers: 2, hidden_size: 512, num_attention_heads: 8, vocab_size: 32000,
                   max_position_embeddings: 4096}
          weights_size: 60MB
        settings: {pipeline_parallel_size: 3, max_model_len: 4096}

    Good:
        model:
          hf: example/two-layers
          config: {num_hidden_layers: 2, hidden_size: 512, num_attention_heads: 8, vocab_size: 32000,
                   max_position_embeddings: 4096}
          weights_size: 60MB
        settings: {pipeline_parallel_size: 2, max_model_len: 4096}
    """


@rule("VR371", "vllm-pp-layer-partition", Severity.ERROR, "estimate")
def _vr371():
    """VLLM_PP_LAYER_PARTITION is not a split of the model's layers into its pipeline stages.

    vLLM reads the variable as comma-separated layer counts, one per stage, that add up to the
    model's hidden layers (get_pp_indices) and stops otherwise, with the message vramc repeats.
    vramc plans the default split instead.

    Bad:
        settings: {pipeline_parallel_size: 2, max_model_len: 8192}    # a 32-layer model
        env: {VLLM_PP_LAYER_PARTITION: "16,8"}

    Good:
        settings: {pipeline_parallel_size: 2, max_model_len: 8192}
        env: {VLLM_PP_LAYER_PARTITION: "17,15"}
    """


@rule("VR372", "vllm-world-size-nodes", Severity.ERROR, "estimate")
def _vr372():
    """The world size (tensor x pipeline parallel) does not fit the machines the deployment spans.

    With the mp backend (vLLM's default, `--nnodes`) every node starts world_size / nnodes workers,
    so the world size must be a multiple of the number of nodes (MultiprocExecutor: "global
    world_size (W) must be divisible by nnodes_within_dp (N)"). With Ray the cluster must have a GPU
    for every worker, or vLLM's placement group never becomes ready.

    Bad:
        hardware: two-nodes                  # 2 GPUs here, 2 on node2
        hosts: [node2]
        settings: {distributed_executor_backend: ray, tensor_parallel_size: 2, pipeline_parallel_size: 3}

    Good:
        hardware: two-nodes
        hosts: [node2]
        settings: {distributed_executor_backend: ray, tensor_parallel_size: 2, pipeline_parallel_size: 2}
    """


@rule("VR373", "vllm-node-gpus", Severity.ERROR, "estimate")
def _vr373():
    """A node has fewer GPUs than vLLM's mp backend starts workers on it.

    `vllm serve --nnodes N` starts world_size / N workers on every node, on cuda:0, cuda:1, ...:
    every node needs that many GPUs (the same count on each), or the worker of a missing device
    fails at start. Give each host the same number of GPUs, or use Ray
    (`distributed_executor_backend: ray`), which places workers wherever GPUs are.

    Bad:
        hardware: two-nodes                  # 2 GPUs here, 2 on node2
        hosts: [{host: node2, gpus: [0]}]
        settings: {tensor_parallel_size: 2, pipeline_parallel_size: 2}

    Good:
        hardware: two-nodes
        hosts: [node2]
        settings: {tensor_parallel_size: 2, pipeline_parallel_size: 2}
    """


@rule("VR374", "vllm-tp-across-nodes", Severity.WARNING)
def tp_across_nodes(plan: Plan):
    """A tensor-parallel group spans machines: every layer all-reduces over the network.

    vLLM numbers ranks with tensor parallelism fastest, and its mp backend puts consecutive ranks
    on one node. A tensor-parallel group larger than a node's workers is split across machines,
    and its all-reduce (twice per layer) then runs over Ethernet or InfiniBand instead of
    NVLink/PCIe. vLLM's own advice (docs/serving/parallelism_scaling.md): tensor_parallel_size =
    GPUs per node, pipeline_parallel_size = nodes.

    Bad:
        hardware: two-nodes                  # 2 GPUs here, 2 on node2
        hosts: [node2]
        settings: {tensor_parallel_size: 4}

    Good:
        hardware: two-nodes
        hosts: [node2]
        settings: {tensor_parallel_size: 2, pipeline_parallel_size: 2}
    """
    est = plan.estimate
    if not _vllm(plan) or est is None or not est.devices:
        return
    tp = est.resolved.get("tensor_parallel_size", 1)
    groups: dict[int, set] = {}
    for d in est.devices:
        if "rank" in d.detail:
            groups.setdefault(d.detail["rank"] // tp, set()).add(d.host)
    split = sorted(g for g, hosts in groups.items() if len(hosts) > 1)
    if not split:
        return
    per_node = len([d for d in est.devices if d.host is None])
    # the advice is the GPUs each node has (the fewest), not the workers vLLM now starts there
    # (with TP across two nodes of two GPUs that is 1, and TP 1 would leave a GPU idle on each)
    from vramc.memory.vllm import nodes_of
    from vramc.plan.planner import gpu_budgets
    from vramc.plan.vllm_nodes import host_names

    nodes = [g for _, g in nodes_of(gpu_budgets(plan.dep), host_names(plan.dep))]
    fewest = min((len(g) for g in nodes if g), default=1)
    heads = plan.dep.model.obj.config.num_attention_heads
    advised = max(t for t in range(1, fewest + 1) if heads % t == 0)
    stages = len(nodes) if est.resolved.get("distributed_executor_backend") != "ray" else sum(1 for g in nodes if g)
    yield Finding(
        f"the tensor-parallel group{'s' if len(split) > 1 else ''} of pipeline stage"
        f"{'s' if len(split) > 1 else ''} {', '.join(map(str, split))} span{'' if len(split) > 1 else 's'} "
        f"machines (tensor_parallel_size {tp}, {per_node} worker{'s' if per_node != 1 else ''} per node): "
        "each layer's all-reduce crosses the network",
        _setting(plan, "tensor_parallel_size"),
        f"set tensor_parallel_size to the GPUs per node ({advised}) and pipeline_parallel_size to the number "
        f"of nodes ({stages}), as vLLM advises (tensor_parallel_size: auto without pipeline_parallel_size "
        "chooses them)"
        if stages <= plan.dep.model.obj.config.num_hidden_layers
        else f"pipeline parallel needs a layer per node: span at most {plan.dep.model.obj.config.num_hidden_layers} "
        f"machines, with tensor_parallel_size the GPUs per node ({advised})",
    )


@rule("VR375", "vllm-kv-set-by-one-rank", Severity.INFO)
def kv_set_by_one_rank(plan: Plan):
    """One rank's memory decides every rank's KV cache, and the others leave much of theirs unused.

    vLLM sizes each worker's KV cache from its own free budget, then gives every worker the
    smallest worker's number of blocks (kv_cache_planning.get_kv_cache_configs): a smaller GPU,
    another tenant, or a pipeline stage with more layers, the embeddings or lm_head on one rank
    limits them all. The others keep the difference idle inside their `gpu_memory_utilization`
    share. Said when that is more than 10% of a rank's KV budget and at least 1 GiB.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 3060, vram: 12GiB}]}
        settings: {pipeline_parallel_size: 2, gpu_memory_utilization: 0.8, max_model_len: 8192, max_num_seqs: 8}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 4090, vram: 24GiB}]}
        settings: {pipeline_parallel_size: 2, gpu_memory_utilization: 0.8, max_model_len: 8192, max_num_seqs: 8}
    """
    est = plan.estimate
    if not _vllm(plan) or est is None or est.errors or len(est.devices) < 2:
        return
    if est.resolved.get("kv_cache_memory_bytes"):
        return
    budgets = [(d, d.detail["kv_available"], d.kv_bytes) for d in est.devices]
    worst = max(budgets, key=lambda x: x[1] - x[2])
    d, avail, used = worst
    idle = avail - used
    if idle < GiB or idle < avail * 0.1:
        return
    limiting = min(est.devices, key=lambda x: x.detail["kv_available"] // max(x.detail["kv_bytes_per_block"], 1))
    where = f" on {limiting.host}" if limiting.host else ""
    yield Finding(
        f"{limiting.id}{where} ({limiting.name}) decides the KV cache of every rank: "
        f"{d.detail['kv_blocks']:,} blocks; {d.id} leaves {idle / GiB:.2f} GiB of its "
        f"{avail / GiB:.2f} GiB KV budget unused",
        _setting(plan, "gpu_memory_utilization"),
        "give every rank the same free memory (same GPUs, no other tenants), move layers to the "
        "ranks with room (VLLM_PP_LAYER_PARTITION), or lower gpu_memory_utilization on the others "
        "(it is one value for all ranks)",
        data={"idle_bytes": idle, "limiting": limiting.id},
    )


@rule("VR415", "vllm-host-rpc-fields", Severity.WARNING)
def host_rpc_fields(plan: Plan):
    """A vLLM deployment's host entry sets llama.cpp RPC fields (`port`, `cache`, `bind`).

    Those say how llama.cpp's rpc-server runs on that host; a vLLM node runs `vllm serve` (or a
    Ray worker) instead and reads none of them. The node's ports are vLLM's (`master_port`, Ray's
    6379), chosen in `settings:`.

    Bad:
        engine: vllm
        hardware: two-nodes
        hosts:
          - {host: node2, port: 50052}
        settings: {pipeline_parallel_size: 2}

    Good:
        engine: vllm
        hardware: two-nodes
        hosts:
          - {host: node2, gpus: [0, 1]}
        settings: {pipeline_parallel_size: 2}
    """
    if not _vllm(plan):
        return
    raw = plan.dep.doc.raw
    entries = raw.get("hosts") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        return
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        for key in ("port", "cache", "bind"):
            if key in entry:
                yield Finding(
                    f"`{key}` is a llama.cpp rpc-server field: vLLM's node {entry.get('host')} does not use it",
                    ("hosts", i, key),
                    "remove it (a vLLM node's ports are settings.master_port, or Ray's 6379)",
                )


@rule("VR416", "vllm-head-address", Severity.ERROR)
def head_address(plan: Plan):
    """A vLLM deployment across machines, but the hardware profile does not say how they reach this one.

    Node rank 0 (this machine) is where the others connect: `--master-addr` of the mp backend, or
    the Ray head's address. The hardware profile's `address:` gives it.

    Bad:
        hardware:
          network: {trusted: true, interface: eth0}
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: node2, address: 10.0.0.2, gpus: [{name: RTX 4090, vram: 24GiB}]}]
        hosts: [node2]
        settings: {pipeline_parallel_size: 2}

    Good:
        hardware:
          address: 10.0.0.1
          network: {trusted: true, interface: eth0}
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: node2, address: 10.0.0.2, gpus: [{name: RTX 4090, vram: 24GiB}]}]
        hosts: [node2]
        settings: {pipeline_parallel_size: 2}
    """
    if not _vllm(plan) or not _spans(plan) or plan.dep.hardware.obj.address:
        return
    yield Finding(
        "the other nodes connect to this machine (--master-addr, or the Ray head), but its hardware "
        "profile has no `address:`",
        ("hosts",),
        "add `address:` (how the hosts reach this machine, e.g. 192.168.1.10) to the hardware profile",
    )


@rule("VR417", "vllm-distributed-setting-unused", Severity.WARNING)
def distributed_setting_unused(plan: Plan):
    """A distributed setting that vLLM does not use where this deployment runs.

    `master_port` is the mp backend's rendezvous port across machines (`--master-port`); on one
    machine, or with Ray, vLLM ignores it. `pipeline_parallel_size: 1` with
    `distributed_executor_backend` on a single GPU starts no workers at all.

    Bad:
        settings: {distributed_executor_backend: ray, master_port: 29600}

    Good:
        settings: {distributed_executor_backend: ray, tensor_parallel_size: 2}
    """
    if not _vllm(plan):
        return
    s = plan.dep.settings
    multi = bool(_spans(plan))
    if s.master_port is not None and (not multi or s.distributed_executor_backend == "ray"):
        why = "with Ray (the head's port is 6379)" if multi else "on one machine"
        yield Finding(
            f"master_port {s.master_port} is not used {why}: only the mp backend across machines reads it",
            ("settings", "master_port"),
            "remove it",
        )
    est = plan.estimate
    world = (s.tensor_parallel_size if isinstance(s.tensor_parallel_size, int) else 1) * (s.pipeline_parallel_size or 1)
    if s.distributed_executor_backend is not None and world == 1 and not multi and est is not None:
        yield Finding(
            f"distributed_executor_backend {s.distributed_executor_backend} has no workers to start: "
            "tensor and pipeline parallel sizes are 1 on one GPU",
            ("settings", "distributed_executor_backend"),
            "remove it, or raise tensor_parallel_size or pipeline_parallel_size",
        )


@rule("VR418", "vllm-untrusted-network", Severity.WARNING)
def untrusted_network(plan: Plan):
    """A vLLM deployment across machines on a network not declared trusted.

    vLLM's workers exchange pickled Python objects (torch.distributed's TCP store, ZeroMQ message
    queues, Ray's protocol) without authentication or encryption: whoever reaches those ports can
    run code on every node (docs/serving/parallelism_scaling.md, "Network security"). Declare the
    private network in the hardware profile, and keep the ports off any other.

    Bad:
        hardware:
          address: 10.0.0.1
          network: {interface: eth0}
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: node2, address: 10.0.0.2, gpus: [{name: RTX 4090, vram: 24GiB}]}]
        hosts: [node2]
        settings: {pipeline_parallel_size: 2}

    Good:
        hardware:
          address: 10.0.0.1
          network: {trusted: true, interface: eth0}
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: node2, address: 10.0.0.2, gpus: [{name: RTX 4090, vram: 24GiB}]}]
        hosts: [node2]
        settings: {pipeline_parallel_size: 2}
    """
    if not _vllm(plan) or not _spans(plan):
        return
    net = plan.dep.hardware.obj.network
    if net is not None and net.trusted:
        return
    yield Finding(
        "vLLM's nodes talk over unauthenticated, unencrypted channels (torch.distributed, ZeroMQ, Ray) "
        "that run what they receive; the hardware profile does not declare the network trusted",
        ("hosts",),
        "run the nodes on a private network and say so in the hardware profile (network: {trusted: true})",
    )


@rule("VR419", "vllm-network-interface", Severity.INFO)
def network_interface(plan: Plan):
    """A vLLM deployment across machines does not name the network interface NCCL and Gloo use.

    Without NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME each library picks an interface itself, and
    on a machine with docker0, a VPN or a second NIC it may pick one the other nodes cannot reach:
    vLLM then hangs at start. `network: {interface: eth0}` in the hardware profile makes the build
    set both on every node. Gloo takes exact names only: NCCL's `=eth0` is written to
    GLOO_SOCKET_IFNAME as `eth0`, and NCCL's exclusion `^docker0,lo` has no Gloo form (said here too).

    Bad:
        hardware:
          address: 10.0.0.1
          network: {trusted: true}
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: node2, address: 10.0.0.2, gpus: [{name: RTX 4090, vram: 24GiB}]}]
        hosts: [node2]
        settings: {pipeline_parallel_size: 2}

    Good:
        hardware:
          address: 10.0.0.1
          network: {trusted: true, interface: eth0}
          gpus: [{name: RTX 4090, vram: 24GiB}]
          hosts: [{name: node2, address: 10.0.0.2, gpus: [{name: RTX 4090, vram: 24GiB}]}]
        hosts: [node2]
        settings: {pipeline_parallel_size: 2}
    """
    if not _vllm(plan) or not _spans(plan):
        return
    net = plan.dep.hardware.obj.network
    if net is not None and net.interface:
        if net.interface.startswith("^"):  # NCCL's exclusion syntax; Gloo reads names only
            yield Finding(
                f"network.interface {net.interface!r} excludes interfaces (NCCL's '^'), which GLOO_SOCKET_IFNAME "
                "cannot say: the build sets NCCL_SOCKET_IFNAME only, and Gloo chooses its interface itself",
                ("network", "interface"),
                "name the interface the nodes reach each other by (e.g. interface: eth0)",
                target="hardware",
            )
        return
    yield Finding(
        "NCCL and Gloo choose the network interface themselves on each node, possibly one the others cannot reach",
        ("hosts",),
        "name it in the hardware profile (network: {interface: eth0}): the build then sets "
        "NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME",
    )
