"""Messages a user can act on: hints name the settings of the deployment's own engine, and no
diagnostic carries escape artefacts (a literal \\n, a control character, an unfilled `{name}`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vramc.lint.check import run_check

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "profiles" / "models"

# One deployment per engine that fits but leaves less than the margin free (VR301).
BELOW_MARGIN = {
    "llama-server": (
        "{gpus: [{name: RTX 4080, vram: 16GiB}]}",
        "llama-3.1-8b-instruct-q8_0",
        "{ctx: 61440, gpu_layers: all}",
    ),
    "llama-cpp-python": (
        "{gpus: [{name: RTX 4080, vram: 16GiB}]}",
        "llama-3.1-8b-instruct-q8_0",
        "{ctx: 57344, gpu_layers: all, flash_attn: on}",
    ),
    "ollama": (
        "{gpus: [{name: RTX 4080, vram: 16GiB}]}",
        "llama-3.1-8b-instruct-q8_0",
        "{ctx: 61440, gpu_layers: all}",
    ),
    "vllm": ("{gpus: [{name: RTX 4090, vram: 24GiB}]}", "mistral-7b-instruct-awq", "{gpu_memory_utilization: 0.97}"),
}
# What the hint must name, and what it must not (settings the engine does not have).
NAMES = {
    "llama-server": (("ctx", "gpu_layers", "cache_type_k", "cache_type_v"), ("num_ctx", "gpu_memory_utilization")),
    "llama-cpp-python": (("ctx", "gpu_layers", "cache_type_k"), ("num_ctx", "gpu_memory_utilization")),
    "ollama": (("num_ctx", "num_gpu", "OLLAMA_NUM_PARALLEL", "OLLAMA_KV_CACHE_TYPE"), ("gpu_memory_utilization",)),
    "vllm": (("gpu_memory_utilization", "max_model_len", "max_num_seqs"), ("gpu_layers", "ctx ", "context")),
}


@pytest.mark.parametrize("engine", sorted(BELOW_MARGIN))
def test_below_margin_hint_names_the_engines_own_settings(engine, tmp_path):
    hardware, model, settings = BELOW_MARGIN[engine]
    f = tmp_path / "dep.yaml"
    f.write_text(
        f"name: tight\nhardware: {hardware}\nmodel: {MODELS / model}.yaml\nengine: {engine}\n"
        f"lint: {{margin: 10%}}\nsettings: {settings}\n"
    )
    found = [d for d in run_check([f]).diagnostics if d.code == "VR301"]
    assert found, f"no VR301 for {engine}"
    must, must_not = NAMES[engine]
    for d in found:
        assert all(name in d.hint for name in must), (engine, d.hint)
        assert not any(name in d.hint for name in must_not), (engine, d.hint)
        assert d.hint.endswith("or accept a smaller margin")


@pytest.mark.parametrize("engine", ["llama-server", "ollama"])
def test_does_not_fit_hint_suggests_only_what_the_engine_can_set(engine, tmp_path):
    # the solver's answer for two GPUs is layers and a split; Ollama cannot pass a split (VR400)
    f = tmp_path / "dep.yaml"
    f.write_text(
        f"name: big\nhardware: {{gpus: [{{name: A, vram: 8GiB}}, {{name: B, vram: 6GiB}}]}}\n"
        f"model: {MODELS}/deepseek-r1-distill-qwen-14b-q4_k_m.yaml\nengine: {engine}\n"
        "settings: {ctx: 32768, gpu_layers: all}\n"
    )
    hints = {d.hint for d in run_check([f]).diagnostics if d.code == "VR300"}
    assert hints and all("gpu_layers" in h and "--relax ctx" in h for h in hints)
    assert all(("tensor_split" in h) == (engine != "ollama") for h in hints), hints


def _all_fixture_diagnostics():
    fixtures = Path(__file__).parent / "fixtures"
    files = sorted(fixtures.rglob("*.yaml"))
    # one check per file, as a user would run them (a broken file must not hide another's findings)
    out = []
    for path in [p for p in files if "/out/" not in p.as_posix()] + [ROOT / "profiles"]:
        out += run_check([path]).diagnostics
    return out


# Python's repr of a profile value (a quoted string) may show an escape: that is the value, shown
# safely. Outside such quotes, an escape or a control character is an artefact.
QUOTED = re.compile(r"""(?<![\w])'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\"""")
ESCAPE = re.compile(r"\\[nrtxu0abfv]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# an f-string that lost its `f`: `{name}`, `{d.id}`, `{x!r}`, `{n:.2f}` (not YAML's `{margin: 5%}`)
PLACEHOLDER = re.compile(r"(?<![{$])\{[a-z_][a-z_0-9.]*(?:\[[^\]]*\])?(?:![rsa])?(?::[^}\s][^}]*)?\}")


def test_no_escape_artefacts_in_any_fixture_message():
    diags = _all_fixture_diagnostics()
    assert len({d.code for d in diags}) > 30  # the fixtures reach most rules
    bad = []
    for d in diags:
        for part in (d.message, d.hint):
            bare = QUOTED.sub("''", part)
            if CONTROL.search(part) or ESCAPE.search(bare) or PLACEHOLDER.search(bare):
                bad.append((d.code, d.file, part))
    assert bad == []


def test_vllm_parallel_message_is_one_line(tmp_path):
    # vLLM's own error text has line breaks and bullets; `check` printed them as a literal \n
    from typer.testing import CliRunner

    from vramc.cli.commands import app

    fixture = Path(__file__).parent / "fixtures" / "profiles" / "bad" / "VR337-vllm-parallel.yaml"
    out = CliRunner().invoke(app, ["check", str(fixture)]).output
    line = next(ln for ln in out.splitlines() if " VR337 " in ln)
    assert "\\n" not in line and "World size (2)" in line and "'--nnodes' appropriately" in line


# Python's spelling of a value the user wrote in YAML: a bytes literal, a dict's quoted keys, the
# constants True/False/None (YAML says true/false/null).
PYTHON_REPR = re.compile(r"""\bb'|\bb"|\{'|\{"|\bTrue\b|\bFalse\b|\bNone\b""")


def test_no_python_repr_in_any_fixture_message():
    """Values are shown as the user wrote them (`true`, `"0"`, `{a: 1}`), not as Python prints them
    (`True`, `'0'`, `{'a': 1}`, `b'# Lo'`)."""
    diags = _all_fixture_diagnostics()
    assert any(d.code == "VR201" and 'starts with "this"' in d.message for d in diags)  # a magic, as text
    bad = [
        (d.code, d.file, part)
        for d in diags
        for part in (d.message, d.hint)
        # an engine's own error, quoted word for word (vLLM's `model_max_length=None`), is its words
        if PYTHON_REPR.search(part.split(" would stop with: ")[0])
    ]
    assert bad == []


@pytest.mark.parametrize(
    "body,shown,python",
    [
        ("settings: {split_mode: true}\n", "got true", "True"),
        ('settings: {cache_type_k: "0"}\n', 'got "0"', "'0'"),
        ("settings: {split_mode: {a: 1}}\n", "got {a: 1}", "{'a'"),
        ("settings: {split_mode: [1, null]}\n", None, "None"),
    ],
)
def test_values_are_shown_as_yaml_writes_them(tmp_path, body, shown, python):
    f = tmp_path / "dep.yaml"
    f.write_text(
        f"name: v\nhardware: {{gpus: [{{name: A, vram: 24GiB}}]}}\n"
        f"model: {MODELS}/llama-3.1-8b-instruct-q8_0.yaml\nengine: llama-server\n{body}"
    )
    texts = [x for d in run_check([f]).diagnostics for x in (d.message, d.hint)]
    assert all(not PYTHON_REPR.search(t) for t in texts), texts
    if shown:
        assert any(shown in t for t in texts), texts
    if python:
        assert not any(python in t for t in texts), texts


def test_decimal_vram_and_lock_values_are_shown_as_written(tmp_path):
    f = tmp_path / "dep.yaml"
    f.write_text(
        "name: v\nhardware: {gpus: [{name: A, vram: 24GB}]}\n"
        f"model: {MODELS}/llama-3.1-8b-instruct-q8_0.yaml\nengine: llama-server\n"
    )
    (d,) = [d for d in run_check([f]).diagnostics if d.code == "VR103"]
    assert d.message.startswith("vram 24GB is 22.35 GiB") and "'" not in d.message
    from vramc.diagnostics import show_bytes, show_value

    assert show_value({"attention.key_length": float("nan"), "on": True}) == '{attention.key_length: .nan, "on": true}'
    assert show_bytes(b"# Lo") == '"# Lo"' and show_bytes(b"GG\x00\xff") == '"GG\\x00\\xff"'
    assert show_value("x" * 100).endswith("...") and len(show_value("x" * 100)) == 40


@pytest.mark.parametrize(
    "engine,env,setting",
    [
        ("ollama", "{OLLAMA_NUM_PARALLEL: 4}", "settings.parallel"),
        ("ollama", '{CUDA_VISIBLE_DEVICES: "3"}', "gpus:"),
        ("llama-server", "{LLAMA_ARG_CTX_SIZE: 32768}", "settings.ctx"),
        ("vllm", '{CUDA_VISIBLE_DEVICES: "3"}', "gpus:"),
    ],
)
def test_an_env_value_the_build_replaces_is_a_check_warning(tmp_path, engine, env, setting):
    """The build printed "env X replaced by ..." at build time only; `check` said nothing."""
    model = "mistral-7b-instruct-awq" if engine == "vllm" else "llama-3.1-8b-instruct-q8_0"
    f = tmp_path / "dep.yaml"
    body = f"name: e\nhardware: {{gpus: [{{name: A, vram: 24GiB}}]}}\nmodel: {MODELS}/{model}.yaml\nengine: {engine}\n"
    f.write_text(body + ("settings: {ctx: 8192, parallel: 1}\n" if engine != "vllm" else "") + f"env: {env}\n")
    found = [d for d in run_check([f]).diagnostics if d.code == "VR105"]
    assert len(found) == 1, [(d.code, d.message) for d in run_check([f]).diagnostics]
    (d,) = found
    key = env.strip("{}").split(":")[0]
    assert d.path[-2:] == ("env", key) and d.line == 6 - (engine == "vllm") and setting in d.hint, (d.message, d.hint)
    # the plan's own value under env: is no conflict
    from vramc.build.targets import overridden_env

    (plan,) = run_check([f]).plans
    planned = overridden_env(plan)[0][2]
    f.write_text(f.read_text().replace(env, "{" + f'{key}: "{planned}"' + "}"))
    assert [d for d in run_check([f]).diagnostics if d.code == "VR105"] == []


@pytest.mark.parametrize(
    "hardware,settings,raise_layers",
    [
        ("{gpus: [], host_ram: 8GiB}", "{ctx: 4096}", False),  # no GPU to put layers on
        ("{gpus: [{name: GTX 1060, vram: 3GiB}], host_ram: 6GiB}", "{ctx: 4096, gpu_layers: auto}", False),
        ("{gpus: [{name: GTX 1060, vram: 3GiB}], host_ram: 6GiB}", "{ctx: 4096}", False),  # llama-server: auto
        ("{gpus: [{name: GTX 1060, vram: 3GiB}], host_ram: 6GiB}", "{ctx: 4096, gpu_layers: 2}", True),
    ],
)
def test_host_memory_hint_raises_gpu_layers_only_where_it_can_go_higher(tmp_path, hardware, settings, raise_layers):
    """VR307 said "raise gpu_layers" on a machine with no GPU, and where the solver had already put
    every layer that fits on the GPUs: advice that leads back to the same plan."""
    f = tmp_path / "dep.yaml"
    f.write_text(
        f"name: h\nhardware: {hardware}\nmodel: {MODELS}/llama-3.1-8b-instruct-q8_0.yaml\n"
        f"engine: llama-server\nsettings: {settings}\n"
    )
    [d] = [d for d in run_check([f]).diagnostics if d.code == "VR307"]
    assert ("raise gpu_layers" in d.hint) == raise_layers, d.hint
    if not raise_layers:
        assert d.hint.startswith("add host RAM or GPU memory, or use a smaller quantisation"), d.hint


@pytest.mark.parametrize(
    "engine,ctx,said",
    [
        ("llama-server", "ctx: auto, ", None),
        ("llama-server", "", None),  # llama-server's ctx left out is auto
        ("ollama", "ctx: auto, ", None),
        ("llama-cpp-python", "ctx: auto, ", None),
        ("llama-server", "ctx: 8192, ", "and ctx is 8192"),
        ("ollama", "", "and ctx is left to ollama's default"),
    ],
)
def test_ctx_min_is_vramcs_own_setting_not_one_the_engine_lacks(tmp_path, engine, ctx, said):
    """VR400 called ctx_min, which the README documents as the floor of `ctx: auto`, a setting
    "llama-server has no such setting; remove it" even where the solver used it."""
    f = tmp_path / "dep.yaml"
    f.write_text(
        f"name: c\nhardware: {{gpus: [{{name: A, vram: 24GiB}}]}}\nmodel: {MODELS}/llama-3.1-8b-instruct-q8_0.yaml\n"
        f"engine: {engine}\nsettings: {{{ctx}gpu_layers: all, ctx_min: 2048}}\n"
    )
    found = [d for d in run_check([f]).diagnostics if d.code == "VR400"]
    if said is None:
        assert found == [], [d.message for d in found]
    else:
        [d] = found
        assert said in d.message and "no such setting" not in d.message and d.hint == "remove it, or set ctx: auto"


@pytest.mark.parametrize(
    "vram,utilization,weights_alone",
    [("12GiB", "auto", True), ("12GiB", "0.9", True), ("24GiB", "0.6", False)],
)
def test_vllm_no_kv_memory_says_when_utilization_cannot_help(tmp_path, vram, utilization, weights_alone):
    """VR332 was vLLM's words alone, "Try increasing `gpu_memory_utilization`", also where the
    weights alone outgrow the card (15 GiB of bf16 7B on 12 GiB) and the utilization was vramc's
    own largest: vramc says so and what can help."""
    f = tmp_path / "dep.yaml"
    f.write_text(
        f"name: v\nhardware: {{gpus: [{{name: RTX 3090, vram: {vram}}}]}}\nmodel: {MODELS}/qwen2.5-7b-instruct.yaml\n"
        f"engine: vllm\nsettings: {{max_model_len: 4096, gpu_memory_utilization: {utilization}}}\n"
    )
    [d] = [d for d in run_check([f]).diagnostics if d.code == "VR332"]
    if weights_alone:
        assert d.hint.startswith("the weights alone (") and "of 12.00 GiB) outgrow the GPU" in d.hint, d.hint
        assert "no gpu_memory_utilization can help" in d.hint and "tensor_parallel_size" in d.hint
        # vLLM's sentence ends with a full stop: the hint is the next sentence, not ".; the"
        assert "for more details. The weights alone (" in d.full_message(), d.full_message()
    else:  # raising it is the answer, and vLLM's own words say so
        assert d.hint == "" and "Try increasing `gpu_memory_utilization`" in d.message


@pytest.mark.parametrize(
    "engine,env,flagged",
    [
        ("llama-cpp-python", "{LLAMA_ARG_CTX_SIZE: 4096}", "read by llama-server's options"),
        ("vllm", "{LLAMA_ARG_N_GPU_LAYERS: 10}", "read by llama-server's options"),
        ("llama-server", "{OLLAMA_NUM_PARALLEL: 4}", "read by Ollama, not by llama-server"),
        ("llama-cpp-python", "{OLLAMA_FLASH_ATTENTION: 1}", "read by Ollama, not by llama-cpp-python"),
        ("ollama", '{LLAMA_ARG_THREADS: "8"}', None),  # Ollama's llama-server child reads it
        ("llama-cpp-python", "{GGML_CUDA_NO_PINNED: 1}", None),  # ggml reads it in every engine
    ],
)
def test_another_engines_env_variable_is_vr401(tmp_path, engine, env, flagged):
    """`env: {LLAMA_ARG_CTX_SIZE: 4096}` on llama-cpp-python passed check silently: llama_cpp.Llama
    reads no options from the environment, so the user's context never applied."""
    model = "mistral-7b-instruct-awq" if engine == "vllm" else "llama-3.1-8b-instruct-q8_0"
    f = tmp_path / "dep.yaml"
    body = f"name: e\nhardware: {{gpus: [{{name: A, vram: 24GiB}}]}}\nmodel: {MODELS}/{model}.yaml\nengine: {engine}\n"
    f.write_text(body + f"env: {env}\n")
    found = [d for d in run_check([f]).diagnostics if d.code == "VR401"]
    if flagged is None:
        assert found == [], [d.message for d in found]
    else:
        [d] = found
        assert flagged in d.message and d.path[-2:] == ("env", env.strip("{}").split(":")[0]), d.message
        assert d.hint == "remove it; set what it means under settings:"


@pytest.mark.parametrize("utilization,raise_it", [("auto", False), ("0.8", True)])
def test_vllm_concurrency_hint_raises_only_a_share_that_can_grow(tmp_path, utilization, raise_it):
    """VR350 said "raise gpu_memory_utilization" where vramc had chosen it (`auto`): already the
    largest share that leaves the margin free, so raising it would eat the margin."""
    f = tmp_path / "dep.yaml"
    f.write_text(
        f"name: v\nhardware: {{gpus: [{{name: RTX 3090, vram: 24GiB}}]}}\nmodel: {MODELS}/qwen2.5-7b-instruct.yaml\n"
        f"engine: vllm\nsettings: {{max_model_len: 16384, gpu_memory_utilization: {utilization}}}\n"
    )
    [d] = [d for d in run_check([f]).diagnostics if d.code == "VR350"]
    assert ("raise gpu_memory_utilization" in d.hint) == raise_it, d.hint
    assert "lower max_model_len" in d.hint and "max_num_seqs: auto" in d.hint
