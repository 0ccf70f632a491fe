"""Which ggml type each tensor of a model gets in a given file type (Q4_K_M, Q8_0, BF16, ...).

A translation of the pinned llama.cpp (llama-cpp-python 0.3.36, commit 0c1e570):
`conversion/base.py` prepare_tensors for the float file types that convert_hf_to_gguf.py writes,
and `src/llama-quant.cpp` (tensor_allows_quantization, llama_tensor_get_type_impl,
tensor_type_fallback) for what llama-quantize makes of that file. Branches keep the source's order,
because it decides the outcome: e.g. a fused attn_qkv counts as attn_v-like and never reaches the
later ATTENTION_QKV branch.

Quantized files are assumed to come from a BF16 convert output (what the tensors that are never
quantized keep) and, unless `imatrix=True`, from a run without an importance matrix (bartowski and
unsloth use one: it changes Q4_0/Q5_0 ffn_down in the first eighth of the layers, IQ3_XXS attn_v
and IQ4_NL/IQ4_XS ffn_down). Architecture-specific branches for arches outside the catalog
(falcon, glm5-next, bailingmoe3) and the TQ/Q1_0/Q2_0/MXFP4/NVFP4 file types are left out.
"""

from __future__ import annotations

import re

from vramc.dev.synth.arches import tensor_shapes
from vramc.dev.synth.shapes import ModelShape
from vramc.model.ggml import GGML_TYPES, TYPE_BY_NAME
from vramc.model.modelmeta import Tensor, make_tensor

# file type -> default tensor type (llama_ftype_get_default_type)
DEFAULT_TYPE = {
    "F32": "f32",
    "F16": "f16",
    "BF16": "bf16",
    "Q8_0": "q8_0",
    "Q4_0": "q4_0",
    "Q4_1": "q4_1",
    "Q5_0": "q5_0",
    "Q5_1": "q5_1",
    "Q2_K": "q2_k",
    "Q2_K_S": "q2_k",
    "Q3_K_S": "q3_k",
    "Q3_K_M": "q3_k",
    "Q3_K_L": "q3_k",
    "Q4_K_S": "q4_k",
    "Q4_K_M": "q4_k",
    "Q5_K_S": "q5_k",
    "Q5_K_M": "q5_k",
    "Q6_K": "q6_k",
    "IQ2_XXS": "iq2_xxs",
    "IQ2_XS": "iq2_xs",
    "IQ2_S": "iq2_xs",
    "IQ2_M": "iq2_s",
    "IQ3_XXS": "iq3_xxs",
    "IQ3_XS": "iq3_s",
    "IQ3_S": "iq3_s",
    "IQ3_M": "iq3_s",
    "IQ1_S": "iq1_s",
    "IQ1_M": "iq1_m",
    "IQ4_NL": "iq4_nl",
    "IQ4_XS": "iq4_xs",
}
FTYPES = tuple(DEFAULT_TYPE)
# llama_ftype values (include/llama.h), written as general.file_type
FTYPE_ID = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "IQ2_XXS": 19,
    "IQ2_XS": 20,
    "Q2_K_S": 21,
    "IQ3_XS": 22,
    "IQ3_XXS": 23,
    "IQ1_S": 24,
    "IQ4_NL": 25,
    "IQ3_S": 26,
    "IQ3_M": 27,
    "IQ2_S": 28,
    "IQ2_M": 29,
    "IQ4_XS": 30,
    "IQ1_M": 31,
    "BF16": 32,
}
FLOAT_FTYPES = ("F32", "F16", "BF16")

_IQ2_FAMILY = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M"}
_BLK_RE = re.compile(r"^blk\.(\d+)\.")

# names convert_hf_to_gguf.py always stores as F32 (base.py prepare_tensors), beyond 1-D and norms
_CONVERT_F32 = (
    "ffn_gate_inp.weight",
    "ffn_gate_inp_shexp.weight",
    "position_embd.weight",
    "token_types.weight",
    "ssm_conv1d.weight",
    "shortconv.conv.weight",
)
# substrings that tensor_allows_quantization refuses (the ones that can occur in catalog arches)
_NEVER_QUANTIZED = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "attn_rel_b.weight",
)


