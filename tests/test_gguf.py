"""vramc.model.gguf against gguf-py, on generated and on hand-crafted corrupt files."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import time

import pytest
from gguf import GGUFReader, GGUFValueType

from conftest import llama_keys, llama_tensors, write_gguf
from vramc.model.gguf import ARRAY_LIMIT, GGUFError, SkippedArray, read_gguf, read_header, split_paths

V = GGUFValueType


# --- agreement with gguf-py ----------------------------------------------------------------
SCALARS = [  # (type, value)
    (V.UINT8, 200),
    (V.INT8, -5),
    (V.UINT16, 60000),
    (V.INT16, -300),
    (V.UINT32, 4_000_000_000),
    (V.INT32, -2_000_000_000),
    (V.FLOAT32, 0.1),
    (V.BOOL, True),
    (V.STRING, "héllo wörld"),
    (V.UINT64, 2**40 + 7),
    (V.INT64, -(2**40)),
    (V.FLOAT64, 0.1),
]


def every_value_type(w):
    for vtype, value in SCALARS:
        w.add_key_value(f"test.{vtype.name.lower()}", value, vtype)
        if vtype != V.STRING:
            w.add_key_value(f"test.arr_{vtype.name.lower()}", [value] * 3, V.ARRAY, sub_type=vtype)
    w.add_array("test.strings", ["a", "", "bc" * 200, "ü"])
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    w.add_array("test.nested_strings", [["x", "yz"], ["w"]])
    w.add_head_count_kv([2, 2, 0, 2])
    w.add_sliding_window_pattern([True, False, True, False])


def _flatten(value):
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


def test_every_field_matches_gguf_reader(tmp_path):
    path = write_gguf(
        tmp_path / "all.gguf", llama_tensors(n_layer=4), lambda w: (llama_keys(w, n_layer=4), every_value_type(w))
    )[0]
    ours = read_header(path, array_limit=None)
    theirs = GGUFReader(path)
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.kv) == list(fields)
    for key, field in fields.items():
        mine, expected = ours.kv[key], field.contents()
        if field.types[0] == V.ARRAY:
            mine = _flatten(mine)
        if field.types[-1] == V.FLOAT32:  # we give the shortest decimal of the same f32
            pack = struct.Struct("<f").pack
            assert [pack(x) for x in _flatten(mine)] == [pack(x) for x in _flatten(expected)], key
        else:
            assert mine == expected, key
    assert ours.data_offset == theirs.data_offset
    assert ours.file_size == path.stat().st_size
    assert [(t.name, t.type, list(t.shape), t.nbytes) for t in ours.tensors] == [
        (t.name, t.tensor_type.name.lower(), t.shape.tolist(), t.n_bytes) for t in theirs.tensors
    ]


def test_header_hash_covers_bytes_before_the_data(tmp_path, tiny_llama):
    path = tiny_llama()
    header = read_header(path)
    assert header.data_offset == GGUFReader(path).data_offset
    assert header.header_sha256 == hashlib.sha256(path.read_bytes()[: header.data_offset]).hexdigest()


def test_custom_alignment(tmp_path, tiny_llama):
    path = tiny_llama(setup=lambda w: w.add_custom_alignment(64))
    header = read_header(path)
    assert header.alignment == 64
    assert header.data_offset % 64 == 0
    assert header.data_offset == GGUFReader(path).data_offset


# --- the model ------------------------------------------------------------------------------
def test_model_meta(tiny_llama):
    def keys(w):
        w.add_array("llama.attention.list", [3, 4])
        w.add_array("llama.strings", ["a"])
        w.add_tokenizer_pre("llama-bpe")

    path = tiny_llama(ftype=15, setup=keys)
    meta = read_gguf(path)
    assert meta.architecture == "llama"
    assert meta.name == "Tiny Llama"
    assert meta.file_type == "Q4_K_M"
    assert meta.vocab_size == 260
    assert meta.hparams["block_count"] == 2
    assert meta.hparams["attention.list"] == [3, 4]  # small numeric arrays are kept
    assert "strings" not in meta.hparams  # string arrays are not hyper-parameters
    assert meta.hparams["attention.layer_norm_rms_epsilon"] == 1e-05  # not 9.99999974e-06
    assert meta.extra == {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe"}
    assert meta.file_size == path.stat().st_size
    assert meta.splits == 1
    assert meta.header_sha256 == read_header(path).header_sha256
    assert len(meta.tensors) == 21
    assert meta.tensor("blk.1.attn_k.weight").shape == (64, 32)
    assert meta.total_bytes == sum(t.n_bytes for t in GGUFReader(path).tensors)


@pytest.mark.parametrize(
    ("ftype", "name"), [(0, "F32"), (7, "Q8_0"), (15, "Q4_K_M"), (38, "MXFP4_MOE"), (99, "unknown (99)")]
)
def test_file_type_names(tiny_llama, ftype, name):
    assert read_gguf(tiny_llama(ftype=ftype)).file_type == name


def test_vocab_size_without_a_token_list(tmp_path):
    def keys(w):
        w.add_block_count(1)
        w.add_vocab_size(1000)

    path = write_gguf(tmp_path / "novocab.gguf", [("token_embd.weight", "f16", (8, 1000))], keys)[0]
    assert read_gguf(path).vocab_size == 1000


def test_large_arrays_are_skipped_not_read(tiny_llama):
    # lengths around the fast path's limits: empty, 255, 256 and long strings; counts that are
    # and are not a multiple of its chunk
    tokens = [("x" * (i % 300 if i % 500 else 1000)) for i in range(3000)]

    def keys(w):
        w.add_array("test.big", tokens)
        w.add_array("test.chunked", ["ab"] * 2048)
        w.add_uint32("test.after", 7)

    path = tiny_llama(setup=keys, n_vocab=5000)
    header = read_header(path)
    assert header.kv["tokenizer.ggml.tokens"] == SkippedArray("str", 5000)
    assert header.kv["tokenizer.ggml.token_type"] == SkippedArray("i32", 5000)
    assert header.kv["test.big"] == SkippedArray("str", 3000)
    assert header.kv["test.chunked"] == SkippedArray("str", 2048)
    assert header.kv["test.after"] == 7
    assert read_header(path, array_limit=None).kv["test.big"] == tokens
    assert read_gguf(path).vocab_size == 5000


def test_an_8b_vocabulary_reads_fast(tmp_path):
    # Llama 3.1 8B: 128,256 tokens and 280,147 merges; packed by hand (gguf-py takes seconds)
    def strings(key, n, make):
        body = b"".join(_str(make(i)) for i in range(n))
        return _str(key) + struct.pack("<IIQ", V.ARRAY, V.STRING, n) + body

    kvs = [
        _kv("general.architecture", V.STRING, _str("llama")),
        strings("tokenizer.ggml.tokens", 128_256, lambda i: f"Ġtok{i}"),
        strings("tokenizer.ggml.merges", 280_147, lambda i: f"Ġt {i}"),
        _kv("llama.block_count", V.UINT32, struct.pack("<I", 32)),
    ]
    path = tmp_path / "vocab.gguf"
    path.write_bytes(_gguf(kvs))
    start = time.perf_counter()
    meta = read_gguf(path)
    assert time.perf_counter() - start < 0.5
    assert meta.vocab_size == 128_256
    assert meta.hparams == {"block_count": 32}


def test_reading_a_header_imports_neither_numpy_nor_gguf():
    code = "import sys, vramc.model.gguf; print(sorted({'numpy', 'gguf'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- split models ----------------------------------------------------------------------------
@pytest.fixture
def split_model(tmp_path):
    return write_gguf(tmp_path / "tiny.gguf", llama_tensors(), llama_keys, split_max_tensors=8)


def test_split_model_from_any_part(tmp_path, split_model):
    whole = read_gguf(write_gguf(tmp_path / "whole.gguf", llama_tensors(), llama_keys)[0])
    assert [p.name for p in split_model] == [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for part in split_model:
        meta = read_gguf(part)
        assert meta.splits == 3
        assert meta.tensors == whole.tensors
        assert meta.file_size == sum(p.stat().st_size for p in split_model)
        assert (meta.architecture, meta.hparams, meta.vocab_size) == (
            whole.architecture,
            whole.hparams,
            whole.vocab_size,
        )
    assert split_paths(split_model[1], 3) == split_model


def test_split_model_with_a_missing_part(split_model):
    split_model[1].unlink()
    with pytest.raises(GGUFError, match="part 2 of 3 of tiny-00001-of-00003.gguf is missing") as e:
        read_gguf(split_model[0])
    assert e.value.path == str(split_model[1])


def test_split_parts_out_of_order(split_model):
    a, b = split_model[1], split_model[2]
    a.rename(a.with_suffix(".tmp"))
    b.rename(a)
    a.with_suffix(".tmp").rename(b)
    with pytest.raises(GGUFError, match="says part 2 of 3, but its header says split.no=2"):
        read_gguf(split_model[0])


def test_split_part_renamed(tmp_path, split_model):
    renamed = split_model[0].rename(tmp_path / "model.gguf")
    with pytest.raises(GGUFError, match="split into 3 parts, but the file name does not end"):
        read_gguf(renamed)


# --- corrupt files ----------------------------------------------------------------------------
def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + payload


def _tensor(name: str | bytes, dims, type_id: int = 0, offset: int = 0) -> bytes:
    return (
        _str(name)
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}q", *dims)
        + struct.pack("<IQ", type_id, offset)
    )


def _gguf(kvs=(), tensors=(), *, version=3, n_kv=None, n_tensors=None, data=b"") -> bytes:
    head = struct.pack(
        "<4sIQQ", b"GGUF", version, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    return body + b"\0" * (-len(body) % 32) + data if tensors else body + data


ARCH = _kv("general.architecture", V.STRING, _str("llama"))
U32 = struct.Struct("<I").pack


def _array(etype: int, count: int, payload: bytes = b"") -> bytes:
    return struct.pack("<IQ", etype, count) + payload


def _nested(depth: int) -> bytes:
    return _array(V.ARRAY, 1, _nested(depth - 1)) if depth else _array(V.UINT8, 1, b"\1")


CORRUPT = {
    "empty": (b"", "empty file, not a GGUF model"),
    "magic": (b"GGML" + bytes(20), r'starts with "GGML" \(not a GGUF file: GGUF files start with "GGUF"\)'),
    "short": (b"GG", r'starts with "GG" \(not a GGUF file'),
    "version 1": (_gguf(version=1), "GGUF version 1 is no longer supported"),
    "version 4": (_gguf(version=4), "GGUF version 4 is not supported"),
    "big-endian": (_gguf(version=3 << 24), "a big-endian GGUF"),
    "no counts": (b"GGUF" + U32(3) + b"\1\0", "tensor count needs 8 bytes, but only 2 are left"),
    "absurd tensor count": (
        _gguf(n_tensors=2**62),
        "claims 0 key-value pairs and 4611686018427387904 tensors, which cannot fit in the 0 bytes",
    ),
    "absurd kv count": (_gguf([ARCH], n_kv=2**63), "claims 9223372036854775808 key-value pairs"),
    "key past the end": (
        _gguf([struct.pack("<Q", 2**40) + bytes(20)]),
        "key 0 needs 1099511627776 bytes, but only 20 are left",
    ),
    "non-UTF-8 key": (
        _gguf([_kv(b"general.\xff\xfe", V.UINT8, b"\1")]),
        r'key 0 is not valid UTF-8: "general.\\xff\\xfe"',
    ),
    "empty key": (_gguf([_kv(b"", V.UINT64, bytes(8))]), "key 0 is empty"),
    "duplicate key": (_gguf([ARCH, ARCH]), "duplicate key 'general.architecture'"),
    "unknown type": (_gguf([_kv("a.b", 13, b"\0" * 8)]), "'a.b' has unknown value type 13"),
    "unknown element type": (
        _gguf([_kv("a.b", V.ARRAY, _array(42, 1, b"\0" * 8))]),
        "'a.b' is an array of unknown value type 42",
    ),
    "absurd array": (
        _gguf([_kv("a.b", V.ARRAY, _array(V.UINT32, 2**61))]),
        "'a.b' claims 2305843009213693952 elements of type u32",
    ),
    "absurd string array": (
        _gguf([_kv("a.b", V.ARRAY, _array(V.STRING, 2**60, _str("x")))]),
        "'a.b' claims 1152921504606846976 elements of type str",
    ),
    "string past the end": (
        _gguf([_kv("a.b", V.ARRAY, _array(V.STRING, 2, _str("x") + struct.pack("<Q", 99) + b"y" * 9))]),
        "'a.b' needs 99 bytes, but only 9 are left",
    ),
    "scalar past the end": (_gguf([_kv("a.b", V.UINT64, b"\1\2")]), "'a.b' needs 8 bytes, but only 2"),
    "deep nesting": (_gguf([_kv("a.b", V.ARRAY, _nested(9))]), "'a.b' nests arrays more than 8 deep"),
    "alignment type": (
        _gguf([_kv("general.alignment", V.UINT64, struct.pack("<Q", 32))]),
        "general.alignment must be a u32, not u64",
    ),
    "alignment value": (
        _gguf([_kv("general.alignment", V.UINT32, U32(48))]),
        "general.alignment 48 is not a power of 2",
    ),
    "too many dims": (_gguf([ARCH], [_tensor("t", [1, 1, 1, 1, 1])]), "'t' has 5 dimensions"),
    "negative dim": (_gguf([ARCH], [_tensor("t", [4, -1])]), "'t' has a negative dimension -1"),
    "dims overflow": (_gguf([ARCH], [_tensor("t", [2**40, 2**40])]), "overflows int64 elements"),
    "unknown ggml type": (_gguf([ARCH], [_tensor("t", [32], 99)]), "'t' has unknown ggml type 99"),
    "removed ggml type": (_gguf([ARCH], [_tensor("t", [32], 4)]), "'t' has unknown ggml type 4"),
    "partial block": (
        _gguf([ARCH], [_tensor("t", [33, 2], 8)]),
        "rows of 33 elements are not a whole number of q8_0 blocks",
    ),
    "long name": (_gguf([ARCH], [_tensor("t" * 64, [4])]), "llama.cpp allows at most 63"),
    "non-UTF-8 name": (_gguf([ARCH], [_tensor(b"\xc3(", [4])]), "name of tensor 0 is not valid UTF-8"),
    "duplicate tensor": (
        _gguf([ARCH], [_tensor("t", [4]), _tensor("t", [4], offset=32)], data=bytes(64)),
        "duplicate tensor 't'",
    ),
    "offset gap": (_gguf([ARCH], [_tensor("t", [4], offset=32)], data=bytes(64)), "'t' has data offset 32, expected 0"),
    "data past the end": (
        _gguf([ARCH], [_tensor("t", [1024])], data=bytes(100)),
        "'t' data ends at byte .*, past the end of the file",
    ),
    "table past the end": (_gguf([ARCH], [_tensor("t", [4])])[:-40], "needs 8 bytes, but only"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_file_fails_fast_and_clearly(tmp_path, case):
    data, message = CORRUPT[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(GGUFError, match=message) as e:
        read_gguf(path)
    assert time.perf_counter() - start < 0.5
    assert e.value.path == str(path)


@pytest.mark.parametrize("count", [2, 2048, 5000])  # checked walk; fast path, its tail
def test_skipped_string_array_past_the_end(tmp_path, count):
    strings = _str("x") * (count - 1) + struct.pack("<Q", 99) + b"y" * 9
    path = tmp_path / "bad.gguf"
    path.write_bytes(_gguf([_kv("a.b", V.ARRAY, _array(V.STRING, count, strings))]))
    start = time.perf_counter()
    with pytest.raises(GGUFError, match=f"string {count - 1} of 'a.b' runs past the end") as e:
        read_header(path, array_limit=0)
    assert time.perf_counter() - start < 0.5
    assert e.value.offset == len(_gguf([_kv("a.b", V.ARRAY, _array(V.STRING, count))])) + 9 * (count - 1)


def test_error_names_the_offset(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(_gguf([ARCH, _kv("a.b", 13, b"")]))
    with pytest.raises(GGUFError) as e:
        read_header(path)
    assert e.value.offset == 24 + len(ARCH) + 8 + 3  # the type field of the second key
    assert str(e.value) == f"'a.b' has unknown value type 13 (at byte {e.value.offset})"


def test_missing_architecture(tmp_path):
    path = tmp_path / "noarch.gguf"
    path.write_bytes(_gguf([_kv("a.b", V.UINT8, b"\1")]))
    with pytest.raises(GGUFError, match="no general.architecture key"):
        read_gguf(path)


@pytest.mark.parametrize(
    "payload", [(V.STRING, _str("32")), (V.UINT64, struct.pack("<Q", 2**40)), (V.UINT32, U32(513))]
)
def test_block_count_llama_cpp_would_refuse(tmp_path, payload):
    path = tmp_path / "layers.gguf"
    path.write_bytes(_gguf([ARCH, _kv("llama.block_count", *payload)]))
    with pytest.raises(GGUFError, match="llama.block_count is .*; llama.cpp takes a whole number from 0 to 512"):
        read_gguf(path)


def test_unreadable_paths(tmp_path):
    with pytest.raises(GGUFError, match="cannot read: No such file or directory"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="cannot read: Is a directory"):
        read_gguf(tmp_path)


def test_array_limit_default_keeps_per_layer_arrays(tiny_llama):
    layers = ARRAY_LIMIT  # the longest array that is still read
    path = tiny_llama(setup=lambda w: w.add_array("llama.per_layer", [1] * layers))
    assert read_gguf(path).hparams["per_layer"] == [1] * layers
