"""vramc's llama.cpp memory model against llama.cpp itself (needs scripts/build-llama.sh).

The same comparison as bench/accuracy on a smaller grid: sparse GGUFs of catalog shapes on RPC
devices. Weights and KV must equal llama-fit-params' whole MiB; compute buffers must match its
log to within 0.05 MiB (the model replays the allocator, so anything looser is a regression).
"""

from __future__ import annotations

import dataclasses

import pytest

from vramc.dev.oracle import OracleError, RpcServers, check, find_binaries, run_fit_print, run_server_load
from vramc.memory.llama import estimate_llama
from vramc.memory.llama_params import LlamaParams
from vramc.memory.usage import GpuBudget

pytestmark = pytest.mark.oracle

MiB = 1024 * 1024
BIN = find_binaries()
if BIN is None:
    pytest.skip("llama.cpp oracle binaries not built (scripts/build-llama.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def rpc():
    with RpcServers(3, BIN) as servers:
        yield servers.endpoints


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from vramc.dev.synth import CATALOG, write_sparse_gguf
    from vramc.model.gguf import read_gguf

    root = tmp_path_factory.mktemp("models")
    cache = {}

    def get(name: str, ftype: str = "Q4_K_M", **shape_changes):
        key = (name, ftype, tuple(sorted(shape_changes.items())))
        if key not in cache:
            shape = CATALOG[name]
            if shape_changes:
                shape = dataclasses.replace(shape, name=f"{name}-small", **shape_changes)
            path = write_sparse_gguf(root / f"{len(cache)}.gguf", shape, ftype)
            cache[key] = (path, read_gguf(path))
        return cache[key]

    return get


def rpc_gpus(n):
    return [GpuBudget(f"RPC{i}", "rpc", i, 24 * 1024 * MiB) for i in range(n)]


def compare(est, oracle, rounded=True):
    ours = [(d.id, d.weights_bytes, d.kv_bytes, d.compute_bytes) for d in est.devices]
    ours.append(("Host", est.host.weights_bytes, est.host.kv_bytes, est.host.compute_bytes))
    theirs = {d.name: d for d in [*oracle.devices, oracle.host]}
    for name, w, kv, comp in ours:
        o = theirs[name]
        if rounded:  # llama-fit-params prints whole MiB, rounded down
            assert (name, w // MiB * MiB, kv // MiB * MiB) == (name, o.model_bytes, o.context_bytes)
        else:
            assert abs(w - o.model_bytes) < 0.05 * MiB and abs(kv - o.context_bytes) < 0.05 * MiB, name
        assert abs(comp - oracle.compute_precise.get(name, 0)) <= 0.05 * MiB, (name, comp / MiB)


GRID = [
    ("llama-3.1-8b-instruct", "Q8_0", 2, LlamaParams(n_ctx=8192, tensor_split=(3, 5))),
    (
        "llama-3.1-8b-instruct",
        "Q4_K_M",
        3,
        LlamaParams(n_ctx=32768, tensor_split=(1, 2, 1), n_gpu_layers=20, flash_attn="off", n_seq_max=4),
    ),
    ("llama-3.1-8b-instruct", "Q4_K_M", 0, LlamaParams(n_ctx=4096, n_gpu_layers=0)),
    (
        "qwen2.5-32b-instruct",
        "Q4_K_M",
        2,
        LlamaParams(n_ctx=16384, tensor_split=(1, 1), n_ubatch=2048, type_k="q8_0", type_v="q8_0"),
    ),
    ("gemma-2-9b-it", "Q4_K_M", 2, LlamaParams(n_ctx=32768, tensor_split=(1, 3), n_seq_max=4)),
    ("gemma-3-12b-it", "Q4_K_M", 1, LlamaParams(n_ctx=16384, flash_attn="off", n_gpu_layers=30)),
    (
        "mixtral-8x7b-instruct-v0.1",
        "Q4_K_M",
        3,
        LlamaParams(
            n_ctx=8192, tensor_split=(1, 1, 1), overrides=((r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),)
        ),
    ),
    ("qwen3-30b-a3b", "Q4_K_M", 2, LlamaParams(n_ctx=8192, tensor_split=(2, 1), type_k="q4_0", type_v="q4_0")),
    (
        "phi-3-mini-4k-instruct",
        "Q4_K_M",
        2,
        LlamaParams(n_ctx=4096, tensor_split=(1, 1), offload_kqv=False, flash_attn="off"),
    ),
    ("llama-3.3-nemotron-super-49b-v1.5", "Q4_K_M", 3, LlamaParams(n_ctx=8192, tensor_split=(5, 3, 2))),
    ("llama-3.3-70b-instruct", "Q4_K_M", 2, LlamaParams(n_ctx=4096, split_mode="none", main_gpu=1, n_gpu_layers=40)),
    (
        "deepseek-v2-lite-chat",
        "Q4_K_M",
        3,
        LlamaParams(n_ctx=16384, tensor_split=(1, 2, 1), type_k="q8_0", type_v="q8_0", n_ubatch=1024),
    ),
    # the attention output projection of GPU layers on the CPU, the KV cache too: the scheduler runs
    # flash attention on the CPU, so "auto" resolves to disabled
    (
        "llama-3.1-8b-instruct",
        "Q4_K_M",
        2,
        LlamaParams(
            n_ctx=4096, tensor_split=(1, 1), offload_kqv=False, overrides=((r"blk\.[0-3]\.attn_output", "CPU"),)
        ),
    ),
    # Nemotron-H: Mamba-2, attention and MLP blocks
    ("nvidia-nemotron-nano-9b-v2", "Q4_K_M", 1, LlamaParams(n_ctx=8192)),
    (
        "nvidia-nemotron-nano-9b-v2",
        "Q4_K_M",
        3,
        LlamaParams(n_ctx=16384, tensor_split=(1, 2, 1), n_ubatch=1024, n_seq_max=4, flash_attn="off"),
    ),
    # a host attention layer before a GPU Mamba layer: flash attention auto resolves to disabled
    ("nvidia-nemotron-nano-9b-v2", "Q4_K_M", 2, LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_gpu_layers=25)),
    (
        "nvidia-nemotron-nano-9b-v2",
        "Q8_0",
        2,
        LlamaParams(n_ctx=4096, tensor_split=(1, 1), offload_kqv=False, type_k="q8_0", type_v="q8_0", n_seq_max=2),
    ),
    ("nvidia-nemotron-nano-9b-v2", "Q4_K_M", 0, LlamaParams(n_ctx=4096, n_gpu_layers=0, n_ubatch=256)),
    # GLM-4.5-Air: a dense first layer, MoE layers with a shared expert; the NextN layer (no KV, not
    # in the graph, its weights not loaded) alone with the output on the third device
    ("glm-4.5-air", "Q4_K_M", 3, LlamaParams(n_ctx=8192, tensor_split=(23, 23, 2), n_seq_max=4, flash_attn="off")),
    (
        "glm-4.5-air",
        "Q4_K_M",
        2,
        LlamaParams(
            n_ctx=32768,
            tensor_split=(1, 1),
            n_ubatch=2048,
            type_k="q8_0",
            type_v="q8_0",
            overrides=((r"blk\.(1[0-9])\.ffn_.*_exps", "CPU"),),
        ),
    ),
    ("glm-4.5-air", "Q8_0", 1, LlamaParams(n_ctx=16384, n_gpu_layers=20)),
    # Nemotron 3 Nano: Mamba-2, attention and MoE blocks (sigmoid router, squared-ReLU experts)
    ("nvidia-nemotron-3-nano-30b-a3b", "Q4_K_M", 1, LlamaParams(n_ctx=32768)),
    (
        "nvidia-nemotron-3-nano-30b-a3b",
        "Q8_0",
        3,
        LlamaParams(n_ctx=8192, tensor_split=(1, 2, 1), n_ubatch=2048, n_seq_max=4, flash_attn="off"),
    ),
    (
        "nvidia-nemotron-3-nano-30b-a3b",
        "Q4_K_M",
        2,
        LlamaParams(
            n_ctx=16384,
            tensor_split=(3, 5),
            type_k="q8_0",
            type_v="q8_0",
            overrides=((r"blk\.(1|3|7|9|14)\.ffn_(up|down)_exps", "CPU"),),
        ),
    ),
    (
        "nvidia-nemotron-3-nano-30b-a3b",
        "Q4_K_M",
        2,
        LlamaParams(n_ctx=4096, tensor_split=(1, 1), n_gpu_layers=20, n_ubatch=16, op_offload=False),
    ),
    # Granite 4.0-H: a Mamba-2 mixer or attention in every layer, then experts and a shared expert;
    # build_inp_embd expands its embedding scale at once (with the experts on the CPU, 4 MiB apart)
    (
        "granite-4.0-h-small",
        "Q4_K_M",
        1,
        LlamaParams(n_ctx=4096, flash_attn="off", overrides=((r"ffn_.*_exps", "CPU"),)),
    ),
    ("granite-4.0-h-small", "Q4_K_M", 3, LlamaParams(n_ctx=65536, tensor_split=(1, 2, 1), n_seq_max=4)),
    (
        "granite-4.0-h-small",
        "Q8_0",
        2,
        LlamaParams(
            n_ctx=8192,
            tensor_split=(1, 2),
            n_ubatch=1,
            n_seq_max=4,
            overrides=((r"blk\.[0-9]\.ffn_down_exps", "RPC1"),),
        ),
    ),
    (
        "granite-4.0-h-small",
        "Q4_K_M",
        2,
        LlamaParams(n_ctx=16384, tensor_split=(1, 1), n_gpu_layers=25, n_ubatch=2048, type_k="q8_0", type_v="q8_0"),
    ),
]


@pytest.mark.parametrize("name,ftype,n_dev,params", GRID, ids=lambda x: x if isinstance(x, str) else None)
def test_dry_run_matches_llama_fit_params(rpc, models, name, ftype, n_dev, params):
    path, meta = models(name, ftype)
    est = estimate_llama(meta, rpc_gpus(n_dev), params, dry_run=True)
    compare(est, run_fit_print(path, params, rpc[:n_dev], BIN, precise=True))


def test_quantized_v_without_flash_attention_fails_in_both(rpc, models):
    path, meta = models("llama-3.1-8b-instruct")
    params = LlamaParams(n_ctx=4096, flash_attn="off", type_v="q8_0")
    with pytest.raises(OracleError):
        run_fit_print(path, params, rpc[:1], BIN)
    assert estimate_llama(meta, rpc_gpus(1), params).errors[0][0] == "llama-quantized-v-needs-fa"


def test_check_starts_and_stops_its_own_servers(models):
    path, meta = models("phi-3-mini-4k-instruct")
    params = LlamaParams(n_ctx=4096, tensor_split=(1, 1))
    compare(estimate_llama(meta, rpc_gpus(2), params, dry_run=True), check(path, params, 2, precise=True))


SMALL = dict(n_layer=6, n_embd=1024, n_head=16, n_head_kv=4, n_ff=2048)


@pytest.mark.parametrize(
    "n_dev,params",
    [
        (2, LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_outputs_max=1)),
        (3, LlamaParams(n_ctx=8192, tensor_split=(1, 2, 1), n_seq_max=4, kv_unified=True, n_outputs_max=4)),
        (2, LlamaParams(n_ctx=4096, tensor_split=(2, 1), offload_kqv=False, flash_attn="off", n_outputs_max=1)),
    ],
)
def test_launch_matches_a_real_llama_server_load(rpc, models, n_dev, params):
    """Real buffers, scheduler pins included (what the dry run cannot show)."""
    path, meta = models("llama-3.1-8b-instruct", "Q8_0", **SMALL)
    compare(
        estimate_llama(meta, rpc_gpus(n_dev), params), run_server_load(path, params, rpc[:n_dev], BIN), rounded=False
    )


