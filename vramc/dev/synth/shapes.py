"""A catalog of real model shapes: published hyper-parameters, as convert_hf_to_gguf.py reads them.

Each entry names the Hugging Face repo and config.json fields it was taken from (`source`). The
tensor table and GGUF metadata that llama.cpp's converter would write for it come from
`vramc.dev.synth.arches`; which ggml type each tensor gets for a given file type, from
`vramc.dev.synth.quant`. Numbers here are what the memory model is calibrated against, so each one
is a published value, never a guess; where the published config was not at hand the entry says so.

Oracle status of every entry (sparse file loaded by the pinned llama-fit-params over RPC devices,
the model column checked against the catalog's tensor bytes) is recorded in README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Tokenizer:
    """What the GGUF tokenizer section must say; the vocabulary itself is generated (vocab.py).

    llama.cpp sizes token_embd/output from the vocabulary, so the count is exact; the strings are
    stand-ins except the special tokens, which keep their real ids.
    """

    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None  # tokenizer.ggml.pre, as convert_hf_to_gguf.py detects it
    bos_id: int
    eos_id: int
    specials: tuple[tuple[int, str], ...] = ()  # (id, text) control tokens kept at their real ids
    unk_id: int | None = None
    pad_id: int | None = None


# Llama 3 / 3.1 / 3.3 tokenizer (tiktoken BPE, 128000 regular + 256 reserved special tokens).
LLAMA3_TOKENIZER = Tokenizer(
    "gpt2",
    "llama-bpe",
    bos_id=128000,
    eos_id=128009,
    specials=(
        (128000, "<|begin_of_text|>"),
        (128001, "<|end_of_text|>"),
        (128006, "<|start_header_id|>"),
        (128007, "<|end_header_id|>"),
        (128008, "<|eom_id|>"),
        (128009, "<|eot_id|>"),
    ),
)
QWEN2_TOKENIZER = Tokenizer(
    "gpt2",
    "qwen2",
    bos_id=151643,
    eos_id=151645,
    pad_id=151643,
    specials=((151643, "<|endoftext|>"), (151644, "<|im_start|>"), (151645, "<|im_end|>")),
)
R1_QWEN_TOKENIZER = Tokenizer(
    "gpt2",
    "deepseek-r1-qwen",
    bos_id=151646,
    eos_id=151643,
    specials=((151643, "<｜end▁of▁sentence｜>"), (151646, "<｜begin▁of▁sentence｜>")),
)
SPM_TOKENIZER = Tokenizer(
    "llama", "default", bos_id=1, eos_id=2, unk_id=0, specials=((0, "<unk>"), (1, "<s>"), (2, "</s>"))
)
GEMMA_TOKENIZER = Tokenizer(
    "llama",
    "default",
    bos_id=2,
    eos_id=1,
    unk_id=3,
    pad_id=0,
    specials=((0, "<pad>"), (1, "<eos>"), (2, "<bos>"), (3, "<unk>")),
)
# Phi-3: llama.cpp looks "<|endoftext|>" up by name for models named phi-3 (llama-vocab.cpp)
PHI3_TOKENIZER = Tokenizer(
    "llama",
    "default",
    bos_id=1,
    eos_id=32000,
    unk_id=0,
    pad_id=32000,
    specials=(
        (0, "<unk>"),
        (1, "<s>"),
        (2, "</s>"),
        (32000, "<|endoftext|>"),
        (32001, "<|assistant|>"),
        (32006, "<|system|>"),
        (32007, "<|end|>"),
        (32010, "<|user|>"),
    ),
)
DEEPSEEK_TOKENIZER = Tokenizer(
    "gpt2",
    "deepseek-llm",
    bos_id=100000,
    eos_id=100001,
    specials=((100000, "<｜begin▁of▁sentence｜>"), (100001, "<｜end▁of▁sentence｜>")),
)
# GLM-4.5: tokenizer.json's added tokens; _set_vocab_glm sets bos [gMASK], eot <|user|>, unk and
# (from the config's eos_token_id) eos <|endoftext|>, eom <|observation|>
GLM4_TOKENIZER = Tokenizer(
    "gpt2",
    "glm4",
    bos_id=151331,
    eos_id=151329,
    unk_id=151329,
    specials=((151329, "<|endoftext|>"), (151331, "[gMASK]"), (151336, "<|user|>"), (151338, "<|observation|>")),
)


@dataclass(frozen=True)
class ModelShape:
    """One model as llama.cpp sees it. Per-layer values may be tuples (DeciLM/Nemotron-NAS)."""

    name: str  # catalog key
    arch: str  # llama.cpp architecture (general.architecture)
    source: str  # HF repo and the config.json fields used
    n_layer: int
    n_embd: int
    n_head: int | tuple[int, ...]
    n_head_kv: int | tuple[int, ...]
    n_ff: int | tuple[int, ...]
    n_vocab: int
    n_ctx_train: int
    tokenizer: Tokenizer
    head_dim: int | None = None  # written as key_length/value_length when the config has it
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tied_embeddings: bool = False  # no output.weight: llama.cpp duplicates token_embd
    qkv_bias: bool = False
    rope_freqs: bool = False  # llama3 rope scaling: convert writes a rope_freqs tensor
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0  # expert FFN width where the arch stores it apart from feed_forward_length
    n_nextn: int = 0  # trailing NextN/MTP layers, after the n_layer trunk layers
    sliding_window: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # arch-specific numbers (see arches.py)

    @property
    def n_embd_head(self) -> int:
        if self.head_dim:
            return self.head_dim
        heads = self.n_head if isinstance(self.n_head, int) else max(self.n_head)
        return self.n_embd // heads

    def per_layer(self, attr: str) -> tuple[int, ...]:
        v = getattr(self, attr)
        if isinstance(v, int):
            return (v,) * self.n_layer
        if len(v) != self.n_layer:
            raise ValueError(f"{self.name}: {attr} has {len(v)} values for {self.n_layer} layers")
        return tuple(v)


# Llama-3.3-Nemotron-Super-49B-v1(.5) block_configs as (n_heads_in_group or None for an attention
# no_op, ffn_mult). None layers have attention no_op=true, replace_with_linear=false: no attention.
_NEMOTRON_SUPER_BLOCKS = (
    [(8, 2.625)]
    + [(8, 5.25)] * 5
    + [(None, 2.625)] * 2
    + [(8, 5.25)] * 3
    + [(None, 3.28125)]
    + [(8, 5.25)] * 30
    + [
        (None, 1.3125),
        (None, 2.625),
        (None, 2.625),
        (None, 1.3125),
        (None, 5.25),
        (None, 1.3125),
        (None, 2.625),
        (None, 1.3125),
        (None, 1.3125),
        (None, 1.3125),
        (8, 5.25),
        (None, 1.3125),
        (None, 1.0),
        (None, 1.0),
        (None, 1.3125),
        (None, 1.0),
        (None, 1.0),
        (None, 1.0),
        (None, 1.3125),
        (None, 1.3125),
        (None, 0.5),
        (None, 0.5),
        (None, 1.0),
        (None, 1.0),
        (None, 0.5),
        (None, 0.5),
        (None, 1.0),
        (None, 0.5),
        (None, 0.5),
    ]
    + [(8, 5.25)] * 9
)


# NVIDIA's Nemotron-H tokenizer as llama.cpp's converter writes it
NEMOTRON_H_TOKENIZER = Tokenizer(
    "gpt2", "default", bos_id=1, eos_id=2, specials=((0, "<unk>"), (1, "<s>"), (2, "</s>"))
)


def _per_block(pattern: str, values: dict[str, int]) -> tuple[int, ...]:
    """A per-layer value from a hybrid_override_pattern: `values` of each block's type, else 0."""
    return tuple(values.get(c, 0) for c in pattern)


