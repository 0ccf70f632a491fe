"""vLLM as vLLM users read it (issue 16): the KV figures vLLM logs at start, `tight` in vLLM's
terms, the `auto` settings vramc chooses for vLLM (one deployment and several on one GPU), and
`vramc fit` on vLLM profiles. Every figure is worked by hand from vLLM 0.33.0's formulas
(docs/vllm-model.md) and written out below; the golden plan of profiles/vllm-96gb.yaml pins the rest.
"""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.lint.check import run_check
from vramc.plan.vllm_fit import fp8_kv_supported, joint_shares
from vramc.units import GiB, MiB

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "fixtures" / "plans" / "vllm-96gb.json"
CAP = 96 * GiB  # profiles/hardware/gpu-96gb.yaml
OVERHEAD = 735_261_416  # 250 MiB + 188 SMs x 2.4 MiB (RTX PRO 6000 Blackwell), vLLM's 625 MiB floor below it
MARGIN = int(0.05 * CAP)  # the default 5 % margin


@pytest.fixture(autouse=True)
def no_cache(monkeypatch):
    monkeypatch.setenv("VRAMC_NO_CACHE", "1")


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    """profiles/ with the shipped hardware and model profiles and `files`."""
    prof = tmp_path / "profiles"
    shutil.copytree(ROOT / "profiles" / "hardware", prof / "hardware")
    shutil.copytree(ROOT / "profiles" / "models", prof / "models")
    for name, text in files.items():
        (prof / name).write_text(textwrap.dedent(text))
    return prof


def plans(path: Path) -> dict:
    return {p.dep.label: p for p in run_check([path]).plans}


# --- what vLLM logs, by hand --------------------------------------------------------------------
def test_shipped_coder_kv_figures_by_hand():
    """profiles/vllm-96gb.yaml `coder`: DeepSeek Coder 33B AWQ at 0.6 of 96 GiB, 16384 tokens, 64
    sequences, 8192 batched tokens."""
    p = plans(ROOT / "profiles" / "vllm-96gb.yaml")["coder"]
    d = p.estimate.devices[0].detail
    requested = math.ceil(CAP * 0.6)  # request_memory
    assert requested == d["requested"] == 61_847_529_063
    weights = 18_010_000_000  # weights_size 18.01GB, TP 1
    forward = 8192 * 2 * (2 * 7168 + 3 * 19200)  # T.b.(2H + 3I)
    sampler = int(38.3 * 64 * 32256)  # min(seqs, T) x round_up(V, 64)
    hidden = 8192 * 7168 * 2
    activation = max(forward, sampler) + hidden
    assert activation == d["activation"] == 1_296_039_936
    non_torch = int(0.13 * GiB)
    # capture sizes 1, 2, 4, 8..128 (19) PIECEWISE + the 11 of them <= 64 FULL; a graph costs its
    # [size, H] bf16 output, at least 1 MiB: 128 first, then 18 x 120 and 10 x 1 MiB (56 < 1 MiB)
    graphs = 128 * 7168 * 2 + 18 * 120 * 7168 * 2 + 10 * MiB
    assert graphs == d["cudagraph"] == 43_286_528 and d["cudagraphs"] == 30
    available = requested - (weights + activation + non_torch + graphs)
    assert available == d["kv_available"] == 42_358_616_162
    per_block = 62 * 16 * 8 * (128 + 128) * 2  # layers x block x KV heads x (K + V) x bf16
    assert per_block == d["kv_bytes_per_block"] == 4_063_232
    blocks = available // per_block  # get_kv_cache_config_from_groups
    assert blocks == 10_424
    rec = json.loads(
        CliRunner().invoke(app, ["plan", "--format", "json", str(ROOT / "profiles" / "vllm-96gb.yaml")]).output
    )
    coder = next(r for r in rec["deployments"] if r["name"] == "coder")
    per_request = 16384 // 16  # cdiv(max_model_len, block_size)
    assert coder["kv_blocks"] == blocks and coder["block_size"] == 16
    assert coder["kv_tokens"] == blocks * 16 == 166_784
    assert coder["max_concurrency"] == round(blocks / per_request, 2) == 10.18  # 10.1796875
    assert coder["kv_capacity_tokens"] == int(blocks / per_request * 16384) == 166_784
    # _check_enough_kv_cache_memory checks against available - one block (the null block):
    # (42 358 616 162 - 4 063 232) // 4 063 232 = 10 423 blocks = 166 768 tokens, more than the
    # derived 16384 x RoPE factor 4 = 65 536, so the whole derived length fits
    assert (available - per_block) // per_block * 16 == 166_768
    assert coder["max_model_len_fit"] == 65_536
    # 10.18 requests of 16384 < max_num_seqs 64: tight in vLLM's terms (VR350)
    assert coder["verdict"] == "tight" and blocks < per_request * 64
    # plan's text says the same
    text = CliRunner().invoke(app, ["plan", str(ROOT / "profiles" / "vllm-96gb.yaml")]).output
    assert (
        "KV cache: 10,424 blocks x 16 = 166,784 tokens (39.45 GiB); maximum concurrency 10.18x at max_model_len 16,384"
    ) in text


