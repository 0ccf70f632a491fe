"""The vLLM 0.33.0 memory model: KV arithmetic, vLLM's start errors, colocated instances, batch
defaults, and the calibration against the llm-d H100 measurements (docs/vllm-model.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vramc.load import schema
from vramc.memory import vllm_arch as arch
from vramc.memory.usage import GpuBudget
from vramc.memory.vllm import check_colocated, estimate_vllm
from vramc.plan.refusals import rule_code
from vramc.units import GiB, MiB

ROOT = Path(__file__).resolve().parents[1]
RTX_PRO_6000 = 97887 * MiB  # "96 GB" card of the seed, as nvidia-smi reports it


def model(name: str) -> schema.Model:
    return schema.Model.model_validate(yaml.safe_load((ROOT / "profiles/models" / f"{name}.yaml").read_text()))


def gpu(capacity=RTX_PRO_6000, name="RTX PRO 6000 Blackwell", tenants=0, overhead=512 * MiB, i=0):
    return GpuBudget(
        id=f"CUDA{i}", name=name, gpu=i, capacity_bytes=capacity, tenants_bytes=tenants, overhead_bytes=overhead
    )


def codes(est):
    """The rule codes of the estimate's refusals (the memory model names kinds; vramc.plan.refusals maps them)."""
    return [rule_code(kind) for kind, _ in est.errors]


# --- KV page / blocks / tokens, worked by hand -------------------------------------------
def test_kv_page_deepseek_33b():
    cfg = model("deepseek-coder-33b-instruct-awq").config
    spec = arch.kv_spec(cfg, tp=1, kv_bytes=2, block_size=None)
    # 16 tokens x 8 KV heads x (128 K + 128 V) x 2 bytes = 65 536 B per layer; 62 layers.
    assert spec.page_bytes == 65536
    assert spec.bytes_per_block == 62 * 65536 == 4_063_232
    # One request at 65 536 tokens: 4096 blocks x 4 063 232 B = 15.5 GiB.
    assert spec.request_bytes(65536, 8192) == 4096 * 4_063_232


def test_kv_heads_split_then_replicated_across_tp():
    cfg = model("qwen2.5-7b-instruct").config  # 4 KV heads
    assert arch.kv_spec(cfg, 2, 2, None).page_bytes == 16 * 2 * 256 * 2  # 2 heads per rank
    assert arch.kv_spec(cfg, 8, 2, None).page_bytes == 16 * 1 * 256 * 2  # max(1, 4 // 8)
    assert arch.kv_spec(cfg, 1, 1, 32).page_bytes == 32 * 4 * 256 * 1  # fp8, --block-size 32


def test_kv_page_mla():
    cfg = schema.HFConfig(
        num_hidden_layers=61,
        hidden_size=7168,
        num_attention_heads=128,
        vocab_size=129280,
        max_position_embeddings=163840,
        kv_lora_rank=512,
        qk_rope_head_dim=64,
    )
    spec = arch.kv_spec(cfg, tp=8, kv_bytes=2, block_size=None)
    assert (spec.block_size, spec.page_bytes) == (64, 64 * 576 * 2)  # no x2, not split by TP


def test_sliding_window_blocks_per_request():
    spec = arch.kv_spec(model("mistral-7b-v0.1-awq").config, 1, 2, None)
    # min(4096 - 1 + 2 x 8192 in flight, 32768) = 20479 tokens -> 1280 blocks, +1 for alignment.
    assert spec.blocks_per_request(32768, 8192) == 1281
    assert spec.blocks_per_request(1000, 8192) == 64  # capped by max_model_len: 63 + 1


