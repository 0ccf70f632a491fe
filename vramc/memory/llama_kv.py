"""KV cache and recurrent state: bytes per layer and where they live.

Sources (pinned llama.cpp 0c1e570): src/llama-model.cpp `llama_model::create_memory` (which cache
class, kv_size = n_ctx_seq), src/llama-kv-cache.cpp `llama_kv_cache::llama_kv_cache` (K/V tensor
shapes, V padded to the widest layer when transposed, the buffer of each layer),
src/llama-kv-cache-iswa.cpp (SWA cache size), src/llama-memory-recurrent.cpp (R/S state),
src/llama-memory-hybrid.cpp (attention + recurrent layer filters).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramc.memory.llama_cparams import Cparams, pad
from vramc.memory.llama_hparams import LlamaHparams
from vramc.memory.llama_placement import HOST, BufferRules
from vramc.model.ggml import row_size


@dataclass(frozen=True)
class LayerCache:
    il: int
    device: int
    kind: str  # "kv" | "kv_swa" | "rs"
    cells: int  # cells per stream (kv) or state rows (rs)
    k_bytes: int  # K, or R for recurrent state
    v_bytes: int  # V, or S for recurrent state

    @property
    def bytes(self) -> int:
        return self.k_bytes + self.v_bytes


def swa_cells(hp: LlamaHparams, c: Cparams, swa_full: bool) -> int:
    """llama_kv_cache_iswa: the SWA cache is always padded to 256 cells."""
    if swa_full:
        return c.n_ctx_seq
    return pad(min(c.n_ctx_seq, hp.n_swa * (c.n_seq_max if c.kv_unified else 1) + c.n_ubatch), 256)


def layer_caches(
    hp: LlamaHparams, c: Cparams, layer_dev: list[int], offload_kqv: bool, type_k: str, type_v: str, swa_full: bool
) -> list[LayerCache]:
    out: list[LayerCache] = []
    v_trans = not c.flash_attn_requested  # decided before FA auto is resolved
    v_max = max((hp.n_embd_v_gqa(il) for il in range(hp.n_layer_all)), default=0)
    iswa = hp.swa_type != "none" and any(hp.is_swa)
    n_swa_cells = swa_cells(hp, c, swa_full) if iswa else 0
    rs_rows = max(1, c.n_seq_max)  # mem_size * (1 + n_rs_seq), n_rs_seq = 0 without drafting
    for il in range(hp.n_layer_all):
        dev = layer_dev[il] if offload_kqv else HOST
        if hp.is_recr[il]:
            # f32 R (conv / token shift) and S (ssm / wkv) state, one row per sequence
            out.append(LayerCache(il, dev, "rs", rs_rows, 4 * hp.n_embd_r * rs_rows, 4 * hp.n_embd_s * rs_rows))
        if not hp.has_kv(il):
            continue
        swa = iswa and hp.is_swa[il]
        cells = n_swa_cells if swa else c.n_ctx_seq
        rows = cells * c.n_stream
        k = row_size(type_k, hp.n_embd_k_gqa(il)) * rows
        v = 0 if hp.is_mla else row_size(type_v, v_max if v_trans else hp.n_embd_v_gqa(il)) * rows
        out.append(LayerCache(il, dev, "kv_swa" if swa else "kv", cells, k, v))
    return out


def cache_bytes_by_device(caches: list[LayerCache], rules: dict[int, BufferRules]) -> dict[int, int]:
    """Context bytes per device: each K/V/R/S tensor padded to its buffer's alignment."""
    out: dict[int, int] = {}
    for lc in caches:
        r = rules[lc.device]
        out[lc.device] = out.get(lc.device, 0) + sum(r.padded(b) for b in (lc.k_bytes, lc.v_bytes) if b)
    return out