def glm45_small(path, ftype="Q8_0"):
    """A small GLM-4.5-shaped file: q/k norms and a routed scaling factor (the 355B model's), two
    dense leading layers, a NextN layer."""
    from vramc.dev.synth import CATALOG, write_sparse_gguf

    air = CATALOG["glm-4.5-air"]
    shape = dataclasses.replace(
        air,
        name="glm-4.5-small",
        n_layer=6,
        n_embd=1024,
        n_head=16,
        n_head_kv=4,
        head_dim=64,
        n_ff=2048,
        n_expert=16,
        n_expert_used=4,
        n_ff_exp=256,
        extra={**air.extra, "qk_norm": True, "routed_scaling_factor": 2.5, "leading_dense": 2},
    )
    return write_sparse_gguf(path, shape, ftype)


@pytest.mark.parametrize(
    "n_dev,params",
    [
        (2, LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_outputs_max=1)),
        (3, LlamaParams(n_ctx=8192, tensor_split=(1, 2, 1), n_seq_max=4, flash_attn="off", n_outputs_max=4)),
        (2, LlamaParams(n_ctx=4096, tensor_split=(2, 1), offload_kqv=False, n_outputs_max=1)),
        (2, LlamaParams(n_ctx=4096, tensor_split=(1, 1), n_ubatch=16, n_gpu_layers=5, n_outputs_max=1)),
    ],
)
def test_glm4moe_launch_matches_a_real_llama_server_load(rpc, tmp_path, n_dev, params):
    from vramc.model.gguf import read_gguf

    path = glm45_small(tmp_path / "glm.gguf")
    meta = read_gguf(path)
    dry = dataclasses.replace(params, n_outputs_max=None)  # llama-fit-params reserves n_batch outputs
    for est, oracle, rounded in (
        (estimate_llama(meta, rpc_gpus(n_dev), params), run_server_load(path, params, rpc[:n_dev], BIN), False),
        (
            estimate_llama(meta, rpc_gpus(n_dev), dry, dry_run=True),
            run_fit_print(path, dry, rpc[:n_dev], BIN, precise=True),
            True,
        ),
    ):
        assert est.compute_model == "exact"
        compare(est, oracle, rounded=rounded)