def test_blocks_tokens_and_concurrency():
    est = estimate_vllm(
        model("deepseek-coder-33b-instruct-awq"),
        [gpu()],
        schema.Settings(gpu_memory_utilization=0.55, max_num_seqs=128, max_num_batched_tokens=8192),
    )
    d = est.devices[0].detail
    assert d["requested"] == -(-RTX_PRO_6000 * 55 // 100)  # ceil(total x 0.55)
    assert d["kv_available"] == d["requested"] - (d["weights"] + d["activation"] + d["non_torch"] + d["cudagraph"])
    assert d["kv_blocks"] == d["kv_available"] // 4_063_232
    assert d["kv_tokens"] == d["kv_blocks"] * 16
    assert d["max_concurrency"] == round(d["kv_blocks"] / 4096, 2)
    assert est.devices[0].kv_bytes == d["kv_blocks"] * 4_063_232
    # KV fills the budget: the process holds what it requested, less a partial block.
    assert 0 <= d["requested"] - est.devices[0].total_bytes < 4_063_232
    assert est.errors == []


# --- vLLM's errors ---------------------------------------------------------------------
def test_max_model_len_error_with_estimated_length():
    est = estimate_vllm(
        model("deepseek-coder-33b-instruct-awq"),
        [gpu(48 * GiB, "RTX 6000 Ada")],
        schema.Settings(gpu_memory_utilization=0.5),
    )
    assert est.resolved["max_model_len"] == 65536  # 16384 x linear RoPE factor 4
    ((code, msg),) = est.errors
    check = est.devices[0].detail["kv_available"] - 4_063_232  # less the null block
    z = check // 4_063_232 * 16  # longest length whose whole blocks fit
    assert rule_code(code) == "VR331"
    assert msg.startswith(
        "To serve at least one request with the model's max seq len (65536), (15.5 GiB KV cache "
        f"is needed, which is larger than the available KV cache memory ({round(check / GiB, 2)} GiB). "
        f"Based on the available memory, the estimated maximum model length is {z}. "
    )
    fixed = estimate_vllm(
        model("deepseek-coder-33b-instruct-awq"),
        [gpu(48 * GiB, "RTX 6000 Ada")],
        schema.Settings(gpu_memory_utilization=0.5, max_model_len=z),
    )
    assert fixed.errors == []
    auto = estimate_vllm(
        model("deepseek-coder-33b-instruct-awq"),
        [gpu(48 * GiB, "RTX 6000 Ada")],
        schema.Settings(gpu_memory_utilization=0.5, max_model_len="auto"),
    )
    assert auto.errors == [] and auto.resolved["max_model_len"] == z


def test_start_check_against_free_memory():
    est = estimate_vllm(
        model("mistral-7b-instruct-awq"), [gpu(24 * GiB, "RTX 4090", tenants=2 * GiB)], schema.Settings()
    )
    assert est.resolved["gpu_memory_utilization"] == 0.92
    ((code, msg),) = [e for e in est.errors if rule_code(e[0]) == "VR330"]
    # free = 24 - 2 tenants - 0.5 own context = 21.5 GiB < ceil(24 GiB x 0.92) = 22.08 GiB
    assert msg == (
        "Free memory on device cuda:0 (21.5/24.0 GiB) on startup is less than desired "
        "GPU memory utilization (0.92, 22.08 GiB). Decrease GPU memory utilization or "
        "reduce GPU memory used by other processes."
    )


def test_no_memory_for_cache_blocks():
    m = model("qwen2.5-coder-32b-instruct-awq")
    est = estimate_vllm(m, [gpu(24 * GiB, "RTX 4090")], schema.Settings(gpu_memory_utilization=0.8))
    assert codes(est) == ["VR332"]
    assert est.errors[0][1].startswith(
        "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine"
    )
    assert est.devices[0].kv_bytes == 0
    auto = estimate_vllm(
        m, [gpu(24 * GiB, "RTX 4090")], schema.Settings(gpu_memory_utilization=0.8, max_model_len="auto")
    )
    assert auto.errors == [
        (
            "vllm-no-kv-memory",
            "Cannot auto-fit max_model_len: not enough GPU memory available "
            "to serve even a single token. Try increasing `gpu_memory_utilization`.",
        )
    ]


def test_scheduler_and_config_rules():
    m = model("mistral-7b-instruct-awq")
    est = estimate_vllm(m, [gpu()], schema.Settings(max_num_seqs=128, max_num_batched_tokens=64))
    assert (
        "vllm-scheduler-invalid",
        "max_num_batched_tokens (64) must be greater than or equal to max_num_seqs (128).",
    ) in est.errors
    est = estimate_vllm(m, [gpu()], schema.Settings(max_model_len=65536))
    assert codes(est)[0] == "VR334"
    assert "User-specified max_model_len (65536) is greater than the derived" in est.errors[0][1]
    est = estimate_vllm(
        model("deepseek-coder-33b-instruct-awq"),
        [gpu(i=0), gpu(i=1), gpu(i=2)],
        schema.Settings(tensor_parallel_size=3),
    )
    assert (
        "vllm-parallel-invalid",
        "Total number of attention heads (56) must be divisible by tensor parallel size (3).",
    ) in est.errors
    est = estimate_vllm(m, [gpu()], schema.Settings(tensor_parallel_size=2))
    assert codes(est) == ["VR337"] and est.errors[0][1].startswith("World size (2) is larger")


# --- defaults ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "capacity, name, expected",
    [
        (80 * GiB, "NVIDIA H100 80GB HBM3", (8192, 1024)),
        (80 * GiB, "NVIDIA A100-SXM4-80GB", (2048, 256)),  # PR #17885: A100 regresses with 8192
        (RTX_PRO_6000, "RTX PRO 6000 Blackwell", (8192, 1024)),
        (24 * GiB, "NVIDIA GeForce RTX 4090", (2048, 256)),
        (180 * GiB, "NVIDIA B200", (16384, 1024)),
    ],
)
def test_batch_defaults(capacity, name, expected):
    assert arch.batch_defaults(capacity, name) == expected