def test_shipped_general_kv_figures_by_hand():
    p = plans(ROOT / "profiles" / "vllm-96gb.yaml")["general"]
    d = p.estimate.devices[0].detail
    requested = math.ceil(CAP * 0.32)
    forward = 8192 * 2 * (2 * 4096 + 3 * 14336)
    activation = max(forward, int(38.3 * 64 * 32000)) + 8192 * 4096 * 2
    graphs = 128 * 4096 * 2 + 18 * MiB + 10 * MiB  # 120 x 4096 x 2 < 1 MiB
    available = requested - (4_150_000_000 + activation + int(0.13 * GiB) + graphs)
    assert available == d["kv_available"]
    per_block = 32 * 16 * 8 * 256 * 2
    blocks = available // per_block
    assert (blocks, d["kv_tokens"]) == (13_236, 13_236 * 16)
    assert d["blocks_per_request"] == 32768 // 16
    assert blocks / 2048 == pytest.approx(6.4629, abs=1e-4)


def test_colocated_shipped_pair_by_hand():
    """0.6 + 0.32 on one 96 GiB GPU: VR335 sums the budgets and one CUDA context each, VR336
    replays the start order (coder first; then general sees what coder holds once idle)."""
    ps = plans(ROOT / "profiles" / "vllm-96gb.yaml")
    c, g = (ps[n].estimate.devices[0].detail for n in ("coder", "general"))
    assert ps["coder"].gpus[0].overhead_bytes == OVERHEAD
    assert c["requested"] + g["requested"] + 2 * OVERHEAD == 96_303_400_729 <= CAP
    # idle = weights + non-torch + graphs + KV + the sampler warm-up (forward activations freed)
    idle = 18_010_000_000 + int(0.13 * GiB) + 43_286_528 + 10_424 * 4_063_232 + int(38.3 * 64 * 32256)
    assert idle == c["idle"] == 60_627_069_240
    free_for_general = CAP - (idle + OVERHEAD) - OVERHEAD
    assert free_for_general == 40_981_623_032 >= g["requested"]
    diags = run_check([ROOT / "profiles" / "vllm-96gb.yaml"]).diagnostics
    assert not [d for d in diags if d.code in ("VR335", "VR336")]
    assert sorted(d.deployment for d in diags if d.code == "VR350") == ["coder", "general"]


def test_golden_plan_of_the_shipped_vllm_profile(monkeypatch):
    """The whole plan JSON of profiles/vllm-96gb.yaml; regenerate with
    `vramc plan --format json profiles/vllm-96gb.yaml > tests/fixtures/plans/vllm-96gb.json`
    (from the repository's top) when a change to the model is intended."""
    monkeypatch.chdir(ROOT)
    out = CliRunner().invoke(app, ["plan", "--format", "json", "profiles/vllm-96gb.yaml"]).output
    assert out == GOLDEN.read_text()