def assert_load_matches(path, endpoints, params):
    """Weights and compute buffers of a real llama-server load against vramc's launch estimate
    (llama-server's log names the recurrent state "RS buffer", which run_server_load does not
    read: KV is checked by the dry runs)."""
    from vramc.model.gguf import read_gguf

    est = estimate_llama(read_gguf(path), rpc_gpus(len(endpoints)), params)
    oracle = run_server_load(path, params, endpoints, BIN)
    theirs = {d.name: d for d in [*oracle.devices, oracle.host]}
    for d in [*est.devices, est.host]:
        name = getattr(d, "id", "Host")
        assert abs(d.weights_bytes - theirs[name].model_bytes) < 0.05 * MiB, name
        assert abs(d.compute_bytes - oracle.compute_precise.get(name, 0)) <= 0.05 * MiB, (name, d.compute_bytes / MiB)


NEMOTRON_SMALL = "M-M*M-M*"  # Mamba-2 (M), MLP (-) and attention (*) blocks


@pytest.mark.parametrize(
    "n_dev,params",
    [
        (2, LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_outputs_max=1)),
        (3, LlamaParams(n_ctx=8192, tensor_split=(1, 2, 1), n_seq_max=4, kv_unified=True, n_outputs_max=4)),
        (2, LlamaParams(n_ctx=4096, tensor_split=(2, 1), n_ubatch=16, n_gpu_layers=5, n_outputs_max=1)),
    ],
)
def test_nemotron_h_launch_matches_a_real_llama_server_load(rpc, tmp_path, n_dev, params):
    """Compute buffers of a real load, with the pins of small batches."""
    from vramc.dev.synth import CATALOG, write_sparse_gguf

    pat = NEMOTRON_SMALL
    shape = dataclasses.replace(
        CATALOG["nvidia-nemotron-nano-9b-v2"],
        name="nemotron-h-small",
        n_layer=len(pat),
        n_embd=1024,
        n_head=16,
        head_dim=64,
        n_head_kv=tuple(4 if c == "*" else 0 for c in pat),
        n_ff=tuple(2048 if c == "-" else 0 for c in pat),
        extra={"d_inner": 2048, "d_state": 64, "n_group": 4, "n_ssm_head": 32, "d_conv": 4},
    )
    assert_load_matches(write_sparse_gguf(tmp_path / "nemotron-h.gguf", shape, "Q8_0"), rpc[:n_dev], params)