def _nemotron_nano_9b_v2() -> ModelShape:
    # M: Mamba-2, *: attention, -: MLP (27, 4 and 25 of 56 blocks)
    pattern = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"
    return ModelShape(
        "nvidia-nemotron-nano-9b-v2",
        "nemotron_h",
        "nvidia/NVIDIA-Nemotron-Nano-9B-v2 config.json: hidden_size=4480 num_hidden_layers=56 "
        f"hybrid_override_pattern={pattern} num_attention_heads=40 num_key_value_heads=8 head_dim=128 "
        "intermediate_size=15680 mamba_num_heads=128 mamba_head_dim=80 ssm_state_size=128 n_groups=8 "
        "conv_kernel=4 use_conv_bias=true vocab_size=131072 layer_norm_epsilon=1e-5 "
        "tie_word_embeddings=false (the architecture numbers as in NVIDIA Megatron-Bridge's "
        "nemotron_nano_v2 recipe; the tokenizer pre-type is left at default)",
        n_layer=56,
        n_embd=4480,
        n_head=40,
        n_head_kv=_per_block(pattern, {"*": 8}),
        n_ff=_per_block(pattern, {"-": 15680}),
        n_vocab=131072,
        n_ctx_train=131072,
        tokenizer=NEMOTRON_H_TOKENIZER,
        head_dim=128,
        extra={"d_inner": 128 * 80, "d_state": 128, "n_group": 8, "n_ssm_head": 128, "d_conv": 4},
    )


