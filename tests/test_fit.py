"""The fit solver (vramc/plan/fit.py) without the oracle: its answers against vramc's own estimate.

Models are the synth catalog's real shapes (`model_meta`, no files). What the plan shows is
`estimate_llama` of the resolved choice plus each GPU's overhead; the solver must fit that within
capacity - reserve - tenants - overhead - margin. The comparison with llama.cpp's own fit is in
tests/test_fit_oracle.py and bench/fit_compare.py.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import pytest

from vramc.memory.llama import estimate_llama
from vramc.memory.llama_hparams import llama_hparams
from vramc.memory.usage import GpuBudget
from vramc.plan.engine_settings import LlamaChoice, to_llama_params
from vramc.plan.fit import CTX_STEP, DEFAULT_CTX_MIN, solve

MiB = 1024 * 1024
GiB = 1024 * MiB


@lru_cache(maxsize=None)
def meta(name: str = "llama-3.1-8b-instruct", ftype: str = "Q8_0"):
    from vramc.dev.synth.shapes import CATALOG
    from vramc.dev.synth.writer import model_meta

    return model_meta(CATALOG[name], ftype)


def n_total(m) -> int:
    return llama_hparams(m).n_layer_all + 1


def cuda(*gib: float, overhead_mib: int = 500, reserve_mib: int = 0, tenants_mib: int = 0) -> list[GpuBudget]:
    return [
        GpuBudget(
            f"CUDA{i}",
            f"{g:g} GiB",
            i,
            int(g * GiB),
            tenants_bytes=tenants_mib * MiB,
            reserve_bytes=reserve_mib * MiB,
            overhead_bytes=overhead_mib * MiB,
        )
        for i, g in enumerate(gib)
    ]


def choice(
    ctx=8192, *, gpu_layers="auto", tensor_split="auto", engine="llama-cpp-python", parallel=1, kv_unified=False, **kw
) -> LlamaChoice:
    """llama-fit-params' defaults (n_batch 2048, n_ubatch 512, flash attention auto, f16 KV)."""
    base = dict(
        engine=engine,
        ctx=ctx,
        parallel=parallel,
        kv_unified=kv_unified,
        batch=2048,
        ubatch=512,
        gpu_layers=gpu_layers,
        split_mode="layer",
        tensor_split=tensor_split,
        main_gpu=0,
        flash_attn="auto",
        cache_type_k="f16",
        cache_type_v="f16",
        kv_offload=True,
        swa_full=False,
        overrides=(),
    )
    base.update(kw)
    return LlamaChoice(**base)


def plan_estimate(m, gpus, c):
    """The estimate `plan` shows for a resolved choice (vramc.plan.planner._estimate_llama)."""
    est = estimate_llama(m, gpus, to_llama_params(c, m.n_layer, llama_hparams(m).n_ctx_train))
    for d, g in zip(est.devices, gpus):
        d.overhead_bytes = g.overhead_bytes
    return est


def limits(gpus, margins):
    return [g.capacity_bytes - g.reserve_bytes - g.tenants_bytes - m for g, m in zip(gpus, margins)]


def fits(m, gpus, c, margins) -> bool:
    est = plan_estimate(m, gpus, c)
    return not est.errors and all(d.total_bytes <= lim for d, lim in zip(est.devices, limits(gpus, margins)))


def resolved(c: LlamaChoice) -> bool:
    return "auto" not in (c.ctx, c.gpu_layers, c.tensor_split)


# --- answers fit under the plan's estimate ------------------------------------------------------

CASES = [
    # (model, ftype, GPUs GiB, ctx, what happens)
    ("llama-3.1-8b-instruct", "Q8_0", (24,), 8192),  # all layers, one GPU
    ("llama-3.1-8b-instruct", "Q8_0", (8, 3), 32768),  # partial
    ("llama-3.3-70b-instruct", "Q4_K_M", (12, 24, 24), 32768),  # all layers, three GPUs
    ("llama-3.3-70b-instruct", "Q4_K_M", (24, 24), 32768),  # partial, two GPUs
    ("llama-3.3-nemotron-super-49b-v1.5", "Q8_0", (12, 24, 24), 131072),  # deci, partial
    ("gemma-3-12b-it", "Q4_K_M", (8, 3), 8192),  # SWA, tied embeddings
    ("qwen3-30b-a3b", "Q4_K_M", (16,), 8192),  # MoE: whole layers
]