NEMOTRON_MOE_SMALL = "MEM*EMEM*E"  # Mamba-2 (M), MoE (E) and attention (*) blocks


@pytest.mark.parametrize(
    "n_dev,params",
    [
        (2, LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_outputs_max=1)),
        (
            2,
            LlamaParams(
                n_ctx=4096,
                tensor_split=(2, 1),
                n_ubatch=16,
                n_gpu_layers=6,
                n_outputs_max=1,
                overrides=((r"blk\.(1|4)\.ffn_.*_exps", "CPU"),),
            ),
        ),
    ],
)
@pytest.mark.parametrize("latent", [{}, {"moe_latent_size": 256}])  # Nemotron 3 Super's LatentMoE
def test_nemotron_h_moe_launch_matches_a_real_llama_server_load(rpc, tmp_path, n_dev, params, latent):
    from vramc.dev.synth import CATALOG, write_sparse_gguf

    pat = NEMOTRON_MOE_SMALL
    base = CATALOG["nvidia-nemotron-3-nano-30b-a3b"]
    shape = dataclasses.replace(
        base,
        name="nemotron-h-moe-small",
        n_layer=len(pat),
        n_embd=1024,
        n_head=16,
        head_dim=64,
        n_head_kv=tuple(2 if c == "*" else 0 for c in pat),
        n_ff=tuple(512 if c == "E" else 0 for c in pat),
        n_expert=16,
        n_expert_used=4,
        n_ff_exp=512,
        extra={
            **base.extra,
            "d_inner": 2048,
            "d_state": 64,
            "n_group": 4,
            "n_ssm_head": 32,
            "n_ff_shexp": 1024,
            **latent,
        },
    )
    assert_load_matches(write_sparse_gguf(tmp_path / "nemotron-h-moe.gguf", shape, "Q8_0"), rpc[:n_dev], params)


