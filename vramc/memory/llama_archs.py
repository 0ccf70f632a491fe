"""llama.cpp's prompt-processing graph for the decoder-only transformer families.

Rebuilds, node for node and in llama.cpp's order, what `llm_graph_context` (src/llama-graph.cpp)
and the per-architecture graphs (src/models/{llama,qwen2,qwen3,qwen3moe,gemma2,gemma3,phi3,deci,
deepseek2,glm4-moe,openai-moe,nemotron-h,granite-hybrid}.cpp; nemotron_h_moe uses nemotron-h's)
build for the worst-case reserve: build_inp_embd, build_attn with the KV store (set_rows into the
cache), flash attention or KQ/softmax/KQV, MLA, build_ffn, build_moe_ffn, the Mamba-2 mixer of
the hybrids (llama_mamba), the output head.
Tensor sizes and the order of sources decide what ggml-alloc can reuse, so both follow the
source; ops that only differ in arithmetic (SiLU or GELU gating, scales) share a builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vramc.memory import llama_graph as gg
from vramc.memory.llama_graph import OUTPUT, Graph, Tensor
from vramc.memory.llama_mamba import LayerRS, SsmConf, mamba2_layer, rs_inputs, ssm_conf
from vramc.model.ggml import row_size


@dataclass(frozen=True)
class ArchSpec:
    """What distinguishes one family's layer from the llama layer."""

    qk_norm: bool = False  # RMS norm of Q and K before RoPE (qwen3, gemma3)
    qk_norm_if_present: bool = False  # glm4moe: the norms are optional tensors (GLM-4.5 has them,
    #                                    GLM-4.5-Air not), applied where the GGUF holds them
    q_scale: bool = False  # ggml_scale(Qcur) after RoPE (gemma2/3, phi3)
    post_norms: bool = False  # attn_post_norm and ffn_post_norm (gemma2/3)
    embd_scale: bool = False  # inpL scaled by sqrt(n_embd) (gemma)
    residual_first: bool = False  # phi3: ffn output added as add(residual, cur)
    attn_softcap: bool = False  # gemma2: tanh soft-capping of KQ (without flash attention)
    iswa: bool = False  # sliding-window layers have their own cache and mask (set from the cache)
    variable: bool = False  # deci: attention-free, "linear attention" and FFN-free layers
    mla: bool = False  # deepseek2: multi-head latent attention over a K-only cache, shared experts
    ffn_norm: str = "ffn_norm"  # the FFN's input norm (gpt-oss calls it post_attention_norm)
    out_ids_late: bool = False  # gpt-oss: out_ids picks the outputs after the trunk, whose output
    #                              (t_h_nextn, kept for a draft head) is a graph output
    blocks: bool = False  # nemotron_h, mamba2: each layer is one block, a Mamba-2 mixer, attention or an MLP
    h_nextn: bool = False  # nemotron_h: out_ids picks the outputs after the output norm, whose result
    #                         (t_h_nextn) is a graph output
    mixers: bool = False  # granitehybrid: a layer without KV heads mixes with Mamba-2 instead of attention
    granite: bool = False  # granitehybrid: build_graph reads the four switches below from the GGUF
    rope: bool = True  # rope.scaling.finetuned: the Mamba hybrids attend without RoPE
    inp_embd_scale: bool = False  # embedding_scale: build_inp_embd scales, then expands at once
    residual_scale: bool = False  # residual_scale: a ggml_scale before each residual add
    logit_scale: bool = False  # logit_scale: a ggml_scale of the logits


LLAMA = ArchSpec()
ARCHS: dict[str, ArchSpec] = {
    "llama": LLAMA,  # Llama 2/3, Mistral, Mixtral (experts), ...
    "qwen2": LLAMA,  # + q/k/v biases, picked up from the tensor table
    "qwen3": ArchSpec(qk_norm=True),
    "qwen3moe": ArchSpec(qk_norm=True),
    "gemma2": ArchSpec(q_scale=True, post_norms=True, embd_scale=True, attn_softcap=True),
    "gemma3": ArchSpec(qk_norm=True, q_scale=True, post_norms=True, embd_scale=True),
    "phi3": ArchSpec(q_scale=True, residual_first=True),
    "deci": ArchSpec(variable=True),  # Llama-3.x-Nemotron (NAS-pruned layers)
    "deepseek2": ArchSpec(mla=True),  # DeepSeek-V2/V3/R1, Kimi-K2 (MLA with the absorption)
    # GLM-4.5/4.5-Air/4.6 (glm4-moe.cpp): the FFN's input norm is attn_post_norm, dense leading
    # layers, routed + shared experts; the NextN layers are left to the MTP graph
    "glm4moe": ArchSpec(qk_norm_if_present=True, ffn_norm="post_attention_norm"),
    "gpt-oss": ArchSpec(ffn_norm="post_attention_norm", out_ids_late=True),  # + sinks, expert biases
    "nemotron_h": ArchSpec(blocks=True, h_nextn=True),  # Nemotron-H, Nemotron-Nano-9B-v2 (hybrid Mamba-2)
    "nemotron_h_moe": ArchSpec(blocks=True, h_nextn=True),  # Nemotron 3 (nemotron_h's graph, MoE blocks)
    "mamba2": ArchSpec(blocks=True),  # Mamba-2 (Mamba-Codestral): Mamba-2 blocks only (mamba.cpp)
    "granitehybrid": ArchSpec(mixers=True, granite=True),  # Granite 4.0-H: Mamba-2 or attention, then an FFN
}