@pytest.mark.parametrize("name,ftype,gib,ctx", CASES)
def test_answer_fits_under_the_plans_estimate(name, ftype, gib, ctx):
    m = meta(name, ftype)
    gpus = cuda(*gib)
    margins = [int(0.05 * g.capacity_bytes) for g in gpus]
    c = choice(ctx, tensor_split="auto" if len(gpus) > 1 else None)
    r = solve(m, gpus, c, margins)
    assert r.fits and resolved(r.choice)
    assert fits(m, gpus, r.choice, margins)
    assert isinstance(r.choice.gpu_layers, int) and 0 < r.choice.gpu_layers <= n_total(m)
    if len(gpus) > 1:
        assert len(r.choice.tensor_split) == len(gpus)
        assert sum(r.choice.tensor_split) == r.choice.gpu_layers  # layers per GPU


def test_reserve_tenants_overhead_and_margin_all_count():
    m = meta()
    free = solve(m, cuda(8, overhead_mib=0), choice(32768, tensor_split=None), [0]).choice.gpu_layers
    for gpus, margins in (
        (cuda(8, overhead_mib=1024), [0]),
        (cuda(8, overhead_mib=0, reserve_mib=1024), [0]),
        (cuda(8, overhead_mib=0, tenants_mib=1024), [0]),
        (cuda(8, overhead_mib=0), [1024 * MiB]),
    ):
        r = solve(m, gpus, choice(32768, tensor_split=None), margins)
        assert r.fits and fits(m, gpus, r.choice, margins)
        assert r.choice.gpu_layers < free


# --- how many layers -----------------------------------------------------------------------------


def test_all_layers_on_gpus_when_possible():
    m = meta()
    for gpus in (cuda(24), cuda(12, 12), cuda(8, 8, 8)):
        ts = "auto" if len(gpus) > 1 else None
        r = solve(m, gpus, choice(8192, tensor_split=ts), [0] * len(gpus))
        assert r.fits and r.choice.gpu_layers == n_total(m) == 33


def test_all_layers_are_reached_when_the_packing_arithmetic_is_too_cautious(monkeypatch):
    from vramc.plan import fit

    # the arithmetic charges every GPU a full compute buffer, so it may rule out all layers
    # where the verified estimate has room: the climb must still reach them
    real = fit.Solver.pack
    monkeypatch.setattr(
        fit.Solver, "pack", lambda self, costs, n, caps: None if n >= n_total(m) else real(self, costs, n, caps)
    )
    m = meta()
    r = solve(m, cuda(12, 12), choice(8192), [0, 0])
    assert r.fits and r.choice.gpu_layers == n_total(m) == 33


def test_one_gpu_the_most_layers_that_fit():
    """One GPU has one split, so `n fits and n + 1 does not` proves the count is the best."""
    m = meta("llama-3.3-70b-instruct", "Q4_K_M")
    gpus = cuda(16)
    r = solve(m, gpus, choice(8192, tensor_split=None), [0])
    n = r.choice.gpu_layers
    assert r.fits and 0 < n < n_total(m)
    assert fits(m, gpus, r.choice, [0])
    assert not fits(m, gpus, replace(r.choice, gpu_layers=n + 1), [0])


def test_partial_offload_keeps_the_output_layer_on_a_gpu():
    m = meta()
    gpus = cuda(8, 3)
    r = solve(m, gpus, choice(32768), [0, 0])
    assert r.fits and r.choice.gpu_layers < n_total(m)
    est = plan_estimate(m, gpus, r.choice)
    holders = [d for d in est.devices if d.output]
    assert len(holders) == 1  # llama.cpp offloads the output layer first (ngl counts it)
    # the offloaded layers are the last ones: blocks n_layer - ngl + 1 .. n_layer - 1 and the output
    spans = [d.layers for d in est.devices if d.layers]
    assert min(a for a, _ in spans) == n_total(m) - r.choice.gpu_layers
    assert max(b for _, b in spans) == n_total(m) - 1