def test_defaults_resolved():
    est = estimate_vllm(model("qwen2.5-7b-instruct"), [gpu(80 * GiB, "H100")], schema.Settings())
    r = est.resolved
    assert (r["max_num_batched_tokens"], r["max_num_seqs"], r["max_model_len"]) == (8192, 1024, 32768)
    assert (r["gpu_memory_utilization"], r["block_size"], r["kv_cache_dtype"]) == (0.92, 16, "auto")
    short = estimate_vllm(model("qwen2.5-7b-instruct"), [gpu(80 * GiB, "H100")], schema.Settings(max_model_len=4))
    # default tokens capped at max_num_seqs x max_model_len, then seqs capped at tokens
    assert (short.resolved["max_num_batched_tokens"], short.resolved["max_num_seqs"]) == (4096, 1024)


def test_cudagraph_sizes_and_enforce_eager():
    sizes = arch.capture_sizes(1024, 8192)
    assert sizes[:4] == [1, 2, 4, 8] and sizes[-2:] == [496, 512] and len(sizes) == 51
    assert arch.capture_sizes(128, 8192)[-1] == 256  # 2 x max_num_seqs
    m = model("mistral-7b-instruct-awq")
    eager = estimate_vllm(m, [gpu()], schema.Settings(enforce_eager=True))
    graphs = estimate_vllm(m, [gpu()], schema.Settings())
    assert eager.devices[0].detail["cudagraph"] == 0
    assert graphs.devices[0].detail["cudagraph"] > 0
    assert eager.devices[0].detail["kv_blocks"] > graphs.devices[0].detail["kv_blocks"]


def test_cpu_offload_moves_weights_to_host():
    m = model("deepseek-coder-33b-instruct-awq")
    est = estimate_vllm(m, [gpu()], schema.Settings(cpu_offload_gb=2))
    assert est.devices[0].weights_bytes == 18_010_000_000 - 2 * GiB
    assert est.host.weights_bytes == 2 * GiB


# --- several instances on one GPU (the seed's 96 GB scenario) --------------------------------
def seed_pair(u1, u2, tokens=8192, seqs=128):
    g = gpu()
    a = estimate_vllm(
        model("deepseek-coder-33b-instruct-awq"),
        [g],
        schema.Settings(gpu_memory_utilization=u1, max_num_batched_tokens=tokens, max_num_seqs=seqs),
    )
    b = estimate_vllm(
        model("mistral-7b-v0.1-awq"),
        [g],
        schema.Settings(gpu_memory_utilization=u2, max_num_batched_tokens=8192, max_num_seqs=seqs),
    )
    return g, a, b


def test_seed_two_instances_at_088_fail():
    g, a, b = seed_pair(0.88, 0.88)
    assert a.errors == [] and b.errors == []  # each alone would start
    found = check_colocated([("deepseek", a), ("mistral", b)], [g])
    assert [(n, rule_code(c)) for n, c, _ in found] == [
        ("deepseek", "VR335"),
        ("mistral", "VR335"),
        ("mistral", "VR336"),
    ]
    assert "0.88 + 0.88 = 1.76" in found[0][2]
    assert found[2][2].startswith("Free memory on device cuda:0 (")
    assert "no start order lets every instance pass" in found[2][2]


def test_seed_055_plus_040_pass():
    g, a, b = seed_pair(0.55, 0.40)
    assert a.errors == [] and b.errors == []
    assert check_colocated([("deepseek", a), ("mistral", b)], [g]) == []


