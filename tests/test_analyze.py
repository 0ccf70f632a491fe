"""`vramc analyze`: the report's figures, its text and JSON forms, --write, fingerprints, the CLI."""

from __future__ import annotations

import json

import pytest
import yaml
from gguf import GGUFReader
from typer.testing import CliRunner

from conftest import llama_keys, llama_tensors, write_gguf
from vramc.cli.analyze import cli_analyze
from vramc.cli.commands import app
from vramc.load.profiles import project_root
from vramc.load.schema import Model
from vramc.model.analyze import build_report, default_name, fingerprint_status, render_text
from vramc.model.gguf import read_gguf
from vramc.model.modelmeta import ModelMeta


def _bytes_by_name(path) -> dict[str, int]:
    """Tensor sizes as gguf-py computes them: an independent check of ours."""
    return {t.name: int(t.n_bytes) for t in GGUFReader(path).tensors}


def _report(path) -> dict:
    return build_report(read_gguf(path), path)


def _rows(text: str) -> dict[str, str]:
    """The `label  value` rows of a text report (labels are padded to a common width)."""
    rows = {}
    for line in text.splitlines():
        label, sep, value = line.strip().partition("  ")
        if line.startswith("  ") and sep:
            rows[label] = value.strip()
    return rows


def test_weights_add_up(tiny_llama):
    path = tiny_llama(n_layer=3)
    sizes = _bytes_by_name(path)
    r = _report(path)
    for layer in r["blocks"]["layers"]:
        prefix = f"blk.{layer['index']}."
        assert layer["bytes"] == sum(n for name, n in sizes.items() if name.startswith(prefix))
        assert layer["types"] == {"f32": 2, "q8_0": 7}
    block = r["blocks"]["layers"][0]["bytes"]
    assert (r["blocks"]["min_bytes"], r["blocks"]["mean_bytes"], r["blocks"]["max_bytes"]) == (block,) * 3
    assert r["input"] == {"bytes": sizes["token_embd.weight"], "tensors": ["token_embd.weight"]}
    output = sizes["output_norm.weight"] + sizes["output.weight"]
    assert r["output"] == {
        "bytes": output,
        "tensors": ["output_norm.weight", "output.weight"],
        "tied_embeddings": False,
        "device_bytes": output,
    }
    assert r["total_bytes"] == sum(sizes.values())
    assert r["types"] == {
        "q8_0": {
            "tensors": 23,
            "bytes": sum(
                n
                for k, n in sizes.items()
                if k.endswith(
                    (
                        "attn_q.weight",
                        "attn_k.weight",
                        "attn_v.weight",
                        "attn_output.weight",
                        "ffn_gate.weight",
                        "ffn_up.weight",
                        "ffn_down.weight",
                        "token_embd.weight",
                        "output.weight",
                    )
                )
            ),
        },
        "f32": {"tensors": 7, "bytes": 7 * 64 * 4},
    }


def test_tied_embeddings_count_token_embd_on_the_output_device(tiny_llama):
    path = tiny_llama(tied=True)
    sizes = _bytes_by_name(path)
    r = _report(path)
    assert r["output"]["tied_embeddings"] is True
    assert r["output"]["device_bytes"] == sizes["output_norm.weight"] + sizes["token_embd.weight"]
    assert _rows(render_text(r))["tied embeddings"].startswith(
        "yes: token_embd.weight is copied onto the output device"
    )


def test_attention_dimensions(tiny_llama):
    def keys(w):
        w.add_head_count_kv([2, 2, 0, 1])
        w.add_key_length(32)
        w.add_value_length(24)

    r = _report(tiny_llama(n_layer=4, setup=keys))
    a = r["attention"]
    assert a["head_count"] == [4, 4, 4, 4]
    assert a["head_count_kv"] == [2, 2, 0, 1]
    assert (a["key_length"], a["value_length"]) == (32, 24)
    assert a["gqa_ratios"] == [2, 4]
    rows = _rows(render_text(r))
    assert rows["KV heads"] == "2 on layers 0-1; 0 on layer 2; 1 on layer 3"
    assert rows["key / value length"] == "32 / 24"
    assert rows["GQA ratio"] == "2, 4"


def test_head_length_defaults_to_embedding_over_heads(tiny_llama):
    a = _report(tiny_llama())["attention"]
    assert (a["key_length"], a["value_length"], a["gqa_ratios"]) == (16, 16, [2])