# --- auto, one deployment -----------------------------------------------------------------------
def test_utilization_auto_leaves_the_margin(tmp_path):
    prof = project(
        tmp_path,
        {
            "one.yaml": """\
        name: one
        hardware: {gpus: [{name: RTX PRO 6000 Blackwell, vram: 96GiB, tenants: [{name: desktop, vram: 3GiB}]}]}
        model: qwen2.5-coder-32b-instruct-awq
        engine: vllm
        settings: {gpu_memory_utilization: auto, max_model_len: 32768}
        """
        },
    )
    p = plans(prof / "one.yaml")["one"]
    # (96 GiB - 3 GiB tenants - 701.2 MiB context - 4.8 GiB margin) / 96 GiB = 0.9115 -> 0.91
    share = (CAP - 3 * GiB - OVERHEAD - MARGIN) / CAP
    assert math.floor(share * 100) / 100 == 0.91 == p.estimate.resolved["gpu_memory_utilization"]
    d = p.estimate.devices[0]
    assert d.free_bytes >= p.margins[0] and "gpu_memory_utilization" in p.auto
    assert not p.estimate.errors


def test_max_num_seqs_auto_is_the_concurrency_the_cache_holds(tmp_path):
    prof = project(
        tmp_path,
        {
            "one.yaml": """\
        name: one
        hardware: gpu-96gb
        model: deepseek-coder-33b-instruct-awq
        engine: vllm
        settings: {gpu_memory_utilization: 0.4, max_model_len: 65536, max_num_seqs: auto}
        """
        },
    )
    p = plans(prof / "one.yaml")["one"]
    d = p.estimate.devices[0].detail
    seqs = p.estimate.resolved["max_num_seqs"]
    # 65536 tokens = 4096 blocks per request; the cache holds floor(blocks / 4096) of them
    assert seqs == d["kv_blocks"] // 4096 >= 1 and d["blocks_per_request"] == 4096
    assert p.verdict == "fits" and "max_num_seqs" in p.auto


def test_tensor_parallel_auto_is_the_smallest_that_fits(tmp_path):
    prof = project(
        tmp_path,
        {
            "tp.yaml": """\
        name: big
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 4090, vram: 24GiB}]}
        model: qwen2.5-coder-32b-instruct-awq
        engine: vllm
        settings: {tensor_parallel_size: auto, gpu_memory_utilization: 0.92, max_model_len: 32768}
        """
        },
    )
    p = plans(prof / "tp.yaml")["big"]
    # TP 1: 18 GiB of AWQ weights leave too little of 22 GiB for one 32768-token request; TP 2 does
    assert p.estimate.resolved["tensor_parallel_size"] == 2 and not p.estimate.errors
    assert any("tensor_parallel_size 1" in s and "VR331" in s for s in p.search)
    # with TP 2 the process holds NCCL buffers too: the GPUs are planned with that overhead
    assert p.gpus[0].overhead_bytes == 625 * MiB + 950 * MiB


def test_max_model_len_auto_and_kv_dtype_auto_reach_the_derived_length(tmp_path):
    prof = project(
        tmp_path,
        {
            "a.yaml": """\
        name: a
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: qwen2.5-coder-32b-instruct-awq
        engine: vllm
        settings: {max_model_len: auto, kv_cache_dtype: auto}
        """,
            "b.yaml": """\
        name: b
        hardware: {gpus: [{name: RTX 3090, vram: 24GiB}]}
        model: qwen2.5-coder-32b-instruct-awq
        engine: vllm
        settings: {max_model_len: auto, kv_cache_dtype: auto}
        """,
        },
    )
    a, b = plans(prof / "a.yaml")["a"], plans(prof / "b.yaml")["b"]
    # bf16 cannot hold the derived 32768 on one 4090; fp8 (Ada has it) holds twice the tokens
    assert a.estimate.resolved["kv_cache_dtype"] == "fp8"
    ra, rb = a.estimate.resolved, b.estimate.resolved
    assert rb["kv_cache_dtype"] == "auto"  # no fp8 on Ampere: vLLM's default stays
    assert ra["max_model_len"] > rb["max_model_len"] > 0
    # auto-fit = estimate_max_model_len: the longest whose blocks fit (available - null block)
    d = a.estimate.devices[0].detail
    check = d["kv_available"] - d["kv_bytes_per_block"]
    assert math.ceil(ra["max_model_len"] / 16) * d["kv_bytes_per_block"] <= check
    assert math.ceil((ra["max_model_len"] + 16) / 16) * d["kv_bytes_per_block"] > check
    assert fp8_kv_supported("RTX 4090") and not fp8_kv_supported("RTX 3090")


