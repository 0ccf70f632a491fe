"""The Mamba-2 mixer of llama.cpp's hybrid graphs, for the compute replay.

Rebuilds `llm_build_mamba_base::build_mamba2_layer` (src/models/mamba-base.cpp) and
`llm_graph_context::build_rs` (src/llama-graph.cpp) node for node for the worst-case reserve: the
full recurrent memory (`init_full`: head 0, rs_z 0, n_rs = mem_size = n_seq_max = the ubatch's
sequences, so the "extra" state rows are empty) and no rollback snapshots (n_rs_seq 0, K = 1).
The conv and ssm states are cache tensors: the writes into them (scale, cpy) are views that
allocate nothing, but they order the graph and hold their sources alive.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramc.memory import llama_graph as gg
from vramc.memory.llama_graph import Graph, Tensor

F32 = 4  # the recurrent state and every activation here are f32


@dataclass
class LayerRS:
    r: Tensor  # cache_r_l{il}: conv state, {n_embd_r, mem_size} f32
    s: Tensor  # cache_s_l{il}: ssm state, {n_embd_s, mem_size} f32


@dataclass(frozen=True)
class SsmConf:
    d_conv: int
    d_inner: int
    d_state: int
    n_head: int  # ssm.time_step_rank
    n_group: int


def ssm_conf(hparams: dict) -> SsmConf:
    def get(key: str) -> int:
        return int(hparams.get(key, 0) or 0)

    return SsmConf(
        get("ssm.conv_kernel"),
        get("ssm.inner_size"),
        get("ssm.state_size"),
        get("ssm.time_step_rank"),
        get("ssm.group_count"),
    )


@dataclass
class RsInputs:
    """build_rs_inp_impl: rs_s_copy and its two views, shared by every recurrent layer."""

    main: Tensor  # the ubatch's sequences' source rows
    extra: Tensor  # the other rows (none in the reserve)


def rs_inputs(n_rs: int, n_seqs: int) -> RsInputs:
    s_copy = gg.input_tensor("i32", (n_rs,), "rs_s_copy")
    return RsInputs(gg.view(s_copy, (n_seqs,), (), 0), gg.view(s_copy, (n_rs - n_seqs,), (), n_seqs * s_copy.nb[0]))


def _cpy(a: Tensor, dst: Tensor) -> Tensor:
    """ggml_cpy: a view of the destination (here the cache), so nothing to allocate."""
    t = gg.view_tensor(dst)
    t.op = "CPY"
    t.src = [a, dst]
    return t


def build_rs(g: Graph, cache: Tensor, inp: RsInputs, n_seqs: int, get_rows=None) -> Tensor:
    size, n_rs = cache.ne[0], cache.ne[1]
    states = gg.reshape(cache, size, n_rs)
    zero = gg.view_tensor(gg.view(states, (size,), (), 0))  # ggml_scale_inplace of row rs_z
    zero.op = "SCALE"
    g.expand(zero)
    out = (get_rows or gg.get_rows)(states, inp.main)
    g.expand(out)
    extra = gg.get_rows(states, inp.extra)
    g.expand(_cpy(extra, gg.view(cache, (size, n_rs - n_seqs), (cache.nb[1],), n_seqs * cache.nb[1])))
    return out


def mamba2_layer(g: Graph, c: SsmConf, rs: LayerRS, inp: RsInputs, n_seqs: int, cur: Tensor, w, norm) -> Tensor:
    """build_mamba2_layer on the normed input `cur` {n_embd, n_tokens}: `w(suffix)` is the layer's
    weight (None if absent), `norm(x, weight)` the builder's build_norm for this layer (pins)."""
    head_dim = c.d_inner // c.n_head
    d_xbc = c.d_inner + 2 * c.n_group * c.d_state
    n_seq_tokens = cur.ne[1] // n_seqs
    conv = build_rs(g, rs.r, inp, n_seqs)
    conv = gg.reshape(conv, c.d_conv - 1, d_xbc, n_seqs)
    zx = gg.mul_mat(w("ssm_in.weight"), cur)
    zx = gg.reshape(zx, zx.ne[0], n_seq_tokens, n_seqs)
    z = gg.view(zx, (head_dim, c.n_head, n_seq_tokens, n_seqs), (head_dim * F32, zx.nb[1], zx.nb[2]), 0)
    xbc = gg.view(zx, (d_xbc, n_seq_tokens, n_seqs), (zx.nb[1], zx.nb[2]), c.d_inner * F32)
    dt = gg.view(zx, (c.n_head, n_seq_tokens, n_seqs), (zx.nb[1], zx.nb[2]), (c.d_inner + d_xbc) * F32)

    # the convolution's window: the previous d_conv - 1 inputs (the state), then this ubatch's;
    # its last d_conv - 1 columns become the new state
    conv_x = gg.concat(conv, gg.transpose(xbc), 0)
    last = gg.view(conv_x, (c.d_conv - 1, d_xbc, n_seqs), (conv_x.nb[1], conv_x.nb[2]), n_seq_tokens * F32)
    g.expand(_cpy(last, gg.view(rs.r, ((c.d_conv - 1) * d_xbc, n_seqs), (rs.r.nb[1],), 0)))
    xbc = gg.new_tensor(
        "f32", (d_xbc, conv_x.ne[0] - c.d_conv + 1, n_seqs), "SSM_CONV", [conv_x, w("ssm_conv1d.weight")]
    )
    if w("ssm_conv1d.bias") is not None:
        xbc = gg.binary("ADD", xbc, w("ssm_conv1d.bias"))
    xbc = gg.unary(xbc)  # silu

    x = gg.view(xbc, (head_dim, c.n_head, n_seq_tokens, n_seqs), (head_dim * F32, xbc.nb[1], xbc.nb[2]), 0)
    bc_shape = (c.d_state, c.n_group, n_seq_tokens, n_seqs), (c.d_state * F32, xbc.nb[1], xbc.nb[2])
    ssm_b = gg.view(xbc, *bc_shape, c.d_inner * F32)
    ssm_c = gg.view(xbc, *bc_shape, (c.d_inner + c.n_group * c.d_state) * F32)
    dt = gg.binary("ADD", gg.cont(dt), w("ssm_dt.bias"))
    n_x = head_dim * c.n_head * n_seq_tokens * n_seqs

    def scan(states: Tensor, ids: Tensor) -> Tensor:
        ssm = gg.reshape(states, c.d_state, head_dim, c.n_head, rs.s.ne[1])
        # y for every token, then the final state of every sequence
        n = n_x + c.d_state * head_dim * c.n_head * ids.ne[0]
        return gg.new_tensor("f32", (n,), "SSM_SCAN", [ssm, x, dt, w("ssm_a"), ssm_b, ssm_c, ids])

    y_ssm = build_rs(g, rs.s, inp, n_seqs, scan)
    d = c.d_state * c.d_inner
    g.expand(
        _cpy(
            gg.view(y_ssm, (d, n_seqs, 1), (d * F32, d * F32 * n_seqs), n_x * F32),
            gg.view(rs.s, (d, n_seqs, 1), (rs.s.nb[1], rs.s.ne[1] * rs.s.nb[1]), 0),
        )
    )
    xs = x.nb[1]
    y = gg.view(y_ssm, (head_dim, c.n_head, n_seq_tokens, n_seqs), (xs, c.n_head * xs, n_seq_tokens * c.n_head * xs), 0)
    y = gg.binary("ADD", y, gg.binary("MUL", x, w("ssm_d")))
    y = gg.glu_split(gg.cont(z), y)
    if w("ssm_norm.weight") is not None:  # RMS norm per group
        y = norm(gg.reshape(y, c.d_inner // c.n_group, c.n_group, n_seq_tokens, n_seqs), w("ssm_norm.weight"))
    y = gg.reshape(y, c.d_inner, n_seq_tokens * n_seqs)
    return gg.mul_mat(w("ssm_out.weight"), y)
