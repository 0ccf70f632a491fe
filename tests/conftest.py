"""Shared fixtures: sparse GGUF files written with gguf-py (real header, data region a hole)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests compute every estimate afresh: the on-disk estimate cache has its own test, and must never
# make a test pass on an entry written by other code.
os.environ["VRAMC_NO_CACHE"] = "1"


def write_gguf(path: Path, tensors, setup=None, *, arch: str = "llama", split_max_tensors: int = 0) -> list[Path]:
    """Write `tensors` ([(name, ggml type, ggml shape)]) and the keys `setup(writer)` adds.

    Returns the files written (several when split). Each is truncated to the end of its data
    region, so a model of any size costs only its header on disk.
    """
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    from vramc.model.ggml import TYPE_BY_NAME, tensor_nbytes

    w = GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    if setup:
        setup(w)
    for name, type_, shape in tensors:
        w.add_tensor_info(
            name,
            list(reversed(shape)),
            np.dtype(np.float32),
            tensor_nbytes(type_, shape),
            raw_dtype=GGMLQuantizationType(TYPE_BY_NAME[type_]),
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    files = []
    for fout, shard in zip(w.fout, w.tensors):
        data_offset = w.ggml_pad(fout.tell(), w.data_alignment)
        files.append(
            (Path(fout.name), data_offset + sum(w.ggml_pad(t.nbytes, w.data_alignment) for t in shard.values()))
        )
    w.close()
    for file, size in files:
        os.truncate(file, size)
    return [file for file, _ in files]


def llama_tensors(n_layer=2, n_embd=64, n_ff=128, n_head=4, n_head_kv=2, n_vocab=260, wtype="q8_0", tied=False):
    kv_dim = n_embd // n_head * n_head_kv
    tensors = [("token_embd.weight", wtype, (n_embd, n_vocab))]
    for i in range(n_layer):
        tensors += [
            (f"blk.{i}.attn_norm.weight", "f32", (n_embd,)),
            (f"blk.{i}.attn_q.weight", wtype, (n_embd, n_embd)),
            (f"blk.{i}.attn_k.weight", wtype, (n_embd, kv_dim)),
            (f"blk.{i}.attn_v.weight", wtype, (n_embd, kv_dim)),
            (f"blk.{i}.attn_output.weight", wtype, (n_embd, n_embd)),
            (f"blk.{i}.ffn_norm.weight", "f32", (n_embd,)),
            (f"blk.{i}.ffn_gate.weight", wtype, (n_embd, n_ff)),
            (f"blk.{i}.ffn_up.weight", wtype, (n_embd, n_ff)),
            (f"blk.{i}.ffn_down.weight", wtype, (n_ff, n_embd)),
        ]
    tensors.append(("output_norm.weight", "f32", (n_embd,)))
    if not tied:
        tensors.append(("output.weight", wtype, (n_embd, n_vocab)))
    return tensors


def llama_keys(w, n_layer=2, n_embd=64, n_ff=128, n_head=4, n_head_kv=2, n_vocab=260, ftype=7):
    w.add_name("Tiny Llama")
    w.add_block_count(n_layer)
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(ftype)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    w.add_token_types([1] * n_vocab)


@pytest.fixture
def tiny_llama(tmp_path):
    """A 2-block llama-shaped Q8_0 model; keyword arguments change its shape or add keys."""

    def make(name="tiny.gguf", setup=None, tied=False, wtype="q8_0", ftype=7, **shape):
        def keys(w):
            llama_keys(w, ftype=ftype, **shape)
            if setup:
                setup(w)

        return write_gguf(tmp_path / name, llama_tensors(wtype=wtype, tied=tied, **shape), keys)[0]

    return make
