"""Model arithmetic for the vLLM memory model: weight bytes, KV page sizes, the profile run's
activation peak and the CUDA graph estimate, each per GPU of the tensor-parallel group.

Pure functions of the Hugging Face config and the resolved vLLM settings; `vllm.py` strings them
together in the order vLLM 0.33.0 runs them at start. Every formula cites where it comes from in
docs/vllm-model.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramc.load import schema
from vramc.units import GiB, MiB

# --- vLLM 0.33.0 constants -------------------------------------------------------------------
DEFAULT_BLOCK_SIZE = 16  # CacheConfig.DEFAULT_BLOCK_SIZE (FlashAttention accepts multiples of 16)
MLA_BLOCK_SIZE = 64  # FlashMLA's only kernel block size; Platform.update_block_size_for_backend
VOCAB_PADDING = 64  # DEFAULT_VOCAB_PADDING_SIZE of VocabParallelEmbedding / ParallelLMHead
MAX_CONCURRENT_BATCHES = 2  # async scheduling is on by default (VllmConfig.max_concurrent_batches)
CAPTURE_CEILING = 512  # default max_cudagraph_capture_size before Blackwell data-centre parts (1024)

# --- calibrated on the llm-d H100 measurements (docs/vllm-model.md, "Calibration") -----------
# Bytes the dummy sampler run allocates per logit (requests x padded vocab): float32 logits,
# the sort values + int64 indices of top-k/top-p, softmax and cumsum copies. Least squares over
# the five llm-d rows, where the sampler dominates the profile peak.
SAMPLER_BYTES_PER_LOGIT = 38.3
# Non-torch memory that appears after vLLM's start snapshot (cuBLAS workspaces, NCCL/custom
# all-reduce buffers): 0.13 GiB at TP=1 and 0.55 GiB at TP=2 in every llm-d row.
NON_TORCH_TP1 = int(0.13 * GiB)
NON_TORCH_TPN = int(0.55 * GiB)
GRAPH_FLOOR = MiB  # profile_cudagraph_memory: "at least 1 MiB per graph for driver overhead"


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return cdiv(a, b) * b


def head_dim(cfg: schema.HFConfig) -> int:
    return cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads


def kv_heads(cfg: schema.HFConfig) -> int:
    return cfg.num_key_value_heads or cfg.num_attention_heads


def dtype_bytes(dtype: str | None) -> int:
    """Bytes of the model dtype. Only an explicit --dtype float32 is 4: under `auto` float32
    checkpoints run in half precision, and AWQ/GPTQ kernels run in float16 (vLLM casts)."""
    return 4 if dtype == "float32" else 2


def derived_max_model_len(cfg: schema.HFConfig) -> int:
    """ModelConfig's default max_model_len: max_position_embeddings times the RoPE factor, except
    for the RoPE types whose max_position_embeddings is already scaled (_get_and_verify_max_len)."""
    length = cfg.max_position_embeddings
    rope = cfg.rope_scaling or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"):
        length = int(length * float(rope.get("factor") or 1.0))
    return length


def batch_defaults(capacity_bytes: int, gpu_name: str, world_size: int = 1) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) for `vllm serve`: EngineArgs.get_batch_defaults,
    OPENAI_API_SERVER column."""
    name = gpu_name.lower()
    if capacity_bytes >= 160 * GiB:
        return 16384, 1024
    if capacity_bytes >= 70 * GiB and "a100" not in name and "gb10" not in name:
        return 8192, 1024
    return 2048, 256


# --- weights ---------------------------------------------------------------------------------
def bytes_per_quantized_param(q: schema.Quantization) -> float:
    """Storage of one linear-layer weight under `q`, scales and zero points included.
    AWQ/GPTQ: packed int32 qweight (bits/8) plus per group one fp16 scale and a packed zero point."""
    if q.method in ("awq", "gptq"):
        bits = q.bits or 4
        group = q.group_size if q.group_size and q.group_size > 0 else None
        per_group = bits / 8 + 2  # packed zero + fp16 scale, shared by `group` weights
        return bits / 8 + (per_group / group if group else 0.0)
    if q.method == "fp8":
        return 1.0
    if q.method == "bitsandbytes":
        return (q.bits or 4) / 8 + 4 / 64  # fp32 absmax per 64-value block
    return 0.0