def test_kv_cache_memory_bytes_replaces_the_budget(tmp_path):
    prof = project(
        tmp_path,
        {
            "k.yaml": """\
        name: k
        hardware: gpu-96gb
        model: mistral-7b-instruct-awq
        engine: vllm
        settings: {kv_cache_memory_bytes: 8GiB, gpu_memory_utilization: 0.5, max_model_len: 32768}
        """
        },
    )
    p = plans(prof / "k.yaml")["k"]
    d = p.estimate.devices[0]
    # Worker.determine_available_memory returns kv_cache_memory_bytes as the KV budget:
    # 8 GiB // (32 layers x 65 536 B) = 4096 blocks = 65 536 tokens = 2 requests of 32768
    assert d.detail["kv_blocks"] == 8 * GiB // (32 * 65536) == 4096
    assert d.kv_bytes == 8 * GiB and p.estimate.resolved["kv_cache_memory_bytes"] == 8 * GiB
    assert (
        d.detail["held"]
        == d.weights_bytes + d.detail["activation"] + d.detail["non_torch"] + d.detail["cudagraph"] + 8 * GiB
    )
    out = CliRunner().invoke(app, ["plan", "--format", "json", str(prof / "k.yaml")]).output
    assert json.loads(out)["deployments"][0]["max_concurrency"] == 2.0


# --- auto, several deployments on one GPU ------------------------------------------------------
PAIR = """\
    kind: deployments
    hardware: gpu-96gb
    deployments:
      - name: coder
        model: deepseek-coder-33b-instruct-awq
        engine: vllm
        settings:
          gpu_memory_utilization: auto
          max_model_len: 16384
          max_num_seqs: 64
          max_num_batched_tokens: 8192
      - name: general
        model: mistral-7b-instruct-awq
        engine: vllm
        settings:
          gpu_memory_utilization: auto
          max_model_len: 32768
          max_num_seqs: 64
          max_num_batched_tokens: 8192
    """


def test_joint_utilization_auto_by_hand(tmp_path):
    prof = project(tmp_path, {"pair.yaml": PAIR})
    ps = plans(prof / "pair.yaml")
    c, g = ps["coder"], ps["general"]
    # what each needs besides KV is what the shipped profile's figures show (same settings)
    non_kv_c = 19_488_912_901  # weights + activation + non-torch + graphs (coder, above)
    non_kv_g = g.estimate.devices[0].detail["requested"] - g.estimate.devices[0].detail["kv_available"]
    room = CAP - MARGIN - 2 * OVERHEAD
    per_req_c, per_req_g = 1024 * 4_063_232, 2048 * 2_097_152
    times = (room - non_kv_c - non_kv_g) / (per_req_c + per_req_g)  # the same count for both
    assert times == pytest.approx(8.48, abs=0.01)
    share_c = math.floor((non_kv_c + (times * 1024 + 1) * 4_063_232) / CAP * 100) / 100
    share_g = math.floor((non_kv_g + (times * 2048 + 1) * 2_097_152) / CAP * 100) / 100
    assert (
        (c.estimate.resolved["gpu_memory_utilization"], g.estimate.resolved["gpu_memory_utilization"])
        == (share_c, share_g)
        == (0.53, 0.4)
    )
    # together they leave the margin, and each holds about 8 requests at its length
    held = sum(p.estimate.devices[0].detail["requested"] + OVERHEAD for p in (c, g))
    assert CAP - held >= MARGIN
    for p in (c, g):
        d = p.estimate.devices[0].detail
        assert 8 <= d["kv_blocks"] / d["blocks_per_request"] < 8.5
    diags = run_check([prof / "pair.yaml"]).diagnostics
    assert not [d for d in diags if d.code in ("VR335", "VR336")]