def _nemotron_3_nano() -> ModelShape:
    # M: Mamba-2, *: attention, E: MoE (23, 6 and 23 of 52 blocks)
    pattern = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"
    return ModelShape(
        "nvidia-nemotron-3-nano-30b-a3b",
        "nemotron_h_moe",
        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16 config.json: hidden_size=2688 num_hidden_layers=52 "
        f"hybrid_override_pattern={pattern} num_attention_heads=32 num_key_value_heads=2 head_dim=128 "
        "n_routed_experts=128 num_experts_per_tok=6 moe_intermediate_size=1856 n_shared_experts=1 "
        "moe_shared_expert_intermediate_size=3712 norm_topk_prob=true routed_scaling_factor=2.5 n_group=1 "
        "mamba_num_heads=64 mamba_head_dim=64 ssm_state_size=128 n_groups=8 conv_kernel=4 "
        "use_conv_bias=true vocab_size=131072 layer_norm_epsilon=1e-5 tie_word_embeddings=false (the "
        "config.json as copied in public test suites; the same numbers in NVIDIA Megatron-Bridge's "
        "Nemotron3NanoProvider; the tokenizer pre-type is left at default)",
        n_layer=52,
        n_embd=2688,
        n_head=32,
        n_head_kv=_per_block(pattern, {"*": 2}),
        n_ff=_per_block(pattern, {"E": 1856}),
        n_vocab=131072,
        n_ctx_train=262144,
        tokenizer=NEMOTRON_H_TOKENIZER,
        head_dim=128,
        n_expert=128,
        n_expert_used=6,
        n_ff_exp=1856,
        extra={
            "d_inner": 64 * 64,
            "d_state": 128,
            "n_group": 8,
            "n_ssm_head": 64,
            "d_conv": 4,
            "n_ff_shexp": 3712,
            "n_shared": 1,
            "norm_topk_prob": True,
            "routed_scaling_factor": 2.5,
            "n_expert_group": 1,
        },
    )