def weights_per_gpu(model: schema.Model, tp: int, dbytes: int) -> int:
    """What `Model loading took X GiB` reports on each rank, before CPU offload."""
    if model.weights_size:
        return model.weights_size // tp
    cfg = model.config
    q = model.quantization if model.quantization and model.quantization.method != "none" else None
    H, L, I = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size or 4 * cfg.hidden_size  # noqa: E741
    hd = head_dim(cfg)
    qdim, kvdim = cfg.num_attention_heads * hd, kv_heads(cfg) * hd
    linear = L * (H * (qdim + 2 * kvdim) + qdim * H + 3 * H * I)  # qkv, o, gate/up/down
    if model.params and model.config.kv_lora_rank:
        # MLA projections do not follow the GQA shapes above; trust the stated parameter count.
        linear = int(model.params) - _embedding_params(cfg)
    per_param = bytes_per_quantized_param(q) if q else dbytes
    vocab = round_up(cfg.vocab_size, VOCAB_PADDING)
    embed = vocab * H * dbytes * (1 if cfg.tie_word_embeddings else 2)
    bias = L * (qdim + 2 * kvdim) * dbytes if (cfg.architecture or "").startswith("Qwen2") else 0
    norms = (2 * L + 1) * H * dbytes  # replicated on every rank
    return int((linear * per_param + embed + bias) / tp) + norms


def _embedding_params(cfg: schema.HFConfig) -> int:
    return cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)


