"""Write synthetic GGUF files: sparse ones with a real model's header, and a tiny runnable model.

A sparse file has the full metadata and tensor table of a catalog shape and a data region that is
a hole (`os.truncate` past the header): llama.cpp's dry run (`llama-fit-params`, `no_alloc`)
never reads tensor data but checks that every tensor lies within the file, so the apparent size
must be right while the disk usage stays a few MB even for a 70B model.

`gguf` and numpy are imported inside the functions: importing vramc.dev.synth stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vramc.dev.synth.arches import arch_metadata, tensor_shapes
from vramc.dev.synth.quant import FLOAT_FTYPES, FTYPE_ID, tensor_types
from vramc.dev.synth.shapes import SPM_TOKENIZER, ModelShape
from vramc.dev.synth.vocab import tokenizer_metadata
from vramc.model.ggml import TYPE_BY_NAME
from vramc.model.modelmeta import ModelMeta

ALIGNMENT = 32  # GGUF default general.alignment
QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION, written by llama-quantize


def _pad(n: int, align: int = ALIGNMENT) -> int:
    return (n + align - 1) // align * align


def file_metadata(shape: ModelShape, ftype: str) -> dict[str, Any]:
    """Every GGUF key of the file but general.architecture (the writer adds it), in file order."""
    ftype = ftype.upper()
    kv: dict[str, Any] = {"general.name": shape.name, "general.file_type": FTYPE_ID[ftype]}
    if ftype not in FLOAT_FTYPES:
        kv["general.quantization_version"] = QUANTIZATION_VERSION
    kv.update({f"{shape.arch}.{k}": v for k, v in arch_metadata(shape).items()})
    kv.update(tokenizer_metadata(shape.tokenizer, shape.n_vocab))
    return kv


def model_meta(shape: ModelShape, ftype: str, *, imatrix: bool = False) -> ModelMeta:
    """What vramc would read from the header of `write_sparse_gguf(path, shape, ftype)`."""
    tensors = tensor_types(shape, ftype, imatrix=imatrix)
    return ModelMeta(
        architecture=shape.arch,
        hparams=arch_metadata(shape),
        vocab_size=shape.n_vocab,
        tensors=tensors,
        name=shape.name,
        file_type=ftype.upper(),
    )


def _add_kv(writer, key: str, value: Any) -> None:
    from gguf import GGUFValueType as T

    if isinstance(value, (list, tuple)):
        writer.add_array(key, list(value))  # element type from the first item, as convert does
    elif isinstance(value, bool):
        writer.add_key_value(key, value, T.BOOL)
    elif isinstance(value, int):
        writer.add_key_value(key, value, T.UINT32)  # llama.cpp's get_key checks the exact type
    elif isinstance(value, float):
        writer.add_key_value(key, value, T.FLOAT32)
    elif isinstance(value, str):
        writer.add_key_value(key, value, T.STRING)
    else:
        raise TypeError(f"{key}: unsupported metadata value {value!r}")


def write_sparse_gguf(path: str | os.PathLike, shape: ModelShape, ftype: str, *, imatrix: bool = False) -> Path:
    """Write `shape` as a `ftype` GGUF whose data region is a hole; returns the path.

    The apparent size equals that of a real file of the same tensors (header, padded tensor data);
    blocks on disk are only the header's. Deterministic: same inputs, same bytes.
    """
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = tensor_types(shape, ftype, imatrix=imatrix)
    writer = GGUFWriter(path, shape.arch)
    for key, value in file_metadata(shape, ftype).items():
        _add_kv(writer, key, value)
    for t in tensors:
        # shape in numpy order; a non-uint8 dtype makes gguf take it as the element shape
        writer.add_tensor_info(
            t.name,
            tuple(reversed(t.shape)),
            np.dtype(np.float32),
            t.nbytes,
            raw_dtype=GGMLQuantizationType(TYPE_BY_NAME[t.type]),
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    header_end = writer.fout[0].tell()
    writer.close()
    data_bytes = sum(_pad(t.nbytes) for t in tensors)
    os.truncate(path, _pad(header_end) + data_bytes)
    return path


# --- a tiny model that runs ------------------------------------------------------------------

TINY_SHAPE = ModelShape(
    "tiny-llama",
    "llama",
    "synthetic: not a published model",
    n_layer=2,
    n_embd=64,
    n_head=4,
    n_head_kv=2,
    n_ff=128,
    n_vocab=260,
    n_ctx_train=2048,
    tokenizer=SPM_TOKENIZER,
)
TINY_FTYPES = ("F32", "F16", "Q8_0", "Q4_0")


def tiny_tensors(shape: ModelShape, ftype: str, seed: int) -> list[tuple[str, Any, str]]:
    """(name, numpy data, ggml type) with weights ~N(0, 0.02) and norms at 1, from `seed`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for name, ggml_shape in tensor_shapes(shape):
        np_shape = tuple(reversed(ggml_shape))
        if len(ggml_shape) == 1:
            data = np.ones(np_shape, dtype=np.float32)
            type_ = "f32"
        else:
            data = (rng.standard_normal(np_shape) * 0.02).astype(np.float32)
            type_ = "f32" if ftype == "F32" else ftype.lower()
        out.append((name, data, type_))
    return out


def write_tiny_model(
    path: str | os.PathLike, *, ftype: str = "F32", seed: int = 0, shape: ModelShape = TINY_SHAPE
) -> Path:
    """A real llama-arch GGUF with random weights (about 430 KB in F32) that llama.cpp loads and
    generates from: 2 blocks, n_embd 64, 4 heads, 2 KV heads, n_ff 128 and a 260-token
    SentencePiece vocabulary (<unk> <s> </s>, the 256 byte tokens and the space piece).
    Byte-identical for the same arguments."""
    import gguf
    from gguf import GGMLQuantizationType, GGUFWriter

    ftype = ftype.upper()
    if ftype not in TINY_FTYPES:
        raise ValueError(f"tiny model file types: {', '.join(TINY_FTYPES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(path, shape.arch)
    for key, value in file_metadata(shape, ftype).items():
        _add_kv(writer, key, value)
    writer.add_add_bos_token(True)
    for name, data, type_ in tiny_tensors(shape, ftype, seed):
        qtype = GGMLQuantizationType(TYPE_BY_NAME[type_])
        if type_ != "f32":
            data = gguf.quants.quantize(data, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