def test_start_order_matters_when_forward_activation_is_released():
    # The first instance releases its profile-run forward activations once started, so a second
    # instance can squeeze in; the other way round the first one's budget is fully held.
    g = gpu()
    big = estimate_vllm(
        model("deepseek-coder-33b-instruct-awq"),
        [g],
        schema.Settings(gpu_memory_utilization=0.6, max_num_batched_tokens=32768, max_num_seqs=128),
    )
    slack = big.devices[0].detail["requested"] - big.devices[0].detail["idle"]
    room = g.capacity_bytes - 2 * g.overhead_bytes - big.devices[0].detail["requested"] + slack // 2
    small = estimate_vllm(
        model("mistral-7b-v0.1-awq"),
        [g],
        schema.Settings(
            gpu_memory_utilization=int(room / g.capacity_bytes * 1000) / 1000,
            max_num_batched_tokens=8192,
            max_num_seqs=128,
        ),
    )
    assert not [f for f in check_colocated([("big", big), ("small", small)], [g]) if rule_code(f[1]) == "VR336"]
    reverse = check_colocated([("small", small), ("big", big)], [g])
    ((name, code, msg),) = [f for f in reverse if rule_code(f[1]) == "VR336"]
    assert (name, rule_code(code)) == ("big", "VR336") and "starting them in the order big, small passes" in msg


# --- calibration: llm-d H100 measurements, vLLM of late 2025 (util 0.9, graphs not in budget) --
H100 = 79.18 * GiB
LLM_D = {  # weights, activation, non-torch, KV (GiB) as vLLM logged them; max_model_len 16000
    "gpt-oss-20b": (
        dict(
            num_hidden_layers=24,
            hidden_size=2880,
            num_attention_heads=64,
            num_key_value_heads=8,
            head_dim=64,
            intermediate_size=2880,
            vocab_size=201088,
            max_position_embeddings=131072,
        ),
        1,
        13.47,
        7.38,
        0.13,
        50.28,
    ),
    "Llama-3.1-8B": (
        dict(
            num_hidden_layers=32,
            hidden_size=4096,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=14336,
            vocab_size=128256,
            max_position_embeddings=131072,
        ),
        1,
        14.99,
        4.76,
        0.13,
        51.38,
    ),
    "Qwen3-0.6B": (
        dict(
            num_hidden_layers=28,
            hidden_size=1024,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
            vocab_size=151936,
            max_position_embeddings=40960,
            tie_word_embeddings=True,
        ),
        1,
        1.12,
        5.56,
        0.13,
        64.45,
    ),
    "Qwen3-32B": (
        dict(
            num_hidden_layers=64,
            hidden_size=5120,
            num_attention_heads=64,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=25600,
            vocab_size=151936,
            max_position_embeddings=40960,
        ),
        1,
        61.03,
        5.64,
        0.14,
        4.45,
    ),
    "Llama-3.3-70B-FP8 TP2": (
        dict(
            num_hidden_layers=80,
            hidden_size=8192,
            num_attention_heads=64,
            num_key_value_heads=8,
            intermediate_size=28672,
            vocab_size=128256,
            max_position_embeddings=131072,
        ),
        2,
        33.88,
        4.84,
        0.55,
        32.0,
    ),
}
ACTIVATION_TOLERANCE = 0.05 * GiB  # worst row: Llama-3.3-70B TP2, -0.03 GiB
KV_TOLERANCE = 0.05 * GiB  # worst rows: +0.02 GiB


@pytest.mark.parametrize("name", sorted(LLM_D))
def test_calibration_llm_d(name):
    cfg, tp, weights, act, non_torch, kv = LLM_D[name]
    m = schema.Model(config=schema.HFConfig(**cfg), weights_size=f"{int(weights * GiB * tp)}B")
    gpus = [gpu(int(H100), "NVIDIA H100 80GB HBM3", i=i) for i in range(tp)]
    est = estimate_vllm(m, gpus, schema.Settings(max_model_len=16000, tensor_parallel_size=tp), version="0.11.0")
    d = est.devices[0].detail
    assert est.resolved["gpu_memory_utilization"] == 0.9
    assert abs(d["activation"] - act * GiB) <= ACTIVATION_TOLERANCE
    assert abs(d["non_torch"] - non_torch * GiB) <= 0.011 * GiB
    assert abs(d["kv_available"] - kv * GiB) <= KV_TOLERANCE
    assert est.errors == []


