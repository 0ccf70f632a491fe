"""Settings rules (VR30x-VR31x): settings that do nothing, cannot work, or surprise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule

if TYPE_CHECKING:
    from vramc.plan.planner import Plan


def _llama(plan: Plan) -> bool:
    return plan.engine != "vllm" and plan.meta is not None and plan.choice is not None


@rule("VR302", "gpu-layers-beyond-model", Severity.WARNING)
def gpu_layers_beyond_model(plan: Plan):
    """`gpu_layers` asks for more layers than the model has.

    llama.cpp counts the output layer too, so a model with N blocks has N+1 offloadable layers;
    any larger number means "all" and hides what you meant. (The seeds' "8B Llama has 80 layers"
    is wrong: Llama 3.1 8B has 32 blocks + the output layer = 33.)

    Bad:
        settings: {gpu_layers: 40}   # Llama 3.1 8B: 33 layers

    Good:
        settings: {gpu_layers: all}
    """
    if not _llama(plan):
        return
    n = plan.dep.settings.gpu_layers
    total = plan.meta.n_layer + 1
    if isinstance(n, int) and n > total:
        yield Finding(
            f"gpu_layers {n} is more than the model's {total} layers "
            f"({plan.meta.n_layer} blocks + output); it means all of them",
            ("settings", "gpu_layers"),
            "write `gpu_layers: all` to say so",
        )


LLAMA_MAX_DEVICES = 16  # src/llama.cpp llama_max_devices()


@rule("VR303", "tensor-split-length", Severity.ERROR)
def tensor_split_length(plan: Plan):
    """`tensor_split` needs exactly one number per GPU of the deployment.

    llama.cpp reads as many numbers as it has devices; extra numbers are ignored and missing ones
    count as 0, which silently leaves a GPU out. llama-server takes at most 15 numbers (common/arg.cpp
    refuses a `--tensor-split` of llama_max_devices(), 16, or more), so with a tensor_split
    (written, or chosen by vramc) it cannot span 16 devices or more, RPC devices included.

    Bad:
        hardware: {gpus: [{name: A, vram: 24GiB}, {name: B, vram: 24GiB}, {name: C, vram: 12GiB}]}
        settings: {tensor_split: [0.6, 0.4]}

    Good:
        hardware: {gpus: [{name: A, vram: 24GiB}, {name: B, vram: 24GiB}, {name: C, vram: 12GiB}]}
        settings: {tensor_split: [0.4, 0.4, 0.2]}
    """
    ts = plan.dep.settings.tensor_split
    if plan.engine == "ollama":  # Ollama passes no tensor split at all: VR400 says so
        ts = None
    if isinstance(ts, list) and len(ts) != len(plan.gpus):
        yield Finding(
            f"tensor_split has {len(ts)} numbers for {len(plan.gpus)} GPUs",
            ("settings", "tensor_split"),
            "give one proportion per GPU, in launch order",
        )
    elif isinstance(ts, list) and ts and not any(ts):
        yield Finding(
            "tensor_split is all zeros, which llama.cpp treats as 'split by free memory'",
            ("settings", "tensor_split"),
            "leave it out, or give real proportions",
            severity=Severity.WARNING,
        )
    split = plan.params.tensor_split if plan.params is not None else None
    if plan.engine in ("llama-server", "llama-swap") and split and len(split) >= LLAMA_MAX_DEVICES:
        raw = plan.dep.doc.raw if isinstance(plan.dep.doc.raw, dict) else {}
        written = "tensor_split" in (raw.get("settings") or {})
        yield Finding(
            f"llama-server refuses a tensor_split of {len(split)} numbers (at most {LLAMA_MAX_DEVICES - 1}: "
            f'"got {len(split)} input configs, but system only has {LLAMA_MAX_DEVICES} devices")',
            ("settings", "tensor_split") if written else ("hosts",) if "hosts" in raw else ("name",),
            f"use at most {LLAMA_MAX_DEVICES - 1} devices (fewer `hosts:` or `gpus:`)",
        )


@rule("VR304", "ctx-beyond-trained", Severity.WARNING)
def ctx_beyond_trained(plan: Plan):
    """The context per sequence is longer than the model was trained for.

    Past its trained context a model's output degrades (unless RoPE scaling is configured), and
    the KV cache grows for nothing.

    Bad:
        model: llama-3.1-8b-instruct-q8_0   # trained for 131072
        settings: {ctx: 262144}

    Good:
        model: llama-3.1-8b-instruct-q8_0
        settings: {ctx: 131072}
    """
    if not _llama(plan) or plan.params is None:
        return
    train = int(plan.meta.hp("context_length", 0) or 0)
    p = plan.params
    per_seq = p.n_ctx if p.kv_unified else p.n_ctx // max(1, p.n_seq_max)
    if plan.engine == "ollama":
        # Ollama caps num_ctx at the trained context itself (llm/server.go NewLlamaServer), so the
        # plan never exceeds it; only a ctx the user wrote is worth a word, and its default never is
        ctx = plan.dep.settings.ctx
        if isinstance(ctx, int) and train and ctx > train:
            yield Finding(
                f"ctx {ctx} is beyond the model's trained context of {train}: Ollama caps "
                f"num_ctx at {train} (llm/server.go NewLlamaServer), which the plan uses",
                ("settings", "ctx"),
                f"use ctx {train} or less",
            )
        return
    if train and per_seq > train:
        yield Finding(
            f"{per_seq} tokens per sequence is beyond the model's trained context of {train}",
            ("settings", "ctx") if plan.dep.settings.ctx is not None else ("model",),
            f"use ctx {train if plan.engine != 'llama-server' or p.kv_unified else train * p.n_seq_max} or less",
        )


@rule("VR305", "quantized-v-without-flash-attn", Severity.ERROR, "estimate")
def _vr305():
    """A quantized V cache needs flash attention; llama.cpp refuses to start without it.

    llama.cpp refuses with "quantized V cache requires flash_attn to be enabled".
    The K cache alone may be quantized without flash attention.

    Bad:
        settings: {cache_type_v: q8_0, flash_attn: off}

    Good:
        settings: {cache_type_v: q8_0, flash_attn: on}
    """


@rule("VR321", "kv-cache-types", Severity.ERROR, "estimate")
def _vr321():
    """The KV cache types cannot be used with this model.

    llama.cpp refuses a quantized cache type whose block does not divide the attention head size
    (with flash attention), and different K and V types for MLA models (DeepSeek V2/V3), whose K
    and V share one latent cache.

    Bad:
        model: deepseek-v2-lite-chat-q4_k_m
        settings: {cache_type_k: q8_0, cache_type_v: f16}

    Good:
        settings: {cache_type_k: q8_0, cache_type_v: q8_0}
    """


@rule("VR322", "override-unused-device", Severity.ERROR, "estimate")
def _vr322():
    """A tensor override sends weights to a GPU the model does not use.

    With `split_mode: none` only `main_gpu` takes part; a `-ot ...=CUDA1` then points at a buffer
    no backend of the context can use, and llama.cpp's scheduler aborts.

    Bad:
        settings: {split_mode: none, main_gpu: 0, override_tensor: ['blk\\.0\\..*=CUDA1']}

    Good:
        settings: {split_mode: layer, override_tensor: ['blk\\.0\\..*=CUDA1']}
    """


@rule("VR306", "unaccounted-model", Severity.WARNING)
def unaccounted_model(plan: Plan):
    """A multimodal projector (mmproj) or a draft model is configured whose size vramc does not know.

    Both load onto the first GPU next to the model (hundreds of MiB to GBs), and llama.cpp's own
    fit counts neither. Give the size (`mmproj_size`, `draft_size`) so it is planned.

    Bad:
        model: {gguf: models/gemma-3-12b.gguf, mmproj: models/mmproj.gguf}   # file not here

    Good:
        model: {gguf: models/gemma-3-12b.gguf, mmproj: models/mmproj.gguf, mmproj_size: 854MiB}
    """
    m = plan.dep.model.obj
    if plan.engine == "vllm":
        return
    for key, path, size in (("mmproj", m.mmproj, m.mmproj_size), ("draft", m.draft, m.draft_size)):
        if path and size is None:
            yield Finding(
                f"{key} {path} is not counted in the plan",
                (key,),
                f"add `{key}_size:` to the model profile",
                target="model",
            )


@rule("VR310", "main-gpu-out-of-range", Severity.ERROR)
def main_gpu_out_of_range(plan: Plan):
    """`main_gpu` names a GPU the deployment does not have.

    GPUs are numbered in launch order (after `device_order`), from 0.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        settings: {split_mode: none, main_gpu: 1}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        settings: {split_mode: none, main_gpu: 0}
    """
    mg = plan.dep.settings.main_gpu
    n = len(plan.gpus)
    if plan.engine == "ollama" and "gpus" in plan.engine_choices:  # Ollama kept main_gpu's GPU alone
        n = len(plan.dep.doc.obj.gpus or plan.dep.hardware.obj.gpus)
    if mg is not None and mg >= n:
        yield Finding(
            f"main_gpu {mg} is out of range: the deployment has {n} GPU(s)",
            ("settings", "main_gpu"),
            f"use 0..{max(0, n - 1)}",
        )


@rule("VR311", "split-mode-row", Severity.ERROR, "estimate")
def _vr311():
    """`split_mode: row` cannot load on CUDA with the pinned llama.cpp.

    Row split needs the backend's split buffer type, which the pinned llama.cpp's CUDA (and RPC)
    backends do not provide: llama.cpp stops with "device CUDA0 does not support split buffers".
    Row split is also deprecated upstream (docs/multi-gpu.md) and llama.cpp's own fit refuses it.
    (The seeds' "row is recommended" for an 8 GB + 3 GB pair was never a good idea: row split
    keeps the KV cache and compute on the main GPU.) Use `layer`.

    Bad:
        settings: {split_mode: row, tensor_split: [8, 3]}

    Good:
        settings: {split_mode: layer, tensor_split: auto}
    """


@rule("VR313", "ctx-rounded", Severity.INFO)
def ctx_rounded(plan: Plan):
    """The context does not divide evenly between the slots; llama.cpp rounds it down.

    With separate KV streams each slot gets n_ctx / parallel tokens (then padded to 256), and
    llama.cpp warns "n_ctx is not divisible by n_seq_max - rounding down".

    Bad:
        settings: {ctx: 10000, parallel: 3}

    Good:
        settings: {ctx: 12288, parallel: 3}
    """
    p = plan.params
    if p is None or p.kv_unified or p.n_seq_max <= 1:
        return
    from vramc.memory.llama_cparams import pad

    n_ctx = pad(p.n_ctx, 256)  # llama_context pads the context before dividing it among slots
    if n_ctx % p.n_seq_max and n_ctx // p.n_seq_max:
        yield Finding(
            f"ctx {p.n_ctx} is not divisible by {p.n_seq_max} slots; each slot gets "
            f"{pad(n_ctx // p.n_seq_max, 256)} tokens (the share rounded down, then "
            "padded to 256)",
            ("settings", "ctx"),
        )


@rule("VR314", "cpu-only-default", Severity.WARNING)
def cpu_only_default(plan: Plan):
    """llama-cpp-python puts nothing on the GPU unless `gpu_layers` is set.

    `llama_cpp.Llama` defaults to `n_gpu_layers=0`, `n_ctx=512` and flash attention off: a
    profile that leaves `gpu_layers` out runs entirely on the CPU, whatever the hardware.

    Bad:
        engine: llama-cpp-python
        settings: {ctx: 4096}

    Good:
        engine: llama-cpp-python
        settings: {ctx: 4096, gpu_layers: all}
    """
    if plan.engine == "llama-cpp-python" and plan.dep.settings.gpu_layers is None and plan.gpus:
        yield Finding(
            "gpu_layers is not set: llama-cpp-python defaults to n_gpu_layers=0 (CPU only)",
            ("settings",) if "settings" in (plan.dep.doc.raw or {}) else ("engine",),
            "set `gpu_layers: all` (or auto) to use the GPUs",
        )