def _model(tmp_path, arch: str, n_layer: int, setup, name="m.gguf"):
    def keys(w):
        w.add_block_count(n_layer)
        w.add_embedding_length(64)
        setup(w)

    tensors = [(f"blk.{i}.attn_norm.weight", "f32", (64,)) for i in range(n_layer)]
    return write_gguf(tmp_path / name, tensors, keys, arch=arch)[0]


@pytest.mark.parametrize(
    ("arch", "pattern", "swa", "text"),
    [
        ("gemma3", 6, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10], "on layers 0-4,6-10 (pattern 6)"),
        ("cohere2moe", 4, [1, 2, 3, 5, 6, 7, 9, 10, 11], "on layers 1-3,5-7,9-11 (pattern 4)"),
        ("gemma3n", [True, False] * 6, [0, 2, 4, 6, 8, 10], "on layers 0,2,4,6,8,10"),
        ("gemma2", None, None, "on the layers llama.cpp picks for this architecture (no pattern in the GGUF)"),
    ],
)
def test_sliding_window_layers(tmp_path, arch, pattern, swa, text):
    def keys(w):
        w.add_head_count(4)
        w.add_sliding_window(512)
        if pattern is not None:
            w.add_sliding_window_pattern(pattern)

    r = _report(_model(tmp_path, arch, 12, keys))
    assert r["attention"]["sliding_window"] == 512
    assert r["attention"]["swa_layers"] == swa
    assert _rows(render_text(r))["sliding window"] == f"512 tokens {text}"


def test_experts_mla_and_recurrent_state(tmp_path):
    def moe(w):
        w.add_head_count(16)
        w.add_head_count_kv(1)
        w.add_expert_count(64)
        w.add_expert_used_count(6)
        w.add_key_length_mla(192)
        w.add_value_length_mla(128)
        w.add_kv_lora_rank(512)

    r = _report(_model(tmp_path, "deepseek2", 2, moe))
    assert r["experts"] == {"expert_count": 64, "expert_used_count": 6}
    assert (r["attention"]["key_length_mla"], r["attention"]["kv_lora_rank"]) == (192, 512)
    text = render_text(r)
    assert "\nexperts\n  expert count " in text
    rows = _rows(text)
    assert (rows["expert count"], rows["expert used count"]) == ("64", "6")
    assert (rows["MLA key length"], rows["MLA value length"], rows["KV LoRA rank"]) == ("192", "128", "512")

    def ssm(w):
        w.add_ssm_conv_kernel(4)
        w.add_ssm_inner_size(128)
        w.add_ssm_state_size(16)

    r = _report(_model(tmp_path, "mamba", 2, ssm, name="mamba.gguf"))
    assert r["recurrent"] == {"ssm.conv_kernel": 4, "ssm.inner_size": 128, "ssm.state_size": 16}
    assert r["attention"]["head_count"] is None
    text = render_text(r)
    assert "\nrecurrent state\n  ssm.conv_kernel " in text
    assert _rows(text)["ssm.state_size"] == "16"
    assert "\nattention\n" not in text


def test_odd_headers_still_give_a_report(tmp_path):
    def keys(w):
        w.add_block_count(2)
        w.add_string("llama.embedding_length", "64")  # wrong type: llama.cpp would refuse it
        w.add_float32("llama.attention.head_count", 4.0)
        w.add_string("llama.attention.sliding_window", "wide")

    tensors = [("blk.0.attn_norm.weight", "f32", (64,)), ("blk.4000000000.x.weight", "f32", (64,))]
    r = _report(write_gguf(tmp_path / "odd.gguf", tensors, keys)[0])
    assert [layer["bytes"] for layer in r["blocks"]["layers"]] == [256, 0]
    assert r["other"] == {"bytes": 256, "tensors": ["blk.4000000000.x.weight"]}
    assert r["attention"]["head_count"] is None
    rows = _rows(render_text(r))
    assert rows["embedding length"] == "64"
    assert rows["sliding window"].startswith("wide tokens on the layers llama.cpp picks")


