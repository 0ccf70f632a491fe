"""`vramc lock --config config.json --quant Q`: the tensor table from config.json alone, checked
against real headers written by vramc.dev.synth for every catalog shape it can derive.

The config.json of each shape is rebuilt from the published `key=value` fields its catalog entry
quotes (shapes.py `source`), not from the shape's own numbers, so a field read wrongly fails."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.dev.synth import CATALOG, write_sparse_gguf
from vramc.dev.synth.from_config import ConfigError, meta_from_config
from vramc.load.schema import Model
from vramc.model.gguf import read_gguf
from vramc.model.modelmeta import ModelMeta

MiB = 2**20
ARCHITECTURES = {
    "llama-3.1-8b-instruct": "LlamaForCausalLM",
    "llama-3.3-70b-instruct": "LlamaForCausalLM",
    "qwen2.5-32b-instruct": "Qwen2ForCausalLM",
    "deepseek-r1-distill-qwen-14b": "Qwen2ForCausalLM",
    "mistral-7b-instruct-v0.3": "MistralForCausalLM",
    "gemma-2-9b-it": "Gemma2ForCausalLM",
    "gemma-3-12b-it": "Gemma3ForConditionalGeneration",
    "mixtral-8x7b-instruct-v0.1": "MixtralForCausalLM",
    "qwen3-30b-a3b": "Qwen3MoeForCausalLM",
    "phi-3-mini-4k-instruct": "Phi3ForCausalLM",
    "deepseek-v2-lite-chat": "DeepseekV2ForCausalLM",
    "glm-4.5-air": "Glm4MoeForCausalLM",
}
# catalog shapes vramc does not derive from config.json (per-layer NAS blocks, Mamba-2 hybrids)
NOT_DERIVED = {
    "llama-3.3-nemotron-super-49b-v1.5": "DeciLMForCausalLM",
    "nvidia-nemotron-nano-9b-v2": "NemotronHForCausalLM",
    "nvidia-nemotron-3-nano-30b-a3b": "NemotronHForCausalLM",
    "granite-4.0-h-small": "GraniteMoeHybridForCausalLM",
}
# published fields a catalog entry quotes in prose rather than as key=value
PROSE = {
    "gemma-3-12b-it": {"rope_scaling": {"rope_type": "linear", "factor": 8.0}},
    "deepseek-v2-lite-chat": {
        "rope_scaling": {
            "type": "yarn",
            "factor": 40.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale_all_dim": 0.707,
            "original_max_position_embeddings": 4096,
        }
    },
}


def _value(text: str):
    text = text.rstrip(",;.")
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def config_of(name: str) -> dict:
    """config.json from the catalog entry's quoted fields."""
    cfg: dict = {"architectures": [ARCHITECTURES[name]]}
    for key, value in re.findall(r"\b([a-z_][a-z0-9_.]*)=([^\s)]+)", CATALOG[name].source):
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node.setdefault(leaf, _value(value))
    cfg.update(PROSE.get(name, {}))
    if name == "deepseek-v2-lite-chat":  # the yarn fields are quoted beside rope_scaling
        for k in ("factor", "beta_fast", "beta_slow", "mscale_all_dim"):
            cfg.pop(k, None)
    return cfg