def test_calibration_llm_d_70b_tp1_fails():
    cfg = LLM_D["Llama-3.3-70B-FP8 TP2"][0]
    m = schema.Model(config=schema.HFConfig(**cfg), weights_size=f"{int(67.72 * GiB)}B")
    est = estimate_vllm(
        m, [gpu(int(H100), "NVIDIA H100 80GB HBM3")], schema.Settings(max_model_len=16000), version="0.11.0"
    )
    assert codes(est) == ["VR332"]
    assert abs(est.devices[0].detail["kv_available"] - (-1.44 * GiB)) <= KV_TOLERANCE


# --- profiles and the option list --------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "profiles/models").glob("*.yaml")), ids=lambda p: p.stem)
def test_vllm_profiles_match_their_listing(path):
    m = schema.Model.model_validate(yaml.safe_load(path.read_text()))
    if m.hf is None:
        pytest.skip("not a vLLM profile")
    assert path.read_text().startswith("# ")
    # The config arithmetic reproduces the HF file listing (rounded to 10 MB by HF).
    computed = arch.weights_per_gpu(m.model_copy(update={"weights_size": None}), 1, 2)
    assert abs(computed - m.weights_size) <= 10_000_000


def test_vllm_option_list():
    lines = (ROOT / "vramc/data/vllm_options.txt").read_text().splitlines()
    assert "vLLM 0.33.0" in lines[0]
    opts = [x for x in lines if x and not x.startswith("#")]
    assert len(opts) == len(set(opts)) > 400
    for o in (
        "--gpu-memory-utilization",
        "--max-model-len",
        "--max-num-seqs",
        "--kv-cache-dtype",
        "--max-num-batched-tokens",
        "--tensor-parallel-size",
        "-tp",
        "--cpu-offload-gb",
        "--enforce-eager",
        "--no-enforce-eager",
        "--block-size",
        "--kv-cache-memory-bytes",
        "--enable-prefix-caching",
        "--disable-prefix-caching",
        "--served-model-name",
        "--port",
        "--host",
        "--api-key",
        "--config",
        "--quantization",
        "-q",
    ):
        assert o in opts
    assert not any(o.startswith("--no-enable-") for o in opts)  # vLLM spells those --disable-


# --- issue 16: the figures vLLM logs, kv_cache_memory_bytes ---------------------------------------
def test_max_model_len_fit_by_hand():
    """estimate_max_model_len's answer over 1..the derived length, beside the configured one."""
    m = model("deepseek-coder-33b-instruct-awq")
    s = schema.Settings(gpu_memory_utilization=0.3, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=8192)
    d = estimate_vllm(m, [gpu()], s).devices[0].detail
    per_block = 4_063_232
    check = d["kv_available"] - per_block  # the null block
    # the longest length whose cdiv(L, 16) blocks fit: whole blocks of 16 tokens
    longest = check // per_block * 16
    assert d["max_model_len_fit"] == min(longest, 65536) and 8192 < longest < 65536
    assert d["blocks_per_request"] == 8192 // 16
    assert d["max_concurrency"] == round(d["kv_blocks"] / 512, 2)


def test_kv_cache_memory_bytes_is_the_kv_budget_and_the_start_check_stays():
    m = model("mistral-7b-instruct-awq")
    s = schema.Settings(kv_cache_memory_bytes="4GiB", max_model_len=8192, max_num_batched_tokens=8192, max_num_seqs=64)
    est = estimate_vllm(m, [gpu(tenants=20 * GiB)], s)
    d = est.devices[0].detail
    assert d["kv_available"] == 4 * GiB and d["kv_blocks"] == 4 * GiB // (32 * 65536) == 2048
    # request_memory still checks 0.92 of the card (utilization's default) at start: with 20 GiB
    # held by another process that fails, as it does in vLLM
    assert codes(est) == ["VR330"]
    # and the process holds weights + activation + non-torch + graphs + the 4 GiB, not its share
    assert d["held"] == (d["weights"] + d["activation"] + d["non_torch"] + d["cudagraph"] + 4 * GiB) < d["requested"]


def test_auto_values_reaching_the_memory_model_read_as_vllm_defaults():
    m = model("mistral-7b-instruct-awq")
    a = estimate_vllm(
        m, [gpu()], schema.Settings(gpu_memory_utilization="auto", max_num_seqs="auto", tensor_parallel_size="auto")
    )
    b = estimate_vllm(m, [gpu()], schema.Settings())
    assert a.resolved == b.resolved and a.resolved["gpu_memory_utilization"] == 0.92
