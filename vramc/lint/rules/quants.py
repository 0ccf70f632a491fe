"""A model of several quants (`quants:`, `quant: auto`, issue 15): the list as written (VR207,
VR208, raised by vramc.load.quantset), the engines that cannot use it (VR209), and which quant
`quant: auto` chose and why (VR380-VR382, from vramc.plan.quants)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.engines import ENGINES
from vramc.lint.registry import Finding, rule

if TYPE_CHECKING:
    from vramc.plan.planner import Plan


@rule("VR207", "quant-auto-without-quants", Severity.ERROR, "load")
def _vr207():
    """`quant: auto` has no `quants:` list to choose from.

    vramc picks among the quants whose headers are locked in the model profile; it never reads
    the network while checking (`vramc check` runs in pre-commit). Lock every quant of the
    repository once with `vramc analyze hf://ORG/REPO --write profiles/models/NAME.yaml` (or of
    local files with `vramc analyze A.gguf B.gguf --write ...`): it writes `quants:`.

    Bad:
        model:
          hf: bartowski/Qwen2.5-32B-Instruct-GGUF
          quant: auto             # nothing locked to choose from

    Good:
        model: llama8b-quants     # quant: auto and its quants:, locked by `vramc analyze hf://ORG/REPO --write`
    """


@rule("VR208", "quants-invalid", Severity.ERROR, "load")
def _vr208():
    """The model's `quants:` list cannot be planned as written.

    Each entry is one quant type with its file and lock (`quant:`, `gguf:`, `lock:`, `source:`),
    each quant type once; `quant:` is `auto` or the type of one entry; the model's own `gguf:`
    and `lock:` are left out (each entry has its own). An entry needs a `lock:` or a `gguf:` file
    to be sized.

    Bad:
        model:
          quant: Q5_K_M            # no such entry
          quants:
            - {quant: Q4_K_M, gguf: models/m-Q4_K_M.gguf}
            - {quant: Q4_K_M, gguf: models/other-Q4_K_M.gguf}   # twice

    Good:
        model:
          quant: Q4_K_M
          quants:
            - {quant: Q4_K_M, gguf: models/m-Q4_K_M.gguf}
            - {quant: Q8_0, gguf: models/m-Q8_0.gguf}
    """


@rule("VR209", "quants-on-vllm", Severity.ERROR)
def quants_on_vllm(plan: Plan):
    """A model of several GGUF quants (`quants:`, `quant: auto`) is served by vLLM.

    `quants:` lists GGUF files for the llama.cpp engines (llama-server, llama-cpp-python, Ollama,
    llama-swap). vLLM loads a Hugging Face checkpoint and plans it from the model's `config:`;
    it never picks among GGUF quants.

    Bad:
        engine: vllm
        model: llama8b-quants      # quant: auto, quants: [Q8_0, Q4_K_M, Q2_K]

    Good:
        engine: llama-server
        model: llama8b-quants
    """
    m = plan.dep.model.obj
    if ENGINES[plan.engine].family == "vllm" and (m.quants is not None or m.quant == "auto"):
        yield Finding(
            f"{plan.engine} does not load GGUF quants: the model's `quant: auto`/`quants:` is for the llama.cpp engines",
            ("engine",),
            "serve it with llama-server (or another llama.cpp engine), or give vLLM a model profile with `hf:` "
            "and `config:`",
        )


def _choice(plan: Plan, *outcomes: str):
    q = plan.quant
    if q is not None and q.auto and q.outcome in outcomes:
        # a server's model (`models:`) is named in its entry, not at the top of the file
        at = ("model",) if plan.dep.member is None else ("models", plan.dep.member, "model")
        yield Finding(q.message, at, q.hint)


@rule("VR380", "quant-auto-chosen", Severity.INFO)
def quant_chosen(plan: Plan):
    """`quant: auto` chose the largest quant that fits with every layer on the GPUs.

    Each entry of the model's `quants:` is planned with the deployment's settings (its `auto`
    settings solved for each), margin and variant; the largest (by weights) that fits with all
    layers on the GPUs is planned, built and run. The note names it, and the larger quants that
    fit only with layers on the CPU (the trade-off `quant: Q` would make). `vramc plan` shows the
    table of every quant.

    Bad:
        hardware: {gpus: [{name: RTX 4060, vram: 8GiB}]}
        model: llama8b-quants            # quant: auto over Q8_0, Q4_K_M, Q2_K: Q4_K_M, all 33 layers
        settings: {ctx: 8192, gpu_layers: auto}

    Good:
        hardware: {gpus: [{name: RTX 4060, vram: 8GiB}]}
        model: llama-3.1-8b-instruct-q8_0   # one quant: nothing to choose (27 of 33 layers fit)
        settings: {ctx: 8192, gpu_layers: auto}
    """
    yield from _choice(plan, "all-layers", "cpu-only")


@rule("VR381", "quant-auto-partial-offload", Severity.WARNING)
def quant_partial(plan: Plan):
    """No quant of the model fits with every layer on the GPUs: `quant: auto` chose one partly on the CPU.

    The largest quant that fits at all is planned, with as many layers on the GPUs as fit (with
    `gpu_layers: auto`); the rest run on the CPU, several times slower. The warning names the
    trade-off: the quant that keeps the most layers on the GPUs. Choose it with a fixed `quant:`,
    or make room (a smaller `ctx`, another GPU).

    Bad:
        hardware: {gpus: [{name: RTX 4060, vram: 4GiB}]}
        model: llama8b-quants    # Q8_0 with 12 of 33 layers on the GPU; Q2_K would have 28
        settings: {ctx: 8192, gpu_layers: auto}

    Good:
        hardware: {gpus: [{name: RTX 4060, vram: 8GiB}]}
        model: llama8b-quants    # Q4_K_M with all 33 layers
        settings: {ctx: 8192, gpu_layers: auto}
    """
    yield from _choice(plan, "partial")


@rule("VR382", "quant-auto-none-fits", Severity.INFO)
def quant_none(plan: Plan):
    """No quant of the model fits on these GPUs: `quant: auto` planned the smallest.

    The plan of the smallest quant says by how much it does not fit (VR300) and what would.

    Bad:
        hardware: {gpus: [{name: RTX 4060, vram: 2GiB}]}
        model: llama8b-quants    # every quant with all layers on a 2 GiB card
        settings: {ctx: 8192, gpu_layers: all}

    Good:
        hardware: {gpus: [{name: RTX 4060, vram: 2GiB}]}
        model: llama8b-quants
        settings: {ctx: 8192, gpu_layers: auto}   # the largest quant that fits, partly on the CPU
    """
    yield from _choice(plan, "none-fits")