@pytest.fixture(scope="module")
def headers(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock")
    cache = {}

    def header(name: str, quant: str) -> ModelMeta:
        if (name, quant) not in cache:
            path = write_sparse_gguf(root / f"{name}-{quant}.gguf", CATALOG[name], quant)
            cache[name, quant] = read_gguf(path)
            path.unlink()
        return cache[name, quant]

    return header


def _by_name(meta: ModelMeta) -> dict:
    return {t.name: (t.type, tuple(t.shape), t.nbytes) for t in meta.tensors}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_derivable_shape_matches_the_real_header(name, headers):
    real = headers(name, "Q4_K_M")
    derived = meta_from_config(config_of(name), "Q4_K_M")
    assert derived.architecture == real.architecture
    assert _by_name(derived) == _by_name(real)  # every tensor: name, ggml type, shape
    assert abs(derived.total_bytes - real.total_bytes) < MiB
    for key in (
        "block_count",
        "embedding_length",
        "attention.head_count_kv",
        "context_length",
    ):
        assert derived.hparams.get(key) == real.hparams.get(key), key


@pytest.mark.parametrize("quant", ["Q8_0", "Q6_K", "Q5_K_M", "Q3_K_M", "IQ4_XS", "Q2_K", "BF16"])
def test_quant_mixes(quant, headers):
    for name in ("llama-3.1-8b-instruct", "qwen3-30b-a3b"):
        assert _by_name(meta_from_config(config_of(name), quant)) == _by_name(headers(name, quant))


@pytest.mark.parametrize("name", sorted(NOT_DERIVED))
def test_shapes_it_does_not_derive_are_refused_clearly(name):
    with pytest.raises(ConfigError, match="not one vramc derives from config.json.*vramc analyze"):
        meta_from_config({"architectures": [NOT_DERIVED[name]]}, "Q4_K_M")


@pytest.mark.parametrize(
    "cfg, message",
    [
        ([], "not a JSON object"),
        ({"architectures": "LlamaForCausalLM"}, "architecture None"),
        ({"architectures": ["LlamaForCausalLM"]}, "no num_attention_heads"),
        (
            {"architectures": ["LlamaForCausalLM"], "num_attention_heads": -1},
            "not a positive",
        ),
        (
            {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 10**12},
            "far beyond",
        ),
        (
            {"architectures": ["LlamaForCausalLM"], "num_attention_heads": True},
            "not a positive",
        ),
    ],
)
def test_hostile_configs(cfg, message):
    with pytest.raises(ConfigError, match=message):
        meta_from_config(cfg, "Q4_K_M")


def test_unknown_quant():
    with pytest.raises(ConfigError, match="'Q9_X' is not a llama-quantize file type"):
        meta_from_config(config_of("llama-3.1-8b-instruct"), "q9_x")


runner = CliRunner()


def test_lock_command_writes_a_profile_that_plans(tmp_path, monkeypatch, headers):
    project = tmp_path / "project"
    (project / "profiles" / "models").mkdir(parents=True)
    cfg = project / "Llama-3.1-8B-Instruct" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(config_of("llama-3.1-8b-instruct")))
    dest = project / "profiles" / "models" / "llama8b.yaml"
    res = runner.invoke(app, ["lock", "--config", str(cfg), "--quant", "Q4_K_M", "--write", str(dest)])
    assert res.exit_code == 0, res.output
    model = Model.model_validate(yaml.safe_load(dest.read_text()))
    assert model.gguf is None and "llama-quantize Q4_K_M" in model.source
    assert _by_name(ModelMeta.from_lock(model.lock)) == _by_name(headers("llama-3.1-8b-instruct", "Q4_K_M"))
    (project / "profiles" / "d.yaml").write_text(
        "name: d\nhardware:\n  gpus:\n    - {name: RTX 4090, vram: 24GiB}\nmodel: llama8b\n"
        "engine: llama-server\nsettings:\n  ctx: 8192\n"
    )
    monkeypatch.chdir(project)
    res = runner.invoke(app, ["plan", "profiles/d.yaml", "--format", "json"])
    assert res.exit_code == 0, res.output
    [dep] = json.loads(res.output)["deployments"]
    assert dep["verdict"] == "fits"


@pytest.mark.parametrize(
    "name_or_path,where,expected",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "here", "Llama-3.1-8B-Instruct-Q4_K_M"),
        ("/home/me/models/Llama 3.1 8B/", "path/to", "Llama-3.1-8B-Q4_K_M"),
        (None, "here", "project-Q4_K_M"),  # a bare config.json: the current folder's name
        (None, "path/to", "to-Q4_K_M"),
        ("", "here", "project-Q4_K_M"),
        (["not", "a", "name"], "here", "project-Q4_K_M"),
        ("///", "here", "project-Q4_K_M"),
        ("x" * 5000, "here", "x" * 128 + "-Q4_K_M"),
    ],
)
def test_lock_names_the_model_not_the_quant(tmp_path, monkeypatch, name_or_path, where, expected):
    """`vramc lock --config config.json --quant Q4_K_M` named the model `Q4_K_M` (the folder of a
    bare config.json has no name), and ignored the config's own `_name_or_path`."""
    project = tmp_path / "project"
    folder = project if where == "here" else project / where
    folder.mkdir(parents=True)
    cfg = config_of("llama-3.1-8b-instruct")
    if name_or_path is not None:
        cfg["_name_or_path"] = name_or_path
    (folder / "config.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(project)
    given = "config.json" if where == "here" else f"{where}/config.json"
    res = runner.invoke(app, ["lock", "--config", given, "--quant", "q4_k_m", "--write", "m.yaml"])
    assert res.exit_code == 0, res.output
    model = Model.model_validate(yaml.safe_load((project / "m.yaml").read_text()))
    assert model.name == expected


@pytest.mark.parametrize("content", ["{", "[]", '{"architectures": ["FooForCausalLM"]}', "x" * (5 << 20)])
def test_lock_command_bad_config_is_exit_1(tmp_path, content):
    cfg = tmp_path / "config.json"
    cfg.write_text(content)
    res = runner.invoke(app, ["lock", "--config", str(cfg), "--quant", "Q4_K_M"])
    assert res.exit_code == 1, res.output
    assert "vramc lock:" in res.output and "Traceback" not in res.output


LLAMA_CONFIG = (
    "{architecture: LlamaForCausalLM, num_hidden_layers: 32, hidden_size: 4096, "
    "num_attention_heads: 32, num_key_value_heads: 8, intermediate_size: 14336, "
    "vocab_size: 128256, max_position_embeddings: 131072}"
)


def _plan(tmp_path, monkeypatch, model: str) -> tuple[int, str]:
    (tmp_path / "profiles").mkdir(exist_ok=True)
    (tmp_path / "profiles" / "d.yaml").write_text(
        f"name: d\nhardware: {{gpus: [{{name: RTX 4090, vram: 24GiB}}]}}\nmodel:\n{model}"
        "engine: llama-server\nsettings: {ctx: 8192, gpu_layers: 33}\n"
    )
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["plan", "profiles/d.yaml", "--format", "json"])
    return res.exit_code, res.output


