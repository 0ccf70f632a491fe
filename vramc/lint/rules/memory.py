"""Memory rules (VR30x): does the plan fit each GPU, the host, and the machine as a whole."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule
from vramc.units import fmt_size

if TYPE_CHECKING:
    from vramc.plan.planner import Plan


def _anchor(plan: Plan) -> tuple:
    """Where a whole-deployment finding points: its settings block, or its name."""
    raw = plan.dep.doc.raw
    return ("settings",) if isinstance(raw, dict) and "settings" in raw else ("name",)


def _breakdown(d) -> str:
    parts = [
        ("weights", d.weights_bytes),
        ("KV", d.kv_bytes),
        ("compute", d.compute_bytes),
        ("overhead", d.overhead_bytes),
    ]
    return ", ".join(f"{k} {fmt_size(v)}" for k, v in parts if v)


# What lowers a deployment's GPU memory, in each engine's own settings (hints must name settings
# the engine has: vLLM has no context or GPU layers, Ollama no tensor split).
_SHRINK = {
    "vllm": "lower gpu_memory_utilization (vLLM fills its share of the whole GPU with KV cache; "
    "then lower max_model_len or max_num_seqs if a request no longer fits the smaller cache)",
    "ollama": "lower ctx (num_ctx), parallel (OLLAMA_NUM_PARALLEL) or gpu_layers (num_gpu), or "
    "quantize the KV cache (cache_type_k and cache_type_v: q8_0, OLLAMA_KV_CACHE_TYPE)",
}
_SHRINK_LLAMA = "lower ctx or gpu_layers, or quantize the KV cache (cache_type_k and cache_type_v: q8_0)"


def shrink_hint(engine: str) -> str:
    return _SHRINK.get(engine, _SHRINK_LLAMA)


def _available(d) -> str:
    text = fmt_size(d.capacity_bytes)
    if d.reserve_bytes:
        text += f" - {fmt_size(d.reserve_bytes)} reserve"
    if d.tenants_bytes:
        text += f" - {fmt_size(d.tenants_bytes)} other processes"
    return text


@rule("VR300", "does-not-fit", Severity.ERROR)
def does_not_fit(plan: Plan):
    """The plan needs more memory than a GPU has available: the engine will fail to load (OOM).

    Available means the card's memory minus its `reserve` and what `tenants` (other processes)
    hold. The message breaks the need down into weights, KV cache, compute buffers and the fixed
    per-GPU overhead, and the hint says what would fit (from the same solver as `vramc fit`).

    Bad:
        hardware:
          gpus: [{name: RTX 3060 Ti, vram: 8GiB}]
        model: deepseek-r1-distill-qwen-14b-q4_k_m
        settings: {ctx: 32768, gpu_layers: all}

    Good:
        hardware:
          gpus: [{name: RTX 3060 Ti, vram: 8GiB}]
        model: deepseek-r1-distill-qwen-14b-q4_k_m
        settings: {ctx: 8192, gpu_layers: auto}
    """
    if plan.estimate is None or (plan.engine == "vllm" and plan.estimate.errors):
        return  # vLLM stops before allocating anything: its own error says why
    for d in plan.estimate.devices:
        if d.free_bytes < 0:
            yield Finding(
                f"{d.id} ({d.name}{_of_host(d)}) needs {fmt_size(d.total_bytes)} ({_breakdown(d)}) but has "
                f"{fmt_size(d.available_bytes)} available ({_available(d)}): "
                f"{fmt_size(-d.free_bytes)} over",
                _anchor(plan),
                plan.fit_hint,
                data={"device": d.id, "over_bytes": -d.free_bytes},
            )


def _of_host(d) -> str:
    """Which machine an RPC device is on ('RPC1 (CPU of host cpu-box)'); '' for this machine's."""
    return f" of host {d.host}" if d.host else ""


