"""The cases: synth catalog models x devices, splits, offload, context, batch, attention, KV types.

The default grid samples the cross product per model with a fixed seed, so every run measures
the same cases in the same order; `full=True` enumerates all of it. Combinations llama.cpp
refuses (quantized V without flash attention) are left out here and tested on their own.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from vramc.memory.llama_params import LlamaParams

# (catalog name, quantisations); the first model of each family is the one in the brief
MODELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("llama-3.1-8b-instruct", ("Q4_K_M", "Q8_0")),
    ("llama-3.3-70b-instruct", ("Q4_K_M", "IQ4_XS")),
    ("qwen2.5-32b-instruct", ("Q4_K_M", "Q6_K")),
    ("mistral-7b-instruct-v0.3", ("Q4_K_M", "Q5_K_M")),
    ("gemma-2-9b-it", ("Q4_K_M", "Q8_0")),
    ("gemma-3-12b-it", ("Q4_K_M", "Q4_0")),
    ("mixtral-8x7b-instruct-v0.1", ("Q4_K_M", "Q3_K_M")),
    ("qwen3-30b-a3b", ("Q4_K_M", "Q8_0")),
    ("phi-3-mini-4k-instruct", ("Q4_K_M", "F16")),
    ("deepseek-r1-distill-qwen-14b", ("Q4_K_M",)),
    ("llama-3.3-nemotron-super-49b-v1.5", ("Q4_K_M",)),
    ("deepseek-v2-lite-chat", ("Q4_K_M", "Q8_0")),
    ("glm-4.5-air", ("Q4_K_M", "Q8_0")),
    ("nvidia-nemotron-nano-9b-v2", ("Q4_K_M",)),
    ("nvidia-nemotron-3-nano-30b-a3b", ("Q4_K_M", "Q8_0")),
    ("granite-4.0-h-small", ("Q4_K_M", "Q8_0")),
)

SPLITS = {0: (None,), 1: (None,), 2: ((3, 5), (1, 1)), 3: ((1, 2, 1), (5, 3, 2))}
GPU_LAYERS = ("all", "half", "output")  # -ngl all, about half the blocks, the output layer only
CONTEXTS = (2048, 8192, 32768, 131072)
UBATCHES = (512, 2048)
FLASH_ATTN = ("on", "off")
KV_TYPES = ("f16", "q8_0", "q4_0")
PARALLEL = (1, 4)
SAMPLES_PER_MODEL = 24


@dataclass(frozen=True)
class Case:
    model: str
    ftype: str
    n_devices: int
    params: LlamaParams

    @property
    def label(self) -> str:
        p = self.params
        ngl = "all" if p.n_gpu_layers < 0 else str(p.n_gpu_layers)
        ts = ",".join(f"{x:g}" for x in p.tensor_split) if p.tensor_split else "-"
        return (
            f"{self.model} {self.ftype} dev={self.n_devices} ts={ts} ngl={ngl} c={p.n_ctx} "
            f"ub={p.n_ubatch} fa={p.flash_attn} kv={p.type_k} np={p.n_seq_max}"
        )


def _gpu_layers(choice: str, n_layer: int) -> int:
    return {"all": -1, "half": n_layer // 2, "output": 1}[choice]


def _params(n_dev: int, ts, ngl: int, ctx: int, ub: int, fa: str, kv: str, np_: int) -> LlamaParams:
    return LlamaParams(
        n_ctx=ctx,
        n_seq_max=np_,
        n_ubatch=ub,
        n_gpu_layers=ngl if n_dev else 0,
        tensor_split=ts,
        flash_attn=fa,
        type_k=kv,
        type_v=kv,
    )


def _valid(fa: str, kv: str) -> bool:
    return fa == "on" or kv == "f16"  # "quantized V cache requires flash_attn to be enabled"


def cases(n_layers: dict[str, int], full: bool = False, models=None, samples: int = SAMPLES_PER_MODEL) -> list[Case]:
    """The grid; `n_layers` gives each model's block count (for the partial offload)."""
    out: list[Case] = []
    for name, ftypes in MODELS:
        if models and name not in models:
            continue
        combos = [
            c
            for c in itertools.product(
                ftypes,
                [(n, ts) for n in SPLITS for ts in SPLITS[n]],
                GPU_LAYERS,
                CONTEXTS,
                UBATCHES,
                FLASH_ATTN,
                KV_TYPES,
                PARALLEL,
            )
            if _valid(c[5], c[6]) and (c[1][0] or c[2] == "all")
        ]
        if not full:
            combos = _sample(combos, name, samples)
        for ftype, (n_dev, ts), ngl, ctx, ub, fa, kv, np_ in combos:
            params = _params(n_dev, ts, _gpu_layers(ngl, n_layers[name]), ctx, ub, fa, kv, np_)
            out.append(Case(name, ftype, n_dev, params))
    return out


def _sample(combos: list, seed: str, n: int) -> list:
    """A deterministic sample that still shows every device count and every quantisation."""
    rng = random.Random(seed)
    picked = rng.sample(combos, min(n, len(combos)))
    for key in (lambda c: c[1][0], lambda c: c[0]):
        for value in sorted({key(c) for c in combos}, key=str):
            if not any(key(c) == value for c in picked):
                picked.append(rng.choice([c for c in combos if key(c) == value]))
    return sorted(picked, key=combos.index)
