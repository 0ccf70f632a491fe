"""The llama.cpp memory model: facts read from the pinned llama.cpp source and its dry runs.

Expected figures marked "oracle" were printed by `llama-fit-params --fit-print on` over RPC
devices for the same shapes (see vramc/dev/oracle.py); the others follow from the cited source.
"""

from __future__ import annotations

import pytest

from vramc.memory.llama import estimate_llama
from vramc.memory.llama_cparams import resolve_cparams
from vramc.memory.llama_hparams import llama_hparams
from vramc.memory.llama_kv import layer_caches, swa_cells
from vramc.memory.llama_params import LlamaParams
from vramc.memory.llama_placement import HOST, assign_layers, split_points
from vramc.memory.usage import GpuBudget
from vramc.model.modelmeta import ModelMeta, make_tensor

MiB = 1024 * 1024


def llama_meta(
    n_layer=32,
    n_embd=4096,
    n_head=32,
    n_head_kv=8,
    n_ff=14336,
    n_vocab=128256,
    wtype="q8_0",
    tied=False,
    arch="llama",
    n_expert=0,
    n_expert_used=0,
    extra=None,
):
    """A Llama-3.1-8B-shaped tensor table (the defaults) or any variation of it."""
    hd = n_embd // n_head
    t = [
        make_tensor("token_embd.weight", wtype, (n_embd, n_vocab)),
        make_tensor("output_norm.weight", "f32", (n_embd,)),
    ]
    if not tied:
        t.append(make_tensor("output.weight", wtype, (n_embd, n_vocab)))
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [
            make_tensor(p + "attn_norm.weight", "f32", (n_embd,)),
            make_tensor(p + "attn_q.weight", wtype, (n_embd, n_head * hd)),
            make_tensor(p + "attn_k.weight", wtype, (n_embd, n_head_kv * hd)),
            make_tensor(p + "attn_v.weight", wtype, (n_embd, n_head_kv * hd)),
            make_tensor(p + "attn_output.weight", wtype, (n_head * hd, n_embd)),
            make_tensor(p + "ffn_norm.weight", "f32", (n_embd,)),
        ]
        if n_expert:
            t += [make_tensor(p + "ffn_gate_inp.weight", "f32", (n_embd, n_expert))]
            t += [
                make_tensor(p + f"ffn_{k}_exps.weight", wtype, s)
                for k, s in (
                    ("gate", (n_embd, n_ff, n_expert)),
                    ("up", (n_embd, n_ff, n_expert)),
                    ("down", (n_ff, n_embd, n_expert)),
                )
            ]
        else:
            t += [
                make_tensor(p + "ffn_gate.weight", wtype, (n_embd, n_ff)),
                make_tensor(p + "ffn_up.weight", wtype, (n_embd, n_ff)),
                make_tensor(p + "ffn_down.weight", wtype, (n_ff, n_embd)),
            ]
    hp = {
        "block_count": n_layer,
        "context_length": 131072,
        "embedding_length": n_embd,
        "feed_forward_length": n_ff,
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "rope.dimension_count": hd,
    }
    if n_expert:
        hp.update({"expert_count": n_expert, "expert_used_count": n_expert_used})
    hp.update(extra or {})
    return ModelMeta(arch, hp, n_vocab, t)


