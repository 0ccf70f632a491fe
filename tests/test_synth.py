"""vramc.dev.synth: catalog shapes, quantization type selection, sparse and tiny GGUF writers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest

from vramc.dev.synth import CATALOG, model_meta, tensor_types, write_sparse_gguf, write_tiny_model
from vramc.dev.synth.arches import tensor_shapes
from vramc.dev.synth.quant import FTYPES
from vramc.dev.synth.shapes import get_shape

MORE_BITS_32 = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]  # use_more_bits, 32 layers


def types_of(tensors, suffix):
    return {t.block: t.type for t in tensors if t.name.endswith(suffix)}


# --- catalog ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CATALOG))
def test_shape_tensor_table_is_consistent(name):
    s = CATALOG[name]
    assert s.source and name in s.name
    names = [n for n, _ in tensor_shapes(s)]
    assert len(names) == len(set(names))
    assert names[0] == "token_embd.weight"
    assert ("output.weight" in names) != s.tied_embeddings
    assert ("rope_freqs.weight" in names) == s.rope_freqs
    emb = dict(tensor_shapes(s))["token_embd.weight"]
    assert emb == (s.n_embd, s.n_vocab)
    blocks = {int(n.split(".")[1]) for n in names if n.startswith("blk.")}
    assert blocks == set(range(s.n_layer + s.n_nextn))
    for ftype in ("Q4_K_M", "BF16"):
        assert all(t.nbytes > 0 for t in tensor_types(s, ftype))


def test_tensor_counts_per_block():
    per_block = {  # tensors in one block, as convert_hf_to_gguf.py writes them
        "llama-3.1-8b-instruct": 9,
        "qwen2.5-32b-instruct": 12,
        "gemma-2-9b-it": 11,
        "gemma-3-12b-it": 13,
        "mixtral-8x7b-instruct-v0.1": 10,
        "qwen3-30b-a3b": 12,
        "phi-3-mini-4k-instruct": 6,
    }
    for name, n in per_block.items():
        s = CATALOG[name]
        counts = Counter(int(t.split(".")[1]) for t, _ in tensor_shapes(s) if t.startswith("blk."))
        assert set(counts.values()) == {n}, name


def test_phi3_keeps_fused_projections():
    shapes = dict(tensor_shapes(CATALOG["phi-3-mini-4k-instruct"]))
    assert shapes["blk.0.attn_qkv.weight"] == (3072, 3 * 3072)
    assert shapes["blk.0.ffn_up.weight"] == (3072, 2 * 8192)
    assert "blk.0.attn_q.weight" not in shapes and "blk.0.ffn_gate.weight" not in shapes


def test_moe_expert_tensors():
    shapes = dict(tensor_shapes(CATALOG["qwen3-30b-a3b"]))
    assert shapes["blk.0.ffn_gate_exps.weight"] == (2048, 768, 128)
    assert shapes["blk.0.ffn_down_exps.weight"] == (768, 2048, 128)
    assert shapes["blk.0.attn_q.weight"] == (2048, 32 * 128)
    mix = dict(tensor_shapes(CATALOG["mixtral-8x7b-instruct-v0.1"]))
    assert mix["blk.31.ffn_up_exps.weight"] == (4096, 14336, 8)


def test_deci_per_layer_arrays_and_tensors():
    s = get_shape("llama-3.3-nemotron-super-49b-v1.5")
    meta = model_meta(s, "BF16")
    heads, heads_kv, ff = (
        meta.per_layer(k) for k in ("attention.head_count", "attention.head_count_kv", "feed_forward_length")
    )
    assert len(heads) == len(heads_kv) == len(ff) == 80
    assert sum(1 for h in heads_kv if h) == 49 and set(heads_kv) == {0, 8}
    assert sorted(set(ff)) == [2816, 5632, 7168, 14336, 17920, 28672]
    assert (heads_kv[0], ff[0], heads_kv[6], ff[6], ff[62]) == (8, 14336, 0, 14336, 2816)
    names = {t.name for t in meta.tensors}
    for il in range(80):
        has_attn = f"blk.{il}.attn_q.weight" in names
        assert has_attn == (heads_kv[il] > 0)
        assert (f"blk.{il}.attn_norm.weight" in names) == has_attn
        assert f"blk.{il}.ffn_down.weight" in names
    assert dict(tensor_shapes(s))["blk.62.ffn_down.weight"] == (2816, 8192)


def test_mla_tensors():
    s = get_shape("deepseek-v2-lite-chat")
    shapes = dict(tensor_shapes(s))
    assert shapes["blk.0.attn_kv_a_mqa.weight"] == (2048, 512 + 64)
    assert shapes["blk.0.attn_k_b.weight"] == (128, 512, 16)  # kv_b split, k part transposed
    assert shapes["blk.0.attn_v_b.weight"] == (512, 128, 16)
    assert shapes["blk.0.ffn_down.weight"] == (10944, 2048)  # first_k_dense_replace = 1
    assert shapes["blk.1.ffn_down_exps.weight"] == (1408, 2048, 64)
    assert shapes["blk.1.ffn_up_shexp.weight"] == (2048, 2 * 1408)
    assert "blk.0.attn_kv_b.weight" not in shapes and "blk.1.ffn_down.weight" not in shapes
    meta = model_meta(s, "Q4_K_M")
    assert meta.hparams["attention.head_count_kv"] == 1 and meta.hparams["attention.key_length_mla"] == 192
    by_name = {t.name: t.type for t in meta.tensors}
    assert by_name["blk.3.attn_k_b.weight"] == "q5_0"  # 128-wide rows: Q4_K falls back


def test_glm4moe_tensors():
    s = get_shape("glm-4.5-air")
    shapes = dict(tensor_shapes(s))
    counts = Counter(int(t.split(".")[1]) for t in shapes if t.startswith("blk."))
    # dense layer 0 (q/k/v biases, post-attention norm), MoE layers with a shared expert and a
    # selection bias, and the NextN layer's MTP head on top of a MoE layer
    assert (counts[0], counts[1], counts[45], counts[46]) == (12, 17, 17, 21)
    assert shapes["blk.0.ffn_down.weight"] == (10944, 4096)
    assert shapes["blk.1.ffn_down_exps.weight"] == (1408, 4096, 128)
    assert shapes["blk.1.exp_probs_b.bias"] == (128,)
    assert shapes["blk.46.nextn.eh_proj.weight"] == (8192, 4096)
    meta = model_meta(s, "Q4_K_M")
    hp = meta.hparams
    assert (hp["block_count"], hp["nextn_predict_layers"], hp["rope.dimension_count"]) == (47, 1, 64)


def test_hybrid_tensors():
    s = get_shape("nvidia-nemotron-nano-9b-v2")
    kinds = {}
    for name, _ in tensor_shapes(s):
        if name.startswith("blk."):
            il, rest = int(name.split(".")[1]), name.split(".", 2)[2]
            kind = (
                "M"
                if rest.startswith("ssm")
                else "*"
                if rest.startswith("attn_q")
                else "-"
                if rest.startswith("ffn")
                else None
            )
            if kind:
                kinds.setdefault(il, set()).add(kind)
    assert all(len(k) == 1 for k in kinds.values())
    pattern = "".join(kinds[il].pop() for il in range(56))
    assert pattern == "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"
    shapes = dict(tensor_shapes(s))
    assert shapes["blk.0.ssm_in.weight"] == (4480, 2 * 10240 + 2 * 8 * 128 + 128)
    assert shapes["blk.0.ssm_norm.weight"] == (1280, 8) and shapes["blk.0.ssm_a"] == (1, 128)
    types = {t.name: t.type for t in tensor_types(s, "Q4_K_M")}
    assert types["blk.0.ssm_conv1d.weight"] == "f32" and types["blk.0.ssm_out.weight"] == "q4_k"
    # n_embd 4480 is not a whole number of 256-blocks: Q4_K rows fall back, the output to Q8_0
    assert types["blk.0.ssm_in.weight"] == "q5_0" and types["output.weight"] == "q8_0"


# --- quantization type selection -------------------------------------------------------------


def test_llama31_8b_q4_k_m_types():
    tensors = tensor_types(CATALOG["llama-3.1-8b-instruct"], "Q4_K_M")
    for suffix in ("attn_v.weight", "ffn_down.weight"):
        by_block = types_of(tensors, suffix)
        assert sorted(b for b, t in by_block.items() if t == "q6_k") == MORE_BITS_32
        assert {t for b, t in by_block.items() if b not in MORE_BITS_32} == {"q4_k"}
    by_name = {t.name: t.type for t in tensors}
    assert by_name["output.weight"] == "q6_k" and by_name["token_embd.weight"] == "q4_k"
    assert by_name["blk.0.attn_norm.weight"] == "f32" and by_name["rope_freqs.weight"] == "f32"
    assert set(types_of(tensors, "attn_q.weight").values()) == {"q4_k"}


def test_llama31_8b_q4_k_m_matches_published_file_size():
    # Ollama's llama3.1:8b (Q4_K_M) blob is 4,920,734,016 bytes; the header (128256 tokens and
    # 280147 merges) is about 8 MB of it
    total = model_meta(CATALOG["llama-3.1-8b-instruct"], "Q4_K_M").total_bytes
    assert abs(total - 4_920_734_016) / 4_920_734_016 < 0.005


@pytest.mark.parametrize(
    "ftype,gb",
    [("BF16", 99.74), ("Q8_0", 52.99), ("Q6_K", 40.92), ("Q5_K_M", 35.39), ("Q4_1", 31.38), ("Q4_K_M", 30.22)],
)
def test_nemotron_super_matches_bartowski_sizes(ftype, gb):
    # bartowski's imatrix quants of Llama-3_3-Nemotron-Super-49B-v1 (same sizes for v1_5)
    total = model_meta(CATALOG["llama-3.3-nemotron-super-49b-v1.5"], ftype, imatrix=True).total_bytes
    assert abs(total / 1e9 - gb) / gb < 0.002


def test_70b_attn_v_gets_q5_k():
    # LLM_TYPE_70B (llama, 80 layers, GQA): attn_v that use_more_bits leaves at Q4_K becomes Q5_K
    v = types_of(tensor_types(CATALOG["llama-3.3-70b-instruct"], "Q4_K_M"), "attn_v.weight")
    assert set(v.values()) == {"q5_k", "q6_k"}
    assert v[0] == "q6_k" and v[10] == "q5_k"
    deci_v = types_of(tensor_types(CATALOG["llama-3.3-nemotron-super-49b-v1.5"], "Q4_K_M"), "attn_v.weight")
    assert len(deci_v) == 49 and set(deci_v.values()) == {"q5_k", "q6_k"}


def test_mixtral_expert_rules():
    tensors = tensor_types(CATALOG["mixtral-8x7b-instruct-v0.1"], "Q4_K_M")
    by_name = {t.name: t.type for t in tensors}
    assert by_name["blk.5.attn_k.weight"] == by_name["blk.5.attn_v.weight"] == "q8_0"
    assert by_name["blk.5.attn_output.weight"] == "q5_k"
    assert by_name["blk.5.ffn_gate_inp.weight"] == "f32"
    down = types_of(tensors, "ffn_down_exps.weight")
    assert sorted(b for b, t in down.items() if t == "q6_k") == MORE_BITS_32


def test_tied_embeddings_take_the_output_type():
    by_name = {t.name: t.type for t in tensor_types(CATALOG["gemma-2-9b-it"], "Q4_K_M")}
    assert by_name["token_embd.weight"] == "q6_k" and "output.weight" not in by_name
    by_name = {t.name: t.type for t in tensor_types(CATALOG["gemma-2-9b-it"], "Q8_0")}
    assert by_name["token_embd.weight"] == "q8_0"


def test_fused_qkv_counts_as_attn_v():
    qkv = types_of(tensor_types(CATALOG["phi-3-mini-4k-instruct"], "Q4_K_M"), "attn_qkv.weight")
    assert sorted(b for b, t in qkv.items() if t == "q6_k") == MORE_BITS_32


def test_other_file_types():
    s = CATALOG["llama-3.1-8b-instruct"]
    q8 = {t.type for t in tensor_types(s, "Q8_0")}
    assert q8 == {"q8_0", "f32"}
    q4_0 = {t.name: t.type for t in tensor_types(s, "Q4_0")}
    assert q4_0["output.weight"] == "q6_k" and q4_0["blk.0.ffn_down.weight"] == "q4_0"
    q4_0_imat = {t.name: t.type for t in tensor_types(s, "Q4_0", imatrix=True)}
    assert q4_0_imat["blk.0.ffn_down.weight"] == "q4_1" and q4_0_imat["blk.4.ffn_down.weight"] == "q4_0"
    q3 = {t.name: t.type for t in tensor_types(s, "Q3_K_M")}
    assert (q3["blk.0.attn_v.weight"], q3["blk.2.attn_v.weight"]) == ("q5_k", "q4_k")
    assert (q3["blk.1.ffn_down.weight"], q3["blk.2.ffn_down.weight"]) == ("q5_k", "q4_k")
    assert q3["blk.3.attn_output.weight"] == "q4_k"
    iq4 = {t.name: t.type for t in tensor_types(s, "IQ4_XS")}
    assert (iq4["blk.0.attn_v.weight"], iq4["blk.0.ffn_down.weight"]) == ("q5_k", "q5_k")
    assert iq4["blk.10.ffn_down.weight"] == "iq4_xs" and iq4["output.weight"] == "q6_k"
    q2 = {t.name: t.type for t in tensor_types(s, "Q2_K")}
    assert (q2["blk.0.attn_v.weight"], q2["blk.0.ffn_down.weight"]) == ("q4_k", "q3_k")
    bf16 = {t.name: t.type for t in tensor_types(s, "BF16")}
    assert bf16["blk.0.attn_q.weight"] == "bf16" and bf16["blk.0.ffn_norm.weight"] == "f32"


def test_fallback_when_rows_are_not_whole_blocks():
    odd = replace(CATALOG["llama-3.1-8b-instruct"], name="odd", n_ff=14336 + 32, n_layer=8)
    down = types_of(tensor_types(odd, "Q4_K_M"), "ffn_down.weight")
    assert down[0] == "q8_0" and down[4] == "q5_0"  # Q6_K -> Q8_0, Q4_K -> Q5_0
    odder = replace(odd, n_ff=14336 + 8)
    assert set(types_of(tensor_types(odder, "Q4_K_M"), "ffn_down.weight").values()) == {"f16"}


def test_unknown_file_type():
    with pytest.raises(ValueError, match="unsupported file type"):
        tensor_types(CATALOG["llama-3.1-8b-instruct"], "Q7_K")
    assert "Q4_K_M" in FTYPES


# --- writers ---------------------------------------------------------------------------------


def test_sparse_file_is_small_on_disk_and_reads_back(tmp_path):
    read_gguf = pytest.importorskip("vramc.model.gguf").read_gguf
    s = CATALOG["llama-3.3-70b-instruct"]
    path = write_sparse_gguf(tmp_path / "70b.gguf", s, "Q4_K_M")
    st = os.stat(path)
    assert st.st_blocks * 512 < 16 * 2**20
    meta = read_gguf(path)
    expected = model_meta(s, "Q4_K_M")
    assert [(t.name, t.type, t.shape) for t in meta.tensors] == [(t.name, t.type, t.shape) for t in expected.tensors]
    assert meta.architecture == "llama" and meta.vocab_size == 128256
    assert meta.hparams["attention.head_count_kv"] == 8
    data = sum((t.nbytes + 31) // 32 * 32 for t in expected.tensors)
    assert st.st_size - data < 8 * 2**20 and st.st_size > data


def test_sparse_file_is_deterministic(tmp_path):
    s = CATALOG["phi-3-mini-4k-instruct"]
    a = write_sparse_gguf(tmp_path / "a.gguf", s, "Q8_0")
    b = write_sparse_gguf(tmp_path / "b.gguf", s, "Q8_0")
    assert a.stat().st_size == b.stat().st_size
    with open(a, "rb") as fa, open(b, "rb") as fb:  # the header; the rest is a hole
        assert fa.read(2**20) == fb.read(2**20)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_model_is_byte_identical(tmp_path):
    a = write_tiny_model(tmp_path / "a.gguf")
    b = write_tiny_model(tmp_path / "b.gguf")
    assert _sha(a) == _sha(b)
    assert 400_000 < a.stat().st_size < 460_000
    c = write_tiny_model(tmp_path / "c.gguf", seed=1)
    assert _sha(c) != _sha(a) and c.stat().st_size == a.stat().st_size
    q8 = write_tiny_model(tmp_path / "q8.gguf", ftype="Q8_0")
    assert q8.stat().st_size < a.stat().st_size // 3


@pytest.mark.engine
@pytest.mark.parametrize("ftype", ["F32", "Q8_0"])
def test_tiny_model_generates(tmp_path, ftype):
    llama_cpp = pytest.importorskip("llama_cpp")
    path = write_tiny_model(tmp_path / "tiny.gguf", ftype=ftype)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)
    out = llm("hello", max_tokens=4, temperature=0.0)
    assert out["usage"]["completion_tokens"] > 0


def test_cli(tmp_path):
    run = [sys.executable, "-m", "vramc.dev.synth"]
    out = subprocess.run(run + ["list"], capture_output=True, text=True, check=True).stdout
    assert "llama-3.3-nemotron-super-49b-v1.5" in out and "deci" in out
    path = tmp_path / "m.gguf"
    subprocess.run(run + ["write", "mistral-7b-instruct-v0.3", "q4_k_m", str(path)], check=True, capture_output=True)
    assert path.stat().st_size > 4 * 10**9
    bad = subprocess.run(run + ["write", "nope", "Q8_0", str(path)], capture_output=True, text=True)
    assert bad.returncode == 2


def test_cli_under_the_name_users_are_given(tmp_path):
    """`python -m vramc.synth` (what the shipped demo profile, README and Makefile say) still runs
    the generator, now vramc.dev.synth, with its arguments and exit status."""
    path = tmp_path / "tiny.gguf"
    subprocess.run([sys.executable, "-m", "vramc.synth", "tiny", str(path)], check=True, capture_output=True)
    assert path.read_bytes()[:4] == b"GGUF"
    bad = subprocess.run(
        [sys.executable, "-m", "vramc.synth", "write", "nope", "Q8_0", str(path)], capture_output=True, text=True
    )
    assert bad.returncode == 2


def test_import_is_cheap():
    code = "import sys, vramc.dev.synth; print('numpy' in sys.modules, 'gguf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- the oracle ------------------------------------------------------------------------------


@pytest.mark.oracle
def test_oracle_loads_sparse_files_and_agrees_on_model_bytes():
    oracle = pytest.importorskip("vramc.dev.oracle")
    if oracle.find_binaries() is None:
        pytest.skip("oracle binaries not built (scripts/build-llama.sh)")
    from vramc.dev.synth.validate import validate

    checks = validate(["llama-3.1-8b-instruct", "gemma-2-9b-it", "llama-3.3-nemotron-super-49b-v1.5"], ("Q4_K_M",))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
