"""vLLM rules (VR33x): what vLLM itself would refuse, in vLLM's own words (vramc.memory.vllm)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule

if TYPE_CHECKING:
    from vramc.plan.planner import Plan


@rule("VR330", "vllm-start-check", Severity.ERROR, "estimate")
def _vr330():
    """vLLM refuses to start: the GPU has less free memory than its utilization share.

    `gpu_memory_utilization` is a fraction of the GPU's *total* memory, and vLLM checks at start
    that this much is free once its CUDA context exists; other processes (`tenants`) count
    against it.

    Bad:
        hardware: {gpus: [{name: L40S, vram: 48GiB, tenants: [{name: desktop, vram: 6GiB}]}]}
        settings: {gpu_memory_utilization: 0.92}

    Good:
        settings: {gpu_memory_utilization: 0.8}
    """


@rule("VR331", "vllm-max-model-len", Severity.ERROR, "estimate")
def _vr331():
    """One request at `max_model_len` needs more KV cache than vLLM has left.

    vLLM computes the largest length that fits and names it in the error; vramc computes the same
    number. Lower `max_model_len`, raise `gpu_memory_utilization`, or use `max_model_len: auto`.

    Bad:
        hardware: gpu-96gb
        model: deepseek-coder-33b-instruct-awq    # 65536 tokens by default
        settings: {gpu_memory_utilization: 0.3}

    Good:
        hardware: gpu-96gb
        model: deepseek-coder-33b-instruct-awq
        settings: {gpu_memory_utilization: 0.3, max_model_len: 16384}
    """


@rule("VR332", "vllm-no-kv-memory", Severity.ERROR, "estimate")
def _vr332():
    """Nothing is left for vLLM's KV cache blocks after weights, activations and CUDA graphs.

    vLLM says "No available memory for the cache blocks". The weights alone use the share.

    Bad:
        hardware: gpu-96gb
        model: qwen2.5-coder-32b-instruct-awq
        settings: {gpu_memory_utilization: 0.2}    # of a 96 GiB GPU

    Good:
        hardware: gpu-96gb
        model: qwen2.5-coder-32b-instruct-awq
        settings: {gpu_memory_utilization: 0.5}
    """


@rule("VR333", "vllm-scheduler", Severity.ERROR, "estimate")
def _vr333():
    """vLLM's scheduler settings contradict each other.

    `max_num_batched_tokens` must be at least `max_num_seqs` (SchedulerConfig.verify_max_model_len).

    Bad:
        settings: {max_num_seqs: 256, max_num_batched_tokens: 128}

    Good:
        settings: {max_num_seqs: 128, max_num_batched_tokens: 2048}
    """


@rule("VR334", "vllm-model-len-too-long", Severity.ERROR, "estimate")
def _vr334():
    """`max_model_len` is longer than the model's config.json allows.

    vLLM derives the longest length from `max_position_embeddings` and RoPE scaling and refuses a
    longer one.

    Bad:
        model: mistral-7b-instruct-awq     # 32768
        settings: {max_model_len: 65536}

    Good:
        settings: {max_model_len: 32768}
    """


@rule("VR337", "vllm-parallel", Severity.ERROR, "estimate")
def _vr337():
    """Tensor parallelism does not divide the model, or needs more GPUs than the deployment has.

    The attention heads must divide evenly by `tensor_parallel_size`, and each rank needs a GPU.

    Bad:
        hardware: {gpus: [{name: H100, vram: 80GiB}]}
        settings: {tensor_parallel_size: 2}

    Good:
        settings: {tensor_parallel_size: 1}
    """


@rule("VR335", "vllm-colocated-oversubscribed", Severity.ERROR, "group")
def colocated_oversubscribed(plans):
    """vLLM instances sharing a GPU ask for more than the GPU has, whatever their start order.

    Each instance's `gpu_memory_utilization` is a fraction of the whole GPU, so two instances at
    0.88 (the seeds' 96 GB example) ask for 1.76 of it, plus one CUDA context each.

    Bad:
        hardware: gpu-96gb
        deployments:
          - {name: coder, engine: vllm, settings: {gpu_memory_utilization: 0.88}}
          - {name: chat, engine: vllm, settings: {gpu_memory_utilization: 0.88}}

    Good:
        hardware: gpu-96gb
        deployments:
          - {name: coder, engine: vllm, settings: {gpu_memory_utilization: 0.55}}
          - {name: chat, engine: vllm, settings: {gpu_memory_utilization: 0.4}}
    """
    yield from _colocated(plans, "VR335")


@rule("VR336", "vllm-start-order", Severity.ERROR, "group")
def colocated_start_order(plans):
    """A later vLLM instance on a shared GPU fails its start check in the given start order.

    Deployments in a `deployments:` file start in the order listed; each one checks, at start,
    that its share is free after the earlier ones took theirs. The message names an order that
    works, if one does.

    Bad:
        hardware: gpu-96gb
        deployments:   # chat starts first; coder then finds less than its 0.6 free
          - name: chat
            model: mistral-7b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: 0.39}
          - name: coder
            model: deepseek-coder-33b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: 0.6, max_num_batched_tokens: 32768}

    Good:
        hardware: gpu-96gb
        deployments:
          - name: coder
            model: deepseek-coder-33b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: 0.6, max_num_batched_tokens: 32768}
          - name: chat
            model: mistral-7b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: 0.35}
    """
    yield from _colocated(plans, "VR336")


def _colocated(plans, code: str):
    from vramc.memory.vllm import check_colocated
    from vramc.plan.refusals import rule_code

    vllm = [p for p in plans if p.engine == "vllm" and p.estimate is not None]
    if len(vllm) < 2:
        return
    by_name = {p.dep.label: p for p in vllm}
    gpus = {(g.host, g.gpu): g for p in vllm for g in p.gpus}  # this machine's and the hosts' (issue 17)
    for name, kind, message in check_colocated([(p.dep.label, p.estimate) for p in vllm], list(gpus.values())):
        if rule_code(kind) == code:
            yield (
                by_name[name],
                Finding(
                    message,
                    ("settings", "gpu_memory_utilization")
                    if by_name[name].dep.settings.gpu_memory_utilization is not None
                    else ("name",),
                ),
            )


@rule("VR350", "vllm-kv-below-max-num-seqs", Severity.INFO)
def kv_below_max_num_seqs(plan: Plan):
    """vLLM's KV cache holds fewer requests at `max_model_len` than `max_num_seqs` admits.

    vLLM fills its `gpu_memory_utilization` share with KV cache whatever the model needs, so the
    figure that says whether the share is large enough is the one vLLM logs at start: "Maximum
    concurrency for L tokens per request: X" (`num_blocks` / blocks per request at
    `max_model_len`). Below `max_num_seqs`, a full batch of long requests does not fit: vLLM
    preempts (recomputes) some of them. Short requests still run `max_num_seqs` at a time, so
    this is a note, and the plan's verdict is `tight`. `max_num_seqs: auto` sets it to what the
    cache holds.

    Bad:
        hardware: gpu-96gb
        model: deepseek-coder-33b-instruct-awq
        settings: {gpu_memory_utilization: 0.4, max_model_len: 65536, max_num_seqs: 16}

    Good:
        hardware: gpu-96gb
        model: deepseek-coder-33b-instruct-awq
        settings: {gpu_memory_utilization: 0.4, max_model_len: 65536, max_num_seqs: auto}
    """
    est = plan.estimate
    if plan.engine != "vllm" or est is None or est.errors or not plan.kv_short():
        return
    from vramc.plan.vllm_fit import concurrency, fp8_kv_supported

    r = est.resolved
    n = concurrency(est)
    fp8 = (
        ""
        if r["kv_cache_dtype"].startswith("fp8") or not all(fp8_kv_supported(d.name) for d in est.devices)
        else ", use kv_cache_dtype: fp8 (half the bytes per token)"
    )
    yield Finding(
        f"the KV cache holds {n:.2f} requests of max_model_len {r['max_model_len']} tokens "
        f"({est.devices[0].detail['kv_tokens']} tokens in {est.devices[0].detail['kv_blocks']} "
        f'blocks), fewer than max_num_seqs {r["max_num_seqs"]}: vLLM will log "Maximum '
        f'concurrency for {r["max_model_len"]} tokens per request: {n:.2f}x" and preempt long '
        "requests beyond that",
        ("settings", "max_num_seqs")
        if "max_num_seqs" in plan.dep.settings.model_fields_set
        else ("settings",)
        if "settings" in (plan.dep.doc.raw or {})
        else ("name",),
        # an `auto` share is already the largest that leaves the margin free: raising it is no advice
        ("" if "gpu_memory_utilization" in plan.auto else "raise gpu_memory_utilization, ")
        + f"lower max_model_len{fp8}, or set max_num_seqs: auto (it would be {max(1, int(n))})",
        data={"max_concurrency": round(n, 2), "max_num_seqs": r["max_num_seqs"]},
    )
