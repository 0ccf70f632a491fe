"""A hostile profile cannot inject anything into any artifact.

Names, paths and values full of spaces, quotes, `$()`, backticks, `%`, `$`, `;`, backslashes and
leading dashes are built for every engine, and every artifact is read back by what consumes it:
the launch scripts run under sh (with a stand-in engine that records its argv, and once with the
real llama-server, which must load the model at that path and require the key in that file), env
files are sourced by sh, units pass systemd-analyze verify and their ExecStart splits into the
same words, the Modelfile goes through a port of Ollama's parser, YAML and Python configs are
loaded. Each must give back exactly the value, and no command in a value may ever run. Values
with no safe form (a newline) are VR403 errors, and the build refuses them even with --force.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest
import yaml

import vramc.rules.render  # noqa: F401  (registers VR403 until vramc.lint.load_rules imports it)
from build_support import (Server, args_file_lines, build, execstart_argv, free_port,
                           llama_server_binary, parse_modelfile, read_env_file, systemd_root,
                           unit_environment, verify_unit)

EVIL = "$(touch PWNED) `touch PWNED` \"q\" 'x' %n %% $HOME ; \\ & | > <"
MODEL = f"-m {EVIL}.gguf"  # a relative path that starts with a dash
ALIAS = f"-a {EVIL}"
VLLM_ALIAS = f"chat {EVIL}"  # vLLM's --config loader cannot take a leading dash (VR403)
KEY_FILE = f"keys/{EVIL}.txt"
ENV_VALUE = f"{EVIL} ${{PATH}}"
UUID = "GPU-$(touch PWNED)-%n-`x`"
PROFILE_FILE = "profiles/evil $(touch PWNED) 'q'.yaml"


def hostile_profile(port: int) -> str:
    gguf = {"gguf": MODEL}
    common = {"ctx": 512, "gpu_layers": "all", "flash_attn": "off", "alias": ALIAS}
    vllm_model = {"hf": f"-models/{EVIL}", "weights_size": "1MiB", "config": {
        "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 260, "max_position_embeddings": 2048}}
    doc = {
        "kind": "deployments",
        "hardware": {"name": "evil", "gpus": [{"name": "GPU", "vram": "24GiB", "uuid": UUID}]},
        "deployments": [
            {"name": "ls", "model": gguf, "engine": "llama-server", "env": {"HOSTILE": ENV_VALUE},
             "settings": {**common, "parallel": 1, "port": port, "api_key_file": KEY_FILE}},
            {"name": "py", "model": gguf, "engine": "llama-cpp-python", "env": {"HOSTILE": ENV_VALUE},
             "settings": common},
            {"name": "ol", "model": gguf, "engine": "ollama", "env": {"OLLAMA_ORIGINS": ENV_VALUE},
             "settings": common},
            {"name": "vl", "model": vllm_model, "engine": "vllm", "env": {"HOSTILE": ENV_VALUE},
             "settings": {"max_model_len": 512, "gpu_memory_utilization": 0.5, "alias": VLLM_ALIAS}},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


RECORD_ARGV = '#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done > "$ARGV_OUT"\n'


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from vramc.synth import write_tiny_model

    root = tmp_path_factory.mktemp("hostile")
    (root / "profiles").mkdir()
    port = free_port()
    (root / PROFILE_FILE).write_text(hostile_profile(port))
    write_tiny_model(root / MODEL)
    (root / KEY_FILE).parent.mkdir()
    (root / KEY_FILE).write_text("sekrit-key\n")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        from vramc.check import run_check

        errors = [d for d in run_check([root / "profiles"]).diagnostics if d.severity.label == "error"]
        assert errors == []  # nothing here is unsafe once quoted
        assert build(["profiles"]) == 0
    finally:
        os.chdir(cwd)
    return root, port


def no_injection(root) -> None:
    assert not list(root.rglob("PWNED")) and not list(root.parent.rglob("PWNED"))


def recorded_argv(script, root, tmp_path, variable: str) -> list[str]:
    stub = tmp_path / "engine"
    stub.write_text(RECORD_ARGV)
    stub.chmod(0o755)
    record = tmp_path / "argv"
    subprocess.run(["sh", str(script)], cwd=tmp_path, check=True, timeout=30,
                   env={**os.environ, variable: str(stub), "ARGV_OUT": str(record)})
    return record.read_bytes().decode().split("\0")[:-1]


def test_launch_scripts_pass_every_value_as_one_argument(project, tmp_path):
    root, _ = project
    ls = recorded_argv(root / "out" / "ls" / "launch.sh", root, tmp_path, "LLAMA_SERVER")
    assert ls == args_file_lines(root / "out" / "ls" / "llama-server.args")
    pairs = dict(zip(ls, ls[1:]))
    assert pairs["--model"] == "./" + MODEL and pairs["--alias"] == ALIAS
    assert pairs["--api-key-file"] == KEY_FILE
    vl = recorded_argv(root / "out" / "vl" / "launch.sh", root, tmp_path, "VLLM")
    assert vl == ["serve"] + args_file_lines(root / "out" / "vl" / "vllm.args")
    assert vl[1] == f"./-models/{EVIL}" and dict(zip(vl, vl[1:]))["--served-model-name"] == VLLM_ALIAS
    no_injection(root)


def test_env_files_read_back_exactly(project):
    root, _ = project
    env = read_env_file(root / "out" / "ls" / "llama-server.env")
    assert env["LLAMA_ARG_MODEL"] == "./" + MODEL and env["LLAMA_ARG_ALIAS"] == ALIAS
    assert env["LLAMA_ARG_API_KEY_FILE"] == KEY_FILE and env["HOSTILE"] == ENV_VALUE
    assert env["CUDA_VISIBLE_DEVICES"] == UUID
    ollama = read_env_file(root / "out" / "ol" / "ollama.env")
    assert ollama["OLLAMA_ORIGINS"] == ENV_VALUE and ollama["CUDA_VISIBLE_DEVICES"] == UUID
    no_injection(root)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify_and_split_into_the_same_words(project, tmp_path):
    root, _ = project
    sd = systemd_root(tmp_path / "root")
    for name in ("ls", "py", "vl"):
        unit = root / "out" / name / f"vramc-{name}.service"
        text = unit.read_text()
        assert verify_unit(sd, unit.name, text) == ""
        env = unit_environment(text)
        assert env["HOSTILE"] == ENV_VALUE and env["CUDA_VISIBLE_DEVICES"] == UUID
    ls = execstart_argv((root / "out" / "ls" / "vramc-ls.service").read_text())
    assert ls == ["llama-server"] + args_file_lines(root / "out" / "ls" / "llama-server.args")
    vl = execstart_argv((root / "out" / "vl" / "vramc-vl.service").read_text())
    assert vl == ["vllm", "serve"] + args_file_lines(root / "out" / "vl" / "vllm.args")
    dropin = (root / "out" / "ol" / "ollama.service.d" / "override.conf").read_text()
    assert verify_unit(sd, "ollama.service", dropin, dropin="override.conf") == ""
    assert unit_environment(dropin)["OLLAMA_ORIGINS"] == ENV_VALUE


def test_data_files_read_back_exactly(project):
    root, _ = project
    commands = parse_modelfile((root / "out" / "ol" / "Modelfile").read_text())
    assert (root / "out" / "ol" / dict(commands)["model"]).resolve() == (root / MODEL).resolve()
    config = yaml.safe_load((root / "out" / "py" / "llama-cpp-server.yaml").read_text())
    assert config["models"][0]["model"] == MODEL and config["models"][0]["model_alias"] == ALIAS
    vllm = yaml.safe_load((root / "out" / "vl" / "vllm.yaml").read_text())
    assert vllm["model"] == f"./-models/{EVIL}" and vllm["served-model-name"] == VLLM_ALIAS
    spec = importlib.util.spec_from_file_location("hostile_serve", root / "out" / "py" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)  # importing runs no value: they are Python literals
    assert serve.LLAMA_KWARGS["model_path"] == MODEL and serve.MODEL_ALIAS == ALIAS
    assert serve.ENV["HOSTILE"] == ENV_VALUE
    no_injection(root)


@pytest.mark.oracle
@pytest.mark.skipif(llama_server_binary() is None, reason="pinned llama-server not built")
def test_real_llama_server_loads_the_hostile_path_and_key(project, tmp_path):
    import httpx

    root, port = project
    argv = ["sh", str(root / "out" / "ls" / "launch.sh")]
    env = {**os.environ, "LLAMA_SERVER": str(llama_server_binary())}
    with Server(argv, cwd=tmp_path, env=env, log=tmp_path / "server.log") as server:
        server.wait_healthy(port)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/models", timeout=5).status_code == 401  # the key file was read
        auth = {"Authorization": "Bearer sekrit-key"}
        models = httpx.get(f"{base}/v1/models", headers=auth, timeout=5).json()
        assert models["data"][0]["id"] == ALIAS
        props = httpx.get(f"{base}/props", headers=auth, timeout=5).json()
        assert props["model_path"] == "./" + MODEL
    no_injection(root)


@pytest.mark.parametrize("where", ["alias", "gguf", "env", "env-name", "override"])
def test_values_with_no_safe_form_are_vr403_and_never_built(where, tmp_path, monkeypatch, capsys):
    from vramc.check import run_check

    settings = {"alias": "a\nExecStartPre=/bin/sh -c id"} if where == "alias" else {}
    if where == "override":
        settings["override_tensor"] = ["blk\\.(1,2)\\.ffn=CPU"]
    model = {"gguf": "models/x\n.gguf" if where == "gguf" else "models/x.gguf"}
    env = {"A": "1\n2"} if where == "env" else {"BAD NAME": "1"} if where == "env-name" else {}
    doc = {"kind": "deployment", "name": "d", "engine": "llama-server",
           "hardware": {"gpus": [], "host_ram": "2GiB"}, "model": model, "settings": settings, "env": env}
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "d.yaml").write_text(yaml.safe_dump(doc))
    from vramc.synth import write_tiny_model

    write_tiny_model(tmp_path / "tiny.gguf")
    for gguf in {model["gguf"]}:
        (tmp_path / gguf).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / gguf).write_bytes((tmp_path / "tiny.gguf").read_bytes())
    codes = {d.code for d in run_check([tmp_path / "profiles"]).diagnostics if d.severity.label == "error"}
    assert codes == {"VR403"}
    monkeypatch.chdir(tmp_path)
    assert build(["profiles"]) == 1
    if where != "override":  # a comma in a pattern is quotable; only its meaning would change
        assert build(["profiles"], force=True) == 1
        assert "not built: d:" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
