"""The hyper-parameters llama.cpp derives from a GGUF header, as the memory model needs them.

Mirrors `llama_model_base::load_hparams`, the per-architecture `load_arch_hparams` in
`src/models/*.cpp` and `src/llama-hparams.cpp` of the pinned llama.cpp (0c1e570): defaults
(n_head_kv = n_head, head size = n_embd / n_head), per-layer arrays, the sliding-window pattern,
recurrent layers and MLA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # modelmeta.validate_meta imports this module to check a header
    from vramc.model.modelmeta import ModelMeta

# Architectures whose memory is only recurrent state (llm_arch_is_recurrent).
RECURRENT_ARCHS = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})

# Hybrid attention + recurrent architectures whose recurrent layers we can identify
# (llm_arch_is_hybrid and the layer rule of each arch's load_arch_hparams).
_RECR_WHEN_NO_KV_HEADS = frozenset({"jamba", "granitehybrid", "lfm2", "lfm2moe"})
_RECR_BY_INTERVAL = frozenset({"qwen3next", "qwen35", "qwen35moe"})

# Sliding-window architectures: (swa_type, default pattern). The GGUF key
# attention.sliding_window_pattern (an int or a per-layer bool array) overrides the default.
# Architectures absent here ignore attention.sliding_window (llama, qwen2, phi3: "Phi SWA is
# currently disabled").
SWA_ARCHS: dict[str, tuple[str, int]] = {
    "gemma2": ("standard", 2),
    "gemma3": ("standard", 6),
    "gemma3n": ("standard", 5),
    "gemma-embedding": ("symmetric", 6),
    "cohere2": ("standard", 4),
    "exaone4": ("standard", 4),
    "gpt-oss": ("standard", 2),
    "llama4": ("chunked", 4),
    "afmoe": ("standard", 4),
    "olmo2": ("standard", 4),
    "smallthinker": ("standard", 4),
}
# Architectures whose integer pattern puts the full-attention layer first in each group of n:
# set_swa_pattern(n, /*dense_first*/ true) in their load_arch_hparams (the pinned llama.cpp
# src/llama-model.cpp, e.g. LLM_ARCH_SMALLTHINKER). `vramc analyze` reads the same set.
SWA_DENSE_FIRST = frozenset({"cohere2moe", "laguna", "smallthinker", "modern-bert"})


def swa_flags(n_pattern: int, n_layer: int, dense_first: bool) -> list[bool]:
    """llama_hparams::set_swa_pattern: whether each of n_layer layers uses the sliding window."""
    if dense_first:
        return [n_pattern == 0 or il % n_pattern != 0 for il in range(n_layer)]
    return [n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layer)]


# Architectures that only use SWA when attention.sliding_window is present and > 0.
_SWA_OPTIONAL = frozenset({"gemma3", "exaone4", "llama4", "afmoe", "olmo2", "smallthinker"})


@dataclass(frozen=True)
class LlamaHparams:
    arch: str
    n_layer_all: int  # block_count: trunk + NextN/MTP layers
    n_layer: int  # trunk layers the graph runs
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    n_ff: tuple[int, ...]
    head_k: tuple[int, ...]  # per layer, SWA layers may differ
    head_v: tuple[int, ...]
    n_rot: int
    n_expert: int
    n_expert_used: int
    n_swa: int
    swa_type: str  # none | standard | chunked | symmetric
    is_swa: tuple[bool, ...]
    is_recr: tuple[bool, ...]
    is_mla: bool
    n_embd_r: int  # recurrent conv/shift state per sequence (f32 elements)
    n_embd_s: int  # recurrent ssm/wkv state per sequence
    n_layer_kv_from_start: int = -1  # Gemma 3n/4: later layers reuse earlier layers' KV

    def n_embd_k_gqa(self, il: int) -> int:
        return self.head_k[il] * self.n_head_kv[il]

    def n_embd_v_gqa(self, il: int) -> int:
        return self.head_v[il] * self.n_head_kv[il]

    def has_kv(self, il: int) -> bool:
        """Layers with their own attention KV cache.

        Not: recurrent layers (Falcon-H1 has both in every layer), trailing NextN/MTP layers (the
        trunk never attends them), layers that reuse another layer's cache (llama_hparams::has_kv).
        A layer without KV heads still gets its (empty) K and, when V is transposed, a V padded
        to the widest layer.
        """
        if self.n_layer_kv_from_start >= 0 and il >= self.n_layer_kv_from_start:
            return False
        if self.arch in ("nemotron_h", "nemotron_h_moe") and self.n_ff[il]:
            return False  # create_memory's filter_attn: MLP layers hold neither KV nor state
        return (not self.is_recr[il] or self.arch == "falcon-h1") and (
            self.n_layer == self.n_layer_all or il < self.n_layer
        )


def _per_layer(meta: ModelMeta, key: str, n: int, default) -> tuple[int, ...]:
    v = meta.hp(key, default)
    if isinstance(v, list):
        if len(v) < n:
            raise ValueError(f"{key} has {len(v)} values for {n} layers")
        return tuple(int(x) for x in v[:n])
    return (int(v),) * n


def _swa_layers(meta: ModelMeta, arch: str, n_layer_all: int, n_layer: int) -> tuple[str, int, tuple[bool, ...]]:
    none = ("none", 0, (False,) * n_layer_all)
    spec = SWA_ARCHS.get(arch)
    if spec is None:
        return none
    n_swa = int(meta.hp("attention.sliding_window", 0) or 0)
    if arch in _SWA_OPTIONAL and n_swa <= 0:
        return none
    swa_type, n_pattern = spec
    pattern = meta.hp("attention.sliding_window_pattern")
    if isinstance(pattern, list):  # explicit per-layer flags (load_swa_pattern)
        flags = [bool(x) for x in pattern[:n_layer_all]]
        flags += [False] * (n_layer_all - len(flags))
        return swa_type, n_swa, tuple(flags)
    if pattern is not None:
        n_pattern = int(pattern)
    flags = swa_flags(n_pattern, n_layer, arch in SWA_DENSE_FIRST) + [False] * (n_layer_all - n_layer)
    return swa_type, n_swa, tuple(flags)


def _recurrent(meta: ModelMeta, arch: str, n_layer_all: int, n_layer: int, n_head_kv, n_ff) -> tuple[bool, ...]:
    if arch in RECURRENT_ARCHS or arch == "falcon-h1":
        return (True,) * n_layer_all
    if arch in _RECR_WHEN_NO_KV_HEADS:
        return tuple(n_head_kv[il] == 0 for il in range(n_layer_all))
    if arch in ("nemotron_h", "nemotron_h_moe"):
        return tuple(il < n_layer and n_head_kv[il] == 0 and n_ff[il] == 0 for il in range(n_layer_all))
    if arch in _RECR_BY_INTERVAL:
        layers = meta.hp("attention.recurrent_layers")
        if isinstance(layers, list):
            return tuple(bool(x) for x in layers[:n_layer_all])
        interval = int(meta.hp("full_attention_interval", 4))
        return tuple(il < n_layer and (il + 1) % interval != 0 for il in range(n_layer_all))
    return (False,) * n_layer_all


def _recurrent_state(meta: ModelMeta, n_embd: int, n_head: int) -> tuple[int, int]:
    """(n_embd_r, n_embd_s): llama_hparams::n_embd_r / n_embd_s."""
    wkv = int(meta.hp("wkv.head_size", 0) or 0)
    if wkv:
        return int(meta.hp("token_shift_count", 2)) * n_embd, n_embd * wkv
    l_cache = int(meta.hp("shortconv.l_cache", 0) or 0)
    if l_cache:
        return n_embd * (l_cache - 1), 0
    d_conv = int(meta.hp("ssm.conv_kernel", 0) or 0)
    d_inner = int(meta.hp("ssm.inner_size", 0) or 0)
    d_state = int(meta.hp("ssm.state_size", 0) or 0)
    n_group = int(meta.hp("ssm.group_count", 0) or 0)
    n_conv = (d_conv - 1 if d_conv > 0 else 0) * (d_inner + 2 * n_group * d_state)
    return n_conv, d_state * d_inner


def vocab_size(meta: ModelMeta) -> int:
    """vocab.n_tokens(): the tokenizer's size, else <arch>.vocab_size, else the embedding rows."""
    if meta.vocab_size:
        return int(meta.vocab_size)
    if meta.hp("vocab_size"):
        return int(meta.hp("vocab_size"))
    t = meta.tensor("token_embd.weight") or meta.tensor("output.weight")
    return int(t.shape[1]) if t is not None and len(t.shape) > 1 else 0