@rule("VR301", "below-margin", Severity.WARNING)
def below_margin(plan: Plan):
    """The plan fits, but leaves less free memory on a GPU than the margin asks for.

    Memory use grows at run time beyond the planned buffers (the CUDA memory pool, fragmentation,
    another process starting), so a plan that fits with a few MiB to spare crashes under load.
    The margin is `lint.margin` (default 5% of each GPU), or a variant's `margin`.

    Bad:
        hardware: {gpus: [{name: RTX 4080, vram: 16GiB}]}
        model: llama-3.1-8b-instruct-q8_0
        lint: {margin: 10%}
        settings: {ctx: 61440, gpu_layers: all}     # leaves 498 MiB of 16 GiB

    Good:
        hardware: {gpus: [{name: RTX 4080, vram: 16GiB}]}
        model: llama-3.1-8b-instruct-q8_0
        lint: {margin: 10%}
        settings: {ctx: 49152, gpu_layers: all}     # leaves 2.0 GiB
    """
    if plan.estimate is None:
        return
    for i, d in enumerate(plan.estimate.devices):
        if 0 <= d.free_bytes < plan.margins[i]:
            yield Finding(
                f"{d.id} ({d.name}{_of_host(d)}) keeps {fmt_size(d.free_bytes)} free, less than the "
                f"{plan.dep.margin.describe()} margin ({fmt_size(plan.margins[i])})",
                ("margin",) if plan.dep.variant else _anchor(plan),
                f"{shrink_hint(plan.engine)}, or accept a smaller margin",
                data={"device": d.id, "free_bytes": d.free_bytes},
            )


@rule("VR307", "host-memory", Severity.ERROR)
def host_memory(plan: Plan):
    """The host part of the plan (CPU layers, token embeddings, host KV, buffers) exceeds host RAM.

    Weights that llama.cpp maps from the file (`load_mode: mmap`, the default) are page cache: the
    kernel can evict them, so the plan still starts but runs at disk speed; that is a warning.
    With `load_mode: none` or `mlock` the memory is really allocated, which is an error.

    Bad:
        hardware: {host_ram: 6GiB, gpus: [{name: GTX 1060, vram: 3GiB}]}
        model: llama-3.1-8b-instruct-q8_0
        settings: {ctx: 4096, gpu_layers: 4, load_mode: none}   # 6.8 GiB of weights on the host

    Good:
        hardware: {host_ram: 16GiB, gpus: [{name: GTX 1060, vram: 3GiB}]}
        model: llama-3.1-8b-instruct-q8_0
        settings: {ctx: 4096, gpu_layers: 4}
    """
    host_ram = plan.dep.hardware.obj.host_ram
    if plan.estimate is None or not host_ram:
        return
    h = plan.estimate.host
    if h.total_bytes <= host_ram:
        return
    mapped = plan.engine != "vllm" and (plan.dep.settings.load_mode or "auto") in ("auto", "mmap", "dio")
    more = "raise gpu_layers (num_gpu)" if plan.engine == "ollama" else "raise gpu_layers"
    on_gpu = sum(d.n_layers for d in plan.estimate.devices)
    # no GPU, every layer already on one, or as many as fit chosen by the solver: gpu_layers
    # cannot go higher, so saying to raise it would send the user in a circle
    stuck = not plan.gpus or "gpu_layers" in plan.auto or (plan.meta is not None and on_gpu > plan.meta.n_layer)
    if plan.engine == "vllm":
        hint = "lower cpu_offload_gb (the weights vLLM keeps in host memory), or use GPUs with more memory"
    elif stuck:
        hint = "add host RAM or GPU memory, or use a smaller quantisation" + (
            "; mapped weights will page from disk until then" if mapped else ", or use load_mode: mmap"
        )
    elif mapped:
        hint = f"mapped weights will page from disk; {more} to keep more of them on GPUs"
    else:
        hint = f"{more} to keep more weights on GPUs, or use load_mode: mmap"
    yield Finding(
        f"the host needs {fmt_size(h.total_bytes)} (weights {fmt_size(h.weights_bytes)}, KV "
        f"{fmt_size(h.kv_bytes)}, compute {fmt_size(h.compute_bytes)}, other {fmt_size(h.other_bytes)}) "
        f"but has {fmt_size(host_ram)} of RAM",
        _anchor(plan),
        hint,
        severity=Severity.WARNING if mapped else None,
    )