def mamba2_meta(
    n_layer=64, n_embd=4096, d_inner=8192, d_state=128, n_group=8, n_head=128, d_conv=4, n_vocab=32768, wtype="q8_0"
):
    """A Mamba-Codestral-7B-shaped tensor table (Mamba-2 blocks only)."""
    d_xbc = d_inner + 2 * n_group * d_state
    t = [
        make_tensor("token_embd.weight", wtype, (n_embd, n_vocab)),
        make_tensor("output_norm.weight", "f32", (n_embd,)),
        make_tensor("output.weight", wtype, (n_embd, n_vocab)),
    ]
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [
            make_tensor(p + "attn_norm.weight", "f32", (n_embd,)),
            make_tensor(p + "ssm_in.weight", wtype, (n_embd, d_inner + d_xbc + n_head)),
            make_tensor(p + "ssm_conv1d.weight", "f32", (d_conv, d_xbc)),
            make_tensor(p + "ssm_conv1d.bias", "f32", (d_xbc,)),
            make_tensor(p + "ssm_dt.bias", "f32", (n_head,)),
            make_tensor(p + "ssm_a", "f32", (1, n_head)),
            make_tensor(p + "ssm_d", "f32", (1, n_head)),
            make_tensor(p + "ssm_norm.weight", "f32", (d_inner // n_group, n_group)),
            make_tensor(p + "ssm_out.weight", wtype, (d_inner, n_embd)),
        ]
    hp = {
        "block_count": n_layer,
        "context_length": 2**20,
        "embedding_length": n_embd,
        "feed_forward_length": 0,
        "attention.head_count": 0,
        "ssm.conv_kernel": d_conv,
        "ssm.inner_size": d_inner,
        "ssm.state_size": d_state,
        "ssm.time_step_rank": n_head,
        "ssm.group_count": n_group,
    }
    return ModelMeta("mamba2", hp, n_vocab, t)


def rpc(n, free_mib=24105):
    return [GpuBudget(f"RPC{i}", "rpc", i, free_mib * MiB) for i in range(n)]


def mib(x):
    return x // MiB


# --- placement --------------------------------------------------------------------------------


def test_oracle_md_hand_checked_case():
    """ORACLE.md: 8B Q8_0, -ts 3,5 -ngl all -c 8192: 13 blocks on RPC0, 19 + output on RPC1."""
    est = estimate_llama(llama_meta(), rpc(2), LlamaParams(n_ctx=8192, tensor_split=(3, 5)))
    d0, d1 = est.devices
    assert (mib(d0.weights_bytes), mib(d1.weights_bytes), mib(est.host.weights_bytes)) == (2873, 4731, 532)
    assert (mib(d0.kv_bytes), mib(d1.kv_bytes), est.host.kv_bytes) == (416, 608, 0)  # 32 MiB/layer
    assert d0.layers == (0, 12) and d0.n_layers == 13 and not d0.output
    assert d1.layers == (13, 32) and d1.n_layers == 20 and d1.output  # 32 = the output layer


def test_partial_offload_three_devices_oracle():
    est = estimate_llama(llama_meta(), rpc(3), LlamaParams(n_ctx=4096, tensor_split=(1, 2, 1), n_gpu_layers=20))
    assert [mib(d.weights_bytes) for d in est.devices] == [1105, 2210, 1416]
    assert [mib(d.kv_bytes) for d in est.devices] == [80, 160, 64]
    assert (mib(est.host.weights_bytes), mib(est.host.kv_bytes)) == (3405, 208)


def test_gpu_layers_count_the_output_layer_first():
    # PR #18148: -ngl 1 is the output head only; -ngl n_layer leaves block 0 on the CPU
    splits = [1.0]
    dev, start, act = assign_layers(32, 1, [0], splits)
    assert dev[32] == 0 and set(dev[:32]) == {HOST} and (start, act) == (32, 1)
    dev, start, act = assign_layers(32, 32, [0], splits)
    assert dev[0] == HOST and set(dev[1:]) == {0}
    dev, _, _ = assign_layers(32, -1, [0], splits)
    assert set(dev) == {0}


def test_split_points_are_float32_and_default_to_free_memory():
    gpus = [
        GpuBudget("CUDA0", "a", 0, 24 * 1024 * MiB, tenants_bytes=8 * 1024 * MiB),
        GpuBudget("CUDA1", "b", 1, 16 * 1024 * MiB),
    ]
    assert split_points([0, 1], gpus, None) == [0.5, 1.0]
    assert split_points([0, 1], gpus, (0, 0)) == [0.5, 1.0]
    assert split_points([0, 1], gpus, (3, 5)) == [0.375, 1.0]


def test_tied_embeddings_are_duplicated_on_the_output_device():
    est = estimate_llama(llama_meta(tied=True), rpc(1), LlamaParams(n_ctx=4096))
    embd = make_tensor("t", "q8_0", (4096, 128256)).nbytes
    blocks = estimate_llama(llama_meta(), rpc(1), LlamaParams(n_ctx=4096)).devices[0].weights_bytes
    assert est.devices[0].weights_bytes == blocks  # output.weight replaced by the duplicate
    assert est.host.weights_bytes >= embd
    cpu_only = estimate_llama(llama_meta(tied=True), [], LlamaParams(n_ctx=4096))
    # one CPU buffer type for input and output: token_embd is loaded once
    assert cpu_only.host.weights_bytes == blocks


def test_split_mode_none_uses_main_gpu_only():
    est = estimate_llama(llama_meta(), rpc(2), LlamaParams(n_ctx=4096, split_mode="none", main_gpu=1))
    assert est.devices[0].weights_bytes == 0 and est.devices[0].n_layers == 0
    assert est.devices[1].n_layers == 33 and est.devices[1].output


def test_split_mode_row_is_refused_by_the_pinned_backends():
    est = estimate_llama(llama_meta(), rpc(2), LlamaParams(n_ctx=4096, split_mode="row"))
    assert est.errors == [("llama-split-row", "device RPC0 does not support split buffers")]


def test_cpu_moe_override_keeps_experts_on_the_host():
    meta = llama_meta(
        n_layer=4, n_embd=1024, n_head=8, n_head_kv=2, n_ff=512, n_vocab=1000, n_expert=8, n_expert_used=2
    )
    exps = sum(t.nbytes for t in meta.tensors if "_exps" in t.name)
    base = estimate_llama(meta, rpc(1), LlamaParams(n_ctx=2048))
    moe = estimate_llama(
        meta, rpc(1), LlamaParams(n_ctx=2048, overrides=((r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),))
    )
    assert base.devices[0].weights_bytes - moe.devices[0].weights_bytes == exps
    assert moe.host.weights_bytes - base.host.weights_bytes == exps


# --- context and KV ---------------------------------------------------------------------------


def test_context_is_padded_and_split_per_sequence():
    c = resolve_cparams(LlamaParams(n_ctx=8192, n_seq_max=3), 131072)
    assert (c.n_ctx_seq, c.n_ctx, c.n_stream) == (2816, 8448, 3)  # PAD(8192/3, 256) * 3
    c = resolve_cparams(LlamaParams(n_ctx=8192, n_seq_max=4, kv_unified=True), 131072)
    assert (c.n_ctx_seq, c.n_ctx, c.n_stream) == (8192, 8192, 1)
    c = resolve_cparams(LlamaParams(n_ctx=1000, n_ubatch=512), 131072)
    assert (c.n_ctx, c.n_batch, c.n_ubatch) == (1024, 1000, 512)  # batch capped before padding


def test_quantized_kv_oracle_and_v_needs_flash_attention():
    p = LlamaParams(n_ctx=8192, n_seq_max=3, type_k="q8_0", type_v="q4_0", tensor_split=(1, 1))
    est = estimate_llama(llama_meta(), rpc(2), p)
    assert [mib(d.kv_bytes) for d in est.devices] == [227, 201]  # oracle
    assert est.errors == []
    est = estimate_llama(llama_meta(), rpc(2), LlamaParams(n_ctx=8192, type_v="q4_0", flash_attn="off"))
    assert est.errors == [("llama-quantized-v-needs-fa", "quantized V cache requires flash_attn to be enabled")]
    # llama_init_from_model forces flash attention on for a quantized V when it is "auto"
    assert estimate_llama(llama_meta(), rpc(2), LlamaParams(n_ctx=8192, type_v="q4_0")).resolved["flash_attn"]


def test_quantized_kv_blocks_must_divide_the_head_size():
    meta = llama_meta(n_layer=2, n_embd=2560, n_head=32, n_head_kv=8)  # head size 80
    est = estimate_llama(meta, rpc(1), LlamaParams(n_ctx=4096, type_k="q4_0", type_v="q4_0"))
    assert (
        "llama-kv-type-block",
        "K cache type q4_0 with block size 32 does not divide n_embd_head_k=80",
    ) in est.errors


def test_kv_stays_on_host_without_offload_kqv():
    est = estimate_llama(
        llama_meta(), rpc(2), LlamaParams(n_ctx=8192, offload_kqv=False, tensor_split=(2, 1), flash_attn="off")
    )
    assert [d.kv_bytes for d in est.devices] == [0, 0]
    assert mib(est.host.kv_bytes) == 1024


def test_gqa_per_layer_arrays_and_layers_without_kv_heads():
    heads_kv = [8, 0, 4, 8]  # a head_count_kv array; 0 = no attention in that layer (deci)
    meta = llama_meta(n_layer=4, extra={"attention.head_count_kv": heads_kv})
    hp = llama_hparams(meta)
    c = resolve_cparams(LlamaParams(n_ctx=4096), hp.n_ctx_train)
    caches = layer_caches(hp, c, [0] * 5, True, "f16", "f16", False)
    assert [lc.k_bytes for lc in caches] == [4096 * 128 * h * 2 for h in heads_kv]
    assert [lc.v_bytes for lc in caches] == [4096 * 128 * h * 2 for h in heads_kv]
    # without flash attention V is transposed and every layer's V is padded to the widest layer,
    # even the layer without KV heads (llama_hparams::has_kv is true for all layers)
    c = resolve_cparams(LlamaParams(n_ctx=4096, flash_attn="off"), hp.n_ctx_train)
    caches = layer_caches(hp, c, [0] * 5, True, "f16", "f16", False)
    assert [lc.v_bytes for lc in caches] == [4096 * 1024 * 2] * 4


def test_sliding_window_cache_gemma3_pattern():
    meta = llama_meta(n_layer=12, arch="gemma3", extra={"attention.sliding_window": 1024})
    hp = llama_hparams(meta)
    assert hp.is_swa == (True,) * 5 + (False,) + (True,) * 5 + (False,)
    c = resolve_cparams(LlamaParams(n_ctx=32768, n_ubatch=512), hp.n_ctx_train)
    assert swa_cells(hp, c, swa_full=False) == 1536  # PAD(1024 + 512, 256)
    assert swa_cells(hp, c, swa_full=True) == 32768
    c4 = resolve_cparams(LlamaParams(n_ctx=32768, n_seq_max=4, kv_unified=True), hp.n_ctx_train)
    assert swa_cells(hp, c4, swa_full=False) == 4608  # n_swa * n_seq_max when unified


def test_recurrent_state_scales_with_sequences():
    meta = llama_meta(
        n_layer=4,
        arch="mamba",
        extra={"ssm.conv_kernel": 4, "ssm.inner_size": 2048, "ssm.state_size": 16, "ssm.time_step_rank": 64},
    )
    hp = llama_hparams(meta)
    for n_seq in (1, 4):
        c = resolve_cparams(LlamaParams(n_ctx=4096, n_seq_max=n_seq), hp.n_ctx_train)
        caches = layer_caches(hp, c, [0] * 5, True, "f16", "f16", False)
        assert [lc.kind for lc in caches] == ["rs"] * 4
        assert caches[0].k_bytes == 4 * 3 * 2048 * n_seq  # (d_conv-1) * d_inner, f32
        assert caches[0].v_bytes == 4 * 16 * 2048 * n_seq  # d_state * d_inner


@pytest.mark.parametrize("n_seq,expected", [(1, 4 * 128256), (4, 4 * 128256 * 4)])
def test_host_output_buffer_holds_logits(n_seq, expected):
    est = estimate_llama(llama_meta(n_layer=2), [], LlamaParams(n_ctx=4096, n_seq_max=n_seq, n_outputs_max=1))
    assert est.host.other_bytes == expected


# --- compute buffers --------------------------------------------------------------------------


def compute_mib(est):
    return [round(d.compute_bytes / MiB, 2) for d in est.devices] + [round(est.host.compute_bytes / MiB, 2)]


def test_compute_matches_the_oracle_to_the_hundredth_of_a_mib():
    # `sched_reserve: ... compute buffer size` of llama-fit-params for the ORACLE.md case
    est = estimate_llama(llama_meta(), rpc(2), LlamaParams(n_ctx=8192, tensor_split=(3, 5)), dry_run=True)
    assert compute_mib(est) == [172.04, 354.55, 72.05]


@pytest.mark.parametrize(
    "kw,device,host",
    [
        ({}, 258.50, 24.01),  # ORACLE.md: 258 MiB with flash attention
        ({"flash_attn": "off"}, 564.01, 36.01),  # 564: KQ of one layer, f32 [8192, 512, 32]
        ({"n_ubatch": 2048}, 1034.00, 96.05),  # 1034
        ({"flash_attn": "off", "n_ctx": 32768}, 2148.01, 84.01),  # 2148
    ],
)
def test_compute_single_device_oracle(kw, device, host):
    est = estimate_llama(llama_meta(), rpc(1), LlamaParams(**{"n_ctx": 8192, **kw}), dry_run=True)
    assert compute_mib(est) == [device, host]


def test_launch_keeps_the_layer_pins_the_dry_run_loses():
    """A real llama-server load over RPC reported 172.04 MiB on both devices for this case; the
    no_alloc dry run copies layer 13's first norm too (graph_get_cb's pin is reset)."""
    p = LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_outputs_max=1, flash_attn="on")
    assert compute_mib(estimate_llama(llama_meta(), rpc(2), p)) == [172.04, 172.04, 72.05]
    assert compute_mib(estimate_llama(llama_meta(), rpc(2), p, dry_run=True)) == [172.04, 204.04, 72.05]


def test_launch_without_kv_offload_runs_attention_on_the_host():
    p = LlamaParams(n_ctx=8192, offload_kqv=False, tensor_split=(2, 1), flash_attn="off")
    dry = estimate_llama(llama_meta(), rpc(2), p, dry_run=True)
    assert compute_mib(dry) == [576.00, 592.00, 36.01]  # oracle: the pin to the CPU is lost
    launch = estimate_llama(llama_meta(), rpc(2), p)
    assert launch.host.compute_bytes > 512 * MiB  # KQ [8192, 512, 32] f32 on the CPU
    assert compute_mib(launch)[:2] == [108.0, 266.5]  # RPC1 holds the 250.5 MiB of logits


def test_pipeline_parallelism_needs_full_offload_on_several_devices():
    full = estimate_llama(llama_meta(), rpc(2), LlamaParams(n_ctx=4096, tensor_split=(1, 1)))
    assert full.resolved["pipeline_parallel"]
    for p in (
        LlamaParams(n_ctx=4096, tensor_split=(1, 1), n_gpu_layers=32),
        LlamaParams(n_ctx=4096, tensor_split=(1, 1), offload_kqv=False),
        LlamaParams(n_ctx=4096, tensor_split=(1, 1), overrides=(("ffn_down", "CPU"),)),
    ):
        assert not estimate_llama(llama_meta(), rpc(2), p).resolved["pipeline_parallel"]
    assert not estimate_llama(llama_meta(), rpc(1), LlamaParams(n_ctx=4096)).resolved["pipeline_parallel"]


def test_logits_scale_with_outputs_on_the_output_device():
    # llama-server reserves one output per slot, llama-fit-params n_batch (capped by n_ubatch)
    server = estimate_llama(llama_meta(), rpc(1), LlamaParams(n_ctx=8192, n_outputs_max=1))
    dry = estimate_llama(llama_meta(), rpc(1), LlamaParams(n_ctx=8192))
    logits = 4 * 128256 * 512  # f32 logits of 512 outputs
    assert dry.devices[0].compute_bytes >= logits > server.devices[0].compute_bytes


def test_cuda_op_offload_streams_host_weights_through_the_first_gpu():
    cuda = [GpuBudget("CUDA0", "gpu", 0, 24 * 1024 * MiB)]
    p = LlamaParams(n_ctx=4096, n_gpu_layers=16, n_outputs_max=1)
    on_cuda = estimate_llama(llama_meta(), cuda, p)
    on_rpc = estimate_llama(llama_meta(), rpc(1), p)
    ffn = make_tensor("w", "q8_0", (4096, 14336)).nbytes
    # the CPU layers' matrix multiplications move to CUDA0, their weights copied in one at a time
    assert on_cuda.devices[0].compute_bytes > ffn
    assert on_cuda.devices[0].compute_bytes - on_rpc.devices[0].compute_bytes > 32 * MiB
    assert on_cuda.host.compute_bytes < on_rpc.host.compute_bytes
    off = estimate_llama(
        llama_meta(), cuda, LlamaParams(n_ctx=4096, n_gpu_layers=16, n_outputs_max=1, op_offload=False)
    )
    assert compute_mib(off) == compute_mib(on_rpc)


# Configurations where dropping repeated layers once changed a compute buffer: the allocator's free
# list took three layers to repeat (DeepSeek-R1-Distill-Qwen-14B's host layers under CUDA op offload
# with a quantised KV cache and four sequences; Phi-3 on three GPUs with the KV cache on the host),
# and tensor overrides that the layer signatures did not tell apart.
HARD_CASES = {
    "deepseek-r1-distill-qwen-14b": [
        (
            2,
            "cuda",
            False,
            dict(
                n_ctx=2048,
                n_ubatch=2048,
                tensor_split=(1, 1),
                n_gpu_layers=1,
                flash_attn="on",
                type_k="q4_0",
                type_v="q4_0",
                n_seq_max=4,
            ),
        )
    ],
    "phi-3-mini-4k-instruct": [
        (
            3,
            "cuda",
            True,
            dict(n_ctx=4096, tensor_split=(2, 2, 5), flash_attn="on", offload_kqv=False, n_seq_max=2, kv_unified=True),
        )
    ],
    "deepseek-v2-lite-chat": [  # MoE experts of some blocks on the CPU, or on another device
        (
            3,
            "cuda",
            False,
            dict(
                n_ctx=0,
                n_batch=64,
                n_ubatch=128,
                tensor_split=(16, 16, 24),
                type_k="q4_0",
                type_v="q4_0",
                op_offload=False,
                overrides=((r"blk\.(%s)\.ffn_(up|down|gate)_exps" % "|".join(map(str, range(19))), "CPU"),),
            ),
        ),
        (
            3,
            "rpc",
            False,
            dict(
                n_ctx=8192,
                tensor_split=(80, 12, 80),
                flash_attn="off",
                overrides=((r"blk\.[0-5]\.ffn_.*_exps", "RPC1"),),
            ),
        ),
    ],
    "nvidia-nemotron-nano-9b-v2": [  # Mamba-2 projections on the CPU or another device
        (
            3,
            "rpc",
            False,
            dict(
                n_ctx=8192,
                tensor_split=(1, 1, 1),
                n_seq_max=3,
                overrides=((r"blk\.(1|3|5)\.ssm_in", "CPU"), (r"blk\.(7|9)\.", "RPC2")),
            ),
        ),
        (2, "cuda", True, dict(n_ctx=8192, n_ubatch=16, tensor_split=(1, 1), n_gpu_layers=30)),
    ],
    "glm-4.5-air": [  # the dense layer's FFN and some blocks' routed experts on the CPU; the NextN layer
        # on a device of its own (it holds no KV and is not in the graph)
        (
            3,
            "cuda",
            False,
            dict(
                n_ctx=8192,
                tensor_split=(1, 1, 1),
                type_k="q8_0",
                type_v="q8_0",
                overrides=((r"blk\.0\.ffn_", "CPU"), (r"blk\.(1[0-9])\.ffn_.*_exps", "CPU")),
            ),
        ),
        (3, "rpc", True, dict(n_ctx=4096, tensor_split=(23, 23, 2), n_seq_max=4, flash_attn="off")),
    ],
    "nvidia-nemotron-3-nano-30b-a3b": [  # routed and shared experts apart from their blocks
        (
            3,
            "rpc",
            False,
            dict(
                n_ctx=8192,
                tensor_split=(1, 1, 1),
                n_seq_max=2,
                overrides=((r"blk\.(1|3|7)\.ffn_(up|down)_exps", "CPU"), (r"blk\.(9|12)\.ffn_.*_shexp", "RPC2")),
            ),
        ),
        (
            2,
            "cuda",
            True,
            dict(n_ctx=8192, n_ubatch=16, tensor_split=(1, 1), n_gpu_layers=30, overrides=((r"ffn_.*_exps", "CPU"),)),
        ),
    ],
    "granite-4.0-h-small": [  # a mixer's experts elsewhere, the shared experts on the CPU
        (
            3,
            "rpc",
            False,
            dict(
                n_ctx=8192,
                tensor_split=(1, 1, 1),
                n_seq_max=2,
                overrides=((r"blk\.(1|3|7)\.ffn_(gate|up|down)_exps", "RPC2"), (r"blk\.(9|12)\.ffn_.*_shexp", "CPU")),
            ),
        ),
        (
            2,
            "cuda",
            True,
            dict(n_ctx=8192, n_ubatch=1, tensor_split=(1, 1), n_gpu_layers=30, overrides=((r"ffn_.*_exps", "CPU"),)),
        ),
    ],
}


@pytest.mark.parametrize(
    "name",
    [
        "gemma-3-12b-it",
        "phi-3-mini-4k-instruct",
        "deepseek-v2-lite-chat",
        "llama-3.3-nemotron-super-49b-v1.5",
        "deepseek-r1-distill-qwen-14b",
        "nvidia-nemotron-nano-9b-v2",
        "nvidia-nemotron-3-nano-30b-a3b",
        "granite-4.0-h-small",
        "mamba2",
        "glm-4.5-air",
    ],
)
def test_shortened_graph_equals_the_full_graph(name, monkeypatch):
    from vramc.dev.synth import CATALOG, model_meta
    from vramc.memory import llama as llama_mod
    from vramc.memory.llama_compute import estimate_compute

    meta = mamba2_meta() if name == "mamba2" else model_meta(CATALOG[name], "Q4_K_M")

    def cuda(n):
        return [GpuBudget(f"CUDA{i}", "gpu", i, 24 * 1024 * MiB) for i in range(n)]

    cases = [
        (gpus, LlamaParams(n_ctx=16384, tensor_split=(3, 1, 2), n_gpu_layers=ngl, flash_attn=fa, n_seq_max=np_), False)
        for gpus in (rpc(3), cuda(3))
        for ngl in (-1, 20)
        for fa in ("on", "off")
        for np_ in (1, 4)
    ]
    # tensor overrides (the FFN of the first blocks on the CPU, the attention of two blocks on the
    # third GPU) and the KV cache on the host, launched and dry run
    ov = ((r"blk\.[0-3]\.ffn_(up|down|gate)", "CPU"), (r"blk\.(6|7)\.attn_", "CUDA2"))
    for ngl, dry in ((-1, False), (20, True)):
        cases.append((cuda(3), LlamaParams(n_ctx=8192, n_gpu_layers=ngl, overrides=ov), dry))
        cases.append(
            (
                cuda(3),
                LlamaParams(
                    n_ctx=8192,
                    tensor_split=(2, 2, 5),
                    n_gpu_layers=ngl,
                    offload_kqv=False,
                    flash_attn="on",
                    n_seq_max=2,
                ),
                not dry,
            )
        )
    for n, kind, dry, kw in HARD_CASES.get(name, ()):
        cases.append((cuda(n) if kind == "cuda" else rpc(n), LlamaParams(**kw), dry))

    def compute(g, p, dry):
        est = estimate_llama(meta, g, p, dry_run=dry)
        return [d.compute_bytes for d in est.devices] + [est.host.compute_bytes, est.resolved.get("graph_splits")]

    short = [compute(*case) for case in cases]
    monkeypatch.setattr(llama_mod, "estimate_compute", lambda *a, **k: estimate_compute(*a, **k, full_graph=True))
    assert short == [compute(*case) for case in cases]


def test_mla_needs_equal_k_and_v_cache_types():
    from vramc.dev.synth import CATALOG, model_meta

    meta = model_meta(CATALOG["deepseek-v2-lite-chat"], "Q4_K_M")
    est = estimate_llama(meta, rpc(1), LlamaParams(n_ctx=4096, type_k="q8_0"))
    assert est.errors == [
        ("llama-kv-types-differ", "model does not support different K (q8_0) and V (f16) cache types")
    ]
    est = estimate_llama(meta, rpc(1), LlamaParams(n_ctx=4096))
    assert est.devices[0].kv_bytes == 27 * 4096 * 576 * 2  # K only: kv_lora_rank + rope dims, f16


def test_unmodelled_architectures_say_so():
    meta = llama_meta(
        n_layer=4,
        arch="mamba",
        extra={"ssm.conv_kernel": 4, "ssm.inner_size": 2048, "ssm.state_size": 16, "ssm.time_step_rank": 64},
    )
    est = estimate_llama(meta, rpc(1), LlamaParams(n_ctx=4096))
    assert est.devices[0].compute_bytes == 0
    assert any("not modelled for architecture 'mamba'" in n for n in est.notes)
    est = estimate_llama(llama_meta(n_layer=4, arch="granite"), rpc(1), LlamaParams(n_ctx=4096))
    assert est.devices[0].compute_bytes > 0
    assert any("approximated with the llama graph" in n for n in est.notes)


def test_flash_attn_auto_follows_cuda_kernel_head_sizes():
    cuda = [GpuBudget("CUDA0", "gpu", 0, 24 * 1024 * MiB)]
    est = estimate_llama(llama_meta(n_layer=2), cuda, LlamaParams(n_ctx=4096))
    assert est.resolved["flash_attn"]  # head size 128
    odd = llama_meta(n_layer=2, n_embd=4608, n_head=32, n_head_kv=8)  # head size 144
    est = estimate_llama(odd, cuda, LlamaParams(n_ctx=4096))
    assert not est.resolved["flash_attn"]
    assert any("no flash-attention kernel for head size 144" in n for n in est.notes)
    assert estimate_llama(odd, rpc(1), LlamaParams(n_ctx=4096)).resolved["flash_attn"]  # CPU kernels


def test_flash_attn_auto_is_reported_as_the_scheduler_decides_it():
    from vramc.dev.synth import CATALOG, model_meta

    meta = model_meta(CATALOG["nvidia-nemotron-nano-9b-v2"], "Q4_K_M")
    # a host attention layer before a GPU Mamba layer: llama.cpp's test graph turns auto FA off
    est = estimate_llama(meta, rpc(2), LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_gpu_layers=25))
    assert not est.resolved["flash_attn"]
    fa = [n for n in est.notes if n.startswith("flash_attn auto")]
    assert len(fa) == 1 and "resolves to disabled" in fa[0] and "off the layer's device" in fa[0]
    est = estimate_llama(meta, rpc(2), LlamaParams(n_ctx=8192, tensor_split=(3, 5)))
    assert est.resolved["flash_attn"]
    assert [n for n in est.notes if n.startswith("flash_attn auto")] == [
        "flash_attn auto resolves to enabled (llama_context::resolve_fused_ops)"
    ]
