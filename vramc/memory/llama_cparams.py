"""The context parameters `llama_context`'s constructor derives from LlamaParams.

Source: src/llama-context.cpp `llama_context::llama_context` (pinned llama.cpp 0c1e570).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramc.memory.llama_params import LlamaParams

LLAMA_MAX_SEQ = 256
QUANTIZED_KV = frozenset({"q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"})


def pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


@dataclass(frozen=True)
class Cparams:
    n_ctx: int  # total cells over all sequences, padded to 256
    n_ctx_seq: int  # cells per stream
    n_seq_max: int
    n_stream: int  # KV streams: 1 if unified, else n_seq_max
    kv_unified: bool
    n_batch: int
    n_ubatch: int
    n_outputs_max: int
    flash_attn_requested: bool  # != disabled: what create_memory sees (decides V layout)


def resolve_cparams(p: LlamaParams, n_ctx_train: int) -> Cparams:
    n_seq_max = max(1, p.n_seq_max)
    if n_seq_max > LLAMA_MAX_SEQ:
        raise ValueError(f"n_seq_max must be <= {LLAMA_MAX_SEQ}")
    n_ctx = p.n_ctx if p.n_ctx else n_ctx_train
    # causal attention: the batch is limited by the (unpadded) context
    n_batch = min(n_ctx, p.n_batch)
    n_ubatch = min(n_batch, p.n_ubatch if p.n_ubatch else p.n_batch)
    n_outputs_max = n_batch if not p.n_outputs_max else p.n_outputs_max
    n_ctx = pad(n_ctx, 256)
    if p.kv_unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = pad(n_ctx // n_seq_max, 256)
        if n_ctx_seq == 0:
            raise ValueError("n_ctx_seq == 0")
        n_ctx = n_ctx_seq * n_seq_max  # "n_ctx is not divisible by n_seq_max - rounding down"
    return Cparams(
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_seq_max=n_seq_max,
        n_stream=1 if p.kv_unified else n_seq_max,
        kv_unified=p.kv_unified,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        n_outputs_max=n_outputs_max,
        flash_attn_requested=p.flash_attn != "off",
    )