@pytest.mark.parametrize("n_expert", [8, 0])  # Granite 4.0-H-Tiny/Small-like, and H-Micro-like (dense FFN)
@pytest.mark.parametrize(
    "n_dev,params",
    [
        (2, LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_outputs_max=1)),
        (
            2,
            LlamaParams(
                n_ctx=4096,
                tensor_split=(2, 1),
                n_ubatch=16,
                n_gpu_layers=4,
                n_outputs_max=1,
                overrides=((r"blk\.1\.ffn_(up|down)", "CPU"),),
            ),
        ),
    ],
)
def test_granite_hybrid_launch_matches_a_real_llama_server_load(rpc, tmp_path, n_dev, params, n_expert):
    from vramc.dev.synth import CATALOG, write_sparse_gguf

    base = CATALOG["granite-4.0-h-small"]
    shape = dataclasses.replace(
        base,
        name="granite-hybrid-small",
        n_layer=6,
        n_embd=1024,
        n_head=16,
        n_head_kv=tuple(4 if il == 2 else 0 for il in range(6)),
        n_ff=512 if n_expert else 2048,
        n_expert=n_expert,
        n_expert_used=2 if n_expert else 0,
        extra={**base.extra, "d_inner": 2048, "d_state": 64, "n_group": 1, "n_ssm_head": 32, "n_ff_shexp": 1024},
    )
    assert_load_matches(write_sparse_gguf(tmp_path / "granite-hybrid.gguf", shape, "Q8_0"), rpc[:n_dev], params)