def _kv_from_start(meta: ModelMeta, arch: str, n_layer_all: int) -> int:
    if arch == "gemma3n":
        return 20
    if arch == "gemma4":
        return n_layer_all - int(meta.hp("attention.shared_kv_layers", 0) or 0)
    return -1


def llama_hparams(meta: ModelMeta) -> LlamaHparams:
    arch = meta.architecture
    n_layer_all = int(meta.hp("block_count"))
    n_layer = n_layer_all - int(meta.hp("nextn_predict_layers", 0) or 0)
    n_embd = int(meta.hp("embedding_length"))
    n_head = _per_layer(meta, "attention.head_count", n_layer_all, 0)
    n_head_kv = (
        _per_layer(meta, "attention.head_count_kv", n_layer_all, 0)
        if meta.hp("attention.head_count_kv") is not None
        else n_head
    )
    n_ff = _per_layer(meta, "feed_forward_length", n_layer_all, 0)
    h0 = max(n_head) if n_head else 0
    head_k_full = int(meta.hp("attention.key_length", n_embd // h0 if h0 else 0))
    head_v_full = int(meta.hp("attention.value_length", n_embd // h0 if h0 else 0))
    swa_type, n_swa, is_swa = _swa_layers(meta, arch, n_layer_all, n_layer)
    head_k_swa = int(meta.hp("attention.key_length_swa", head_k_full))
    head_v_swa = int(meta.hp("attention.value_length_swa", head_v_full))
    is_recr = _recurrent(meta, arch, n_layer_all, n_layer, n_head_kv, n_ff)
    n_embd_r, n_embd_s = _recurrent_state(meta, n_embd, h0)
    return LlamaHparams(
        arch=arch,
        n_layer_all=n_layer_all,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=vocab_size(meta),
        n_ctx_train=int(meta.hp("context_length", 0) or 0),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        head_k=tuple(head_k_swa if s else head_k_full for s in is_swa),
        head_v=tuple(head_v_swa if s else head_v_full for s in is_swa),
        n_rot=int(meta.hp("rope.dimension_count", head_k_full)),
        n_expert=int(meta.hp("expert_count", 0) or 0),
        n_expert_used=int(max(_per_layer(meta, "expert_used_count", n_layer_all, 0), default=0)),
        n_swa=n_swa,
        swa_type=swa_type,
        is_swa=is_swa,
        is_recr=is_recr,
        is_mla=bool(meta.hp("attention.key_length_mla")) and bool(meta.hp("attention.value_length_mla")),
        n_embd_r=n_embd_r,
        n_embd_s=n_embd_s,
        n_layer_kv_from_start=_kv_from_start(meta, arch, n_layer_all),
    )
