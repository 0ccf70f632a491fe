"""Write GGUF headers byte by byte, with any key types and values, for hostile-input tests.

gguf-py refuses what these tests need (a key of the wrong type, a NaN where a length belongs, a
non-UTF-8 architecture), so this encoder writes exactly what it is given. The data region is a
hole (`os.truncate`), as in conftest.write_gguf.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from vramc.model.ggml import TYPE_BY_NAME, tensor_nbytes

# GGUF value type ids
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}


def _string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value) -> bytes:
    if vtype == STR:
        return _string(value)
    if vtype == ARR:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, x) for x in items)
    return struct.pack("<" + _FMT[vtype], value)


def encode(
    kv: list[tuple[str | bytes, int, object]], tensors: list[tuple[str, str, tuple]], *, alignment: int = 32
) -> tuple[bytes, int]:
    """(header bytes, data region size): kv as (key, value type, value), an array's value as
    (element type, items); tensors as (name, ggml type, ggml shape), packed in table order."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(kv))]
    for key, vtype, value in kv:
        out += [_string(key), struct.pack("<I", vtype), _value(vtype, value)]
    offset = 0
    for name, type_, shape in tensors:
        out += [
            _string(name),
            struct.pack("<I", len(shape)),
            struct.pack(f"<{len(shape)}q", *shape),
            struct.pack("<IQ", TYPE_BY_NAME[type_], offset),
        ]
        offset += -(-tensor_nbytes(type_, shape) // alignment) * alignment
    return b"".join(out), offset


def write(path: Path, kv, tensors, *, alignment: int = 32) -> Path:
    header, data = encode(kv, tensors, alignment=alignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header)
    if tensors:
        os.truncate(path, -(-len(header) // alignment) * alignment + data)
    return path


def llama_kv(
    arch: str = "llama",
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    n_vocab: int = 260,
    **override,
) -> list:
    """A small llama's keys; `override` replaces (or with value None drops) `<arch>.` keys, with
    (type, value) pairs: llama_kv(**{"attention.key_length": (U32, 0)})."""
    a = arch
    keys = {
        "block_count": (U32, n_layer),
        "context_length": (U32, 4096),
        "embedding_length": (U32, n_embd),
        "feed_forward_length": (U32, n_ff),
        "attention.head_count": (U32, n_head),
        "attention.head_count_kv": (U32, n_head_kv),
        "rope.freq_base": (F32, 500000.0),
        "attention.layer_norm_rms_epsilon": (F32, 1e-5),
    }
    for k, v in override.items():
        if v is None:
            keys.pop(k, None)
        else:
            keys[k] = v
    kv = [("general.architecture", STR, a), ("general.name", STR, "hostile"), ("general.file_type", U32, 7)]
    kv += [(f"{a}.{k}", t, v) for k, (t, v) in keys.items()]
    kv += [
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.tokens", ARR, (STR, [f"t{i}" for i in range(n_vocab)])),
    ]
    return kv