@rule("VR308", "gpu-unused", Severity.WARNING)
def gpu_unused(plan: Plan):
    """A GPU of the deployment holds no layers, yet still pays its CUDA context.

    A `tensor_split` entry of 0, or too few layers for the split, leaves a device empty; it still
    gets a CUDA context (hundreds of MiB) because it is visible to the process. Remove it from
    the deployment's `gpus`, or give it a share.

    Bad:
        settings: {tensor_split: [1, 0]}

    Good:
        gpus: [0]
    """
    if plan.estimate is None or plan.engine == "vllm":
        return
    devices = plan.estimate.devices
    if not any(d.n_layers for d in devices):
        return
    for d in devices:
        if d.n_layers == 0 and d.host is not None:  # another machine's rpc-server (issue 17)
            yield Finding(
                f"{d.id} ({d.name} of host {d.host}) holds no layers: its rpc-server serves nothing"
                + (f" but pays {fmt_size(d.overhead_bytes)} of CUDA overhead" if d.overhead_bytes else ""),
                ("settings", "tensor_split") if plan.dep.settings.tensor_split else _anchor(plan),
                "leave the host out of `hosts:` or give it a share of the split",
            )
        elif d.n_layers == 0:
            yield Finding(
                f"{d.id} ({d.name}) holds no layers but still pays {fmt_size(d.overhead_bytes)} of CUDA overhead",
                ("settings", "tensor_split") if plan.dep.settings.tensor_split else _anchor(plan),
                "leave it out with `gpus:`"
                if plan.engine == "ollama"
                # no tensor_split
                else "leave it out with `gpus:` or give it a share of the split",
            )


@rule("VR309", "partial-offload", Severity.INFO)
def partial_offload(plan: Plan):
    """Some layers run on the CPU.

    Layers on the CPU run at memory-bandwidth speed of the host, typically 5-20x slower than on
    a GPU; it works, but tokens per second drop steeply with every layer left behind.

    Bad:
        settings: {gpu_layers: 20}     # of 33

    Good:
        settings: {gpu_layers: all}
    """
    if plan.meta is None or plan.estimate is None:
        return
    total = plan.meta.n_layer + 1
    on_gpu = sum(d.n_layers for d in plan.estimate.devices)
    if 0 < on_gpu < total or (on_gpu == 0 and plan.gpus):
        yield Finding(
            f"{on_gpu} of {total} layers are on GPUs; {total - on_gpu} run on the CPU",
            ("settings", "gpu_layers") if plan.dep.settings.gpu_layers is not None else _anchor(plan),
        )


@rule("VR315", "compute-unmodelled", Severity.WARNING)
def compute_unmodelled(plan: Plan):
    """vramc cannot size this architecture's compute buffers exactly, so the plan may be short.

    vramc replays llama.cpp's compute graph for the architectures it models (docs/memory-model.md
    lists them). For an unknown architecture whose layers have llama's tensors it replays the
    llama graph instead (an approximation); for the others (recurrent and hybrid models other
    than Mamba-2, Nemotron-H, Nemotron 3 and Granite 4.0-H, such as RWKV, Jamba, Falcon-H1 or
    Qwen3-Next, and unknown layer layouts) it plans weights, KV cache and recurrent state only,
    and the compute buffers (hundreds of MiB to GBs, growing with `ubatch` and the vocabulary)
    are missing. Leave that much room: a larger margin for this deployment, or measure the real
    figures once with `vramc run` or llama.cpp's own `llama-fit-params --fit-print on`.

    Bad:
        model: mystery-mixer-3b      # an architecture vramc does not know: compute not modelled
        lint: {margin: 5%}

    Good:
        model: mystery-mixer-3b
        lint:
          margin: 2GiB               # room for the compute buffers the plan does not count
          ignore: [VR315]            # accepted: the margin above stands in for them
    """
    est = plan.estimate
    if est is None or est.compute_model not in ("none", "approximate"):
        return
    arch = plan.meta.architecture if plan.meta is not None else "this model"
    if est.compute_model == "none":
        msg = (
            f"compute buffers are not modelled for architecture {arch!r}: the plan counts "
            "weights, KV cache and recurrent state only, and is short by the compute buffers"
        )
    else:
        msg = (
            f"compute buffers of architecture {arch!r} are approximated with the llama graph, not replayed from its own"
        )
    yield Finding(msg, ("model",), "leave room for them: a larger `lint: {margin: ...}` for this deployment")