@dataclass(frozen=True)
class MoeConf:
    """build_moe_ffn's switches, from the GGUF (llama_model_deepseek2::load_arch_hparams etc.)."""

    gating: str = "softmax"  # softmax | sigmoid | softmax_weight
    norm_w: bool = True
    w_scale: float = 0.0
    n_groups: int = 0
    n_group_used: int = 0
    relu_sqr: bool = False  # nemotron_h_moe: LLM_FFN_RELU_SQR experts with no gate


def _groups(hparams: dict) -> dict:
    """llama_model_base::load_hparams reads the expert groups for every architecture."""
    return {
        "n_groups": int(hparams.get("expert_group_count", 0) or 0),
        "n_group_used": int(hparams.get("expert_group_used_count", 0) or 0),
    }


def moe_conf(arch: str, hparams: dict) -> MoeConf:
    w_scale = float(hparams.get("expert_weights_scale", 0.0) or 0.0)
    if arch == "gpt-oss":
        return MoeConf(gating="softmax_weight", norm_w=False, w_scale=w_scale)
    if arch == "nemotron_h_moe":  # nemotron-h.cpp passes the gating and the activation itself
        return MoeConf(
            gating="sigmoid",
            norm_w=bool(hparams.get("expert_weights_norm", False)),
            w_scale=w_scale,
            relu_sqr=True,
            **_groups(hparams),
        )
    if arch not in ("deepseek2", "glm4moe"):
        # llama (Mixtral), qwen3moe, phi3, granitehybrid and the like: softmax, normalised weights
        return MoeConf(w_scale=w_scale)
    # llama_model_glm4_moe::load_arch_hparams: a file without a gating function gets sigmoid
    default = 2 if arch == "glm4moe" else 0
    gating = {2: "sigmoid", 3: "softmax_weight"}.get(int(hparams.get("expert_gating_func", 0) or default), "softmax")
    return MoeConf(
        gating=gating, norm_w=bool(hparams.get("expert_weights_norm", False)), w_scale=w_scale, **_groups(hparams)
    )


@dataclass
class LayerKV:
    k: Tensor | None  # None for a layer the graph leaves out
    v: Tensor | None
    kv_size: int  # cells per stream
    swa: bool


@dataclass
class GraphParams:
    n_tokens: int
    n_stream: int  # KV streams (1 if unified)
    n_outputs: int
    flash_attn: bool
    v_trans: bool
    offload_kqv: bool
    type_k: str
    type_v: str
    final_softcap: bool = False
    n_seqs: int = 1  # the reserve ubatch's sequences (n_seq_max)
    pin: dict = field(default_factory=dict)  # il -> backend the layer's "norm" nodes are pinned to
    cpu_backend: int = 0


class MissingTensor(ValueError):
    """A tensor the architecture's graph needs is not in the model (llama.cpp: "missing tensor")."""

    def __init__(self, name: str) -> None:
        super().__init__(f"missing tensor {name!r}, which llama.cpp needs to build this model's graph")
        self.name = name


_MIXER_OPTIONAL = frozenset({"ssm_conv1d.bias", "ssm_norm.weight"})


def _rot_size(head: int) -> int:
    """llama_kv_cache::build_input_k_rot: the largest power of two >= 64 dividing the head size.

    Bounded by the head size itself: every power of two divides 0, and a head of 0 (metadata that
    validate_meta refuses) must not spin here forever.
    """
    n = 64
    while n * 2 <= head and head % (n * 2) == 0:
        n *= 2
    return n


