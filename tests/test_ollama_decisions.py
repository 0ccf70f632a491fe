"""Ollama's own load decisions (vramc.plan.ollama_sched), one table per decision, each case naming the
function of the pinned Ollama (0.32.15, commit b7871fc) it mirrors; then the same decisions
through whole plans, their JSON and the artifacts that pin them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramc.diagnostics import Severity
from vramc.lint.check import run_check
from vramc.plan import ollama_sched as o

ROOT = Path(__file__).resolve().parent.parent
LLAMA8B = ROOT / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml"
NANO = Path(__file__).parent / "fixtures" / "profiles" / "bad" / "models" / "nemotron-nano-9b-v2.yaml"
GiB, MiB = 2**30, 2**20


# --- batch: server/sched.go automaticGenerationBatch ------------------------------------------------

BATCH_CASES = [
    # (id naming the Go function and branch, effective ctx, predicted, available, fa off, CUDA memory, batch)
    ("generationBatchForContext: <=4096 -> 512", 4096, 4 * GiB, 16 * GiB, False, [16 * GiB], 512),
    ("generationBatchForContext: >4096 -> 1024", 4097, 4 * GiB, 16 * GiB, False, [16 * GiB], 1024),
    ("generationBatchFits: 16 GB seed, 9.95 of 16 GiB", 16384, 10_687_086_592, 16 * GiB, False, [16 * GiB], 1024),
    ("generationBatchForContext: >32768 -> 2048", 32769, 5 * GiB, 24 * GiB, False, [24 * GiB], 2048),
    ("generationBatchHasHeadroom: 2048 needs <=60%", 65536, 16 * GiB, 24 * GiB, False, [24 * GiB], 1024),
    ("generationBatchHasHeadroom: 1024 needs <=75%", 16384, 12 * GiB + MiB, 16 * GiB, False, [16 * GiB], 512),
    ("generationBatchFits: over 80% -> 512", 65536, 20 * GiB, 24 * GiB, False, [24 * GiB], 512),
    ("generationBatchFits: surcharge 768 MiB must fit under 80%", 16384, 12 * GiB, 16 * GiB, False, [16 * GiB], 1024),
    ("generationBatchFits: no available memory (CPU) fits", 65536, 30 * GiB, 0, False, [], 2048),
    ("automaticGenerationBatch: CUDA, flash attention off", 16384, 4 * GiB, 16 * GiB, True, [16 * GiB], 512),
    ("constrainedCUDAWithoutFlashAttention: <=8 GiB, ctx >4096", 8192, 4 * GiB, 8 * GiB, True, [8 * GiB], 256),
    ("constrainedCUDAWithoutFlashAttention: ctx 4096 is not", 4096, 4 * GiB, 8 * GiB, True, [8 * GiB], 512),
    ("hasCUDADevice: flash attention off without CUDA", 8192, 4 * GiB, 16 * GiB, True, [], 1024),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_automatic_generation_batch(case):
    _, ctx, predicted, available, fa_off, cuda, want = case
    assert o.automatic_generation_batch(ctx, predicted, available, fa_off, cuda) == want


def test_batch_surcharge_and_step_down():
    # server/sched.go generationBatchSurcharge, nextLowerGenerationBatch
    assert [o.generation_batch_surcharge(b) for b in (256, 512, 1024, 2048)] == [0, 0, 768 * MiB, 2 * GiB]
    assert [o.next_lower_generation_batch(b) for b in (2048, 1024)] == [1024, 512]


# --- prediction: llm/llama_server.go PredictServerVRAM ---------------------------------------------


def _meta(path: Path):
    import yaml

    from vramc.load.schema import Model
    from vramc.model.modelmeta import ModelMeta

    doc = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "kind"}
    return ModelMeta.from_lock(Model.model_validate(doc).lock)


def test_predict_server_vram():
    llama = _meta(LLAMA8B)
    size = o.model_file_size(llama)  # no file size locked: the tensor data
    # 2 (K+V) x 32 layers x 8 KV heads x (4096 / 32) x 16384 tokens x 2 bytes = 2 GiB
    assert o.predict_server_vram(size, llama, 16384) - size == 2 * GiB
    # nemotron_h: HeadCountKVMin is 0 on the Mamba layers, and Ollama then takes 1 KV head
    nano = _meta(NANO)
    assert o.model_file_size(nano) == 6520665888  # the locked file size
    assert o.predict_server_vram(0, nano, 1000) == 2 * 56 * 1 * (4480 // 40) * 1000 * 2


# --- GPUs: server/sched.go selectLlamaServerPlacement -----------------------------------------------

G = o.OllamaGpu
PLACEMENT_CASES = [
    # (id, gpus, predicted, main_gpu, sched_spread, num_gpu, (selected, main_gpu passed))
    ("selectLlamaServerPlacement: one GPU", [G(24 * GiB, 24 * GiB)], 10 * GiB, None, False, -1, ([0], None)),
    (
        "bestSingleGPUFit: most free memory",
        [G(12 * GiB, 12 * GiB), G(24 * GiB, 24 * GiB)],
        9 * GiB,
        None,
        False,
        -1,
        ([1], 0),
    ),
    (
        "betterPlacementGPU: a tie keeps the first",
        [G(24 * GiB, 24 * GiB), G(24 * GiB, 24 * GiB)],
        9 * GiB,
        None,
        False,
        -1,
        ([0], 0),
    ),
    (
        "betterPlacementGPU: discrete before integrated",
        [G(64 * GiB, 64 * GiB, integrated=True), G(16 * GiB, 16 * GiB)],
        9 * GiB,
        None,
        False,
        -1,
        ([1], 0),
    ),
    (
        "bestSingleGPUFit: within 80% only",
        [G(12 * GiB, 12 * GiB), G(12 * GiB, 12 * GiB)],
        10 * GiB,
        None,
        False,
        -1,
        ([0, 1], None),
    ),
    (
        "envconfig.SchedSpread: every GPU",
        [G(12 * GiB, 12 * GiB), G(24 * GiB, 24 * GiB)],
        9 * GiB,
        None,
        True,
        -1,
        ([0, 1], None),
    ),
    (
        "bestExplicitMainGPU: main_gpu alone, as GPU 0",
        [G(24 * GiB, 24 * GiB), G(24 * GiB, 24 * GiB)],
        9 * GiB,
        1,
        True,
        -1,
        ([1], 0),
    ),
    (
        "selectLlamaServerPlacement: num_gpu 0",
        [G(24 * GiB, 24 * GiB), G(24 * GiB, 24 * GiB)],
        9 * GiB,
        None,
        False,
        0,
        ([0, 1], None),
    ),
]


@pytest.mark.parametrize("case", PLACEMENT_CASES, ids=[c[0] for c in PLACEMENT_CASES])
def test_placement(case):
    _, gpus, predicted, main_gpu, spread, num_gpu, want = case
    assert o.select_placement(gpus, predicted, main_gpu, spread, num_gpu) == want


# --- context: server/routes.go Serve, llm/server.go NewLlamaServer, nextLowerAutoNumCtx -------------

CONTEXT_CASES = [
    ("Serve: under 23 GiB -> 4096", 16 * GiB, 1, 0, 4096),
    ("Serve: 23 GiB -> 32768", 23 * GiB, 1, 0, 32768),
    ("Serve: just under 23 GiB -> 4096", 23 * GiB - 1, 1, 0, 4096),
    ("Serve: 47 GiB -> 262144", 47 * GiB, 1, 0, 262144),
    ("Serve: the sum over GPUs", 48 * GiB, 2, 0, 262144),
    ("Serve: OLLAMA_GPU_OVERHEAD per GPU", 48 * GiB, 2, GiB + 1, 32768),
]


@pytest.mark.parametrize("case", CONTEXT_CASES, ids=[c[0] for c in CONTEXT_CASES])
def test_default_context(case):
    _, total, n, overhead, want = case
    assert o.default_context(total, n, overhead) == want


@pytest.mark.parametrize(
    "num_ctx,train,want",
    [(262144, 131072, 131072), (8192, 131072, 8192), (8192, 0, 8192)],
    ids=["NewLlamaServer: capped", "effectiveContext: below", "effectiveContext: unknown"],
)
def test_effective_context(num_ctx, train, want):
    assert o.effective_context(num_ctx, train) == want


def test_oom_retry_contexts():
    # server/sched.go nextLowerAutoNumCtx: 32768, then 4096, then no retry
    assert [o.next_lower_auto_num_ctx(c) for c in (131072, 32768, 4096)] == [32768, 4096, None]


# --- parallel, mmap, pre-load ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,parallel,completion,want",
    [("llama", 4, True, 4), ("nemotron_h", 4, True, 1), ("qwen3next", 2, True, 1), ("bert", 4, False, 1)],
    ids=[
        "load: llama keeps OLLAMA_NUM_PARALLEL",
        "load: nemotron_h one sequence",
        "load: qwen3next one sequence",
        "load: embeddings one sequence",
    ],
)
def test_num_parallel(arch, parallel, completion, want):
    assert o.num_parallel(arch, parallel, completion) == want


MMAP_CASES = [
    # (id, use_mmap, model size, host free, predicted, available, disabled by pressure)
    ("disableMmapForHostPressure: plenty of RAM", None, 8 * GiB, 64 * GiB, 10 * GiB, 16 * GiB, False),
    ("disableMmapForHostPressure: RAM < model + 8 GB", None, 8 * GiB, 15 * GiB, 10 * GiB, 16 * GiB, True),
    ("disableMmapForHostPressure: an explicit use_mmap wins", True, 8 * GiB, 15 * GiB, 10 * GiB, 16 * GiB, False),
    ("disableMmapForHostPressure: not when VRAM is tight", None, 8 * GiB, 15 * GiB, 14 * GiB, 16 * GiB, False),
]


@pytest.mark.parametrize("case", MMAP_CASES, ids=[c[0] for c in MMAP_CASES])
def test_mmap_host_pressure(case):
    _, use_mmap, size, free, predicted, available, want = case
    assert o.disable_mmap_for_host_pressure(use_mmap, size, free, free, predicted, available) is want


def test_mmap_default_reason():
    # server/sched.go disableMmapDefaultReason: CPU only turns mmap off; a GPU or use_mmap keeps it
    assert o.disable_mmap_reason(None, 0, 1) == "cpu" and o.disable_mmap_reason(None, 33, 0) == "cpu"
    assert o.disable_mmap_reason(None, 33, 1) == "" and o.disable_mmap_reason(True, 0, 0) == ""
    assert o.mmap_host_pressure_headroom(256 * 10**9) == 25.6 * 10**9


def test_preload_check():
    # server/sched.go load: with models resident, prediction + surcharge within 80% of free memory
    assert o.preload_fits(int(12.8 * GiB), 16 * GiB) and not o.preload_fits(int(12.8 * GiB) + 1, 16 * GiB)


def test_flash_attention_by_gpu():
    # llm/llama_server.go LlamaServerFlashAttention; ml/device.go cudaFlashAttentionSupported (CC >= 6.0)
    assert o.flash_attention("auto", ["RTX 4090"]) == "auto"
    assert o.flash_attention("auto", ["RTX 4090", "GTX 980"]) == "off"
    assert o.flash_attention("on", ["GTX 980"]) == "on"


# --- through plans, plan JSON and artifacts ----------------------------------------------------------


def _profile(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nmodel: {LLAMA8B}\nengine: ollama\n{body}")
    return path


def _plan(path: Path):
    result = run_check([path])
    return result, {p.dep.label: p for p in result.plans}


def test_default_context_is_capped_and_never_warned(tmp_path):
    """Issue 10: with no ctx on 48 GiB, Ollama's default 262144 is capped at Llama 3.1's trained
    131072 by Ollama itself, so the plan allocates 131072 tokens and no VR304 blames the user."""
    path = _profile(tmp_path, "d48", "hardware: {gpus: [{name: RTX A6000, vram: 48GiB}]}\n")
    result, plans = _plan(path)
    p = plans["d48"]
    assert p.params.n_ctx == 131072 and p.estimate.devices[0].kv_bytes == 131072 * 128 * 1024
    assert "VR304" not in {d.code for d in result.diagnostics}
    c = p.engine_choices["ctx"]
    assert c.value == 131072 and "262144" in c.why and c.pinned == "PARAMETER num_ctx 131072"
    # the written ctx beyond the trained one is the user's, and is said to be capped
    path = _profile(tmp_path, "long", "hardware: {gpus: [{name: RTX A6000, vram: 48GiB}]}\nsettings: {ctx: 200000}\n")
    result, plans = _plan(path)
    assert plans["long"].params.n_ctx == 131072
    [d] = [d for d in result.diagnostics if d.code == "VR304"]
    assert "Ollama caps num_ctx at 131072" in d.message and (d.line, d.column) == (5, 17)


def test_ollama_context_length_env_is_the_default(tmp_path):
    path = _profile(
        tmp_path, "envctx", "hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nenv: {OLLAMA_CONTEXT_LENGTH: 16384}\n"
    )
    _, plans = _plan(path)
    assert plans["envctx"].params.n_ctx == 16384
    assert "OLLAMA_CONTEXT_LENGTH=16384" in plans["envctx"].engine_choices["ctx"].why


@pytest.mark.parametrize("value", ["'abc'", "-5", "''", "'1e9'", "99999999999999999999999"])
def test_unparsable_ollama_env_is_ollamas_default(tmp_path, value):
    """envconfig.Uint: a value Ollama cannot parse is its default (0: the VRAM tier), so vramc
    plans the tier too, and never fails on it."""
    path = _profile(
        tmp_path,
        "bad",
        "hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\n"
        f"env: {{OLLAMA_CONTEXT_LENGTH: {value}, OLLAMA_GPU_OVERHEAD: {value}}}\n",
    )
    result, plans = _plan(path)
    if value.startswith("9999"):  # parsed, then capped at the trained context
        assert plans["bad"].params.n_ctx == 131072
    else:
        assert plans["bad"].params.n_ctx == 32768
    assert all(d.severity < Severity.ERROR for d in result.diagnostics)


def test_16gb_seed_artifacts_pin_ollamas_batch():
    modelfile = (ROOT / "out" / "16gb" / "Modelfile").read_text()
    assert "PARAMETER num_batch 1024\n" in modelfile and "PARAMETER num_ctx 8192\n" in modelfile
    assert f"# For {o.PIN};" in modelfile
    env = (ROOT / "out" / "16gb" / "ollama.env").read_text()
    assert "LLAMA_ARG_FIT=off" in env and "OLLAMA_SCHED_SPREAD" not in env  # one GPU: nothing to pin


def test_plan_json_marks_ollamas_choices(tmp_path):
    from typer.testing import CliRunner

    from vramc.cli.commands import app

    path = _profile(
        tmp_path,
        "split",
        "hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 3090, vram: 24GiB}]}\n"
        "settings: {ctx: 8192, parallel: 2}\n",
    )
    res = CliRunner().invoke(
        app, ["plan", str(path), str(ROOT / "profiles" / "deepseek-14b-split.yaml"), "--format", "json"]
    )
    assert res.exit_code == 0, res.output
    recs = {r["name"]: r for r in json.loads(res.output)["deployments"]}
    ch = recs["split"]["engine_choices"]
    assert ch["batch"]["value"] == 1024 and ch["batch"]["by"] == o.PIN
    assert ch["batch"]["source"] == "server/sched.go automaticGenerationBatch"
    assert ch["gpus"]["value"] == [0, 1] and ch["gpus"]["pinned"] == "OLLAMA_SCHED_SPREAD=1"
    assert "CUDA0 alone" in ch["gpus"]["why"]
    assert ch["fit"]["value"] == "off" and ch["ubatch"]["value"] == recs["split"]["settings"]["ubatch"] == 1024
    assert "batch" not in recs["split"]["auto"]  # Ollama's, not vramc's solver's
    assert recs["deepseek-14b-split"]["engine_choices"] == {}  # llama-server decides nothing behind vramc


def test_multi_gpu_plan_pins_spread(tmp_path, monkeypatch):
    from build_support import build

    path = _profile(
        tmp_path,
        "split",
        "hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 3090, vram: 24GiB}]}\nsettings: {ctx: 8192}\n",
    )
    monkeypatch.chdir(tmp_path)
    assert build([path.name]) == 0
    env = (tmp_path / "out" / "split" / "ollama.env").read_text()
    assert "OLLAMA_SCHED_SPREAD=1\n" in env and "CUDA_VISIBLE_DEVICES=0,1\n" in env
    _, plans = _plan(path)
    assert [d.layers is not None for d in plans["split"].estimate.devices] == [True, True]


def test_main_gpu_loads_on_that_gpu_alone(tmp_path, monkeypatch):
    from build_support import build, parse_modelfile

    path = _profile(
        tmp_path,
        "main",
        "hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 3090, vram: 24GiB}]}\n"
        "settings: {ctx: 8192, main_gpu: 1}\n",
    )
    result, plans = _plan(path)
    p = plans["main"]
    assert [(d.id, d.name) for d in p.estimate.devices] == [("CUDA0", "RTX 3090")]
    assert p.params.split_mode == "none" and p.params.main_gpu == 0
    codes = {d.code for d in result.diagnostics if d.severity >= Severity.WARNING}
    assert codes == {"VR407"}  # not VR310: main_gpu 1 is a GPU of the deployment
    monkeypatch.chdir(tmp_path)
    assert build([path.name]) == 0
    params = dict(parse_modelfile((tmp_path / "out" / "main" / "Modelfile").read_text())[1:])
    assert params["main_gpu"] == "0" and params["num_batch"] == "1024"
    assert "CUDA_VISIBLE_DEVICES=1\n" in (tmp_path / "out" / "main" / "ollama.env").read_text()


def test_user_batch_is_kept_and_ubatch_follows_it(tmp_path):
    path = _profile(
        tmp_path,
        "b",
        "hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nsettings: {ctx: 8192, batch: 256, ubatch: 128}\n",
    )
    result, plans = _plan(path)
    p = plans["b"]
    assert (p.params.n_batch, p.params.n_ubatch) == (256, 256)  # appendBatchArgs: -b 256 -ub 256
    assert "batch" not in p.engine_choices and p.engine_choices["ubatch"].value == 256
    assert {d.code for d in result.diagnostics if d.severity >= Severity.WARNING} == {"VR400"}  # ubatch


def test_parallel_forced_for_nemotron_h(tmp_path):
    path = tmp_path / "nano.yaml"
    path.write_text(
        f"name: nano\nmodel: {NANO}\nengine: ollama\n"
        "hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nsettings: {ctx: 8192, parallel: 4}\n"
    )
    result, plans = _plan(path)
    assert plans["nano"].params.n_seq_max == 1 and plans["nano"].params.n_ctx == 8192
    assert "VR406" in {d.code for d in result.diagnostics}


def test_auto_ctx_gets_the_batch_of_the_context_the_solver_chose(tmp_path):
    # ctx auto on 16 GiB: the solver picks the context, Ollama's batch follows it (rebatch)
    path = _profile(tmp_path, "a", "hardware: {gpus: [{name: RTX 4080, vram: 16GiB}]}\nsettings: {ctx: auto}\n")
    _, plans = _plan(path)
    p = plans["a"]
    ctx = p.params.n_ctx
    assert "ctx" in p.auto and ctx > 4096
    meta, gpus = p.meta, o._ollama_gpus(p.gpus)
    predicted = o.predict_server_vram(o.model_file_size(meta), meta, ctx)
    assert (
        p.params.n_batch
        == p.params.n_ubatch
        == o.automatic_generation_batch(ctx, predicted, o.available_for_placement(gpus), False, [16 * GiB])
    )


def test_cpu_only_and_the_trained_context(tmp_path):
    # ctx 0 is vramc's "the trained context", written as num_ctx: Ollama's batch is that of 131072;
    # no GPU: Ollama turns mmap off (disableMmapDefaultReason "cpu"); no free memory to step down by
    path = _profile(tmp_path, "cpu", "hardware: {gpus: [], host_ram: 64GiB}\nsettings: {ctx: 0}\n")
    _, plans = _plan(path)
    p = plans["cpu"]
    assert p.params.n_ctx == 131072 and p.params.n_batch == p.params.n_ubatch == 2048
    assert p.engine_choices["mmap"].value is False and "gpus" not in p.engine_choices


def test_old_gpu_gets_flash_attention_off_and_the_small_batch(tmp_path):
    # ml/device.go cudaFlashAttentionSupported: a GTX 980 (5.2) has none, so Ollama passes
    # --flash-attn off and, on 8 GiB or less above 4096 tokens, a batch of 256
    path = _profile(
        tmp_path, "old", "hardware: {gpus: [{name: GTX 980, vram: 4GiB}]}\nsettings: {ctx: 8192, gpu_layers: auto}\n"
    )
    _, plans = _plan(path)
    p = plans["old"]
    assert p.params.flash_attn == "off" and p.params.n_batch == p.params.n_ubatch == 256
    assert p.engine_choices["coresident"].value is False  # 8.95 GiB predicted on a 4 GiB card


@pytest.mark.parametrize(
    "ignored",
    ["tensor_split: [1, 0]", "tensor_split: [0, 1]", "tensor_split: [1, 2, 3]", "split_mode: row", "split_mode: none"],
)
def test_split_settings_ollama_ignores_are_not_planned(tmp_path, ignored):
    """Ollama passes neither a tensor split nor the deployment's split mode (VR400 says so), so the
    plan is the one without them: llama-server's layer split by free memory. Planning them showed
    a placement Ollama never makes (all layers on one card, VR308), and VR303/VR311 errors."""
    hw = "hardware: {gpus: [{name: RTX 3060, vram: 12GiB}, {name: RTX 3090, vram: 24GiB}]}\n"
    plain, plans = _plan(_profile(tmp_path, "plain", hw + "settings: {ctx: 8192}\n"))
    want = plans["plain"]
    result, plans = _plan(_profile(tmp_path, "ign", hw + f"settings: {{ctx: 8192, {ignored}}}\n"))
    p = plans["ign"]
    assert p.params.split_mode == "layer" and p.params.tensor_split is None
    assert [d.layers for d in p.estimate.devices] == [d.layers for d in want.estimate.devices]
    assert all(d.layers for d in p.estimate.devices)  # both cards hold layers
    assert [(d.code, d.severity) for d in result.diagnostics] == [("VR400", Severity.WARNING)]
