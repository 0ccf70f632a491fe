"""A model's GGUF tensor table from its Hugging Face config.json alone: `vramc lock --config`.

convert_hf_to_gguf.py reads config.json into the hyper-parameters and tensor shapes of the GGUF it
writes; llama-quantize then picks each tensor's type from the file type (llama-quant.cpp's
llama_tensor_get_type). The synth catalog does both for its shapes (arches.py, quant.py); this
module builds a ModelShape from any config.json of an architecture the catalog knows, so a model
can be planned before a byte of it is downloaded.

Quant mixes reproduced: every file type in quant.FTYPES (the k-quants, legacy quants, IQ types and
float types), without an importance matrix unless `imatrix=True` (the IQ1/IQ2 mixes differ with
one). What it cannot know from config.json: tensors a checkpoint adds or drops beyond its config
(a tied lm_head saved anyway, vision towers), and the tokenizer (only the vocabulary size matters
for memory). Architectures: those in CONFIG_ARCHES; others are refused with what to do instead.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from vramc.dev.synth.quant import FTYPES
from vramc.dev.synth.shapes import SPM_TOKENIZER, ModelShape
from vramc.model.modelmeta import ModelMeta

# config.json `architectures[0]` -> llama.cpp architecture (as convert_hf_to_gguf.py registers it)
CONFIG_ARCHES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "MixtralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Qwen3MoeForCausalLM": "qwen3moe",
    "Phi3ForCausalLM": "phi3",
    "DeepseekV2ForCausalLM": "deepseek2",
    "Glm4MoeForCausalLM": "glm4moe",
}
_TIED_DEFAULT = {
    "gemma2": True,
    "gemma3": True,
}  # the transformers config classes' defaults
GEMMA3_VOCAB = 262208  # Gemma3TextConfig's default vocab_size, absent from most config.json


class ConfigError(ValueError):
    """A config.json that cannot be turned into a tensor table: the message says why."""


def _int(cfg: dict, key: str, default: Any = None, *, positive: bool = True) -> int:
    v = cfg.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, int) or (positive and v <= 0) or v < 0:
        if v is None:
            raise ConfigError(f"config.json has no {key}")
        raise ConfigError(f"config.json: {key} is {v!r}, not a {'positive ' if positive else ''}whole number")
    if v > 1 << 24:
        raise ConfigError(f"config.json: {key} is {v}, far beyond any model")
    return v


def _float(cfg: dict, key: str, default: float) -> float:
    v = cfg.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"config.json: {key} is {v!r}, not a number")
    return float(v)


def _bool(cfg: dict, key: str, default: bool) -> bool:
    v = cfg.get(key, default)
    if v is None:
        return bool(default)
    if not isinstance(v, bool):
        raise ConfigError(f"config.json: {key} is {v!r}, not true or false")
    return v


def shape_from_config(cfg: Any, name: str = "model") -> ModelShape:
    """The ModelShape convert_hf_to_gguf.py would read from `cfg` (a parsed config.json)."""
    if not isinstance(cfg, dict):
        raise ConfigError("config.json is not a JSON object")
    archs = cfg.get("architectures")
    hf_arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    if hf_arch not in CONFIG_ARCHES:
        raise ConfigError(
            f"architecture {hf_arch!r} is not one vramc derives from config.json "
            f"(it knows {', '.join(sorted(CONFIG_ARCHES))}); lock from a GGUF "
            "instead: `vramc analyze hf://ORG/REPO:QUANT --write PROFILE`"
        )
    arch = CONFIG_ARCHES[hf_arch]
    top = cfg
    if isinstance(cfg.get("text_config"), dict):  # multimodal wrappers: the language model
        cfg = {**cfg["text_config"]}
    n_head = _int(cfg, "num_attention_heads")
    n_embd = _int(cfg, "hidden_size")
    vocab_default = GEMMA3_VOCAB if arch == "gemma3" else None
    rope_scaling = cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else {}
    kw: dict[str, Any] = {
        "n_layer": _int(cfg, "num_hidden_layers"),
        "n_embd": n_embd,
        "n_head": n_head,
        "n_head_kv": _int(cfg, "num_key_value_heads", n_head),
        "n_ff": _int(cfg, "intermediate_size"),
        "n_vocab": _int(cfg, "vocab_size", top.get("vocab_size", vocab_default)),
        "n_ctx_train": _int(cfg, "max_position_embeddings"),
        "tokenizer": SPM_TOKENIZER,
        "head_dim": _int(cfg, "head_dim") if cfg.get("head_dim") is not None else None,
        "rope_theta": _float(cfg, "rope_theta", 10000.0),
        "rms_eps": _float(cfg, "rms_norm_eps", 1e-6 if arch.startswith("gemma") else 1e-5),
        "tied_embeddings": _bool(
            cfg,
            "tie_word_embeddings",
            top.get("tie_word_embeddings", _TIED_DEFAULT.get(arch, False)),
        ),
    }

    if n_embd % n_head and kw["head_dim"] is None:
        raise ConfigError(
            f"config.json: hidden_size {n_embd} is not a multiple of "
            f"num_attention_heads {n_head}, and there is no head_dim"
        )
    extra: dict[str, Any] = {}
    if arch == "llama":
        kw["qkv_bias"] = _bool(cfg, "attention_bias", False)
        kw["rope_freqs"] = rope_scaling.get("rope_type", rope_scaling.get("type")) == "llama3"
        if hf_arch == "MixtralForCausalLM":
            kw["n_expert"] = _int(cfg, "num_local_experts")
            kw["n_expert_used"] = _int(cfg, "num_experts_per_tok")
    elif arch == "qwen2":
        kw["qkv_bias"] = True
    elif arch == "gemma2":
        kw["sliding_window"] = _int(cfg, "sliding_window", 4096)
        extra = {
            "attn_logit_softcapping": _float(cfg, "attn_logit_softcapping", 50.0),
            "final_logit_softcapping": _float(cfg, "final_logit_softcapping", 30.0),
        }
    elif arch == "gemma3":
        kw["sliding_window"] = _int(cfg, "sliding_window", 4096)
        kw["rope_theta"] = _float(cfg, "rope_theta", 1000000.0)
        extra = {"rope_freq_base_swa": _float(cfg, "rope_local_base_freq", 10000.0)}
        if rope_scaling.get("rope_type", rope_scaling.get("type")) == "linear":
            extra["rope_scaling_linear"] = _float(rope_scaling, "factor", 1.0)
    elif arch == "qwen3moe":
        kw.update(
            n_expert=_int(cfg, "num_experts"),
            n_expert_used=_int(cfg, "num_experts_per_tok"),
            n_ff_exp=_int(cfg, "moe_intermediate_size"),
        )
    elif arch == "phi3":
        kw["sliding_window"] = _int(cfg, "sliding_window", 0, positive=False)
        extra = {
            "orig_ctx": _int(
                cfg,
                "original_max_position_embeddings",
                cfg.get("max_position_embeddings"),
            )
        }
    elif arch == "deepseek2":
        if cfg.get("q_lora_rank") is not None:
            raise ConfigError(
                "config.json: q_lora_rank is set (DeepSeek-V2/V3 full size); vramc "
                "derives only q_lora_rank: null (V2-Lite) from config.json"
            )
        kw.update(
            n_expert=_int(cfg, "n_routed_experts"),
            n_expert_used=_int(cfg, "num_experts_per_tok"),
            n_ff_exp=_int(cfg, "moe_intermediate_size"),
        )
        extra = {
            "kv_lora_rank": _int(cfg, "kv_lora_rank"),
            "qk_nope_head_dim": _int(cfg, "qk_nope_head_dim"),
            "qk_rope_head_dim": _int(cfg, "qk_rope_head_dim"),
            "v_head_dim": _int(cfg, "v_head_dim"),
            "n_shared_experts": _int(cfg, "n_shared_experts", 0, positive=False),
            "leading_dense": _int(cfg, "first_k_dense_replace", 0, positive=False),
            "n_group": _int(cfg, "n_group", 1),
            "topk_group": _int(cfg, "topk_group", 1),
            "routed_scaling_factor": _float(cfg, "routed_scaling_factor", 1.0),
            "yarn_factor": _float(rope_scaling, "factor", 1.0),
            "yarn_orig_ctx": _int(rope_scaling, "original_max_position_embeddings", kw["n_ctx_train"]),
            "yarn_beta_fast": _float(rope_scaling, "beta_fast", 32.0),
            "yarn_beta_slow": _float(rope_scaling, "beta_slow", 1.0),
            "mscale_all_dim": _float(rope_scaling, "mscale_all_dim", 0.0),
        }
    elif arch == "glm4moe":
        kw.update(
            n_expert=_int(cfg, "n_routed_experts"),
            n_expert_used=_int(cfg, "num_experts_per_tok"),
            n_ff_exp=_int(cfg, "moe_intermediate_size"),
            qkv_bias=_bool(cfg, "attention_bias", False),
            n_nextn=_int(cfg, "num_nextn_predict_layers", 0, positive=False),
        )
        extra = {
            "n_shared_experts": _int(cfg, "n_shared_experts", 1, positive=False),
            "leading_dense": _int(cfg, "first_k_dense_replace", 0, positive=False),
            "n_group": _int(cfg, "n_group", 1),
            "topk_group": _int(cfg, "topk_group", 1),
            "routed_scaling_factor": _float(cfg, "routed_scaling_factor", 1.0),
            "norm_topk_prob": _bool(cfg, "norm_topk_prob", True),
            "partial_rotary_factor": _float(cfg, "partial_rotary_factor", 0.5),
            "qk_norm": _bool(cfg, "use_qk_norm", False),
        }
    return ModelShape(name, arch, f"config.json ({hf_arch})", extra=extra, **kw)


def meta_from_config(cfg: Any, quant: str, *, name: str = "model", imatrix: bool = False) -> ModelMeta:
    """What vramc would read from the header of the `quant` GGUF of the model `cfg` describes."""
    from vramc.dev.synth.writer import model_meta

    quant = quant.upper()
    if quant not in FTYPES:
        raise ConfigError(
            f"quant {quant!r} is not a llama-quantize file type vramc models; one of: {', '.join(FTYPES)}"
        )
    from vramc.model.modelmeta import validate_meta

    shape = shape_from_config(cfg, name)
    try:
        meta = model_meta(shape, quant, imatrix=imatrix)
        validate_meta(meta)  # what llama.cpp would refuse to load (a head size of 0, ...)
    except (KeyError, ValueError, ZeroDivisionError, TypeError, IndexError) as e:
        raise ConfigError(f"config.json does not describe a model vramc can lay out: {e}") from None
    return meta


def model_name(cfg: Any, path: str | os.PathLike, quant: str) -> str:
    """The lock's profile name: the model transformers saved the config from (`_name_or_path`,
    its last part: `meta-llama/Llama-3.1-8B` gives `Llama-3.1-8B-Q4_K_M`), else the config's
    folder (the current one for a bare `config.json`), and `model` only where neither has a name;
    never the quant alone, which named every lock of a bare `config.json` `Q4_K_M`."""
    import re

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:128].rstrip("-._")

    given = cfg.get("_name_or_path") if isinstance(cfg, dict) else None
    base = clean(re.split(r"[/\\]", given.rstrip("/\\"))[-1]) if isinstance(given, str) else ""
    base = base or clean(os.path.basename(os.path.dirname(os.path.abspath(path)))) or "model"
    return f"{base}-{quant.upper()}"  # the quant is one of llama-quantize's names (checked after)


def load_config(path: str | os.PathLike) -> Any:
    import stat

    try:
        # only a regular file: opening a FIFO would wait for a writer forever
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"{path}: not a regular file; give the path of config.json")
        with open(path, "rb") as f:
            raw = f.read(1 << 22)
            if f.read(1):
                raise ConfigError(f"{path}: over 4 MiB, not a config.json")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None