def _granite_4_h_small() -> ModelShape:
    attn = (5, 15, 25, 35)
    return ModelShape(
        "granite-4.0-h-small",
        "granitehybrid",
        "ibm-granite/granite-4.0-h-small config.json: hidden_size=4096 num_hidden_layers=40 "
        "num_attention_heads=32 num_key_value_heads=8 num_local_experts=72 num_experts_per_tok=10 "
        "intermediate_size=768 shared_intermediate_size=1536 mamba_d_state=128 mamba_d_conv=4 "
        "mamba_expand=2 tie_word_embeddings=true vocab_size=100352 (as quoted in public notes; "
        "layer_types has 36 mamba and 4 attention entries). Not at hand, so taken from the published "
        "granite-4.0-h-micro config.json: the attention layers at 5, 15, 25 and 35, mamba_d_head=64 "
        "(mamba_n_heads = 2*4096/64), mamba_n_groups=1, rms_norm_eps=1e-5, and the multipliers "
        "(embedding 12, residual 0.22, attention 0.015625, logits_scaling 8: only their presence "
        "changes the graph); the tokenizer pre-type is left at default",
        n_layer=40,
        n_embd=4096,
        n_head=32,
        n_head_kv=tuple(8 if il in attn else 0 for il in range(40)),
        n_ff=768,
        n_vocab=100352,
        n_ctx_train=131072,
        tokenizer=Tokenizer("gpt2", "default", bos_id=100257, eos_id=100257, specials=((100257, "<|end_of_text|>"),)),
        tied_embeddings=True,
        n_expert=72,
        n_expert_used=10,
        extra={
            "d_inner": 8192,
            "d_state": 128,
            "n_group": 1,
            "n_ssm_head": 128,
            "d_conv": 4,
            "n_ff_shexp": 1536,
            "embedding_multiplier": 12.0,
            "residual_multiplier": 0.22,
            "attention_multiplier": 0.015625,
            "logits_scaling": 8.0,
        },
    )


