"""Ollama rules: where Ollama's own scheduler (vramc.plan.ollama_sched, for the pinned Ollama) overrides
what the profile asks for, and vramc cannot write anything that would make it keep the setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule

if TYPE_CHECKING:
    from vramc.plan.planner import Plan


@rule("VR316", "ollama-evicts-resident-models", Severity.WARNING)
def ollama_evicts_resident_models(plan: Plan):
    """Ollama will not keep other models loaded next to this one, though `max_loaded_models` asks for several.

    Before it loads a model next to resident ones, Ollama compares its own prediction (the model
    file plus an f16 KV estimate, plus 768 MiB for a batch of 1024 or 2 GiB for 2048) with 80% of
    the GPUs' free memory (server/sched.go `load`); above that it evicts every other model first,
    whatever `OLLAMA_MAX_LOADED_MODELS` says. The plan itself may fit: this is about sharing.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: llama-3.1-8b-instruct-q8_0
        engine: ollama
        settings: {ctx: 49152, parallel: 2, max_loaded_models: 2}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: llama-3.1-8b-instruct-q8_0
        engine: ollama
        settings: {ctx: 8192, parallel: 2, max_loaded_models: 2}
    """
    s = plan.dep.settings
    c = plan.engine_choices.get("coresident") if plan.engine == "ollama" else None
    if c is None or c.value or not s.max_loaded_models or s.max_loaded_models < 2:
        return
    yield Finding(
        f"max_loaded_models {s.max_loaded_models} asks for models side by side, but {c.why}",
        ("settings", "max_loaded_models"),
        "lower ctx or parallel until Ollama's prediction is under 80% of the free memory, or set max_loaded_models: 1",
    )


@rule("VR406", "ollama-parallel-forced", Severity.WARNING)
def ollama_parallel_forced(plan: Plan):
    """Ollama runs this model with one sequence, whatever `parallel` says.

    Ollama's scheduler loads some architectures (Qwen3-VL, Qwen3-Next, Qwen3.5, LFM2, Nemotron-H,
    mllama) and every embedding model with `num_parallel` 1 (server/sched.go `load`), so
    `OLLAMA_NUM_PARALLEL` has no effect on them. The plan uses one sequence, as Ollama will.

    Bad:
        model: nemotron-nano-9b-v2
        engine: ollama
        settings: {ctx: 8192, parallel: 4}

    Good:
        model: nemotron-nano-9b-v2
        engine: ollama
        settings: {ctx: 8192, parallel: 1}
    """
    if plan.dep.server is not None:  # one model of a server: `parallel` is the others' too (issue 14)
        return
    c = plan.engine_choices.get("parallel") if plan.engine == "ollama" else None
    if c is None or plan.dep.settings.parallel in (None, "auto"):
        return
    yield Finding(
        f"parallel {plan.dep.settings.parallel} becomes {c.value}: {c.why}",
        ("settings", "parallel"),
        f"set parallel: {c.value}",
    )


@rule("VR407", "ollama-main-gpu-alone", Severity.WARNING)
def ollama_main_gpu_alone(plan: Plan):
    """`main_gpu` makes Ollama load the model on that GPU alone; the deployment's other GPUs stay idle.

    Given `main_gpu`, Ollama starts llama-server with only that GPU visible and
    `--split-mode none --main-gpu 0` (server/sched.go `selectLlamaServerPlacement`,
    llm/llama_server.go `appendMainGPUArgs`): it does not choose the main GPU of a split. The
    plan puts the model on that GPU alone, as Ollama will.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 3090, vram: 24GiB}]}
        engine: ollama
        settings: {main_gpu: 1}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 3090, vram: 24GiB}]}
        engine: ollama
        gpus: [1]
    """
    c = plan.engine_choices.get("gpus") if plan.engine == "ollama" else None
    if c is None or plan.dep.settings.main_gpu is None:
        return
    yield Finding(
        c.why,
        ("settings", "main_gpu"),
        f"list only that GPU (`gpus: [{c.value[0]}]`) and drop main_gpu, or drop main_gpu "
        "to spread the model over every GPU",
    )


@rule("VR317", "ollama-projector-on-cpu", Severity.WARNING)
def ollama_projector_on_cpu(plan: Plan):
    """Ollama runs the vision projector on the CPU, not on the GPU where the plan counts it.

    With part of the model on the CPU (`num_gpu` below the model's layers) or a GPU with less free
    memory than the projector plus 1 GiB, Ollama starts llama-server with `--no-mmproj-offload`
    (llm/llama_server.go `shouldDisableMMProjOffload`): images are encoded on the CPU, slowly, and
    the projector's weights take host memory. The plan keeps counting it on the first GPU (the
    safe side for the GPU; the host figure is short by the projector).

    Bad:
        hardware: {gpus: [{name: RTX 4060, vram: 8GiB}]}
        model: llama8b-vision
        engine: ollama
        settings: {ctx: 8192, gpu_layers: 20}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: llama8b-vision
        engine: ollama
        settings: {ctx: 8192, gpu_layers: all}
    """
    c = plan.engine_choices.get("mmproj_offload") if plan.engine == "ollama" else None
    if c is None:
        return
    at = ("settings", "gpu_layers") if plan.dep.settings.gpu_layers is not None else ("model",)
    yield Finding(
        f"the projector runs on the CPU: {c.why.split(': Ollama passes')[0]} makes Ollama pass "
        "--no-mmproj-offload (llm/llama_server.go shouldDisableMMProjOffload)",
        at,
        "put every layer on the GPUs (a shorter ctx or a quantized KV cache makes room), or accept "
        "CPU image encoding and its host memory",
    )