def test_a_fixed_gpu_layers_is_never_changed():
    m = meta()
    gpus = cuda(8, 3)
    for ctx in (8192, "auto"):
        for ngl in (5, 20):
            r = solve(m, gpus, choice(ctx, gpu_layers=ngl), [0, 0])
            assert r.choice.gpu_layers == ngl
            assert isinstance(r.choice.tensor_split, tuple) and sum(r.choice.tensor_split) == ngl
    # too many fixed layers: still unchanged, reported as not fitting
    r = solve(m, cuda(4), choice(8192, gpu_layers=33, tensor_split=None), [0])
    assert r.choice.gpu_layers == 33 and not r.fits


def test_a_fixed_tensor_split_is_never_changed():
    m = meta()
    gpus = cuda(8, 8)
    r = solve(m, gpus, choice(32768, tensor_split=(3.0, 1.0)), [0, 0])
    assert r.choice.tensor_split == (3.0, 1.0)
    assert r.fits and fits(m, gpus, r.choice, [0, 0])
    assert not fits(m, gpus, replace(r.choice, gpu_layers=r.choice.gpu_layers + 1), [0, 0])


# --- the split -----------------------------------------------------------------------------------


def test_balanced_free_memory_on_a_symmetric_pair():
    m = meta("llama-3.3-70b-instruct", "Q4_K_M")
    gpus = cuda(24, 24)
    r = solve(m, gpus, choice(8192), [0, 0])
    assert r.fits and r.choice.gpu_layers == n_total(m)
    est = plan_estimate(m, gpus, r.choice)
    free = [d.free_bytes for d in est.devices]
    layer = max(d.weights_bytes / d.n_layers for d in est.devices)
    assert abs(free[0] - free[1]) <= 1.5 * layer  # within about one layer of equal
    assert abs(r.choice.tensor_split[0] - r.choice.tensor_split[1]) <= 1


def test_split_gives_the_smaller_card_its_share():
    """12+24+24: the smallest share left free is what the split maximises, so no card is near full
    while another is mostly empty."""
    m = meta("llama-3.3-70b-instruct", "Q4_K_M")
    gpus = cuda(12, 24, 24)
    r = solve(m, gpus, choice(8192), [0, 0, 0])
    est = plan_estimate(m, gpus, r.choice)
    shares = [d.free_bytes / d.available_bytes for d in est.devices]
    assert r.fits and max(shares) - min(shares) < 0.1


# --- the context ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,ftype,gib",
    [
        ("llama-3.1-8b-instruct", "Q8_0", (12,)),
        ("llama-3.1-8b-instruct", "Q8_0", (8, 6)),
        ("llama-3.3-70b-instruct", "Q4_K_M", (12, 24, 24)),
        ("gemma-3-12b-it", "Q4_K_M", (10,)),
    ],
)
def test_ctx_auto_is_the_largest_multiple_of_256_that_fits(name, ftype, gib):
    m = meta(name, ftype)
    gpus = cuda(*gib)
    ts = "auto" if len(gpus) > 1 else None
    margins = [0] * len(gpus)
    r = solve(m, gpus, choice("auto", tensor_split=ts), margins)
    ctx = r.choice.ctx
    assert r.fits and isinstance(ctx, int) and ctx % CTX_STEP == 0
    assert DEFAULT_CTX_MIN <= ctx < llama_hparams(m).n_ctx_train
    assert r.choice.gpu_layers == n_total(m)
    assert fits(m, gpus, r.choice, margins)
    # the next step up does not fit all layers, whatever the split
    up = solve(m, gpus, choice(ctx + CTX_STEP, tensor_split=ts), margins)
    assert not (up.fits and up.choice.gpu_layers == n_total(m))


def test_ctx_auto_takes_the_trained_context_when_it_fits():
    m = meta()
    r = solve(m, cuda(80), choice("auto", tensor_split=None), [0])
    assert r.fits and r.choice.ctx == llama_hparams(m).n_ctx_train and r.choice.gpu_layers == 33


def test_ctx_auto_falls_back_to_ctx_min_with_partial_offload():
    m = meta("llama-3.3-70b-instruct", "Q4_K_M")
    gpus = cuda(16)
    r = solve(m, gpus, choice("auto", tensor_split=None), [0], ctx_min=8192)
    assert r.fits and r.choice.ctx == 8192 and r.choice.gpu_layers < n_total(m)
    fixed = solve(m, gpus, choice(8192, tensor_split=None), [0])
    assert fixed.choice.gpu_layers == r.choice.gpu_layers


