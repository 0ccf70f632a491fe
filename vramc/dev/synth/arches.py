"""Per-architecture tensor tables and GGUF metadata, as the vendored converter writes them.

Shapes are in ggml order (ne[0] first: the reverse of PyTorch's). Which tensors exist and their
shapes follow the `load_arch_tensors` of the pinned llama.cpp (src/models/<arch>.cpp), and the
metadata keys follow `set_gguf_parameters` in conversion/<family>.py plus the keys that the
arch's `load_arch_hparams` requires (every arch reads `attention.layer_norm_rms_epsilon`
unconditionally, so a file without it does not load).
"""

from __future__ import annotations

from typing import Any, Callable

from vramc.dev.synth.shapes import ModelShape

TensorShapes = list[tuple[str, tuple[int, ...]]]


# --- pieces shared by most architectures -----------------------------------------------------


def _embeddings(s: ModelShape) -> TensorShapes:
    out = [("token_embd.weight", (s.n_embd, s.n_vocab))]
    if s.rope_freqs:  # llama3 rope scaling, one tensor shared by all layers
        out.append(("rope_freqs.weight", (s.n_embd_head // 2,)))
    return out


def _output(s: ModelShape) -> TensorShapes:
    out = [("output_norm.weight", (s.n_embd,))]
    if not s.tied_embeddings:
        out.append(("output.weight", (s.n_embd, s.n_vocab)))
    return out


def _attention(s: ModelShape, il: int, p: str) -> TensorShapes:
    hd, n_head, n_kv = s.n_embd_head, s.per_layer("n_head")[il], s.per_layer("n_head_kv")[il]
    out = [
        (f"{p}.attn_q.weight", (s.n_embd, hd * n_head)),
        (f"{p}.attn_k.weight", (s.n_embd, hd * n_kv)),
        (f"{p}.attn_v.weight", (s.n_embd, hd * n_kv)),
    ]
    if s.qkv_bias:
        out += [
            (f"{p}.attn_q.bias", (hd * n_head,)),
            (f"{p}.attn_k.bias", (hd * n_kv,)),
            (f"{p}.attn_v.bias", (hd * n_kv,)),
        ]
    out.append((f"{p}.attn_output.weight", (hd * n_head, s.n_embd)))
    return out


def _ffn(s: ModelShape, il: int, p: str) -> TensorShapes:
    n_ff = s.per_layer("n_ff")[il]
    return [
        (f"{p}.ffn_gate.weight", (s.n_embd, n_ff)),
        (f"{p}.ffn_up.weight", (s.n_embd, n_ff)),
        (f"{p}.ffn_down.weight", (n_ff, s.n_embd)),
    ]


def _moe(s: ModelShape, il: int, p: str) -> TensorShapes:
    n_ff = s.n_ff_exp or s.per_layer("n_ff")[il]
    return [
        (f"{p}.ffn_gate_inp.weight", (s.n_embd, s.n_expert)),
        (f"{p}.ffn_gate_exps.weight", (s.n_embd, n_ff, s.n_expert)),
        (f"{p}.ffn_up_exps.weight", (s.n_embd, n_ff, s.n_expert)),
        (f"{p}.ffn_down_exps.weight", (n_ff, s.n_embd, s.n_expert)),
    ]


def _norm(p: str, name: str, n: int) -> tuple[str, tuple[int, ...]]:
    return (f"{p}.{name}.weight", (n,))


# --- architectures ---------------------------------------------------------------------------


def _llama_like(s: ModelShape) -> TensorShapes:
    """llama (Llama 3, Mistral, Mixtral) and qwen2: pre-norm attention + SwiGLU or MoE FFN."""
    out = _embeddings(s)
    for il in range(s.n_layer):
        p = f"blk.{il}"
        out.append(_norm(p, "attn_norm", s.n_embd))
        out += _attention(s, il, p)
        out.append(_norm(p, "ffn_norm", s.n_embd))
        out += _moe(s, il, p) if s.n_expert else _ffn(s, il, p)
    return out + _output(s)


def _gemma(s: ModelShape) -> TensorShapes:
    """gemma2 / gemma3: extra post-attention and post-FFN norms; gemma3 adds q/k norms."""
    out = _embeddings(s)
    for il in range(s.n_layer):
        p = f"blk.{il}"
        out.append(_norm(p, "attn_norm", s.n_embd))
        out += _attention(s, il, p)
        if s.arch == "gemma3":
            out += [_norm(p, "attn_q_norm", s.n_embd_head), _norm(p, "attn_k_norm", s.n_embd_head)]
        out.append(_norm(p, "post_attention_norm", s.n_embd))
        out.append(_norm(p, "ffn_norm", s.n_embd))
        out += _ffn(s, il, p)
        out.append(_norm(p, "post_ffw_norm", s.n_embd))
    return out + _output(s)


def _qwen3moe(s: ModelShape) -> TensorShapes:
    out = _embeddings(s)
    for il in range(s.n_layer):
        p = f"blk.{il}"
        out.append(_norm(p, "attn_norm", s.n_embd))
        out += _attention(s, il, p)
        out += [_norm(p, "attn_q_norm", s.n_embd_head), _norm(p, "attn_k_norm", s.n_embd_head)]
        out.append(_norm(p, "ffn_norm", s.n_embd))
        out += _moe(s, il, p)
    return out + _output(s)


def _phi3(s: ModelShape) -> TensorShapes:
    """Phi-3: qkv_proj and gate_up_proj stay fused (attn_qkv, ffn_up of width 2*n_ff)."""
    out = _embeddings(s)
    hd, n_kv = s.n_embd_head, s.per_layer("n_head_kv")[0]
    for il in range(s.n_layer):
        p = f"blk.{il}"
        out += [
            _norm(p, "attn_norm", s.n_embd),
            (f"{p}.attn_qkv.weight", (s.n_embd, s.n_embd + 2 * hd * n_kv)),
            (f"{p}.attn_output.weight", (s.n_embd, s.n_embd)),
            _norm(p, "ffn_norm", s.n_embd),
            (f"{p}.ffn_up.weight", (s.n_embd, 2 * s.per_layer("n_ff")[il])),
            (f"{p}.ffn_down.weight", (s.per_layer("n_ff")[il], s.n_embd)),
        ]
    return out + _output(s)


def _deci(s: ModelShape) -> TensorShapes:
    """DeciLM / Nemotron-NAS: a layer has attention only where head_count_kv > 0 (head_count > 0
    with head_count_kv 0 is a linear layer: attn_norm + an n_embd x n_embd attn_output), and an
    FFN only where feed_forward_length > 0."""
    out = _embeddings(s)
    heads, heads_kv, ffs = s.per_layer("n_head"), s.per_layer("n_head_kv"), s.per_layer("n_ff")
    for il in range(s.n_layer):
        p = f"blk.{il}"
        if heads_kv[il] > 0:
            out.append(_norm(p, "attn_norm", s.n_embd))
            out += _attention(s, il, p)
        elif heads[il] > 0:
            out += [_norm(p, "attn_norm", s.n_embd), (f"{p}.attn_output.weight", (s.n_embd, s.n_embd))]
        if ffs[il] > 0:
            out.append(_norm(p, "ffn_norm", s.n_embd))
            out += _ffn(s, il, p)
    return out + _output(s)


def _deepseek2(s: ModelShape) -> TensorShapes:
    """DeepSeek-V2 MLA: q (or q_a/q_b with a q LoRA), the compressed kv_a_mqa, and kv_b split by
    the converter into attn_k_b (transposed) and attn_v_b; leading dense FFN blocks, then routed
    experts plus shared experts of n_ff_exp * n_shared width."""
    x, out = s.extra, _embeddings(s)
    n_head, rank, rope, nope, v = (
        s.per_layer("n_head")[0],
        x["kv_lora_rank"],
        x["qk_rope_head_dim"],
        x["qk_nope_head_dim"],
        x["v_head_dim"],
    )
    shared = s.n_ff_exp * x["n_shared_experts"]
    for il in range(s.n_layer):
        p = f"blk.{il}"
        out += [
            _norm(p, "attn_norm", s.n_embd),
            _norm(p, "attn_kv_a_norm", rank),
            (f"{p}.attn_q.weight", (s.n_embd, n_head * (nope + rope))),
            (f"{p}.attn_kv_a_mqa.weight", (s.n_embd, rank + rope)),
            (f"{p}.attn_k_b.weight", (nope, rank, n_head)),
            (f"{p}.attn_v_b.weight", (rank, v, n_head)),
            (f"{p}.attn_output.weight", (n_head * v, s.n_embd)),
            _norm(p, "ffn_norm", s.n_embd),
        ]
        if il < x["leading_dense"]:
            out += _ffn(s, il, p)
        else:
            out += _moe(s, il, p) + _shared_expert(s, p, shared)
    return out + _output(s)


def _shared_expert(s: ModelShape, p: str, shared: int) -> TensorShapes:
    """A SwiGLU shared expert `shared` wide (DeepSeek, GLM, Granite)."""
    return [
        (f"{p}.ffn_gate_shexp.weight", (s.n_embd, shared)),
        (f"{p}.ffn_up_shexp.weight", (s.n_embd, shared)),
        (f"{p}.ffn_down_shexp.weight", (shared, s.n_embd)),
    ]


def _glm4moe(s: ModelShape) -> TensorShapes:
    """GLM-4.5 (llama_model_glm4_moe::load_arch_tensors): q/k/v with biases, attn_post_norm as the
    FFN's input norm, leading dense FFN blocks, then routed experts with a selection bias
    (e_score_correction_bias) and a shared expert. The trailing NextN layers add the MTP head's
    eh_proj, enorm, hnorm and shared_head_norm to a full MoE layer."""
    out = _embeddings(s)
    for il in range(s.n_layer + s.n_nextn):
        p, trunk = f"blk.{il}", min(il, s.n_layer - 1)
        out.append(_norm(p, "attn_norm", s.n_embd))
        out += _attention(s, trunk, p)
        if s.extra.get("qk_norm"):
            out += [_norm(p, "attn_q_norm", s.n_embd_head), _norm(p, "attn_k_norm", s.n_embd_head)]
        out.append(_norm(p, "post_attention_norm", s.n_embd))
        if il < s.extra["leading_dense"]:
            out += _ffn(s, trunk, p)
        else:
            out += _moe(s, trunk, p)
            out.append((f"{p}.exp_probs_b.bias", (s.n_expert,)))
            out += _shared_expert(s, p, s.n_ff_exp * s.extra["n_shared_experts"])
        if il >= s.n_layer:
            out += [
                (f"{p}.nextn.eh_proj.weight", (2 * s.n_embd, s.n_embd)),
                _norm(p, "nextn.enorm", s.n_embd),
                _norm(p, "nextn.hnorm", s.n_embd),
                _norm(p, "nextn.shared_head_norm", s.n_embd),
            ]
    return out + _output(s)


def _mamba2_mixer(s: ModelShape, p: str) -> TensorShapes:
    x = s.extra
    d_inner, d_state, n_group, n_ssm_head = x["d_inner"], x["d_state"], x["n_group"], x["n_ssm_head"]
    d_xbc = d_inner + 2 * n_group * d_state
    return [
        (f"{p}.ssm_in.weight", (s.n_embd, 2 * d_inner + 2 * n_group * d_state + n_ssm_head)),
        (f"{p}.ssm_conv1d.weight", (x["d_conv"], d_xbc)),
        (f"{p}.ssm_conv1d.bias", (d_xbc,)),
        (f"{p}.ssm_dt.bias", (n_ssm_head,)),
        (f"{p}.ssm_a", (1, n_ssm_head)),
        (f"{p}.ssm_d", (1, n_ssm_head)),
        (f"{p}.ssm_norm.weight", (d_inner // n_group, n_group)),
        (f"{p}.ssm_out.weight", (d_inner, s.n_embd)),
    ]


def _granite_hybrid(s: ModelShape) -> TensorShapes:
    """Granite 4.0-H: a Mamba-2 mixer (head_count_kv 0) or attention, then ffn_norm and SwiGLU
    experts with a SwiGLU shared expert (or a dense SwiGLU FFN without experts)."""
    out = _embeddings(s)
    for il in range(s.n_layer):
        p = f"blk.{il}"
        out.append(_norm(p, "attn_norm", s.n_embd))
        out += _attention(s, il, p) if s.per_layer("n_head_kv")[il] else _mamba2_mixer(s, p)
        out.append(_norm(p, "ffn_norm", s.n_embd))
        if not s.n_expert:
            out += _ffn(s, il, p)
            continue
        out += _moe(s, il, p) + _shared_expert(s, p, s.extra["n_ff_shexp"])
    return out + _output(s)


def _nemotron_h(s: ModelShape) -> TensorShapes:
    """Nemotron-H (hybrid Mamba-2): each block is one of a Mamba-2 mixer (head_count_kv 0 and
    feed_forward_length 0: recurrent), attention (head_count_kv > 0) or a squared-ReLU MLP with
    no gate (feed_forward_length > 0; nemotron_h_moe: routed experts plus a shared expert, all
    without a gate); every block has attn_norm."""
    out = _embeddings(s)
    heads_kv, ffs = s.per_layer("n_head_kv"), s.per_layer("n_ff")
    for il in range(s.n_layer):
        p = f"blk.{il}"
        out.append(_norm(p, "attn_norm", s.n_embd))
        if heads_kv[il] == 0 and ffs[il] == 0:
            out += _mamba2_mixer(s, p)
        elif ffs[il] == 0:
            out += _attention(s, il, p)
        elif s.n_expert:
            out += _nemotron_h_experts(s, p)
        else:
            out += [(f"{p}.ffn_up.weight", (s.n_embd, ffs[il])), (f"{p}.ffn_down.weight", (ffs[il], s.n_embd))]
    return out + _output(s)


def _nemotron_h_experts(s: ModelShape, p: str) -> TensorShapes:
    """Nemotron 3 Super's LatentMoE (moe_latent_size) runs the experts in a smaller width, with a
    projection down before them and up after."""
    n_ff, shexp, latent = s.n_ff_exp, s.extra["n_ff_shexp"], s.extra.get("moe_latent_size")
    moe_embd = latent or s.n_embd
    out = [(f"{p}.ffn_gate_inp.weight", (s.n_embd, s.n_expert)), (f"{p}.exp_probs_b.bias", (s.n_expert,))]
    if latent:
        out += [(f"{p}.ffn_latent_down.weight", (s.n_embd, latent)), (f"{p}.ffn_latent_up.weight", (latent, s.n_embd))]
    return out + [
        (f"{p}.ffn_up_exps.weight", (moe_embd, n_ff, s.n_expert)),
        (f"{p}.ffn_down_exps.weight", (n_ff, moe_embd, s.n_expert)),
        (f"{p}.ffn_up_shexp.weight", (s.n_embd, shexp)),
        (f"{p}.ffn_down_shexp.weight", (shexp, s.n_embd)),
    ]


# --- metadata --------------------------------------------------------------------------------


def _common_kv(s: ModelShape) -> dict[str, Any]:
    """TextModel.set_gguf_parameters: the keys every converted text model carries."""
    kv: dict[str, Any] = {
        "block_count": s.n_layer,
        "context_length": s.n_ctx_train,
        "embedding_length": s.n_embd,
        "feed_forward_length": _scalar_or_list(s.n_ff),
        "attention.head_count": _scalar_or_list(s.n_head),
        "attention.head_count_kv": _scalar_or_list(s.n_head_kv),
        "rope.freq_base": s.rope_theta,
        "attention.layer_norm_rms_epsilon": s.rms_eps,
    }
    if s.n_expert:
        kv["expert_count"] = s.n_expert
        kv["expert_used_count"] = s.n_expert_used
    if s.head_dim:
        kv["attention.key_length"] = s.head_dim
        kv["attention.value_length"] = s.head_dim
    return kv


def _scalar_or_list(v: int | tuple[int, ...]) -> int | list[int]:
    return v if isinstance(v, int) else list(v)


def _llama_kv(s: ModelShape) -> dict[str, Any]:
    # LlamaModel and DeciModel add vocab_size and rope.dimension_count (== head size: llama.cpp
    # refuses a different n_rot for llama and deci)
    return {**_common_kv(s), "vocab_size": s.n_vocab, "rope.dimension_count": s.n_embd_head}


def _gemma2_kv(s: ModelShape) -> dict[str, Any]:
    kv = _common_kv(s)
    del kv["rope.freq_base"]  # Gemma2Model writes no rope base: llama.cpp defaults to 10000
    kv["attention.sliding_window"] = s.sliding_window
    kv["attn_logit_softcapping"] = s.extra["attn_logit_softcapping"]
    kv["final_logit_softcapping"] = s.extra["final_logit_softcapping"]
    return kv


def _gemma3_kv(s: ModelShape) -> dict[str, Any]:
    kv = _common_kv(s)
    if "rope_scaling_linear" in s.extra:
        kv["rope.scaling.type"] = "linear"
        kv["rope.scaling.factor"] = s.extra["rope_scaling_linear"]
    kv["rope.freq_base_swa"] = s.extra["rope_freq_base_swa"]
    kv["attention.sliding_window"] = s.sliding_window
    return kv


def _qwen3moe_kv(s: ModelShape) -> dict[str, Any]:
    return {**_common_kv(s), "expert_feed_forward_length": s.n_ff_exp}


def _phi3_kv(s: ModelShape) -> dict[str, Any]:
    kv = _common_kv(s)
    kv["rope.scaling.original_context_length"] = s.extra["orig_ctx"]
    kv["rope.dimension_count"] = s.n_embd_head
    kv["attention.sliding_window"] = s.sliding_window
    return kv


def _deepseek2_kv(s: ModelShape) -> dict[str, Any]:
    x = s.extra
    kv = _common_kv(s)
    kv["attention.head_count_kv"] = 1  # MLA is converted as MQA over the compressed latent
    kv.update(
        {
            "expert_group_count": x["n_group"],
            "expert_group_used_count": x["topk_group"],
            "expert_gating_func": 1,  # softmax
            "rope.scaling.type": "yarn",
            "rope.scaling.factor": x["yarn_factor"],
            "rope.scaling.original_context_length": x["yarn_orig_ctx"],
            "rope.scaling.yarn_beta_fast": x["yarn_beta_fast"],
            "rope.scaling.yarn_beta_slow": x["yarn_beta_slow"],
            "leading_dense_block_count": x["leading_dense"],
            "vocab_size": s.n_vocab,
            "attention.kv_lora_rank": x["kv_lora_rank"],
            "attention.key_length": x["kv_lora_rank"] + x["qk_rope_head_dim"],
            "attention.value_length": x["kv_lora_rank"],
            "attention.key_length_mla": x["qk_nope_head_dim"] + x["qk_rope_head_dim"],
            "attention.value_length_mla": x["v_head_dim"],
            "expert_feed_forward_length": s.n_ff_exp,
            "expert_shared_count": x["n_shared_experts"],
            "expert_weights_scale": x["routed_scaling_factor"],
            "rope.dimension_count": x["qk_rope_head_dim"],
            "rope.scaling.yarn_log_multiplier": 0.1 * x["mscale_all_dim"],
        }
    )
    return kv


def _glm4moe_kv(s: ModelShape) -> dict[str, Any]:
    x = s.extra
    kv = _common_kv(s)
    kv.update(
        {
            # Glm4MoeModel counts the NextN layers in block_count; rope covers part of each head
            "block_count": s.n_layer + s.n_nextn,
            "rope.dimension_count": int(s.n_embd_head * x["partial_rotary_factor"]),
            "expert_group_count": x["n_group"],
            "expert_group_used_count": x["topk_group"],
            "expert_feed_forward_length": s.n_ff_exp,
            "expert_shared_count": x["n_shared_experts"],
            "leading_dense_block_count": x["leading_dense"],
            "expert_gating_func": 2,  # sigmoid
            "expert_weights_scale": x["routed_scaling_factor"],
            "expert_weights_norm": x["norm_topk_prob"],
            "nextn_predict_layers": s.n_nextn,
        }
    )
    return kv


def _mamba2_hybrid_kv(s: ModelShape) -> dict[str, Any]:
    """GraniteHybridModel's keys, which NemotronHModel inherits: the Mamba-2 state sizes, and a
    hybrid without rope claims a 2**20 context."""
    x = s.extra
    return {
        "context_length": 2**20,
        "vocab_size": s.n_vocab,
        "rope.dimension_count": s.n_embd_head,
        "ssm.conv_kernel": x["d_conv"],
        "ssm.state_size": x["d_state"],
        "ssm.group_count": x["n_group"],
        "ssm.inner_size": x["d_inner"],
        "ssm.time_step_rank": x["n_ssm_head"],
        "rope.scaling.finetuned": False,
    }


def _nemotron_h_kv(s: ModelShape) -> dict[str, Any]:
    kv = _common_kv(s)
    del kv["rope.freq_base"], kv["attention.layer_norm_rms_epsilon"]  # config has neither
    return {**kv, "attention.layer_norm_epsilon": s.rms_eps, **_mamba2_hybrid_kv(s)}


def _granite_hybrid_kv(s: ModelShape) -> dict[str, Any]:
    """GraniteMoeModel (LlamaModel's keys, the multipliers, the shared expert) and GraniteHybridModel
    (the Mamba-2 keys)."""
    x = s.extra
    kv = {
        **_common_kv(s),
        "attention.scale": x["attention_multiplier"],
        "embedding_scale": x["embedding_multiplier"],
        "residual_scale": x["residual_multiplier"],
        "logit_scale": x["logits_scaling"],
        **_mamba2_hybrid_kv(s),
    }
    if s.n_expert:
        kv["expert_shared_feed_forward_length"] = x["n_ff_shexp"]
    return kv


def _nemotron_h_moe_kv(s: ModelShape) -> dict[str, Any]:
    x = s.extra
    return {
        **_nemotron_h_kv(s),
        "expert_feed_forward_length": s.n_ff_exp,
        "expert_shared_feed_forward_length": x["n_ff_shexp"],
        "expert_shared_count": x["n_shared"],
        "expert_weights_norm": x["norm_topk_prob"],
        "expert_weights_scale": x["routed_scaling_factor"],
        "expert_group_count": x["n_expert_group"],
        **({"moe_latent_size": x["moe_latent_size"]} if "moe_latent_size" in x else {}),
    }


ARCHES: dict[str, tuple[Callable[[ModelShape], TensorShapes], Callable[[ModelShape], dict]]] = {
    "llama": (_llama_like, _llama_kv),
    "qwen2": (_llama_like, _common_kv),
    "gemma2": (_gemma, _gemma2_kv),
    "gemma3": (_gemma, _gemma3_kv),
    "qwen3moe": (_qwen3moe, _qwen3moe_kv),
    "phi3": (_phi3, _phi3_kv),
    "deci": (_deci, _llama_kv),
    "deepseek2": (_deepseek2, _deepseek2_kv),
    "nemotron_h": (_nemotron_h, _nemotron_h_kv),
    "glm4moe": (_glm4moe, _glm4moe_kv),
    "nemotron_h_moe": (_nemotron_h, _nemotron_h_moe_kv),
    "granitehybrid": (_granite_hybrid, _granite_hybrid_kv),
}


def tensor_shapes(s: ModelShape) -> TensorShapes:
    """(name, ggml shape) of every tensor the converter writes for `s`, in file order."""
    return ARCHES[s.arch][0](s)


def arch_metadata(s: ModelShape) -> dict[str, Any]:
    """The `<arch>.*` GGUF keys for `s`, with the arch prefix left off."""
    return ARCHES[s.arch][1](s)