@rule("VR312", "gpu-oversubscribed", Severity.ERROR, "group")
def oversubscribed(plans):
    """Deployments that run together on one machine need more of a GPU than it has.

    Each deployment may fit on its own while together they do not: every deployment in a
    `deployments:` file shares the file's hardware and runs at the same time, in each combination
    of their variants (a variant runs with the others' variant of the same name, or with their
    base where they have none; the message names the combination). Their `auto` settings are
    fitted together, so `gpu_layers: auto` (or `vramc fit --relax gpu_layers FILE`) shares the
    card between llama.cpp deployments.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        deployments:
          - name: coder
            model: llama-3.1-8b-instruct-q8_0
            engine: llama-server
            settings: {ctx: 32768, gpu_layers: all}
          - name: chat
            model: llama-3.1-8b-instruct-q8_0
            engine: llama-server
            settings: {ctx: 32768, gpu_layers: all}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        deployments:
          - name: coder
            model: llama-3.1-8b-instruct-q8_0
            engine: llama-server
            settings: {ctx: 8192, gpu_layers: all}
          - name: chat
            model: llama-3.1-8b-instruct-q8_0
            engine: llama-server
            settings: {ctx: 8192, gpu_layers: all}
    """
    if len(plans) < 2 or any(p.dep.server is not None for p in plans):  # a server's sets: VR340/VR342
        return
    by_gpu: dict[tuple, list] = {}
    for plan in plans:
        if plan.estimate is None or plan.engine == "vllm":  # vLLM's own terms: VR335/VR336
            continue
        for d in plan.estimate.devices:
            by_gpu.setdefault((d.host, d.gpu), []).append((plan, d))  # RPC devices: their host's
    for (host, gpu), uses in sorted(by_gpu.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        if len(uses) < 2:
            continue
        first = uses[0][1]
        need = sum(d.total_bytes for _, d in uses)
        have = first.available_bytes
        if need > have:
            names = ", ".join(f"{p.dep.label} {fmt_size(d.total_bytes)}" for p, d in uses)
            what = f"GPU {gpu} ({first.name}{f' of host {host}' if host else ''})"
            if host and gpu < 0:  # rpc-servers of a host's CPU: its host_ram
                what = f"the RAM of host {host} (its CPU's rpc-servers)"
            for plan, _d in uses:
                yield (
                    plan,
                    Finding(
                        f"{what} is shared by {names}: {fmt_size(need)} together, "
                        f"{fmt_size(have)} available ({fmt_size(need - have)} over)",
                        _anchor(plan),
                        f"{shrink_hint(plan.engine)} for one of them, or move one to "
                        + ("another host or GPU (`hosts:`)" if host else "another GPU (`gpus:`)")
                        + _share_hint(plan, uses),
                    ),
                )


def _share_hint(plan: Plan, uses) -> str:
    """llama.cpp deployments' `auto` settings are fitted together: the solver can share the card."""
    import shlex

    if all(p.engine in ("llama-server", "llama-cpp-python") for p, _ in uses):  # the whole file
        return f"; or let `vramc fit --relax gpu_layers {shlex.quote(plan.dep.doc.file)}` share it between them"
    return ""


@rule("VR320", "engine-refuses", Severity.ERROR, "estimate")
def _engine_refuses():
    """The engine itself would refuse to start with these settings.

    The message quotes the engine's own error, as the engine would print it. Engine errors that
    have a rule of their own (VR305, VR311, VR321, VR322, VR33x) use that code; this one is for
    the others, such as a tensor override naming a buffer type this machine does not have
    (llama.cpp's `-ot` parser rejects it: "unknown buffer type").

    Bad:
        hardware:
          gpus: [{name: RTX 3060, vram: 12GiB}]
        settings: {ctx: 4096, override_tensor: ['ffn=CUDA7']}

    Good:
        hardware:
          gpus: [{name: RTX 3060, vram: 12GiB}]
        settings: {ctx: 4096, override_tensor: ['ffn=CUDA0']}
    """