def _deci_ffn(ffn_mult: float, n_embd: int) -> int:
    # conversion/deci.py _ffn_mult_to_intermediate_size: int(2*mult*n_embd/3) rounded up to 256
    n = int(2 * ffn_mult * n_embd / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


def _nemotron_super() -> ModelShape:
    n_embd, n_head = 8192, 64
    heads = tuple(0 if g is None else n_head for g, _ in _NEMOTRON_SUPER_BLOCKS)
    heads_kv = tuple(0 if g is None else n_head // g for g, _ in _NEMOTRON_SUPER_BLOCKS)
    ffn = tuple(_deci_ffn(m, n_embd) for _, m in _NEMOTRON_SUPER_BLOCKS)
    return ModelShape(
        "llama-3.3-nemotron-super-49b-v1.5",
        "deci",
        "nvidia/Llama-3_3-Nemotron-Super-49B-v1_5 config.json: hidden_size=8192 num_attention_heads=64 "
        "num_hidden_layers=80 vocab_size=128256 max_position_embeddings=131072 rms_norm_eps=1e-5 "
        "rope_theta=500000 rope_scaling.rope_type=llama3, block_configs[*].attention.{n_heads_in_group,"
        "no_op,replace_with_linear} and ffn.ffn_mult (80 blocks: 49 with attention, 31 attention no_op). "
        "The block list is the v1 config.json as copied in NVIDIA NeMo "
        "(nemo/collections/llm/gpt/model/llama_nemotron_config.py); v1.5 shares it: its first 10 blocks "
        "match a v1.5 slice in NVIDIA Automodel tests and bartowski's v1 and v1.5 Q6_K files are both "
        "40.92 GB.",
        n_layer=80,
        n_embd=n_embd,
        n_head=heads,
        n_head_kv=heads_kv,
        n_ff=ffn,
        n_vocab=128256,
        n_ctx_train=131072,
        tokenizer=LLAMA3_TOKENIZER,
        head_dim=128,
        rope_theta=500000.0,
        rope_freqs=True,
    )


_SHAPES = [
    ModelShape(
        "llama-3.1-8b-instruct",
        "llama",
        "meta-llama/Llama-3.1-8B-Instruct config.json: hidden_size=4096 intermediate_size=14336 "
        "num_hidden_layers=32 num_attention_heads=32 num_key_value_heads=8 vocab_size=128256 "
        "max_position_embeddings=131072 rope_theta=500000 rope_scaling.rope_type=llama3 "
        "rms_norm_eps=1e-5 tie_word_embeddings=false",
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        n_ff=14336,
        n_vocab=128256,
        n_ctx_train=131072,
        tokenizer=LLAMA3_TOKENIZER,
        rope_theta=500000.0,
        rope_freqs=True,
    ),
    ModelShape(
        "llama-3.3-70b-instruct",
        "llama",
        "meta-llama/Llama-3.3-70B-Instruct config.json: hidden_size=8192 intermediate_size=28672 "
        "num_hidden_layers=80 num_attention_heads=64 num_key_value_heads=8 vocab_size=128256 "
        "max_position_embeddings=131072 rope_theta=500000 rope_scaling.rope_type=llama3 "
        "rms_norm_eps=1e-5 tie_word_embeddings=false",
        n_layer=80,
        n_embd=8192,
        n_head=64,
        n_head_kv=8,
        n_ff=28672,
        n_vocab=128256,
        n_ctx_train=131072,
        tokenizer=LLAMA3_TOKENIZER,
        rope_theta=500000.0,
        rope_freqs=True,
    ),
    ModelShape(
        "qwen2.5-32b-instruct",
        "qwen2",
        "Qwen/Qwen2.5-32B-Instruct config.json: hidden_size=5120 intermediate_size=27648 "
        "num_hidden_layers=64 num_attention_heads=40 num_key_value_heads=8 vocab_size=152064 "
        "max_position_embeddings=32768 rope_theta=1000000 rms_norm_eps=1e-6 "
        "tie_word_embeddings=false (q/k/v carry biases)",
        n_layer=64,
        n_embd=5120,
        n_head=40,
        n_head_kv=8,
        n_ff=27648,
        n_vocab=152064,
        n_ctx_train=32768,
        tokenizer=QWEN2_TOKENIZER,
        rope_theta=1000000.0,
        rms_eps=1e-6,
        qkv_bias=True,
    ),
    ModelShape(
        "deepseek-r1-distill-qwen-14b",
        "qwen2",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B config.json (Qwen2ForCausalLM): hidden_size=5120 "
        "intermediate_size=13824 num_hidden_layers=48 num_attention_heads=40 num_key_value_heads=8 "
        "vocab_size=152064 max_position_embeddings=131072 rope_theta=1000000 rms_norm_eps=1e-5 "
        "tie_word_embeddings=false",
        n_layer=48,
        n_embd=5120,
        n_head=40,
        n_head_kv=8,
        n_ff=13824,
        n_vocab=152064,
        n_ctx_train=131072,
        tokenizer=R1_QWEN_TOKENIZER,
        rope_theta=1000000.0,
        qkv_bias=True,
    ),
    ModelShape(
        "mistral-7b-instruct-v0.3",
        "llama",
        "mistralai/Mistral-7B-Instruct-v0.3 config.json: hidden_size=4096 intermediate_size=14336 "
        "num_hidden_layers=32 num_attention_heads=32 num_key_value_heads=8 vocab_size=32768 "
        "max_position_embeddings=32768 rope_theta=1000000 rms_norm_eps=1e-5 "
        "tie_word_embeddings=false (SentencePiece tokenizer)",
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        n_ff=14336,
        n_vocab=32768,
        n_ctx_train=32768,
        tokenizer=SPM_TOKENIZER,
        rope_theta=1000000.0,
    ),
    ModelShape(
        "gemma-2-9b-it",
        "gemma2",
        "google/gemma-2-9b-it config.json: hidden_size=3584 intermediate_size=14336 "
        "num_hidden_layers=42 num_attention_heads=16 num_key_value_heads=8 head_dim=256 "
        "vocab_size=256000 max_position_embeddings=8192 sliding_window=4096 "
        "attn_logit_softcapping=50 final_logit_softcapping=30 rms_norm_eps=1e-6 rope_theta=10000 "
        "(tied embeddings). convert writes no sliding_window_pattern for gemma2: llama.cpp's "
        "load_swa_pattern(ml, 2) makes even layers SWA",
        n_layer=42,
        n_embd=3584,
        n_head=16,
        n_head_kv=8,
        n_ff=14336,
        n_vocab=256000,
        n_ctx_train=8192,
        tokenizer=GEMMA_TOKENIZER,
        head_dim=256,
        rms_eps=1e-6,
        tied_embeddings=True,
        sliding_window=4096,
        extra={"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
    ),
    ModelShape(
        "gemma-3-12b-it",
        "gemma3",
        "google/gemma-3-12b-it config.json text_config: hidden_size=3840 intermediate_size=15360 "
        "num_hidden_layers=48 num_attention_heads=16 num_key_value_heads=8 head_dim=256 "
        "sliding_window=1024 (every 6th layer global) rope_theta=1000000 rope_local_base_freq=10000 "
        "rope_scaling linear factor=8 max_position_embeddings=131072 rms_norm_eps=1e-6 (tied "
        "embeddings); vocab_size=262208 is the Gemma3TextConfig default (not in the repo's "
        "config.json), which convert pads the SentencePiece vocabulary to. convert writes no "
        "sliding_window_pattern: load_swa_pattern(ml, 6) makes layers 5, 11, ... global",
        n_layer=48,
        n_embd=3840,
        n_head=16,
        n_head_kv=8,
        n_ff=15360,
        n_vocab=262208,
        n_ctx_train=131072,
        tokenizer=GEMMA_TOKENIZER,
        head_dim=256,
        rope_theta=1000000.0,
        rms_eps=1e-6,
        tied_embeddings=True,
        sliding_window=1024,
        extra={"rope_freq_base_swa": 10000.0, "rope_scaling_linear": 8.0},
    ),
    ModelShape(
        "mixtral-8x7b-instruct-v0.1",
        "llama",
        "mistralai/Mixtral-8x7B-Instruct-v0.1 config.json: hidden_size=4096 intermediate_size=14336 "
        "num_hidden_layers=32 num_attention_heads=32 num_key_value_heads=8 num_local_experts=8 "
        "num_experts_per_tok=2 vocab_size=32000 max_position_embeddings=32768 rope_theta=1000000 "
        "rms_norm_eps=1e-5 tie_word_embeddings=false",
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        n_ff=14336,
        n_vocab=32000,
        n_ctx_train=32768,
        tokenizer=SPM_TOKENIZER,
        rope_theta=1000000.0,
        n_expert=8,
        n_expert_used=2,
    ),
    ModelShape(
        "qwen3-30b-a3b",
        "qwen3moe",
        "Qwen/Qwen3-30B-A3B config.json: hidden_size=2048 intermediate_size=6144 "
        "moe_intermediate_size=768 num_hidden_layers=48 num_attention_heads=32 num_key_value_heads=4 "
        "head_dim=128 num_experts=128 num_experts_per_tok=8 vocab_size=151936 "
        "max_position_embeddings=40960 rope_theta=1000000 rms_norm_eps=1e-6 "
        "tie_word_embeddings=false",
        n_layer=48,
        n_embd=2048,
        n_head=32,
        n_head_kv=4,
        n_ff=6144,
        n_vocab=151936,
        n_ctx_train=40960,
        tokenizer=QWEN2_TOKENIZER,
        head_dim=128,
        rope_theta=1000000.0,
        rms_eps=1e-6,
        n_expert=128,
        n_expert_used=8,
        n_ff_exp=768,
    ),
    ModelShape(
        "phi-3-mini-4k-instruct",
        "phi3",
        "microsoft/Phi-3-mini-4k-instruct config.json: hidden_size=3072 intermediate_size=8192 "
        "num_hidden_layers=32 num_attention_heads=32 num_key_value_heads=32 vocab_size=32064 "
        "max_position_embeddings=4096 original_max_position_embeddings=4096 sliding_window=2047 "
        "rope_theta=10000 rms_norm_eps=1e-5 (fused qkv_proj and gate_up_proj; no long-rope factors)",
        n_layer=32,
        n_embd=3072,
        n_head=32,
        n_head_kv=32,
        n_ff=8192,
        n_vocab=32064,
        n_ctx_train=4096,
        tokenizer=PHI3_TOKENIZER,
        sliding_window=2047,
        extra={"orig_ctx": 4096},
    ),
    _nemotron_super(),
    _nemotron_nano_9b_v2(),
    _nemotron_3_nano(),
    _granite_4_h_small(),
    ModelShape(
        "deepseek-v2-lite-chat",
        "deepseek2",
        "deepseek-ai/DeepSeek-V2-Lite-Chat config.json: hidden_size=2048 intermediate_size=10944 "
        "moe_intermediate_size=1408 num_hidden_layers=27 num_attention_heads=16 "
        "num_key_value_heads=16 kv_lora_rank=512 q_lora_rank=null qk_nope_head_dim=128 "
        "qk_rope_head_dim=64 v_head_dim=128 n_routed_experts=64 n_shared_experts=2 "
        "num_experts_per_tok=6 first_k_dense_replace=1 n_group=1 topk_group=1 "
        "scoring_func=softmax routed_scaling_factor=1.0 norm_topk_prob=false vocab_size=102400 "
        "max_position_embeddings=163840 rope_theta=10000 rope_scaling yarn factor=40 "
        "original_max_position_embeddings=4096 beta_fast=32 beta_slow=1 mscale_all_dim=0.707 "
        "rms_norm_eps=1e-6 tie_word_embeddings=false",
        n_layer=27,
        n_embd=2048,
        n_head=16,
        n_head_kv=16,
        n_ff=10944,
        n_vocab=102400,
        n_ctx_train=163840,
        tokenizer=DEEPSEEK_TOKENIZER,
        rms_eps=1e-6,
        n_expert=64,
        n_expert_used=6,
        n_ff_exp=1408,
        extra={
            "kv_lora_rank": 512,
            "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64,
            "v_head_dim": 128,
            "n_shared_experts": 2,
            "leading_dense": 1,
            "n_group": 1,
            "topk_group": 1,
            "routed_scaling_factor": 1.0,
            "yarn_factor": 40.0,
            "yarn_orig_ctx": 4096,
            "yarn_beta_fast": 32.0,
            "yarn_beta_slow": 1.0,
            "mscale_all_dim": 0.707,
        },
    ),
    ModelShape(
        "glm-4.5-air",
        "glm4moe",
        "zai-org/GLM-4.5-Air config.json (Glm4MoeForCausalLM): hidden_size=4096 "
        "intermediate_size=10944 moe_intermediate_size=1408 num_hidden_layers=46 "
        "num_nextn_predict_layers=1 num_attention_heads=96 num_key_value_heads=8 head_dim=128 "
        "partial_rotary_factor=0.5 attention_bias=true use_qk_norm=false n_routed_experts=128 "
        "n_shared_experts=1 num_experts_per_tok=8 first_k_dense_replace=1 n_group=1 topk_group=1 "
        "norm_topk_prob=true routed_scaling_factor=1.0 vocab_size=151552 "
        "max_position_embeddings=131072 rope_theta=1000000 rms_norm_eps=1e-5 "
        "tie_word_embeddings=false. The config.json itself was not at hand: the numbers are "
        "those of copies of it (a 100B Glm4MoeForCausalLM config in a conversion script, an "
        "inference library's GLM45_AIR_CONFIG, a Megatron recipe for glm4.5-106B-A12B with "
        "--rotary-base 1000000 --rotary-percent 0.5 --add-qkv-bias) and llama.cpp's own "
        "LLM_TYPE_106B_A12B case for 46 trunk layers",
        n_layer=46,
        n_embd=4096,
        n_head=96,
        n_head_kv=8,
        n_ff=10944,
        n_vocab=151552,
        n_ctx_train=131072,
        tokenizer=GLM4_TOKENIZER,
        head_dim=128,
        rope_theta=1000000.0,
        qkv_bias=True,
        n_expert=128,
        n_expert_used=8,
        n_ff_exp=1408,
        n_nextn=1,
        extra={
            "n_shared_experts": 1,
            "leading_dense": 1,
            "n_group": 1,
            "topk_group": 1,
            "routed_scaling_factor": 1.0,
            "norm_topk_prob": True,
            "partial_rotary_factor": 0.5,
        },
    ),
]

CATALOG: dict[str, ModelShape] = {s.name: s for s in _SHAPES}


def get_shape(name: str) -> ModelShape:
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown model shape {name!r}; known: {', '.join(CATALOG)}") from None