def test_text_output(tiny_llama, capsys):
    path = tiny_llama()
    sizes = _bytes_by_name(path)
    assert cli_analyze(path, layers=True, fmt="text", write=None, name=None) == 0
    out = capsys.readouterr().out
    block0 = sum(n for k, n in sizes.items() if k.startswith("blk.0."))
    total = sum(sizes.values())
    for line in [
        f"{path}\n",
        "  architecture        llama\n",
        "  name                Tiny Llama\n",
        "  file type           Q8_0\n",
        f"  file size           {path.stat().st_size / 1024:.2f} KiB ({path.stat().st_size:,} bytes)\n",
        "  blocks              2\n",
        "  trained context     4,096\n",
        "  embedding length    64\n",
        "  vocabulary          260 tokens (gpt2)\n",
        f"  input               {sizes['token_embd.weight'] / 1024:.2f} KiB  token_embd.weight (host memory)\n",
        "  tied embeddings     no\n",
        "  q8_0          16",
        "  f32            5",
        f"      0  {block0:>14,}  {block0 / 2**20:>10.2f}  f32 x2, q8_0 x7\n",
        f"\ntotal: {total / 1024:.2f} KiB ({total:,} bytes) in 21 tensors\n",
    ]:
        assert line in out
    assert cli_analyze(path, layers=False, fmt="text", write=None, name=None) == 0
    short = capsys.readouterr().out
    assert "f32 x2, q8_0 x7" not in short  # the per-block table is --layers only
    assert cli_analyze(path, layers=False, fmt="text", write=None, name=None) == 0
    assert capsys.readouterr().out == short  # deterministic


def test_json_output(tiny_llama, capsys):
    path = tiny_llama()
    assert cli_analyze(path, layers=False, fmt="json", write=None, name=None) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert out == json.dumps(report, indent=2, sort_keys=True) + "\n"
    assert report == json.loads(json.dumps(_report(path)))
    assert report["report_version"] == 1
    assert (report["architecture"], report["file_type"], report["vocab_size"]) == ("llama", "Q8_0", 260)
    assert len(report["blocks"]["layers"]) == 2


# --- --write and fingerprints -------------------------------------------------------------------
def _load_profile(path) -> Model:
    return Model.model_validate(yaml.safe_load(path.read_text()))


def test_write_profile_round_trip(tmp_path, tiny_llama, capsys):
    def keys(w):
        w.add_sliding_window(128)
        w.add_sliding_window_pattern([True, False])
        w.add_head_count_kv([2, 1])

    path = tiny_llama("Tiny-Q8_0.gguf", setup=keys)
    dest = tmp_path / "profiles" / "models" / "tiny.yaml"
    assert cli_analyze(path, layers=False, fmt="json", write=dest, name=None) == 0
    json.loads(capsys.readouterr().out)  # stdout stays pure JSON
    text = dest.read_text()
    assert text.startswith(
        f"# Locked by `vramc analyze {path} --write {dest}`; regenerate with the "
        "same command.\nkind: model\nname: Tiny-Q8_0\n"
    )
    assert "\nsource: vramc analyze of Tiny-Q8_0.gguf\n" in text
    assert "\n    blk.{0-1}.attn_q.weight: [q8_0, 64, 64]\n" in text
    assert "\n    attention.sliding_window_pattern: [true, false]\n" in text
    assert "\n  file: {size: " in text
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left behind

    model = _load_profile(dest)
    # relative to the project (the folder holding profiles/), as the loader resolves it
    assert (model.kind, model.name, model.gguf) == ("model", "Tiny-Q8_0", "Tiny-Q8_0.gguf")
    assert (project_root(dest) / model.gguf).resolve() == path.resolve()
    meta, locked = read_gguf(path), ModelMeta.from_lock(model.lock)
    assert sorted(locked.tensors, key=lambda t: t.name) == sorted(meta.tensors, key=lambda t: t.name)
    assert locked.hparams == meta.hparams
    assert (locked.architecture, locked.name, locked.file_type, locked.vocab_size) == (
        meta.architecture,
        meta.name,
        meta.file_type,
        meta.vocab_size,
    )
    assert (locked.file_size, locked.header_sha256, locked.splits) == (meta.file_size, meta.header_sha256, 1)
    assert fingerprint_status(path, model.lock) is None


def test_write_stores_a_path_relative_to_the_project(tmp_path, tiny_llama):
    """`analyze --write` once stored the path as typed (absolute, or relative to the shell's
    folder); now it is relative to the folder the written profile resolves model paths from."""
    path = tiny_llama("Tiny-Q8_0.gguf")
    for dest, want in (
        (tmp_path / "proj" / "profiles" / "models" / "m.yaml", "../Tiny-Q8_0.gguf"),
        (tmp_path / "proj" / "profiles" / "m.yaml", "../Tiny-Q8_0.gguf"),
        (tmp_path / "m.yaml", "Tiny-Q8_0.gguf"),
    ):
        assert cli_analyze(str(path), layers=False, fmt="json", write=dest, name=None) == 0
        gguf = _load_profile(dest).gguf
        assert gguf == want
        assert (project_root(dest) / gguf).resolve() == path.resolve()