def test_joint_auto_next_to_a_fixed_share_and_tenants():
    """joint_shares alone: a fixed instance's share comes off first, then a tenant's memory."""
    from vramc.memory.usage import GpuBudget

    class P:  # a plan as joint_shares reads it: requested settings, GPUs, margins, estimate
        def __init__(self, util, detail):
            from types import SimpleNamespace

            self.requested = SimpleNamespace(gpu_memory_utilization=util)
            self.gpus = [
                GpuBudget("CUDA0", "RTX PRO 6000 Blackwell", 0, CAP, tenants_bytes=2 * GiB, overhead_bytes=OVERHEAD)
            ]
            self.margins = [MARGIN]
            self.estimate = SimpleNamespace(devices=[SimpleNamespace(gpu=0, detail=detail)])

    fixed = P(
        0.3, {"requested": math.ceil(CAP * 0.3), "kv_available": 0, "blocks_per_request": 1, "kv_bytes_per_block": 1}
    )
    auto = P(
        "auto",
        {"requested": 50 * GiB, "kv_available": 40 * GiB, "blocks_per_request": 1024, "kv_bytes_per_block": 4 * MiB},
    )
    shares = joint_shares([fixed, auto], lambda p, gpu: MARGIN, {id(auto)})
    # room: 96 - 2 tenants - 4.8 margin - 2 contexts - 28.8 (0.3 fixed) GiB; the auto one takes
    # all of it (10 GiB of non-KV, the rest KV): floor((room + ... ) / 96 GiB, 2 decimals)
    room = CAP - 2 * GiB - MARGIN - 2 * OVERHEAD - math.ceil(CAP * 0.3)
    times = (room - 10 * GiB) / (1024 * 4 * MiB)
    want = math.floor((10 * GiB + (times * 1024 + 1) * 4 * MiB) / CAP * 100) / 100
    assert shares == {id(auto): want} and want == 0.61


def test_variant_with_auto_utilization_shares_with_the_base(tmp_path):
    prof = project(
        tmp_path,
        {
            "pair.yaml": PAIR.replace(
                "      max_num_batched_tokens: 8192\n      - name: general",
                "      max_num_batched_tokens: 8192\n        variants:\n"
                "          long: {settings: {max_model_len: 65536}}\n      - name: general",
                1,
            )
        },
    )
    ps = plans(prof / "pair.yaml")
    assert "coder@long" in ps
    long, general = ps["coder@long"], ps["general"]
    # in the variant's combination coder@long runs beside general's base answer
    together = long.estimate.devices[0].detail["requested"] + general.estimate.devices[0].detail["requested"]
    assert CAP - together - 2 * OVERHEAD >= MARGIN
    assert long.estimate.resolved["max_model_len"] == 65536 and not long.estimate.errors


# --- vramc fit ----------------------------------------------------------------------------------
def test_fit_write_and_refit_for_vllm(tmp_path, monkeypatch):
    # coder's max_num_seqs is chosen too
    prof = project(tmp_path, {"pair.yaml": PAIR.replace("max_num_seqs: 64", "max_num_seqs: auto", 1)})
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["fit", "--write", "profiles/pair.yaml"])
    assert res.exit_code == 0, res.output
    text = (prof / "pair.yaml").read_text()
    assert "gpu_memory_utilization: 0.53  # vramc fit: auto" in text
    assert "gpu_memory_utilization: 0.4  # vramc fit: auto" in text
    assert text.count("# vramc fit: auto") == 3
    assert "max_num_seqs: 8  # vramc fit: auto" in text  # 8.4 requests of 16384 held
    res = runner.invoke(app, ["check", "--strict", "profiles/pair.yaml"])
    assert res.exit_code == 0, res.output
    # a longer context for coder, then --refit: the marked shares are solved again
    (prof / "pair.yaml").write_text(text.replace("max_model_len: 16384", "max_model_len: 32768"))
    res = runner.invoke(app, ["fit", "--refit", "--write", "profiles/pair.yaml"])
    assert res.exit_code == 0, res.output
    after = (prof / "pair.yaml").read_text()
    shares = [
        float(line.split(":")[1].split("#")[0]) for line in after.splitlines() if "gpu_memory_utilization:" in line
    ]
    assert shares[0] > 0.53 and shares[1] < 0.4 and sum(shares) <= 0.95