class _Builder:
    def __init__(
        self,
        spec: ArchSpec,
        hp,
        w: dict[str, Tensor],
        kv: dict[int, LayerKV],
        p: GraphParams,
        moe: MoeConf,
        mla: dict,
        rs: dict[int, LayerRS],
        ssm: SsmConf,
    ):
        self.spec, self.hp, self.w, self.kv, self.p = spec, hp, w, kv, p
        self.moe_conf, self.mla = moe, mla
        self.rs, self.ssm = rs, ssm
        self.g = Graph()
        self.W = w.get  # a weight by name, None where the file has none

    def norm(self, x: Tensor, weight: Tensor | None, il: int, bias: Tensor | None = None) -> Tensor:
        cur = gg.rms_norm(x)
        if (weight is not None or bias is not None) and il >= 0 and il in self.p.pin:
            cur.backend = self.p.pin[il]  # graph_get_cb pins "norm" to the layer's device
        if weight is not None:
            cur = gg.binary("MUL", cur, weight)
        if bias is not None:
            cur = gg.binary("ADD", cur, bias)
        return cur

    def need(self, name: str) -> Tensor:
        """A weight the graph cannot do without; llama.cpp's loader refuses a file without it."""
        t = self.W(name)
        if t is None:
            raise MissingTensor(name)
        return t

    def mixer_weights(self, prefix: str):
        """build_mamba2_layer's weights of one layer: all required but the conv bias and the norm."""
        return lambda name: self.W(prefix + name) if name in _MIXER_OPTIONAL else self.need(prefix + name)

    def mm(self, w: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
        cur = gg.mul_mat(w, x)
        return gg.binary("ADD", cur, bias) if bias is not None else cur

    # --- inputs -------------------------------------------------------------------------------
    def inputs(self) -> Tensor:
        hp, p, g = self.hp, self.p, self.g
        tokens = gg.input_tensor("i32", (p.n_tokens,), "inp_tokens")
        embd = gg.input_tensor("f32", (hp.n_embd, p.n_tokens), "inp_embd")
        cur = gg.get_rows(self.need("token_embd.weight"), tokens)
        g.expand(cur)  # ggml_build_forward_select: the token path computes, the other is a leaf
        g.expand(embd)
        if self.spec.embd_scale:
            cur = gg.unary(cur, "SCALE")
        if self.spec.inp_embd_scale:
            cur = gg.unary(cur, "SCALE")
            g.expand(cur)  # "make sure the produced embeddings are immediately materialized"
        self.inp_pos = gg.input_tensor("i32", (p.n_tokens,), "inp_pos")
        self.attn_in = {}
        for swa in (False, True) if self.spec.iswa else (False,):
            kvs = [x for x in self.kv.values() if x.swa == swa]
            if not kvs:
                continue
            self.attn_in[swa] = self._attn_inputs(kvs)
        if self.rs:  # the recurrent memory holds one state row per sequence (mem_size = n_seq_max)
            self.rs_in = rs_inputs(next(iter(self.rs.values())).r.ne[1], p.n_seqs)
        self.out_ids = gg.input_tensor("i32", (p.n_outputs,), "out_ids")
        return cur

    def _attn_inputs(self, kvs: list[LayerKV]) -> dict:
        hp, p = self.hp, self.p
        n_kv = kvs[0].kv_size
        v_max = max(hp.n_embd_v_gqa(il) for il in range(hp.n_layer_all))
        inp = {
            "k_idxs": gg.input_tensor("i64", (p.n_tokens,), "attn_inp_k_idxs"),
            "v_idxs": None
            if hp.is_mla
            else gg.input_tensor("i64", (p.n_tokens * (v_max if p.v_trans else 1),), "attn_inp_v_idxs"),
            "mask": gg.input_tensor(
                "f16" if p.flash_attn else "f32", (n_kv, p.n_tokens // p.n_stream, 1, p.n_stream), "attn_inp_kq_mask"
            ),
            "k_rot": None,
            "v_rot": None,
        }
        heads_k = {hp.head_k[il] for il in self.kv if self.kv[il].swa == kvs[0].swa}
        heads_v = {hp.head_v[il] for il in self.kv if self.kv[il].swa == kvs[0].swa}
        quant_k = p.type_k not in ("f32", "f16", "bf16")
        quant_v = p.type_v not in ("f32", "f16", "bf16")
        if quant_k and len(heads_k) == 1 and hp.head_k[0] % 64 == 0 and not self.spec.mla:
            n = _rot_size(heads_k.pop())
            inp["k_rot"] = gg.input_tensor("f32", (n, n), "attn_inp_k_rot")
        if quant_v and len(heads_v) == 1 and not self.spec.mla and hp.head_v[0] % 64 == 0:
            inp["v_rot"] = gg.input_tensor("f32", (64, 64), "attn_inp_v_rot")
        return inp

    # --- attention ----------------------------------------------------------------------------
    def qkv(self, il: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hp, W = self.hp, self.W
        b = f"blk.{il}."
        n_tok = x.ne[1]
        hk, hv, nh, nkv = hp.head_k[il], hp.head_v[il], hp.n_head[il], hp.n_head_kv[il]
        wqkv = W(b + "attn_qkv.weight")
        if wqkv is not None:
            qkv = self.mm(wqkv, x, W(b + "attn_qkv.bias"))
            q = gg.view(qkv, (hk, nh, n_tok), (row_size("f32", hk), qkv.nb[1]), 0)
            k = gg.view(qkv, (hk, nkv, n_tok), (row_size("f32", hk), qkv.nb[1]), row_size("f32", hk * nh))
            v = gg.view(qkv, (hv, nkv, n_tok), (row_size("f32", hv), qkv.nb[1]), row_size("f32", hk * nh + hk * nkv))
            return q, k, v
        q = gg.reshape(self.mm(self.need(b + "attn_q.weight"), x, W(b + "attn_q.bias")), hk, nh, n_tok)
        k = gg.reshape(self.mm(self.need(b + "attn_k.weight"), x, W(b + "attn_k.bias")), hk, nkv, n_tok)
        v = gg.reshape(self.mm(self.need(b + "attn_v.weight"), x, W(b + "attn_v.bias")), hv, nkv, n_tok)
        return q, k, v

    def attention(self, il: int, x: Tensor) -> Tensor:
        spec, W, b = self.spec, self.W, f"blk.{il}."
        if spec.mla:
            return self.mla_attention(il, x)
        q, k, v = self.qkv(il, x)
        freqs = W(f"rope_freqs.weight@{il}")
        q_norm = spec.qk_norm or (spec.qk_norm_if_present and W(b + "attn_q_norm.weight") is not None)
        k_norm = spec.qk_norm or (spec.qk_norm_if_present and W(b + "attn_k_norm.weight") is not None)
        if q_norm:
            q = self.norm(q, W(b + "attn_q_norm.weight"), il)
        if spec.rope:
            q = gg.rope(q, self.inp_pos, freqs)
        if k_norm:
            k = self.norm(k, W(b + "attn_k_norm.weight"), il)
        if spec.rope:
            k = gg.rope(k, self.inp_pos, freqs)
        if spec.q_scale:
            q = gg.unary(q, "SCALE")
        cur = self.attn(il, q, k, v)
        return self.mm(self.need(b + "attn_output.weight"), cur, W(b + "attn_output.bias"))

    def mla_attention(self, il: int, x: Tensor) -> Tensor:
        """deepseek2.cpp with MLA: absorbed q_nope, K = [kv_cmpr, k_pe] over a K-only cache."""
        W, b, hp, m = self.W, f"blk.{il}.", self.hp, self.mla
        n_tok, n_head = x.ne[1], hp.n_head[il]
        rank, rope_d, head_k = m["kv_lora_rank"], hp.n_rot, m["head_k_mla"]
        nope = head_k - rope_d
        if W(b + "attn_q.weight") is not None:
            q = gg.mul_mat(self.need(b + "attn_q.weight"), x)
        else:  # a q LoRA
            q = gg.mul_mat(self.need(b + "attn_q_a.weight"), x)
            q = self.norm(q, W(b + "attn_q_a_norm.weight"), il)
            q = gg.mul_mat(self.need(b + "attn_q_b.weight"), q)
        q = gg.reshape(q, head_k, n_head, n_tok)
        kv_pe = gg.mul_mat(self.need(b + "attn_kv_a_mqa.weight"), x)
        row = row_size(kv_pe.type, rank + rope_d)
        kv_cmpr = gg.view(kv_pe, (rank, n_tok), (row,), 0)
        k_pe = gg.view(kv_pe, (rope_d, 1, n_tok), (row, row), row_size(kv_pe.type, rank))
        k_pe = gg.rope(k_pe, self.inp_pos)
        kv_cmpr = self.norm(kv_cmpr, W(b + "attn_kv_a_norm.weight"), il)
        q_nope = gg.view(q, (nope, n_head, n_tok), (q.nb[1], q.nb[2]), 0)
        q_pe = gg.view(q, (rope_d, n_head, n_tok), (q.nb[1], q.nb[2]), row_size(q.type, nope))
        q_pe = gg.rope(q_pe, self.inp_pos)
        q_nope = gg.permute(q_nope, 0, 2, 1, 3)
        q_abs = gg.permute(gg.mul_mat(self.need(b + "attn_k_b.weight"), q_nope), 0, 2, 1, 3)
        q_cur = gg.concat(q_abs, q_pe, 0)
        kv_cmpr = gg.reshape(kv_cmpr, rank, 1, n_tok)
        k_cur = gg.concat(kv_cmpr, k_pe, 0)
        cur = self.attn_k(il, q_cur, k_cur, kv_cmpr, W(b + "attn_v_b.weight"))
        return self.mm(self.need(b + "attn_output.weight"), cur)

    def attn_k(self, il: int, q: Tensor, k_cur: Tensor, v_cur: Tensor, v_mla: Tensor) -> Tensor:
        """build_attn over llm_graph_input_attn_k: V is a view of the K cache, no rotation."""
        g = self.g
        lkv = self.kv[il]
        inp = self.attn_in[lkv.swa]
        for t in (q, v_cur, k_cur):
            g.expand(t)
        g.expand(self.cpy_k(lkv, k_cur, inp["k_idxs"]))
        k = self.get_k(il, lkv)
        v = gg.view(k, (v_cur.ne[0], k.ne[1], k.ne[2], k.ne[3]), k.nb[1:], 0)
        return self.mha(q, k, v, inp["mask"], v_mla, il=il)

    def hadamard(self, cur: Tensor, rot: Tensor) -> Tensor:
        n = rot.ne[0]
        nel = cur.ne[0] * cur.ne[1] * cur.ne[2] * cur.ne[3]
        res = gg.reshape(cur, n, nel // n) if gg.is_contiguous(cur) else gg.cont(cur, n, nel // n)
        res = gg.mul_mat(rot, res)
        return gg.reshape(res, *cur.ne)

    def attn(self, il: int, q: Tensor, k_cur: Tensor, v_cur: Tensor) -> Tensor:
        g = self.g
        lkv = self.kv[il]
        inp = self.attn_in[lkv.swa]
        if inp["k_rot"] is not None:
            q = self.hadamard(q, inp["k_rot"])
            k_cur = self.hadamard(k_cur, inp["k_rot"])
        if inp["v_rot"] is not None:
            v_cur = self.hadamard(v_cur, inp["v_rot"])
        # build_attn expands q, v, k; the iswa variant q, k, v
        for t in (q, k_cur, v_cur) if self.spec.iswa else (q, v_cur, k_cur):
            g.expand(t)
        g.expand(self.cpy_k(lkv, k_cur, inp["k_idxs"]))
        g.expand(self.cpy_v(lkv, v_cur, inp["v_idxs"]))
        k, v = self.get_k(il, lkv), self.get_v(il, lkv)
        cur = self.mha(q, k, v, inp["mask"], sinks=self.W(f"blk.{il}.attn_sinks.weight"), il=il)
        if inp["v_rot"] is not None:
            cur = self.hadamard(cur, inp["v_rot"])
        return cur

    def cpy_k(self, lkv: LayerKV, k_cur: Tensor, idxs: Tensor) -> Tensor:
        n_gqa = k_cur.ne[0] * k_cur.ne[1]
        k_cur = gg.view(k_cur, (n_gqa, k_cur.ne[2]), (k_cur.nb[2],), 0)
        k = lkv.k
        if k.ne[2] > 1:
            k = gg.reshape(k, n_gqa, lkv.kv_size * k.ne[2])
        return gg.set_rows(k, k_cur, idxs)

    def cpy_v(self, lkv: LayerKV, v_cur: Tensor, idxs: Tensor) -> Tensor:
        n_gqa, n_tok = v_cur.ne[0] * v_cur.ne[1], v_cur.ne[2]
        v = lkv.v
        if not self.p.v_trans:
            v_cur = gg.view(v_cur, (n_gqa, n_tok), (v_cur.nb[2],), 0)
            if v.ne[2] > 1:
                v = gg.reshape(v, n_gqa, lkv.kv_size * v.ne[2])
            return gg.set_rows(v, v_cur, idxs)
        if row_size(v_cur.type, n_gqa) == v_cur.nb[2]:
            v_cur = gg.reshape(v_cur, n_gqa, n_tok)
        else:
            v_cur = gg.cont(v_cur, n_gqa, n_tok)
        if n_gqa < v.ne[0]:
            v_cur = gg.new_tensor(v_cur.type, (v.ne[0], n_tok), "PAD", [v_cur])
        v_view = gg.reshape(v, 1, v.ne[0] * v.ne[1] * v.ne[2])
        v_cur = gg.reshape(v_cur, 1, v_cur.ne[0] * v_cur.ne[1])
        return gg.set_rows(v_view, v_cur, idxs)

    def get_k(self, il: int, lkv: LayerKV) -> Tensor:
        hp, k = self.hp, lkv.k
        hk, nkv, ns, size = hp.head_k[il], hp.n_head_kv[il], k.ne[2], lkv.kv_size
        return gg.view(
            k,
            (hk, nkv, size, ns),
            (row_size(k.type, hk), row_size(k.type, k.ne[0]), row_size(k.type, k.ne[0] * size)),
            0,
        )

    def get_v(self, il: int, lkv: LayerKV) -> Tensor:
        hp, v = self.hp, lkv.v
        if v is None:  # MLA: V is a view of K (not modelled beyond the cache)
            return self.get_k(il, lkv)
        hv, nkv, ns, size = hp.head_v[il], hp.n_head_kv[il], v.ne[2], lkv.kv_size
        if not self.p.v_trans:
            return gg.view(
                v,
                (hv, nkv, size, ns),
                (row_size(v.type, hv), row_size(v.type, v.ne[0]), row_size(v.type, v.ne[0] * size)),
                0,
            )
        return gg.view(
            v,
            (size, nkv, hv, ns),
            (row_size(v.type, size * hv), row_size(v.type, size), row_size(v.type, size * v.ne[0])),
            0,
        )

    def mha(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor,
        v_mla: Tensor | None = None,
        sinks: Tensor | None = None,
        il: int = -1,
    ) -> Tensor:
        p, g = self.p, self.g
        v_trans = v.nb[1] > v.nb[2]
        ns = k.ne[3]
        q = gg.view(q, (q.ne[0], q.ne[1], q.ne[2] // ns, ns), (q.nb[1], q.nb[2], q.nb[2] * (q.ne[2] // ns)), 0)
        q = gg.permute(q, 0, 2, 1, 3)
        k = gg.permute(k, 0, 2, 1, 3)
        v = gg.permute(v, 0, 2, 1, 3)
        if p.flash_attn:
            if v_trans:
                v = gg.transpose(v)
            cur = gg.flash_attn_ext(q, k, v, mask, sinks)
            g.flash[il] = cur
            if v_mla is not None:  # decompress the latent: a matrix product over the tokens
                cur = gg.permute(gg.mul_mat(v_mla, gg.permute(cur, 0, 2, 1, 3)), 0, 2, 1, 3)
                cur = gg.cont(cur)
            cur = gg.reshape(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        else:
            kq = gg.mul_mat(k, q)
            if self.spec.attn_softcap:
                kq = gg.unary(gg.unary(gg.unary(kq, "SCALE")), "SCALE")
            kq = gg.soft_max(kq, mask, sinks)
            if not v_trans:
                v = gg.cont(gg.transpose(v))
            kqv = gg.mul_mat(v, kq)
            if v_mla is not None:
                kqv = gg.mul_mat(v_mla, kqv)
            cur = gg.permute(kqv, 0, 2, 1, 3)
            cur = gg.cont(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
            if not p.offload_kqv:
                cur.backend = p.cpu_backend  # "all nodes between the KV store and the output on the CPU"
        g.expand(cur)
        return cur

    # --- feed-forward -------------------------------------------------------------------------
    def ffn(self, il: int, x: Tensor) -> Tensor:
        W, b = self.W, f"blk.{il}."
        if W(b + "ffn_gate_inp.weight") is not None:
            out = self.moe(il, x)
            return self.shared_experts(il, x, out) if W(b + "ffn_up_shexp.weight") is not None else out
        up = self.mm(self.need(b + "ffn_up.weight"), x, W(b + "ffn_up.bias"))
        gate_w = W(b + "ffn_gate.weight")
        if gate_w is None:  # phi3: fused gate+up, LLM_FFN_SWIGLU
            cur = gg.glu(up)
        else:
            gate = self.mm(gate_w, x, W(b + "ffn_gate.bias"))
            cur = gg.glu_split(gate, up)
        return self.mm(self.need(b + "ffn_down.weight"), cur, W(b + "ffn_down.bias"))

    def moe(self, il: int, x: Tensor, logits: Tensor | None = None) -> Tensor:
        """build_moe_ffn: router (unless given its `logits`), expert selection (optionally by
        groups), routed experts."""
        g, W, b, hp, c = self.g, self.W, f"blk.{il}.", self.hp, self.moe_conf
        n_embd, n_tok = x.ne[0], x.ne[1]
        n_exp, n_used = hp.n_expert, hp.n_expert_used
        if logits is None:
            logits = self.mm(self.need(b + "ffn_gate_inp.weight"), x, W(b + "ffn_gate_inp.bias"))
        if c.gating == "sigmoid":
            probs = gg.unary(logits)
        elif c.gating == "softmax_weight":
            probs = logits
        else:
            probs = gg.soft_max(logits)
        selection = probs
        probs_b = W(b + "exp_probs_b.bias")
        if probs_b is not None:
            selection = gg.binary("ADD", probs, probs_b)
        if c.n_groups > 1:
            per_group = n_exp // c.n_groups
            groups = gg.reshape(selection, per_group, c.n_groups, n_tok)
            scores = gg.argsort_top_k(groups, 2)
            scores = gg.get_rows(gg.reshape(groups, 1, per_group, c.n_groups, n_tok), scores)
            scores = gg.sum_rows(gg.reshape(scores, scores.ne[1], scores.ne[2], scores.ne[3]))
            scores = gg.reshape(scores, scores.ne[1], scores.ne[2])
            top = gg.argsort_top_k(scores, c.n_group_used)
            selection = gg.get_rows(groups, top)
            filled = gg.dup(groups, "FILL")
            selection = gg.reshape(gg.set_rows(filled, selection, top), n_exp, n_tok)
        selected = gg.argsort_top_k(selection, n_used)
        weights = gg.get_rows(gg.reshape(probs, 1, n_exp, n_tok), selected)
        if c.gating == "softmax_weight":
            weights = gg.reshape(gg.soft_max(gg.reshape(weights, n_used, n_tok)), 1, n_used, n_tok)
        if c.norm_w:
            weights = gg.reshape(weights, n_used, n_tok)
            wsum = gg.unary(gg.sum_rows(weights), "CLAMP")
            weights = gg.reshape(gg.binary("DIV", weights, wsum), 1, n_used, n_tok)
        if c.w_scale not in (0.0, 1.0):
            weights = gg.unary(weights, "SCALE")
        g.expand(weights)
        cur = gg.reshape(x, n_embd, 1, n_tok)
        gate_up_w = W(b + "ffn_gate_up_exps.weight")
        if gate_up_w is not None:
            gate_up = gg.mul_mat_id(gate_up_w, cur, selected)
            n_ff = gate_up.ne[0] // 2
            gate = gg.view(gate_up, (n_ff, gate_up.ne[1], gate_up.ne[2]), (gate_up.nb[1], gate_up.nb[2]), 0)
            up = gg.view(
                gate_up, (n_ff, gate_up.ne[1], gate_up.ne[2]), (gate_up.nb[1], gate_up.nb[2]), n_ff * gate_up.nb[0]
            )
        else:
            up = self.add_id(
                gg.mul_mat_id(self.need(b + "ffn_up_exps.weight"), cur, selected), W(b + "ffn_up_exps.bias"), selected
            )
            gate = (
                None
                if c.relu_sqr
                else self.add_id(
                    gg.mul_mat_id(self.need(b + "ffn_gate_exps.weight"), cur, selected),
                    W(b + "ffn_gate_exps.bias"),
                    selected,
                )
            )
        act = gg.unary(gg.unary(up), "SQR") if c.relu_sqr else gg.glu_split(gate, up)
        experts = self.add_id(
            gg.mul_mat_id(self.need(b + "ffn_down_exps.weight"), act, selected), W(b + "ffn_down_exps.bias"), selected
        )
        experts = gg.binary("MUL", experts, weights)
        g.expand(experts)
        views = [gg.view(experts, (n_embd, n_tok), (experts.nb[2],), i * experts.nb[1]) for i in range(n_used)]
        for v in views:
            g.expand(v)
        out = views[0]
        for v in views[1:]:
            out = gg.binary("ADD", out, v)
            g.expand(out)
        if n_used == 1:
            out = gg.cont(out)
        return out

    @staticmethod
    def add_id(x: Tensor, bias: Tensor | None, ids: Tensor) -> Tensor:
        return x if bias is None else gg.dup(x, "ADD_ID", [x, bias, ids])

    def shared_experts(self, il: int, x: Tensor, moe_out: Tensor) -> Tensor:
        b = f"blk.{il}."
        up = gg.mul_mat(self.need(b + "ffn_up_shexp.weight"), x)
        gate = gg.mul_mat(self.need(b + "ffn_gate_shexp.weight"), x)
        shexp = gg.mul_mat(self.need(b + "ffn_down_shexp.weight"), gg.glu_split(gate, up))
        return gg.binary("ADD", moe_out, shexp)

    # --- the whole graph ----------------------------------------------------------------------
    def build(self, layers: list[int]) -> Graph:
        spec, W, hp, p, g = self.spec, self.W, self.hp, self.p, self.g
        if spec.blocks:
            return self.build_blocks(layers)
        inp = self.inputs()
        entry = g.entry
        for il in layers:
            b = f"blk.{il}."
            no_attn = spec.variable and hp.n_head[il] == 0
            cur = inp if no_attn else self.norm(inp, W(b + "attn_norm.weight"), il, W(b + "attn_norm.bias"))
            if not no_attn:
                # the layer's first node: its input norm, on which the rest of the layer depends
                entry[il] = _first_norm(cur)
            if spec.variable and hp.n_head[il] > 0 and hp.n_head_kv[il] == 0:
                cur = gg.mul_mat(self.need(b + "attn_output.weight"), cur)  # "linear attention"
            elif spec.mixers and hp.is_recr[il]:
                cur = mamba2_layer(
                    g,
                    self.ssm,
                    self.rs[il],
                    self.rs_in,
                    self.p.n_seqs,
                    cur,
                    self.mixer_weights(b),
                    lambda x, w, il=il: self.norm(x, w, il),
                )
            elif not no_attn:
                cur = self.attention(il, cur)
            res = inp
            if il == hp.n_layer - 1 and not spec.out_ids_late:
                cur = gg.get_rows(cur, self.out_ids)
                res = gg.get_rows(res, self.out_ids)
            if spec.variable and hp.n_ff[il] == 0:
                continue  # FFN-free layer: the graph drops its output and keeps inpL (deci.cpp)
            if spec.post_norms:
                cur = self.norm(cur, W(b + "post_attention_norm.weight"), il)
            if spec.residual_scale:
                cur = gg.unary(cur, "SCALE")
            ffn_inp = cur if no_attn else gg.binary("ADD", cur, res)
            cur = self.norm(ffn_inp, W(b + spec.ffn_norm + ".weight"), il, W(b + spec.ffn_norm + ".bias"))
            if no_attn:
                entry[il] = _first_norm(cur)
            cur = self.ffn(il, cur)
            if spec.post_norms:
                cur = self.norm(cur, W(b + "post_ffw_norm.weight"), -1)
            if spec.residual_scale:
                cur = gg.unary(cur, "SCALE")
            inp = gg.binary("ADD", ffn_inp, cur) if spec.residual_first else gg.binary("ADD", cur, ffn_inp)
        if spec.out_ids_late:
            inp.flags |= OUTPUT  # res->t_h_nextn
            inp = gg.get_rows(inp, self.out_ids)
        cur = self.norm(inp, W("output_norm.weight"), -1, W("output_norm.bias"))
        cur.flags |= OUTPUT  # t_embd
        cur = gg.mul_mat(self.need("output.weight"), cur)
        if W("output.bias") is not None:
            cur = gg.binary("ADD", cur, W("output.bias"))
        if p.final_softcap:
            cur = gg.unary(gg.unary(gg.unary(cur, "SCALE")), "SCALE")
        if spec.logit_scale:
            cur = gg.unary(cur, "SCALE")
        cur.flags |= OUTPUT  # t_logits
        g.expand(cur)
        return g

    def build_blocks(self, layers: list[int]) -> Graph:
        """nemotron-h.cpp and mamba.cpp: a residual around every block."""
        W, hp, g, spec = self.W, self.hp, self.g, self.spec
        inp = self.inputs()
        for il in layers:
            b = f"blk.{il}."
            cur = self.norm(inp, W(b + "attn_norm.weight"), il)
            g.entry[il] = _first_norm(cur)
            if hp.is_recr[il]:
                cur = mamba2_layer(
                    g,
                    self.ssm,
                    self.rs[il],
                    self.rs_in,
                    self.p.n_seqs,
                    cur,
                    self.mixer_weights(b),
                    lambda x, w: self.norm(x, w, il),  # noqa: B023
                )
            elif hp.n_ff[il] == 0:
                cur = self.attn(il, *self.qkv(il, cur))  # no RoPE
                cur = self.mm(self.need(b + "attn_output.weight"), cur, W(b + "attn_output.bias"))
            elif W(b + "ffn_gate_inp.weight") is not None:
                cur = self.moe_block(il, cur)
            else:  # LLM_FFN_RELU_SQR without a gate
                cur = self.relu_sqr_ffn(
                    cur,
                    self.need(b + "ffn_up.weight"),
                    self.need(b + "ffn_down.weight"),
                    W(b + "ffn_up.bias"),
                    W(b + "ffn_down.bias"),
                )
            if il == hp.n_layer - 1 and not spec.h_nextn:
                cur = gg.get_rows(cur, self.out_ids)
                inp = gg.get_rows(inp, self.out_ids)
            inp = gg.binary("ADD", cur, inp)
        cur = self.norm(inp, W("output_norm.weight"), -1)
        if spec.h_nextn:
            cur.flags |= OUTPUT  # t_h_nextn
            cur = gg.get_rows(cur, self.out_ids)
        cur.flags |= OUTPUT  # t_embd
        cur = gg.mul_mat(self.need("output.weight"), cur)
        cur.flags |= OUTPUT  # t_logits
        g.expand(cur)
        return g

    def relu_sqr_ffn(
        self, x: Tensor, up: Tensor, down: Tensor, up_b: Tensor | None = None, down_b: Tensor | None = None
    ) -> Tensor:
        cur = gg.unary(gg.unary(self.mm(up, x, up_b)), "SQR")
        return self.mm(down, cur, down_b)

    def moe_block(self, il: int, x: Tensor) -> Tensor:
        """nemotron-h.cpp build_ffn_layer with experts: the router reads the block's input, the
        experts an optional latent projection of it, the shared expert the input again."""
        W, b = self.W, f"blk.{il}."
        latent_down, latent_up = W(b + "ffn_latent_down.weight"), W(b + "ffn_latent_up.weight")
        inp = gg.mul_mat(latent_down, x) if latent_down is not None else x
        logits = gg.mul_mat(self.need(b + "ffn_gate_inp.weight"), x)
        out = self.moe(il, inp, logits)
        if latent_up is not None:
            out = gg.mul_mat(latent_up, out)
        shexp = self.relu_sqr_ffn(x, self.need(b + "ffn_up_shexp.weight"), self.need(b + "ffn_down_shexp.weight"))
        return gg.binary("ADD", out, shexp)


def _first_norm(cur: Tensor) -> Tensor:
    """The RMS_NORM under a norm's weight and bias (_Builder.norm)."""
    while cur.op != "RMS_NORM":
        cur = cur.src[0]
    return cur


def graph_spec(arch: str, tensor_names) -> tuple[ArchSpec | None, bool]:
    """(spec, exact): the family's spec, or the llama layer for an unknown architecture whose
    layers have llama's tensors (an approximation), or None when the graph is not modelled."""
    if arch in ARCHS:
        return ARCHS[arch], True
    names = set(tensor_names)
    attn = "blk.0.attn_q.weight" in names or "blk.0.attn_qkv.weight" in names
    ffn = "blk.0.ffn_down.weight" in names or "blk.0.ffn_down_exps.weight" in names
    if attn and ffn and "blk.0.attn_output.weight" in names:
        return LLAMA, False
    return None, False


def build_graph(
    spec: ArchSpec,
    hp,
    weights: dict[str, Tensor],
    kv: dict[int, LayerKV],
    p: GraphParams,
    layers: list[int],
    arch: str,
    hparams: dict,
    rs: dict[int, LayerRS] | None = None,
) -> Graph:
    """The reserve graph through `layers` (the trunk, or a shortened trunk, see llama_compute);
    `rs`: the recurrent layers' state tensors."""
    spec = replace(spec, iswa=any(x.swa for x in kv.values()))
    if spec.granite:
        spec = replace(
            spec,
            inp_embd_scale=bool(hparams.get("embedding_scale")),
            residual_scale=bool(hparams.get("residual_scale")),
            logit_scale=bool(hparams.get("logit_scale")),
            rope=bool(hparams.get("rope.scaling.finetuned", True)),
        )
    mla = {
        "kv_lora_rank": int(hparams.get("attention.kv_lora_rank", 0) or 0),
        "head_k_mla": int(hparams.get("attention.key_length_mla", 0) or 0),
    }
    return _Builder(spec, hp, weights, kv, p, moe_conf(arch, hparams), mla, rs or {}, ssm_conf(hparams)).build(layers)