def mamba2_file(
    path, n_layer=6, n_embd=4096, d_inner=8192, d_state=128, n_group=8, n_head=128, d_conv=4, n_vocab=32768
):
    """A Mamba-Codestral-7B-shaped file (fewer blocks): Mamba-2 blocks only."""
    from conftest import write_gguf

    def keys(w):
        w.add_string("tokenizer.ggml.model", "no_vocab")
        for k, v in {
            "vocab_size": n_vocab,
            "context_length": 2**20,
            "embedding_length": n_embd,
            "block_count": n_layer,
            "feed_forward_length": 0,
            "attention.head_count": 0,
            "ssm.conv_kernel": d_conv,
            "ssm.inner_size": d_inner,
            "ssm.state_size": d_state,
            "ssm.time_step_rank": n_head,
            "ssm.group_count": n_group,
        }.items():
            w.add_uint32(f"mamba2.{k}", v)
        w.add_float32("mamba2.attention.layer_norm_rms_epsilon", 1e-5)

    d_xbc = d_inner + 2 * n_group * d_state
    t = [
        ("token_embd.weight", "q8_0", (n_embd, n_vocab)),
        ("output_norm.weight", "f32", (n_embd,)),
        ("output.weight", "q8_0", (n_embd, n_vocab)),
    ]
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [
            (p + "attn_norm.weight", "f32", (n_embd,)),
            (p + "ssm_in.weight", "q8_0", (n_embd, d_inner + d_xbc + n_head)),
            (p + "ssm_conv1d.weight", "f32", (d_conv, d_xbc)),
            (p + "ssm_conv1d.bias", "f32", (d_xbc,)),
            (p + "ssm_dt.bias", "f32", (n_head,)),
            (p + "ssm_a", "f32", (1, n_head)),
            (p + "ssm_d", "f32", (1, n_head)),
            (p + "ssm_norm.weight", "f32", (d_inner // n_group, n_group)),
            (p + "ssm_out.weight", "q8_0", (d_inner, n_embd)),
        ]
    return write_gguf(path, t, keys, arch="mamba2")[0]


@pytest.mark.parametrize(
    "n_dev,params",
    [
        (0, LlamaParams(n_ctx=8192)),
        (2, LlamaParams(n_ctx=16384, tensor_split=(3, 5), n_ubatch=1024, n_seq_max=4)),
        (3, LlamaParams(n_ctx=4096, tensor_split=(1, 2, 1), n_ubatch=16, n_seq_max=2, n_gpu_layers=3)),
        (
            2,
            LlamaParams(
                n_ctx=8192,
                tensor_split=(1, 1),
                offload_kqv=False,
                overrides=((r"blk\.[0-1]\.ssm_in", "CPU"), (r"blk\.3\.", "RPC0")),
            ),
        ),
    ],
)
def test_mamba2_matches_llama_fit_params(rpc, tmp_path, n_dev, params):
    from vramc.model.gguf import read_gguf

    path = mamba2_file(tmp_path / "mamba2.gguf")
    est = estimate_llama(read_gguf(path), rpc_gpus(n_dev), params, dry_run=True)
    assert not any("not modelled" in n for n in est.notes)
    compare(est, run_fit_print(path, params, rpc[:n_dev], BIN, precise=True))


def gpt_oss_file(path, n_layer=4, n_embd=2880, n_head=64, n_head_kv=8, hd=64, n_exp=32, n_used=4, n_vocab=201088):
    """A gpt-oss-20b-shaped file (fewer blocks): sinks, biases, MXFP4 experts, SWA every other layer."""
    from conftest import write_gguf

    def keys(w):
        a = "gpt-oss"
        w.add_string("tokenizer.ggml.model", "no_vocab")
        for k, v in {
            "vocab_size": n_vocab,
            "context_length": 131072,
            "embedding_length": n_embd,
            "block_count": n_layer,
            "feed_forward_length": n_embd,
            "attention.head_count": n_head,
            "attention.head_count_kv": n_head_kv,
            "rope.dimension_count": hd,
            "attention.key_length": hd,
            "attention.value_length": hd,
            "attention.sliding_window": 128,
            "expert_count": n_exp,
            "expert_used_count": n_used,
            "expert_feed_forward_length": n_embd,
        }.items():
            w.add_uint32(f"{a}.{k}", v)
        w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)

    t = [
        ("token_embd.weight", "q8_0", (n_embd, n_vocab)),
        ("output_norm.weight", "f32", (n_embd,)),
        ("output.weight", "q8_0", (n_embd, n_vocab)),
    ]
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [
            (p + "attn_norm.weight", "f32", (n_embd,)),
            (p + "post_attention_norm.weight", "f32", (n_embd,)),
            (p + "attn_sinks.weight", "f32", (n_head,)),
            (p + "ffn_gate_inp.weight", "f32", (n_embd, n_exp)),
            (p + "ffn_gate_inp.bias", "f32", (n_exp,)),
        ]
        for name, rows in (("attn_q", n_head * hd), ("attn_k", n_head_kv * hd), ("attn_v", n_head_kv * hd)):
            t += [(p + name + ".weight", "q8_0", (n_embd, rows)), (p + name + ".bias", "f32", (rows,))]
        t += [(p + "attn_output.weight", "q8_0", (n_head * hd, n_embd)), (p + "attn_output.bias", "f32", (n_embd,))]
        for name, shape in (
            ("gate", (n_embd, n_embd, n_exp)),
            ("up", (n_embd, n_embd, n_exp)),
            ("down", (n_embd, n_embd, n_exp)),
        ):
            t += [
                (p + f"ffn_{name}_exps.weight", "mxfp4", shape),
                (p + f"ffn_{name}_exps.bias", "f32", (n_embd, n_exp)),
            ]
    return write_gguf(path, t, keys, arch="gpt-oss")[0]


@pytest.mark.parametrize(
    "n_dev,params",
    [
        (2, LlamaParams(n_ctx=8192, tensor_split=(1, 1))),
        (2, LlamaParams(n_ctx=32768, tensor_split=(1, 2), n_seq_max=4, flash_attn="off", n_gpu_layers=3)),
        (1, LlamaParams(n_ctx=8192, overrides=((r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),))),
    ],
)
def test_gpt_oss_matches_llama_fit_params(rpc, tmp_path, n_dev, params):
    from vramc.model.gguf import read_gguf

    path = gpt_oss_file(tmp_path / "gpt-oss.gguf")
    est = estimate_llama(read_gguf(path), rpc_gpus(n_dev), params, dry_run=True)
    assert not any("approximated" in n for n in est.notes)
    compare(est, run_fit_print(path, params, rpc[:n_dev], BIN, precise=True))