def test_fit_relax_names_vllm_settings(tmp_path, monkeypatch):
    project(
        tmp_path,
        {
            "one.yaml": """\
        name: one
        hardware: gpu-96gb
        model: deepseek-coder-33b-instruct-awq
        engine: vllm
        settings: {gpu_memory_utilization: 0.2, max_model_len: 65536}
        """
        },
    )
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["fit", "profiles/one.yaml"])
    assert res.exit_code == 1
    assert "`vramc fit --relax gpu_memory_utilization,max_model_len profiles/one.yaml`" in res.output
    res = CliRunner().invoke(app, ["fit", "--format", "json", "--relax", "gpu_memory_utilization", "profiles/one.yaml"])
    doc = json.loads(res.stdout)["deployments"][0]
    assert res.exit_code == 0 and doc["chosen"] == {"gpu_memory_utilization": 0.94}
    assert doc["plan"]["max_model_len_fit"] == 65536 and doc["fits"]
    res = CliRunner().invoke(app, ["fit", "--relax", "ctx,max_num_seqs,bogus", "profiles/one.yaml"])
    assert res.exit_code == 2 and "bogus" in res.output


# --- hostile input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "setting, where",
    [
        ("gpu_memory_utilization: automatic", "gpu_memory_utilization"),
        ("max_num_seqs: auto-ish", "max_num_seqs"),
        ("tensor_parallel_size: 0", "tensor_parallel_size"),
        ("kv_cache_memory_bytes: -5GiB", "kv_cache_memory_bytes"),
        ("kv_cache_memory_bytes: lots", "kv_cache_memory_bytes"),
    ],
)
def test_bad_auto_values_are_positioned_errors(tmp_path, setting, where):
    prof = project(
        tmp_path,
        {
            "bad.yaml": f"""\
        name: bad
        hardware: gpu-96gb
        model: mistral-7b-instruct-awq
        engine: vllm
        settings:
          {setting}
        """
        },
    )
    res = CliRunner().invoke(app, ["check", str(prof / "bad.yaml")])
    assert res.exit_code == 1, res.output
    assert "bad.yaml:6:" in res.output and where in res.output and "Traceback" not in res.output


def test_auto_with_no_room_says_so_and_writes_nothing(tmp_path, monkeypatch):
    text = """\
        name: tiny
        hardware: {gpus: [{name: RTX 3060, vram: 12GiB, tenants: [{name: x, vram: 11GiB}]}]}
        model: deepseek-coder-33b-instruct-awq
        engine: vllm
        settings:
          gpu_memory_utilization: auto
          max_model_len: auto
          max_num_seqs: auto
        """
    prof = project(tmp_path, {"tiny.yaml": text})
    before = (prof / "tiny.yaml").read_bytes()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["fit", "--write", "profiles/tiny.yaml"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no share of the GPUs leaves the margin free" in res.output
    assert "nothing vramc can choose starts vLLM on these GPUs" in res.output
    assert "VR332" in res.output and "nothing was written" in res.output
    assert (prof / "tiny.yaml").read_bytes() == before


def test_markdown_plan_shows_the_kv_figures():
    out = CliRunner().invoke(app, ["plan", "--format", "markdown", str(ROOT / "profiles" / "vllm-96gb.yaml")]).output
    assert (
        "KV cache: 10,424 blocks x 16 = 166,784 tokens; maximum concurrency 10.18x at "
        "max_model_len 16384; longest max_model_len that fits: 65,536"
    ) in out