def ggml_n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def convert_type(name: str, shape: tuple[int, ...], outtype: str = "bf16") -> str:
    """The type convert_hf_to_gguf.py gives a tensor for --outtype f32/f16/bf16."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return "f32"
    if any(name.endswith(s) for s in _CONVERT_F32):
        return "f32"
    return outtype


def _category(name: str) -> str:
    """tensor_get_category, in the source's order of tests."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, cat in (
        ("attn_qkv.weight", "attn_qkv"),
        ("attn_kv_b.weight", "attn_kv_b"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if needle in name:
            return cat
    return "other"


def _allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    if ggml_n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    return not any(s in name for s in _NEVER_QUANTIZED)


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def is_llm_type_70b(s: ModelShape) -> bool:
    """model.type == LLM_TYPE_70B as load_arch_hparams decides it (only archs with such a case)."""
    heads, heads_kv = s.per_layer("n_head"), s.per_layer("n_head_kv")
    if s.arch == "llama":
        return s.n_expert != 8 and s.n_layer == 80 and heads[0] != heads_kv[0]
    return s.arch in ("deci", "qwen2") and s.n_layer == 80


class _State:
    """quantize_state_impl: counters advanced as tensors are visited in weights_map order."""

    def __init__(self, s: ModelShape, ftype: str, names: list[str], imatrix: bool):
        self.s, self.ftype, self.imatrix = s, ftype, imatrix
        heads, heads_kv = s.per_layer("n_head"), s.per_layer("n_head_kv")
        self.n_gqa = heads[0] // heads_kv[0] if heads_kv[0] else 0
        self.n_expert = s.n_expert
        self.is_70b = is_llm_type_70b(s)
        cats = [_category(n) for n in names]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.tied = "output" not in cats
        self.n_layer = s.n_layer + s.n_nextn  # n_layer_all: the NextN layers count
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0

    def layer(self, counter: int, name: str) -> int:
        # with experts the layer is parsed from the name (Mixtral's experts are not in order)
        if self.n_expert > 1:
            return int(_BLK_RE.match(name).group(1))
        return counter


def _type_impl(st: _State, new_type: str, name: str, shape: tuple[int, ...], cat: str) -> str:
    """llama_tensor_get_type_impl for a quantizable tensor of a quantized file type."""
    ft, n_expert = st.ftype, st.n_expert
    if cat == "output" or (st.tied and cat == "token_embd"):
        if shape[0] % GGML_TYPES[TYPE_BY_NAME[new_type]][1] != 0:
            return "q8_0"
        if ft in _IQ2_FAMILY or ft == "IQ3_XXS":
            return "q5_k"
        return new_type if new_type == "q8_0" else "q6_k"
    if cat == "token_embd":
        if ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return "q2_k"
        if ft in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return "iq3_s"
        return new_type
    if ft in _IQ2_FAMILY:
        iq2sm = ft in ("IQ2_S", "IQ2_M")
        if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            st.i_attention_wv += 1
            if st.n_gqa >= 4 or n_expert >= 4:
                return "q4_k"
            return "iq3_s" if iq2sm else "q2_k"
        if n_expert == 8 and cat == "attn_k":
            return "q4_k"
        if cat == "ffn_down":
            i = st.i_ffn_down
            st.i_ffn_down += 1
            if i < st.n_layer // 8:
                return "iq3_s" if iq2sm else "q2_k"
            return new_type
        if cat == "attn_output":
            if n_expert == 8:
                return "q5_k"
            if ft in ("IQ1_S", "IQ1_M"):
                return "iq2_xxs"
            if iq2sm:
                return "iq3_s"
        return new_type
    if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
        return _attn_v(st, new_type)
    if cat == "attn_k":
        if n_expert == 8:
            return "q8_0"
        if ft == "IQ3_XS":
            return "iq3_xxs"
        if ft == "IQ3_XXS":
            return "iq2_s"
        return new_type
    if cat == "attn_q":
        return {"IQ3_XS": "iq3_xxs", "IQ3_XXS": "iq2_s"}.get(ft, new_type)
    if cat == "ffn_down":
        i_layer = st.layer(st.i_ffn_down, name)
        st.i_ffn_down += 1
        return _ffn_down(st, new_type, i_layer, st.n_layer)
    if cat == "attn_output":
        if n_expert == 8:
            if ft in (
                "Q2_K",
                "IQ3_XS",
                "IQ3_XXS",
                "Q3_K_S",
                "Q3_K_M",
                "IQ4_NL",
                "Q4_K_S",
                "Q4_K_M",
                "IQ3_S",
                "IQ3_M",
                "IQ4_XS",
            ):
                return "q5_k"
            return new_type
        return {"Q2_K": "q3_k", "IQ3_XXS": "iq3_s", "Q3_K_M": "q4_k", "Q3_K_L": "q5_k", "IQ3_M": "q4_k"}.get(
            ft, new_type
        )
    if cat in ("ffn_gate", "ffn_up"):
        counter = "i_ffn_gate" if cat == "ffn_gate" else "i_ffn_up"
        i_layer = st.layer(getattr(st, counter), name)
        setattr(st, counter, getattr(st, counter) + 1)
        if ft == "IQ3_XS" and st.n_layer // 8 <= i_layer < 7 * st.n_layer // 8:
            return "iq3_xxs"
    return new_type


def _attn_v(st: _State, new_type: str) -> str:
    ft, gqa4 = st.ftype, st.n_gqa >= 4
    if ft == "Q2_K":
        new_type = "q4_k" if gqa4 else "q3_k"
    elif ft == "Q2_K_S" and gqa4:
        new_type = "q4_k"
    elif ft == "IQ3_XXS":
        new_type = "q4_k" if gqa4 else ("iq3_s" if not st.imatrix else "iq3_xxs")
    elif ft in ("IQ3_XS", "IQ3_S") and gqa4:
        new_type = "q4_k"
    elif ft == "IQ3_M":
        new_type = "q4_k"
    elif ft == "Q3_K_M":
        new_type = "q5_k" if st.i_attention_wv < 2 else "q4_k"
    elif ft == "Q3_K_L":
        new_type = "q5_k"
    elif ft in ("IQ4_NL", "IQ4_XS") and gqa4:
        new_type = "q5_k"
    elif ft in ("Q4_K_M", "Q5_K_M") and _use_more_bits(st.i_attention_wv, st.n_attention_wv):
        new_type = "q6_k"
    elif ft == "Q4_K_S" and st.i_attention_wv < 4:
        new_type = "q5_k"
    if st.is_70b and new_type in ("q3_k", "q4_k"):
        # 8 heads share attn_v in the 70B models: more bits cost little
        new_type = "q5_k"
    if st.n_expert == 8:
        new_type = "q8_0"
    st.i_attention_wv += 1
    return new_type


def _ffn_down(st: _State, new_type: str, i_layer: int, n_layer: int) -> str:
    ft = st.ftype
    if ft == "Q2_K":
        return "q3_k"
    if ft == "Q2_K_S":
        return "q4_k" if i_layer < n_layer // 8 else new_type
    if ft == "IQ3_XXS" and not st.imatrix:
        return "q4_k" if i_layer < n_layer // 8 else "q3_k"
    if ft == "Q3_K_M":
        # the arch != FALCON test makes every non-first-sixteenth layer Q4_K
        return "q5_k" if i_layer < n_layer // 16 else "q4_k"
    if ft == "IQ3_M" and (i_layer < n_layer // 8 or (st.n_expert == 8 and _use_more_bits(i_layer, n_layer))):
        return "q4_k"
    if ft == "Q3_K_L":
        return "q5_k"
    if ft == "Q4_K_M":
        return "q6_k" if _use_more_bits(i_layer, n_layer) else new_type
    if i_layer < n_layer // 8 and ft in ("IQ4_NL", "IQ4_XS") and not st.imatrix:
        return "q5_k"
    if ft == "Q5_K_M" and _use_more_bits(i_layer, n_layer):
        return "q6_k"
    if ft == "Q4_K_S" and i_layer < n_layer // 8:
        return "q5_k"
    if ft in ("Q4_0", "Q5_0") and st.imatrix and i_layer < n_layer // 8:
        return "q4_1" if ft == "Q4_0" else "q5_1"
    return new_type


_FALLBACK = {
    "iq1_s": "iq4_nl",
    "iq1_m": "iq4_nl",
    "iq2_xxs": "iq4_nl",
    "iq2_xs": "iq4_nl",
    "iq2_s": "iq4_nl",
    "iq3_xxs": "iq4_nl",
    "iq3_s": "iq4_nl",
    "iq4_xs": "iq4_nl",
    "q2_k": "q4_0",
    "q3_k": "q4_0",
    "q4_k": "q5_0",
    "q5_k": "q5_1",
    "q6_k": "q8_0",
}


def _fallback(type_: str, ncols: int) -> str:
    """tensor_type_fallback: a row that is not whole blocks of `type_` takes a smaller block."""
    block = GGML_TYPES[TYPE_BY_NAME[type_]][1]
    if ncols % block == 0:
        return type_
    out = _FALLBACK.get(type_, type_)  # 32-block types have nothing smaller: F16 below
    if ncols % GGML_TYPES[TYPE_BY_NAME[out]][1] != 0:
        out = "f16"
    return out


def _weights_map_order(names: list[str]) -> list[int]:
    """Indices in llama_model_loader's weights_map order: by block (-1 first), then by name."""

    def key(i: int):
        m = _BLK_RE.match(names[i])
        return (int(m.group(1)) if m else -1, names[i])

    return sorted(range(len(names)), key=key)


def tensor_types(s: ModelShape, ftype: str, *, imatrix: bool = False) -> list[Tensor]:
    """Every tensor of `s` (file order) with the type and byte size it has in a `ftype` file."""
    ftype = ftype.upper()
    if ftype not in DEFAULT_TYPE:
        raise ValueError(f"unsupported file type {ftype!r}; supported: {', '.join(FTYPES)}")
    entries = tensor_shapes(s)
    names = [n for n, _ in entries]
    default = DEFAULT_TYPE[ftype]
    if ftype in FLOAT_FTYPES:  # what convert_hf_to_gguf.py writes for --outtype
        return [make_tensor(n, convert_type(n, shp, default), shp) for n, shp in entries]
    st = _State(s, ftype, names, imatrix)
    types = [""] * len(entries)
    for i in _weights_map_order(names):
        name, shp = entries[i]
        if not _allows_quantization(name, shp):
            types[i] = convert_type(name, shp)
            continue
        t = _type_impl(st, default, name, shp, _category(name))
        types[i] = _fallback(t, shp[0])
    return [make_tensor(n, t, shp) for (n, shp), t in zip(entries, types)]
