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

import vramc.lint.rules.quoting  # noqa: F401  (registers VR403 until vramc.lint.rules.load_rules imports it)
from build_support import (
    Server,
    args_file_lines,
    build,
    execstart_argv,
    free_port,
    llama_server_binary,
    parse_modelfile,
    read_env_file,
    systemd_root,
    unit_environment,
    verify_unit,
)

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
    vllm_model = {
        "hf": f"-models/{EVIL}",
        "weights_size": "1MiB",
        "config": {
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 260,
            "max_position_embeddings": 2048,
        },
    }
    doc = {
        "kind": "deployments",
        "hardware": {"name": "evil", "gpus": [{"name": "GPU", "vram": "24GiB", "uuid": UUID}]},
        "deployments": [
            {
                "name": "ls",
                "model": gguf,
                "engine": "llama-server",
                "env": {"HOSTILE": ENV_VALUE},
                "settings": {**common, "parallel": 1, "port": port, "api_key_file": KEY_FILE},
            },
            {
                "name": "py",
                "model": gguf,
                "engine": "llama-cpp-python",
                "env": {"HOSTILE": ENV_VALUE},
                "settings": common,
            },
            {"name": "ol", "model": gguf, "engine": "ollama", "env": {"OLLAMA_ORIGINS": ENV_VALUE}, "settings": common},
            {
                "name": "vl",
                "model": vllm_model,
                "engine": "vllm",
                "env": {"HOSTILE": ENV_VALUE},
                "settings": {"max_model_len": 512, "gpu_memory_utilization": 0.5, "alias": VLLM_ALIAS},
            },
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


RECORD_ARGV = '#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done > "$ARGV_OUT"\n'


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from vramc.dev.synth import write_tiny_model

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
        from vramc.lint.check import run_check

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
    subprocess.run(
        ["sh", str(script)],
        cwd=tmp_path,
        check=True,
        timeout=30,
        env={**os.environ, variable: str(stub), "ARGV_OUT": str(record)},
    )
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
    from vramc.lint.check import run_check

    settings = {"alias": "a\nExecStartPre=/bin/sh -c id"} if where == "alias" else {}
    if where == "override":
        settings["override_tensor"] = ["blk\\.(1,2)\\.ffn=CPU"]
    model = {"gguf": "models/x\n.gguf" if where == "gguf" else "models/x.gguf"}
    env = {"A": "1\n2"} if where == "env" else {"BAD NAME": "1"} if where == "env-name" else {}
    doc = {
        "kind": "deployment",
        "name": "d",
        "engine": "llama-server",
        "hardware": {"gpus": [], "host_ram": "2GiB"},
        "model": model,
        "settings": settings,
        "env": env,
    }
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "d.yaml").write_text(yaml.safe_dump(doc))
    from vramc.dev.synth import write_tiny_model

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


# --- Unicode: characters that are not printable --------------------------------------------------

# One of each Unicode category that str.isprintable() rejects, besides the spaces: C1 control
# (NEL, a YAML line break), bidi override, line and paragraph separators (YAML line breaks),
# private use, unassigned. (Surrogates cannot be written to a UTF-8 profile at all.)
UNPRINTABLE = {"Cc": "\x85", "Cf": "\u202e", "Zl": "\u2028", "Zp": "\u2029", "Co": "\ue000", "Cn": "\u0378"}
NBSP = "\xa0"  # Zs: carried by every artifact, except an Ollama FROM path (the parser drops it)
STANDIN = "Q"


def unicode_project(root, ch: str):
    """The fixture project with `ch` in every string that reaches an artifact, one deployment
    per field (so that each must be reported on its own), plus a GPU uuid, a profile file name
    and an Ollama model path in files of their own."""
    from build_support import copy_fixture

    root = copy_fixture(root)
    for own in (root / "profiles").glob("*.yaml"):  # only hardware/ and models/ are used
        own.unlink()
    models = root / "profiles" / "models"

    def model(name, **change):
        doc = yaml.safe_load((models / f"{name}.yaml").read_text())
        for key in ("kind", "name", "source"):
            doc.pop(key, None)
        return {**doc, **change}

    v = f"a{ch}b"
    gguf = {
        "llama-server": {"ctx": 4096, "gpu_layers": "all"},
        "ollama": {"ctx": 4096},
        "llama-cpp-python": {"ctx": 4096, "gpu_layers": "all"},
    }
    fields = {
        "ls": (
            "llama-server",
            {
                "host": {"settings": {"host": v}},
                "alias": {"settings": {"alias": v}},
                "key": {"settings": {"api_key_file": f"keys/{v}.txt"}},
                "override": {"settings": {"override_tensor": [f"blk\\.31\\.ffn_up{ch}=CPU"]}},
                "gguf": {"gguf": f"models/{v}.gguf"},
                "env": {"env": {"HOSTILE": v}},
            },
        ),
        "py": (
            "llama-cpp-python",
            {
                "host": {"settings": {"host": v}},
                "alias": {"settings": {"alias": v}},
                "gguf": {"gguf": f"models/{v}.gguf"},
                "env": {"env": {"HOSTILE": v}},
            },
        ),
        "ol": (
            "ollama",
            {
                "host": {"settings": {"host": v}},
                "keep": {"settings": {"keep_alive": v}},
                "env": {"env": {"OLLAMA_ORIGINS": v}},
            },
        ),
        "vl": (
            "vllm",
            {
                "host": {"settings": {"host": v}},
                "alias": {"settings": {"alias": v}},
                "hf": {"hf": f"org/{v}"},
                "env": {"env": {"HOSTILE": v}},
            },
        ),
    }
    deployments = []
    for prefix, (engine, cases) in fields.items():
        for field, change in cases.items():
            if engine == "vllm":
                m = model("qwen2.5-7b-instruct-awq", **({"hf": change["hf"]} if "hf" in change else {}))
                settings = {"gpu_memory_utilization": 0.9, "max_model_len": 4096}
            else:
                m = model("mistral-7b-q4_k_m", **({"gguf": change["gguf"]} if "gguf" in change else {}))
                settings = dict(gguf[engine])
            settings.update(change.get("settings", {}))
            deployments.append(
                {
                    "name": f"{prefix}-{field}",
                    "engine": engine,
                    "model": m,
                    "settings": settings,
                    "env": change.get("env", {}),
                }
            )
    profiles = root / "profiles"
    for d in deployments:  # a file each: deployments of one file would share the GPU
        (profiles / f"{d['name']}.yaml").write_text(
            yaml.safe_dump({"kind": "deployment", "hardware": "rtx4090", **d}, sort_keys=False)
        )
    single = {
        "kind": "deployment",
        "engine": "llama-server",
        "model": "mistral-7b-q4_k_m",
        "settings": gguf["llama-server"],
    }
    (profiles / "uuid.yaml").write_text(
        yaml.safe_dump(
            {
                **single,
                "name": "hw-uuid",
                "hardware": {"gpus": [{"name": "RTX 4090", "vram": "24GiB", "uuid": f"GPU-{v}"}]},
            },
        )
    )
    (profiles / f"file{ch}name.yaml").write_text(yaml.safe_dump({**single, "name": "file-name", "hardware": "rtx4090"}))
    (profiles / "ollama-gguf.yaml").write_text(
        yaml.safe_dump(
            {
                **single,
                "name": "ol-gguf",
                "engine": "ollama",
                "hardware": "rtx4090",
                "settings": gguf["ollama"],
                "model": model("mistral-7b-q4_k_m", gguf=f"models/{v}.gguf"),
            }
        )
    )
    shutil.rmtree(root / "templates" / "app")  # the fixture's project template: not needed here
    return root, [d["name"] for d in deployments] + ["hw-uuid", "file-name", "ol-gguf"]


def vr403_by_deployment(root) -> dict[str, set[str]]:
    from vramc.lint.check import run_check
    from vramc.lint.runner import run_plan_rules

    result = run_check([root / "profiles"])
    errors = [d for d in result.diagnostics + run_plan_rules(result.plans) if d.severity.label == "error"]
    found: dict[str, set[str]] = {}
    for d in errors:
        found.setdefault(d.deployment, set()).add(d.code)
    return found


@pytest.mark.parametrize("category", sorted(UNPRINTABLE))
def test_unprintable_characters_are_vr403_everywhere_and_never_built(category, tmp_path, monkeypatch, capsys):
    ch = UNPRINTABLE[category]
    root, labels = unicode_project(tmp_path / "p", ch)
    found = vr403_by_deployment(root)
    assert {label: found.get(label, set()) for label in labels} == {label: {"VR403"} for label in labels}
    monkeypatch.chdir(root)
    capsys.readouterr()
    assert build(["profiles"], force=True) == 1  # the build refuses them even when forced
    err = capsys.readouterr().err
    for label in labels:
        assert f"not built: {label}: " in err, label
    assert not (root / "out").exists()


def consumed(path, tmp_path, unit_root):
    """An artifact as what consumes it reads it (and its syntax checked by that consumer)."""
    name, text = path.name, path.read_text()
    if name.endswith(".yaml"):
        return yaml.safe_load(text)
    if name.endswith(".env") or ".env." in name:
        return read_env_file(path)
    if name.endswith(".args"):
        return args_file_lines(path)
    if name == "launch.sh":
        for shell in ("sh", "dash", "bash"):
            if shutil.which(shell):
                proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
                assert proc.returncode == 0, (shell, path, proc.stderr)
        variable = "VLLM" if "vllm" in text else "LLAMA_SERVER"
        return recorded_argv(path, None, tmp_path, variable)
    if name.endswith(".service") or name == "override.conf":
        if unit_root is not None:
            unit, dropin = ("ollama.service", name) if name == "override.conf" else (name, None)
            assert verify_unit(unit_root, unit, text, dropin=dropin) == "", path
        argv = execstart_argv(text) if "ExecStart=" in text else None
        return unit_environment(text), argv
    if name == "Modelfile":
        return parse_modelfile(text)
    if name == "serve.py":
        spec = importlib.util.spec_from_file_location("unicode_serve", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.ENV, module.LLAMA_KWARGS, module.HOST, module.PORT, module.MODEL_ALIAS
    return None  # the manifest: hashes


def swapped(data, ch):
    if isinstance(data, str):
        return data.replace(ch, STANDIN)
    if isinstance(data, dict):
        return {swapped(k, ch): swapped(v, ch) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [swapped(x, ch) for x in data]
    return data


def test_spaces_other_than_ascii_round_trip_except_in_an_ollama_model_path(tmp_path, monkeypatch, capsys):
    """NBSP is printable to every artifact format but Ollama's Modelfile: each artifact, read by
    its consumer (YAML loader, sh/dash/bash, env files sourced, systemd, Ollama's parser,
    Python), gives back exactly what the same project with a plain character instead gives."""
    root, labels = unicode_project(tmp_path / "nbsp", NBSP)
    plain, _ = unicode_project(tmp_path / "plain", STANDIN)
    found = vr403_by_deployment(root)
    assert {label: codes for label, codes in found.items() if label in labels} == {"ol-gguf": {"VR403"}}
    monkeypatch.chdir(root)
    assert build(["profiles"]) == 1
    assert "not built: ol-gguf fails check (VR403)" in capsys.readouterr().err
    monkeypatch.chdir(plain)
    assert build(["profiles"]) == 0
    unit_root = systemd_root(tmp_path / "sd") if shutil.which("systemd-analyze") else None
    built = sorted(p for p in (root / "out").rglob("*") if p.is_file())
    assert len(built) > 60
    for path in built:
        rel = path.relative_to(root / "out").as_posix()
        twin = plain / "out" / rel.replace(NBSP, STANDIN)
        assert twin.is_file(), rel
        got = consumed(path, tmp_path, unit_root)
        assert swapped(got, NBSP) == swapped(consumed(twin, tmp_path, None), NBSP), rel
    no_injection(root)


def test_a_variant_name_with_a_trailing_newline_is_refused(tmp_path, monkeypatch, capsys):
    """The variant name pattern ends in `$`, which Python's re also matches before a final
    newline: such a name must not become a folder or a header line."""
    from build_support import copy_fixture

    root = copy_fixture(tmp_path / "p")
    profile = root / "profiles" / "ollama.yaml"
    doc = yaml.safe_load(profile.read_text())
    doc["variants"] = {"one-slot\n": doc["variants"]["one-slot"]}
    profile.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(root)
    assert build(["profiles/ollama.yaml"], force=True) == 1
    assert not [p for p in (root / "out").rglob("*") if "one-slot" in p.name]


def vllm_project(root, file_name: str, hf: str):
    from build_support import copy_fixture

    root = copy_fixture(root)
    for own in (root / "profiles").glob("*.yaml"):
        own.unlink()
    doc = {
        "kind": "deployment",
        "name": "coder",
        "engine": "vllm",
        "hardware": "rtx4090",
        "model": "qwen2.5-7b-instruct-awq",
        "settings": {"max_model_len": 4096},
    }
    if hf:
        model = yaml.safe_load((root / "profiles" / "models" / "qwen2.5-7b-instruct-awq.yaml").read_text())
        doc["model"] = {k: v for k, v in model.items() if k not in ("kind", "name")} | {"hf": hf}
    (root / "profiles" / file_name).write_text(yaml.safe_dump(doc))
    return root


def test_a_profile_file_name_cannot_add_keys_to_the_vllm_config(tmp_path, monkeypatch, capsys):
    """The reported injection: YAML breaks lines at U+2028, so this name in vllm.yaml's header
    comment would have made `trust-remote-code: true` a key of the config."""
    name = "coder\u2028trust-remote-code: true\u2028#.yaml"
    root = vllm_project(tmp_path / "p", name, hf="")
    assert vr403_by_deployment(root) == {"coder": {"VR403"}}
    monkeypatch.chdir(root)
    assert build(["profiles"], force=True) == 1
    assert "not built: coder: " in capsys.readouterr().err
    assert not (root / "out").exists()


def test_a_model_id_starting_with_a_hash_survives_the_args_file_reader(tmp_path, monkeypatch):
    """vllm.args is read with `sed -n '/^[^#]/,$p'`, which drops leading lines that start with
    `#`: the model (the first argument) is written `./#team/model`, the same folder."""
    root = vllm_project(tmp_path / "p", "coder.yaml", hf="#team/model")
    monkeypatch.chdir(root)
    assert build(["profiles"]) == 0
    args = root / "out" / "coder" / "vllm.args"
    sed = subprocess.run(
        ["sed", "-n", "/^[^#]/,$p", str(args)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert sed[0] == "./#team/model" and sed[1] == "--served-model-name"
    assert sed == recorded_argv(root / "out" / "coder" / "launch.sh", root, tmp_path, "VLLM")[1:]
    assert yaml.safe_load((root / "out" / "coder" / "vllm.yaml").read_text())["model"] == "./#team/model"