# --- pipeline parallelism --------------------------------------------------------------------
def pp_partition(num_layers: int, pp: int, override: str | None = None) -> list[int]:
    """Layers per pipeline stage: vllm/distributed/utils.py get_pp_indices.

    Without VLLM_PP_LAYER_PARTITION every stage gets num_layers // pp, and the remainder goes one
    layer each to the stages before the last, from the second-to-last backwards
    (`for i in range(2, remaining + 2): partitions[-i] += 1`): the last stage holds the final norm
    and lm_head, the first the embeddings. 61 layers on 4 stages: [15, 15, 16, 15].
    `override` is VLLM_PP_LAYER_PARTITION ("15,16,15,15"); ValueError in vLLM's own words when it
    does not parse, has the wrong length or does not add up."""
    if override is not None:
        try:
            parts = [int(x) for x in override.split(",")]
        except ValueError:
            raise ValueError(f"Invalid partition string: {override}") from None
        if len(parts) != pp:
            raise ValueError(f"len(partitions)={len(parts)} does not match pp_size={pp}.")
        if sum(parts) != num_layers:
            raise ValueError(f"sum(partitions)={sum(parts)} does not match num_hidden_layers={num_layers}.")
        return parts
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def stage_weights(model: schema.Model, tp: int, dbytes: int, partition: list[int]) -> list[int]:
    """Weights on one GPU of each pipeline stage (what `Model loading took X GiB` reports there).

    vLLM's models (vllm/model_executor/models/llama.py LlamaModel, LlamaForCausalLM) build only
    their stage's decoder layers (make_layers over get_pp_indices); the token embedding on the
    first stage, and on the last one too when it is tied to lm_head; lm_head and the final norm on
    the last stage; PPMissingLayer elsewhere. With `weights_size` the decoder layers share what the
    embeddings (from the config, in the model dtype) leave of it, evenly."""
    pp = len(partition)
    if pp == 1:
        return [weights_per_gpu(model, tp, dbytes)]
    cfg = model.config
    H, L = cfg.hidden_size, cfg.num_hidden_layers
    table = round_up(cfg.vocab_size, VOCAB_PADDING) * H * dbytes  # one embedding or lm_head matrix
    tied = bool(cfg.tie_word_embeddings)

    def outer(stage: int) -> tuple[int, int]:
        """(split by TP, replicated) bytes of the stage beyond its decoder layers."""
        first, last = stage == 0, stage == pp - 1
        split = (table if first or (tied and last) else 0) + (table if last and not tied else 0)
        return split, H * dbytes if last else 0  # the final norm

    if model.weights_size:
        shell = table * (1 if tied else 2) + H * dbytes
        per_layer = (model.weights_size - shell) / L
        if per_layer <= 0:  # a weights_size smaller than its embeddings: share it by layers
            return [int(model.weights_size * n / L) // tp for n in partition]
        return [int((n * per_layer + sum(outer(s))) / tp) for s, n in enumerate(partition)]
    q = model.quantization if model.quantization and model.quantization.method != "none" else None
    I = cfg.intermediate_size or 4 * H  # noqa: E741
    hd = head_dim(cfg)
    qdim, kvdim = cfg.num_attention_heads * hd, kv_heads(cfg) * hd
    layer_linear: float = H * (qdim + 2 * kvdim) + qdim * H + 3 * H * I
    if model.params and cfg.kv_lora_rank:
        layer_linear = (int(model.params) - _embedding_params(cfg)) / L
    per_param = bytes_per_quantized_param(q) if q else dbytes
    bias = (qdim + 2 * kvdim) * dbytes if (cfg.architecture or "").startswith("Qwen2") else 0
    out = []
    for s, n in enumerate(partition):
        split, replicated = outer(s)
        norms = 2 * n * H * dbytes + replicated  # input and post-attention norms, replicated
        out.append(int((n * layer_linear * per_param + n * bias + split) / tp) + norms)
    return out


# --- KV cache --------------------------------------------------------------------------------
@dataclass(frozen=True)
class KVSpec:
    """One KV cache group as vLLM's planner sees it (all layers share one spec here)."""

    layers: int
    page_bytes: int  # one block of one layer: AttentionSpec.page_size_bytes
    block_size: int
    sliding_window: int | None = None

    @property
    def bytes_per_block(self) -> int:
        # _get_kv_cache_bytes_per_block: the group's layers each take one page per block.
        return self.layers * self.page_bytes

    def blocks_per_request(self, max_model_len: int, max_num_batched_tokens: int) -> int:
        """cdiv(max_memory_usage_bytes, page) for one request at max_model_len:
        FullAttentionSpec, or SlidingWindowSpec.max_admission_blocks_per_request."""
        if self.sliding_window is None:
            return cdiv(max_model_len, self.block_size)
        in_flight = MAX_CONCURRENT_BATCHES * max_num_batched_tokens
        tokens = min(self.sliding_window - 1 + in_flight, max_model_len)
        return cdiv(tokens, self.block_size) + 1

    def request_bytes(self, max_model_len: int, max_num_batched_tokens: int) -> int:
        return self.blocks_per_request(max_model_len, max_num_batched_tokens) * self.bytes_per_block


def kv_spec(cfg: schema.HFConfig, tp: int, kv_bytes: int, block_size: int | None, layers: int | None = None) -> KVSpec:
    """`layers`: the decoder layers of one pipeline stage (default all): each worker's KV cache
    holds only its own layers (kv_cache_planning._project_kv_cache_groups_to_worker)."""
    n = cfg.num_hidden_layers if layers is None else layers
    if cfg.kv_lora_rank:
        # MLAAttentionSpec: one latent vector (no separate V), replicated on every TP rank.
        bs = block_size or MLA_BLOCK_SIZE
        page = bs * (cfg.kv_lora_rank + (cfg.qk_rope_head_dim or 0)) * kv_bytes
        return KVSpec(n, page, bs)
    bs = block_size or DEFAULT_BLOCK_SIZE
    heads = max(1, kv_heads(cfg) // tp)  # ModelConfig.get_num_kv_heads: replicated when tp > heads
    page = bs * heads * 2 * head_dim(cfg) * kv_bytes  # K and V, head_size == head_size_v
    return KVSpec(n, page, bs, cfg.sliding_window)


# --- profile run and CUDA graphs -------------------------------------------------------------
def activation_peak(
    cfg: schema.HFConfig, tp: int, dbytes: int, tokens: int, seqs: int, *, first: bool = True, last: bool = True
) -> dict:
    """torch peak increase of GPUModelRunner.profile_run: a forward pass of `tokens` tokens, then
    the dummy sampler on min(seqs, tokens) rows while the hidden states are still alive.

    Under pipeline parallelism only the last stage computes logits and samples (profile_run runs
    _dummy_sampler_run on get_pp_group().is_last_rank), and every stage but the first keeps the
    IntermediateTensors it receives, hidden states and residual [max_num_tokens, H]
    (GPUModelRunner._dummy_run: make_empty_intermediate_tensors)."""
    H = cfg.hidden_size
    inter = (cfg.intermediate_size or 4 * H) // tp
    # Inside the MLP: residual + normed input [T,H] and gate_up [T,2I] + SiluAndMul out [T,I].
    forward = tokens * dbytes * (2 * H + 3 * inter)
    rows = min(seqs, tokens)
    sampler = int(SAMPLER_BYTES_PER_LOGIT * rows * round_up(cfg.vocab_size, VOCAB_PADDING)) if last else 0
    hidden = tokens * H * dbytes
    received = 0 if first else 2 * tokens * H * dbytes
    out = {"forward": forward, "sampler": sampler, "hidden": hidden, "peak": max(forward, sampler) + hidden + received}
    if not first:
        out["intermediate"] = received
    return out


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """compilation_config.cudagraph_capture_sizes as VllmConfig._set_cudagraph_sizes builds them."""
    ceiling = min(max_num_seqs * 2, CAPTURE_CEILING, max_num_batched_tokens)
    sizes = [s for s in (1, 2, 4) if s <= ceiling]
    sizes += list(range(8, min(ceiling + 1, 256), 8))
    sizes += list(range(256, ceiling + 1, 16))
    if max_num_batched_tokens <= ceiling:
        sizes.append(max_num_batched_tokens)
    if max_num_seqs <= ceiling:
        sizes.append(max_num_seqs)  # uniform decode batch at max_num_seqs
    return sorted({s for s in sizes if s <= max_num_batched_tokens})


def cudagraph_estimate(
    cfg: schema.HFConfig, dbytes: int, max_num_seqs: int, max_num_batched_tokens: int
) -> tuple[int, int]:
    """(bytes, graphs) of GPUModelRunner.profile_cudagraph_memory for FULL_AND_PIECEWISE:
    PIECEWISE graphs for every capture size, FULL decode graphs for sizes <= max_num_seqs.
    vLLM measures the largest capture and the per-graph cost of the next one; we take the
    graph's static output [tokens, hidden] as that cost (floor 1 MiB)."""
    sizes = capture_sizes(max_num_seqs, max_num_batched_tokens)
    per_mode = [sizes, [s for s in sizes if s <= max_num_seqs]]

    def graph(s: int) -> int:
        return max(s * cfg.hidden_size * dbytes, GRAPH_FLOOR)

    first = max(graph(m[-1]) for m in per_mode if m)
    rest = sum((len(m) - 1) * graph(m[-2]) for m in per_mode if len(m) > 1)
    return first + rest, sum(len(m) for m in per_mode)


def non_torch(world_size: int) -> int:
    """TP=2's figure for any group of several ranks: pipeline stages hold NCCL communicators too
    (the PP group's send/recv), though no custom all-reduce buffers without TP."""
    return NON_TORCH_TP1 if world_size == 1 else NON_TORCH_TPN