def test_a_profile_config_with_a_quant_plans_as_the_real_file(tmp_path, monkeypatch, headers):
    """`config:` + `quant:` in the model profile: planned as the GGUF would be (no file, no lock)."""
    code, out = _plan(tmp_path, monkeypatch, f"  config: {LLAMA_CONFIG}\n  quant: Q4_K_M\n")
    assert code == 0, out
    [derived] = json.loads(out)["deployments"]
    # the same deployment on the synth-written file (rope_freqs is its only extra tensor: 256 B)
    path = write_sparse_gguf(tmp_path / "real.gguf", CATALOG["llama-3.1-8b-instruct"], "Q4_K_M")
    code, out = _plan(tmp_path, monkeypatch, f"  gguf: {path}\n")
    assert code == 0, out
    [real] = json.loads(out)["deployments"]
    for a, b in zip(derived["devices"], real["devices"]):
        assert abs(a["weights_bytes"] - b["weights_bytes"]) < MiB
    assert derived["verdict"] == real["verdict"] == "fits"


@pytest.mark.parametrize(
    "model, message",
    [
        (
            f"  config: {LLAMA_CONFIG}\n  quant: Q4_K_X\n",
            "'Q4_K_X' is not a llama-quantize file type",
        ),
        (
            (
                "  config: {architecture: MixtralForCausalLM, num_hidden_layers: 32, hidden_size: 4096,"
                " num_attention_heads: 32, intermediate_size: 14336, vocab_size: 32000,"
                " max_position_embeddings: 32768}\n  quant: Q4_K_M\n"
            ),
            "no num_local_experts",
        ),
        (
            (
                "  config: {num_hidden_layers: 32, hidden_size: 4096, num_attention_heads: 32,"
                " vocab_size: 32000, max_position_embeddings: 32768}\n  quant: Q4_K_M\n"
            ),
            "architecture None",
        ),
    ],
)
def test_a_profile_config_that_cannot_be_derived_is_vr206(tmp_path, monkeypatch, model, message):
    (tmp_path / "profiles").mkdir(exist_ok=True)
    (tmp_path / "profiles" / "d.yaml").write_text(
        f"name: d\nhardware: {{gpus: [{{name: RTX 4090, vram: 24GiB}}]}}\nmodel:\n{model}engine: llama-server\n"
    )
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["check", "profiles/d.yaml"])
    assert res.exit_code == 1 and "VR206" in res.output and message in res.output, res.output


HOSTILE = [
    {
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": 2,
        "hidden_size": 8,
        "num_attention_heads": 16,
        "intermediate_size": 8,
        "vocab_size": 8,
        "max_position_embeddings": 8,
    },
    {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {"num_hidden_layers": 1},
    },
    {
        "architectures": ["DeepseekV2ForCausalLM"],
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 8,
        "max_position_embeddings": 8,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 8,
        "rope_scaling": {"factor": "forty"},
    },
    {
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "vocab_size": 8,
        "max_position_embeddings": 8,
        "rope_theta": "1e4",
        "head_dim": 0,
    },
    {
        "architectures": ["Phi3ForCausalLM"],
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "vocab_size": 8,
        "max_position_embeddings": 8,
        "sliding_window": None,
        "original_max_position_embeddings": -1,
    },
]


@pytest.mark.parametrize("cfg", HOSTILE + ["[" * 100000, "dir", "fifo"])
def test_lock_hostile_inputs_through_the_entry_point(tmp_path, cfg):
    """Exit 1 with `vramc lock: ...`, never 3 (an internal error), never a hang."""
    import os
    import subprocess
    import sys

    path = tmp_path / "config.json"
    if cfg == "dir":
        path.mkdir()
    elif cfg == "fifo":
        os.mkfifo(path)
    else:
        path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vramc",
            "lock",
            "--config",
            str(path),
            "--quant",
            "Q4_K_M",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("vramc lock: ") and "internal error" not in res.stderr