def test_ctx_auto_with_fixed_layers_keeps_them():
    m = meta()
    gpus = cuda(8)
    r = solve(m, gpus, choice("auto", gpu_layers=20, tensor_split=None), [0])
    assert r.fits and r.choice.gpu_layers == 20 and r.choice.ctx % CTX_STEP == 0
    assert r.choice.ctx > DEFAULT_CTX_MIN  # 13 layers on the host leave room for context
    assert not fits(m, gpus, replace(r.choice, ctx=r.choice.ctx + CTX_STEP), [0])


def test_ctx_auto_llama_server_unified_kv_stops_at_the_trained_context():
    """llama.cpp's fit caps n_ctx at n_ctx_train * n_streams; one stream when the KV is unified."""
    m = meta()
    r = solve(m, cuda(80, 80), choice("auto", engine="llama-server", parallel=4, kv_unified=True), [0, 0])
    assert r.choice.ctx <= llama_hparams(m).n_ctx_train


def test_ctx_auto_llama_server_separate_slots_may_reach_slots_times_trained():
    m = meta("llama-3.1-8b-instruct", "Q4_K_M")
    r = solve(m, cuda(80, 80), choice("auto", engine="llama-server", parallel=2, kv_unified=False), [0, 0])
    assert r.fits and r.choice.ctx == 2 * llama_hparams(m).n_ctx_train


# --- MoE ----------------------------------------------------------------------------------------


def test_moe_llama_server_moves_expert_tensors_before_layers():
    m = meta("qwen3-30b-a3b", "Q4_K_M")
    gpus = cuda(16)
    c = choice(8192, tensor_split=None, engine="llama-server", parallel=1)
    r = solve(m, gpus, c, [0])
    assert r.fits and r.choice.gpu_layers == n_total(m) and r.moved_experts > 0
    assert r.choice.overrides and all(target == "CPU" for _, target in r.choice.overrides)
    assert fits(m, gpus, r.choice, [0])
    # the fewest blocks: one whole block fewer on the host does not fit (the card's leftover may
    # hold part of one more block: llama.cpp's fit splits a block the same way)
    from vramc.plan.engine_settings import experts_on_cpu

    fewer = replace(r.choice, overrides=(experts_on_cpu(range(r.moved_experts - 1)),))
    assert not fits(m, gpus, fewer, [0])
    # an engine without --override-tensor moves whole layers instead
    whole = solve(m, gpus, choice(8192, tensor_split=None), [0])
    assert whole.moved_experts == 0 and whole.choice.gpu_layers < n_total(m) and not whole.choice.overrides


# --- device sets ---------------------------------------------------------------------------------


def test_one_gpu_deployment():
    m = meta()
    gpus = cuda(6)
    r = solve(m, gpus, choice(8192, tensor_split=None), [0])
    assert r.fits and r.choice.tensor_split is None  # left as given: one GPU has one split
    assert 0 < r.choice.gpu_layers < 33 and fits(m, gpus, r.choice, [0])


def test_one_gpu_with_tensor_split_auto():
    m = meta()
    r = solve(m, cuda(6), choice(8192, tensor_split="auto"), [0])
    assert r.fits and r.choice.tensor_split in (None, (float(r.choice.gpu_layers),))


def test_no_gpus_runs_everything_on_the_host():
    m = meta()
    r = solve(m, [], choice(8192), [])
    assert r.fits and r.choice.gpu_layers == 0 and r.choice.tensor_split is None and r.choice.ctx == 8192
    r = solve(m, [], choice("auto"), [])
    assert r.choice.ctx == llama_hparams(m).n_ctx_train and r.choice.gpu_layers == 0


def test_nothing_fits():
    m = meta("llama-3.3-70b-instruct", "Q4_K_M")
    r = solve(m, cuda(0.5, overhead_mib=400), choice(8192, tensor_split=None), [0])
    assert not r.fits or r.choice.gpu_layers == 0
    assert resolved(r.choice)