def test_write_with_a_name(tmp_path, tiny_llama):
    dest = tmp_path / "m.yaml"
    assert cli_analyze(tiny_llama(), layers=False, fmt="text", write=dest, name="llama-tiny") == 0
    assert _load_profile(dest).name == "llama-tiny"
    assert "--write " + str(dest) + " --name llama-tiny`" in dest.read_text()


def test_default_profile_names():
    assert default_name("models/Llama-3.1-8B-Q8_0.gguf") == "Llama-3.1-8B-Q8_0"
    assert default_name("Qwen3 235B-00001-of-00003.gguf") == "Qwen3-235B"
    assert default_name("__.gguf") == "model"


def _lock(tmp_path, gguf):
    dest = tmp_path / "lock.yaml"
    assert cli_analyze(gguf, layers=False, fmt="json", write=dest, name=None) == 0
    return _load_profile(dest).lock


def test_fingerprint_notices_changes(tmp_path, tiny_llama, capsys):
    path = tiny_llama()
    lock = _lock(tmp_path, path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"Tiny Llama", b"Tiny Llamb"))  # same size, new header
    assert fingerprint_status(path, lock) == "the header changed (its sha256 differs from the lock)"
    path.write_bytes(data + bytes(32))
    assert fingerprint_status(path, lock) == f"size is {len(data) + 32:,} bytes, the lock says {len(data):,}"
    path.unlink()
    assert fingerprint_status(path, lock) == f"{path}: No such file or directory"
    assert fingerprint_status(path, lock.model_copy(update={"file": None})) == ("the lock has no file fingerprint")


def test_fingerprint_of_a_split_model(tmp_path, capsys):
    parts = write_gguf(tmp_path / "big.gguf", llama_tensors(), llama_keys, split_max_tensors=8)
    lock = _lock(tmp_path, parts[0])
    assert (lock.file.splits, lock.file.size) == (3, sum(p.stat().st_size for p in parts))
    assert fingerprint_status(parts[0], lock) is None
    parts[2].unlink()
    assert fingerprint_status(parts[0], lock) == f"{parts[2]}: No such file or directory"


# --- the command line ------------------------------------------------------------------------
runner = CliRunner()


def test_cli_reports(tiny_llama):
    path = tiny_llama()
    result = runner.invoke(app, ["analyze", str(path), "--layers"])
    assert result.exit_code == 0, result.output
    assert "  architecture        llama\n" in result.stdout
    result = runner.invoke(app, ["analyze", str(path), "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["block_count"] == 2


def test_cli_bad_file_is_an_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(20))
    result = runner.invoke(app, ["analyze", str(bad)])
    assert result.exit_code == 1
    assert result.stderr == f"{bad}: GGUF version 0 does not exist (at byte 4)\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["analyze", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 1
    assert result.stderr == f"{tmp_path / 'missing.gguf'}: cannot read: No such file or directory\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "--format must be text or json, not 'xml'"),
        (["--name", "x"], "--name names the profile that --write writes; give --write too"),
        (["--name", "a b", "--write", "x.yaml"], "--name 'a b': use letters, digits"),
    ],
)
def test_cli_usage_errors(tiny_llama, args, message):
    result = runner.invoke(app, ["analyze", str(tiny_llama()), *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_cli_write_failure(tmp_path, tiny_llama):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["analyze", str(tiny_llama()), "--write", str(blocker / "m.yaml")])
    assert result.exit_code == 1
    assert f"{blocker / 'm.yaml'}: cannot write:" in result.stderr


def test_analyze_and_the_memory_model_agree_on_sliding_window_layers():
    """One pattern rule for both: `vramc analyze` once put smallthinker's full-attention layer first
    in each group of 4 (as llama.cpp does) while the memory model put it last."""
    from vramc.memory.llama_hparams import _swa_layers as memory_swa
    from vramc.model.analyze import _swa_layers as analyze_swa
    from vramc.model.modelmeta import ModelMeta

    for arch, pattern, expected in (("smallthinker", 4, [1, 2, 3, 5, 6, 7]), ("gemma3", 4, [0, 1, 2, 4, 5, 6])):
        meta = ModelMeta(
            arch,
            {"block_count": 8, "attention.sliding_window": 4096, "attention.sliding_window_pattern": pattern},
            32000,
            [],
        )
        _, _, flags = memory_swa(meta, arch, 8, 8)
        assert [i for i, swa in enumerate(flags) if swa] == expected
        assert analyze_swa(pattern, 8, arch) == expected
