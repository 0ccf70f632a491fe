"""One server, several models (issue 14): Ollama's `models:`, its resident sets, rules and build."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from build_support import build, read_tree
from vramc.lint.check import run_check

REPO = Path(__file__).resolve().parent.parent
RECORD = '#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done >> "$ARGV_OUT"\nprintf \'\\n\\0\' >> "$ARGV_OUT"\n'


def project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "profiles").mkdir(parents=True)
    (tmp_path / "profiles" / "models").symlink_to(REPO / "profiles" / "models")
    f = tmp_path / "profiles" / "server.yaml"
    f.write_text(text)
    return f


def three(ctx=(8192, 8192, 8192), settings="{max_loaded_models: 2}", tag='"coder:8b"') -> str:
    m = "llama-3.1-8b-instruct-q8_0"
    return (
        f"name: trio\nhardware: {{gpus: [{{name: RTX 4090, vram: 24GiB}}]}}\nengine: ollama\n"
        f"settings: {settings}\nmodels:\n"
        f"  - {{name: chat, model: {m}, settings: {{ctx: {ctx[0]}}}}}\n"
        f"  - {{name: coder, model: {m}, tag: {tag}, settings: {{ctx: {ctx[1]}}}}}\n"
        f"  - {{name: big, model: {m}, settings: {{ctx: {ctx[2]}}}}}\n"
    )


def codes(result) -> list[str]:
    return sorted(d.code for d in result.diagnostics)


def test_each_model_is_planned_with_the_server_settings_under_its_own(tmp_path):
    r = run_check([project(tmp_path, three(settings="{max_loaded_models: 2, parallel: 2}"))])
    assert codes(r) == []
    by = {p.dep.name: p for p in r.plans}
    assert sorted(by) == ["trio.big", "trio.chat", "trio.coder"]
    assert [by[n].dep.tag for n in ("trio.chat", "trio.coder", "trio.big")] == ["chat", "coder:8b", "big"]
    assert {p.params.n_seq_max for p in r.plans} == {2}
    assert {p.params.n_ctx for p in r.plans} == {16384}  # Ollama: num_ctx per slot x parallel


def test_resident_sets_follow_max_loaded_models_and_ollamas_default(tmp_path):
    from vramc.plan.servers import max_resident, resident_sets

    r = run_check([project(tmp_path / "a", three())])
    sets = resident_sets(r.plans)
    assert [[p.dep.tag for p in s] for s in sets] == [["chat", "coder:8b"], ["chat", "big"], ["coder:8b", "big"]]
    r = run_check([project(tmp_path / "b", three(settings="{}"))])
    assert max_resident(r.plans) == (3, False)  # server/sched.go defaultModelsPerGPU x 1 GPU
    assert len(resident_sets(r.plans)) == 1


def test_a_set_that_does_not_fit_and_the_model_that_fits_only_alone(tmp_path):
    r = run_check([project(tmp_path, three(ctx=(8192, 8192, 100000)))])
    assert {"VR340", "VR341"} <= set(codes(r))
    vr341 = [d for d in r.diagnostics if d.code == "VR341"]
    assert [d.deployment for d in vr341] == ["trio.big"]  # chat and coder share the card
    vr340 = " ".join(d.message for d in r.diagnostics if d.code == "VR340")
    assert "chat 9.20 GiB, big 20.39 GiB" in vr340 and "coder:8b" in vr340
    assert "chat 9.20 GiB, coder:8b" not in vr340  # that set fits
    assert not any(d.code == "VR312" for d in r.diagnostics)  # a server's sets are VR340's


def test_keep_alive_without_max_loaded_models(tmp_path):
    r = run_check([project(tmp_path / "a", three(ctx=(32768,) * 3, settings="{keep_alive: -1}"))])
    assert "VR342" in codes(r) and "VR340" not in codes(r)
    # they swap: one at a time, nothing to report
    r = run_check([project(tmp_path / "b", three(ctx=(32768,) * 3, settings="{keep_alive: -1, max_loaded_models: 1}"))])
    assert not {"VR340", "VR341", "VR342"} & set(codes(r))
    r = run_check([project(tmp_path / "c", three(ctx=(32768,) * 3, settings="{keep_alive: 0}"))])
    assert "VR342" not in codes(r)


def test_plan_text_and_json_name_the_worst_set_per_gpu(tmp_path):
    from typer.testing import CliRunner

    from vramc.cli.commands import app

    f = project(tmp_path, three(ctx=(8192, 8192, 100000)))
    res = CliRunner().invoke(app, ["plan", str(f)])
    assert "server trio (ollama): 3 models, up to 2 resident at once (max_loaded_models" in res.output
    assert "GPU 0: worst resident set {chat, big}: 29.59 of 24.00 GiB, OVER by 5.59 GiB" in res.output
    assert res.output.count("worst resident set") == 1
    res = CliRunner().invoke(app, ["plan", "--format", "json", str(f)])
    recs = json.loads(res.output)["deployments"]
    server = recs[0]["server"]
    assert server["name"] == "trio" and server["max_resident"] == 2
    assert server["max_resident_from"] == "max_loaded_models" and server["engine"] == "ollama"
    worst = server["worst_resident_sets"][0]
    assert worst["models"] == ["trio.chat", "trio.big"]
    assert worst["need_bytes"] == sum(
        r["devices"][0]["total_bytes"] for r in recs if r["name"] in ("trio.chat", "trio.big")
    )


def test_build_one_server_env_one_drop_in_a_modelfile_per_model_and_the_tag_script(tmp_path):
    f = project(tmp_path, three(settings="{max_loaded_models: 2, parallel: 2, port: 11500}"))
    assert build([f], out=tmp_path / "out") == 0
    tree = read_tree(tmp_path / "out")
    assert sorted(tree) == [
        "trio/.vramc-manifest",
        "trio/big.Modelfile",
        "trio/chat.Modelfile",
        "trio/coder.Modelfile",
        "trio/create-models.sh",
        "trio/ollama.env",
        "trio/ollama.service.d/override.conf",
    ]
    env = tree["trio/ollama.env"].decode()
    assert "OLLAMA_MAX_LOADED_MODELS=2\n" in env and "OLLAMA_HOST=127.0.0.1:11500\n" in env
    assert "OLLAMA_NUM_PARALLEL=2\n" in env
    assert "PARAMETER num_ctx 8192\n" in tree["trio/coder.Modelfile"].decode()
    assert "ollama create coder:8b -f out/trio/coder.Modelfile" in tree["trio/coder.Modelfile"].decode()
    assert build([f], out=tmp_path / "out", check_only=True) == 0
    # the script creates each tag from its own Modelfile
    stub, record = tmp_path / "ollama", tmp_path / "argv"
    stub.write_text(RECORD)
    stub.chmod(0o755)
    subprocess.run(
        ["sh", str(tmp_path / "out/trio/create-models.sh")],
        check=True,
        timeout=30,
        env={**os.environ, "OLLAMA": str(stub), "ARGV_OUT": str(record)},
    )
    calls = [c.strip("\0").split("\0") for c in record.read_text().split("\n\0") if c]
    assert calls == [
        ["create", "chat", "-f", "chat.Modelfile"],
        ["create", "coder:8b", "-f", "coder.Modelfile"],
        ["create", "big", "-f", "big.Modelfile"],
    ]


def test_single_model_ollama_deployments_are_unchanged(tmp_path):
    f = project(
        tmp_path,
        "name: one\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\n"
        "engine: ollama\nmodel: llama-3.1-8b-instruct-q8_0\nsettings: {ctx: 8192}\n",
    )
    assert build([f], out=tmp_path / "out") == 0
    assert sorted(read_tree(tmp_path / "out")) == [
        "one/.vramc-manifest",
        "one/Modelfile",
        "one/ollama.env",
        "one/ollama.service.d/override.conf",
    ]
    r = run_check([f])
    assert [p.dep.server for p in r.plans] == [None]


@pytest.mark.parametrize(
    "tag", ['"x; touch PWNED"', '"$(touch PWNED)"', '"a b"', '"-f"', '"../x"', '"x\\n"', "'a:b:c'", '"a/b/c/d"']
)
def test_a_tag_that_is_not_an_ollama_name_is_refused_at_its_line(tmp_path, tag):
    r = run_check([project(tmp_path, three(tag=tag))])
    d = [d for d in r.diagnostics if d.severity.name == "ERROR"]
    assert d and d[0].line == 7 and "not an Ollama model name" in d[0].message, r.diagnostics
    assert build([tmp_path / "profiles" / "server.yaml"], out=tmp_path / "out") == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize(
    "body, where, message",
    [
        ("engine: llama-cpp-python\nmodels: [{name: a, model: M}]", (4, 9), "serves one model per deployment"),
        ("engine: ollama\nmodel: M\nmodels: [{name: a, model: M}]", (4, 8), "cannot both be given"),
        (
            "engine: ollama\nmodels: [{name: a, model: M, settings: {keep_alive: 5m}}]",
            (4, 78),
            "setting of the whole server",
        ),
        ("engine: ollama\nmodels: [{name: a, model: M}, {name: a, model: M, tag: b}]", (4, 63), "used twice"),
        (
            "engine: ollama\nmodels: [{name: a, model: M}, {name: b, model: M, tag: A}]",
            (4, 106),
            "tag 'A' is used twice",
        ),
        ("engine: ollama\nmodels: [{name: a, model: M}]\nvariants: {v: {settings: {ctx: 1024}}}", (5, 11), "variants"),
        ("engine: ollama", (1, 1), "missing required key model"),
        ("engine: ollama\nmodels: []", (4, 9), "at least 1"),
        ("engine: ollama\nmodels: [{name: a, model: nosuchmodel}]", (4, 27), "nosuchmodel"),
        ("engine: ollama\nmodels: {a: M}", (4, 9), "list"),
    ],
)
def test_hostile_server_profiles_are_clear_errors(tmp_path, body, where, message):
    body = body.replace(" M", " llama-3.1-8b-instruct-q8_0")
    f = project(tmp_path, "name: s\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\n" + body + "\n")
    r = run_check([f])
    errors = [d for d in r.diagnostics if d.severity.name == "ERROR"]
    assert errors, r.diagnostics
    assert any(message in d.full_message() and (d.line, d.column) == where for d in errors), [
        (d.line, d.column, d.full_message()) for d in errors
    ]
    proc = subprocess.run(
        [str(REPO / ".venv/bin/vramc"), "check", str(f)],
        capture_output=True,
        text=True,
        env={**os.environ, "VRAMC_NO_CACHE": "1"},
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout


FIT = """name: trio
hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
engine: ollama
settings: {max_loaded_models: 2}
models:
  - name: chat
    model: llama-3.1-8b-instruct-q8_0
    settings:
      ctx: auto
  - name: coder
    model: llama-3.1-8b-instruct-q8_0
    settings:
      ctx: auto
  - name: big
    model: llama-3.1-8b-instruct-q8_0
    settings: {ctx: 16384}
"""


def test_auto_settings_are_fitted_so_that_every_resident_set_fits(tmp_path):
    from vramc.plan.servers import gpu_use, resident_sets

    r = run_check([project(tmp_path, FIT)])
    assert codes(r) == []
    by = {p.dep.name: p for p in r.plans}
    # alone, one model would take most of the card; two of them share it, with the margin free
    assert by["trio.chat"].params.n_ctx == by["trio.coder"].params.n_ctx == 25856
    for s in resident_sets(r.plans):
        for need, have, _ in gpu_use(list(s)).values():
            assert need <= have * 0.95 + 1
    assert any("run together" in line for line in by["trio.chat"].search)


def test_fit_write_puts_each_models_answer_into_its_own_settings_and_check_accepts_it(tmp_path):
    from typer.testing import CliRunner

    from vramc.cli.commands import app

    f = project(tmp_path, FIT)
    res = CliRunner().invoke(app, ["fit", "--write", str(f)])
    assert res.exit_code == 0, res.output
    text = f.read_text()
    assert text.count("ctx: 25856  # vramc fit: auto") == 2
    assert "settings: {ctx: 16384, gpu_layers: 33}" in text
    after = run_check([f])
    assert [d for d in after.diagnostics if d.severity.name in ("ERROR", "WARNING")] == []
    res = CliRunner().invoke(app, ["fit", "--refit", "--write", str(f)])
    assert res.exit_code == 0 and f.read_text() == text


# --- llama-swap ---------------------------------------------------------------------------------

SWAP_SCHEMA = REPO / "vramc" / "data" / "llama-swap" / "config-schema.json"


def schema_errors(instance, schema, root=None, where="") -> list[str]:
    """JSON Schema (draft-07) validation of the keywords llama-swap's schema uses; jsonschema is not
    in the test environment. An unknown keyword fails loudly, so a newer schema cannot pass unread."""
    import re

    root = root or schema
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return schema_errors(instance, node, root, where)
    known = {
        "$schema",
        "$id",
        "title",
        "description",
        "default",
        "examples",
        "type",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "enum",
        "format",
        "oneOf",
        "anyOf",
        "minItems",
        "uniqueItems",
        "definitions",
        "patternProperties",
        "const",
        "exclusiveMinimum",
        "markdownDescription",
        "deprecated",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "allOf",
        "maxItems",
        "minProperties",
    }
    unknown = set(schema) - known
    assert not unknown, f"validator does not know {unknown} at {where}"
    errs: list[str] = []
    types = schema.get("type")
    if types is not None:
        ok = {
            "object": dict,
            "array": list,
            "string": str,
            "boolean": bool,
            "null": type(None),
            "integer": int,
            "number": (int, float),
        }
        tl = types if isinstance(types, list) else [types]
        if not any(
            isinstance(instance, ok[t]) and not (t in ("integer", "number") and isinstance(instance, bool)) for t in tl
        ):
            return [f"{where}: {instance!r} is not {types}"]
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{where}: {instance!r} not in {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{where}: {instance!r} != {schema['const']!r}")
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errs.append(f"{where}: {instance!r} does not match {schema['pattern']}")
        if len(instance) < schema.get("minLength", 0) or len(instance) > schema.get("maxLength", 1 << 60):
            errs.append(f"{where}: length of {instance!r}")
    if (
        isinstance(instance, int)
        and not isinstance(instance, bool)
        and not schema.get("minimum", -(1 << 62)) <= instance <= schema.get("maximum", 1 << 62)
    ):
        errs.append(f"{where}: {instance} out of range")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errs.append(f"{where}: missing {key}")
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                errs += schema_errors(value, props[key], root, f"{where}/{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += schema_errors(value, schema["additionalProperties"], root, f"{where}/{key}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{where}: unexpected key {key}")
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(instance):
            errs += schema_errors(value, schema["items"], root, f"{where}/{i}")
    for sub in schema.get("allOf", []):
        errs += schema_errors(instance, sub, root, where)
    if "anyOf" in schema and all(schema_errors(instance, s, root, where) for s in schema["anyOf"]):
        errs.append(f"{where}: matches none of anyOf")
    if "oneOf" in schema and sum(not schema_errors(instance, s, root, where) for s in schema["oneOf"]) != 1:
        errs.append(f"{where}: does not match exactly one of oneOf")
    return errs


SWAP = """name: swap
hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
engine: llama-swap
ttl: 300
settings: {port: 9292, parallel: 1, gpu_layers: all}
models:
  - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}}
  - {name: coder, model: llama-3.1-8b-instruct-q8_0, tag: "coder:8b", settings: {ctx: CODER}, ttl: 0}
  - {name: embed, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 2048}}
groups:
  chatty: {swap: true, exclusive: false, members: [chat, coder]}
  always: {swap: false, exclusive: false, persistent: true, members: [embed]}
"""


def test_the_schema_validator_refuses_what_llama_swap_refuses():
    schema = json.loads(SWAP_SCHEMA.read_text())
    bad = [
        {"models": {"a": {}}},
        {"models": {"a": {"cmd": "x", "ttl": -2}}},
        {"models": {"a": {"cmd": "x", "env": ["lower=1"]}}},
        {"models": {"a": {"cmd": "x"}}, "groups": {"g": {"swap": True}}},
    ]
    try:
        import jsonschema
    except ImportError:
        pass
    else:  # the structural validator agrees with jsonschema on these
        assert all(list(jsonschema.Draft7Validator(schema).iter_errors(d)) for d in bad)
        assert all(schema_errors(d, schema) for d in bad)
    assert schema_errors({"models": {"a": {"cmd": "x --port ${PORT}"}}}, schema) == []
    assert schema_errors({"models": {"a": {}}}, schema)  # cmd is required
    assert schema_errors({"models": {"a": {"cmd": "x", "ttl": -2}}}, schema)
    assert schema_errors({"models": {"a": {"cmd": "x", "env": ["lower=1"]}}}, schema)
    assert schema_errors({"models": {"a": {"cmd": "x"}}, "groups": {"g": {"swap": True}}}, schema)


def test_llama_swap_config_is_valid_against_its_schema_and_runs_the_planned_commands(tmp_path):
    import shlex

    import yaml

    from vramc.build.targets import llama_server
    from vramc.build.targets.common import Context

    f = project(tmp_path, SWAP.replace("CODER", "16384"))
    r = run_check([f])
    assert codes(r) == []
    assert build([f], out=tmp_path / "out") == 0
    assert sorted(read_tree(tmp_path / "out")) == ["swap/.vramc-manifest", "swap/config.yaml", "swap/launch.sh"]
    doc = yaml.safe_load((tmp_path / "out/swap/config.yaml").read_text())
    schema = json.loads(SWAP_SCHEMA.read_text())
    assert schema_errors(doc, schema) == []
    try:
        import jsonschema
    except ImportError:  # the dev extra has it; the structural check above stands alone without it
        pass
    else:
        jsonschema.Draft7Validator.check_schema(schema)
        assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)] == []
    assert doc["globalTTL"] == 300 and doc["models"]["coder:8b"]["ttl"] == 0 and "ttl" not in doc["models"]["chat"]
    assert doc["groups"]["always"] == {"swap": False, "exclusive": False, "persistent": True, "members": ["embed"]}
    by = {p.dep.tag: p for p in r.plans}
    for tag, entry in doc["models"].items():
        # llama-swap fills in ${PORT}, then splits the line as a POSIX shell (SanitizeCommand)
        argv = shlex.split(entry["cmd"].replace("${PORT}", "5800"))
        ctx = Context(plan=by[tag], port=5800, profile="p", command="c", root="..", folder="out/swap")
        want = llama_server.data(by[tag], ctx)
        expected = [want["binary"]] + [a for line in want["lines"] for a in line]
        assert argv == [str(a) for a in expected]
    launch = (tmp_path / "out/swap/launch.sh").read_text()
    assert "--config out/swap/config.yaml --listen 127.0.0.1:9292" in launch
    assert build([f], out=tmp_path / "out", check_only=True) == 0


def test_llama_swap_resident_sets_follow_its_groups(tmp_path):
    from vramc.plan.servers import resident_sets

    def sets(groups: str) -> list[list[str]]:
        text = SWAP.replace("CODER", "4096").split("groups:")[0] + groups
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        r = run_check([project(folder, text)])
        assert not [d for d in r.diagnostics if d.severity.name == "ERROR" and d.code != "VR340"], r.diagnostics
        return [[p.dep.tag for p in s] for s in resident_sets(r.plans)]

    # no groups: llama-swap's (default) group swaps one model at a time
    assert sets("") == [["chat"], ["coder:8b"], ["embed"]]
    assert sets("groups: {g: {swap: false, members: [chat, coder, embed]}}") == [["chat", "coder:8b", "embed"]]
    # the group above, and embed in the (default) group: both exclusive, so never together
    assert sets("groups: {g: {swap: false, members: [chat, coder]}}") == [["chat", "coder:8b"], ["embed"]]
    # a non-exclusive group stays loaded beside whatever an exclusive one loads
    assert sets("groups: {g: {swap: true, members: [chat, coder]}, e: {exclusive: false, members: [embed]}}") == [
        ["chat", "embed"],
        ["coder:8b", "embed"],
    ]
    # persistent: never unloaded by another group
    assert sets("groups: {g: {swap: true, members: [chat, coder]}, p: {persistent: true, members: [embed]}}") == [
        ["chat", "embed"],
        ["coder:8b", "embed"],
    ]


def test_llama_swap_group_over_the_card_is_an_error_and_not_built(tmp_path):
    f = project(tmp_path, SWAP.replace("CODER", "16384").replace("ctx: 2048", "ctx: 100000"))
    r = run_check([f])
    vr340 = [d for d in r.diagnostics if d.code == "VR340"]
    assert vr340 and all(d.severity.name == "ERROR" for d in vr340)
    assert "the last of them to start fails to load" in vr340[0].message
    assert (vr340[0].line, vr340[0].column) == (11, 3)  # groups:
    assert build([f], out=tmp_path / "out") == 1


@pytest.mark.parametrize(
    "body, where, message",
    [
        ("engine: llama-swap\nmodel: M", (4, 8), "engine llama-swap serves `models:`"),
        (
            "engine: llama-swap\nmodels: [{name: a, model: M}]\ngroups: {g: {members: [b]}}",
            (5, 24),
            "not one of this server's",
        ),
        (
            "engine: llama-swap\nmodels: [{name: a, model: M}]\ngroups: {g: {members: [a]}, h: {members: [a]}}",
            (5, 43),
            "in one group only",
        ),
        ("engine: llama-swap\nmodels: [{name: a, model: M, settings: {port: 1234}}]", (4, 72), "whole server"),
        ("engine: llama-swap\nmodels: [{name: a, model: M}]\ngroups: {g: {members: []}}", (5, 23), "at least 1"),
        ("engine: llama-swap\nmodels: [{name: a, model: M, ttl: -1}]", (4, 60), "whole number >= 0"),
        ("engine: ollama\nmodels: [{name: a, model: M}]\ngroups: {g: {members: [a]}}", (5, 9), "llama-swap's"),
        ("engine: ollama\nmodels: [{name: a, model: M, ttl: 5}]", (4, 60), "llama-swap's"),
    ],
)
def test_hostile_llama_swap_profiles_are_clear_errors(tmp_path, body, where, message):
    test_hostile_server_profiles_are_clear_errors(tmp_path, body, where, message)


def test_a_value_llama_swap_would_expand_is_refused_not_written(tmp_path):
    f = project(tmp_path, SWAP.replace("CODER", "16384"))
    gguf = tmp_path / "models" / "weird ${HOME} 'q'.gguf"
    model = (REPO / "profiles/models/llama-3.1-8b-instruct-q8_0.yaml").read_text()
    (tmp_path / "mine").mkdir()
    import yaml

    data = yaml.safe_load(model)
    data["gguf"] = str(gguf)
    (tmp_path / "profiles" / "weird.yaml").write_text(yaml.safe_dump(data))
    f.write_text(
        SWAP.replace("CODER", "16384").replace(
            "model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}", "model: ./weird.yaml, settings: {ctx: 8192}"
        )
    )
    r = run_check([f])
    assert not [d for d in r.diagnostics if d.severity.name == "ERROR"], r.diagnostics
    assert build([f], out=tmp_path / "out") == 1
    assert not (tmp_path / "out" / "swap").exists()


# --- llama-server's router mode -----------------------------------------------------------------


def router_project(tmp_path: Path, models_max: int = 1) -> tuple[Path, int]:
    from build_support import free_port
    from vramc.dev.synth import write_tiny_model

    port = free_port()
    (tmp_path / "models").mkdir(parents=True)
    write_tiny_model(tmp_path / "models" / "demo-tiny.gguf")
    f = project(
        tmp_path,
        f"""name: router
hardware: {{gpus: []}}
engine: llama-server
gpus: []
settings: {{port: {port}, max_loaded_models: {models_max}, parallel: 1, threads: 2}}
models:
  - {{name: a, model: demo-tiny, tag: tiny-a, settings: {{ctx: 256}}}}
  - {{name: b, model: demo-tiny, tag: tiny-b, settings: {{ctx: 512, batch: 64, ubatch: 64}}}}
""",
    )
    return f, port


def test_router_preset_and_launch_script(tmp_path):
    f, port = router_project(tmp_path)
    r = run_check([f])
    assert [d for d in r.diagnostics if d.severity.name in ("ERROR", "WARNING")] == []
    from vramc.plan.servers import resident_sets

    assert [[p.dep.tag for p in s] for s in resident_sets(r.plans)] == [["tiny-a"], ["tiny-b"]]
    assert build([f], out=tmp_path / "out") == 0
    ini = (tmp_path / "out/router/models.ini").read_text()
    assert "\n[tiny-a]\nmodel = models/demo-tiny.gguf\nctx-size = 256\n" in ini
    assert "\n[tiny-b]\n" in ini and "batch-size = 64\n" in ini and "--port" not in ini and "host =" not in ini
    launch = (tmp_path / "out/router/launch.sh").read_text()
    assert f"--models-preset out/router/models.ini --models-max 1 --host 127.0.0.1 --port {port}" in launch


@pytest.mark.skipif(not __import__("build_support").llama_server_binary(), reason="no pinned llama-server")
def test_pinned_router_lists_the_models_and_loads_one_on_request(tmp_path):
    import httpx

    from build_support import Server, llama_server_binary

    f, port = router_project(tmp_path)
    assert build([f], out=tmp_path / "out") == 0
    env = {**os.environ, "LLAMA_SERVER": str(llama_server_binary())}
    with Server(
        ["sh", str(tmp_path / "out/router/launch.sh")], cwd=tmp_path, env=env, log=tmp_path / "router.log"
    ) as server:
        server.wait_healthy(port, timeout_s=60)
        base = f"http://127.0.0.1:{port}"
        ids = sorted(m["id"] for m in httpx.get(f"{base}/v1/models", timeout=10).json()["data"])
        assert ids == ["tiny-a", "tiny-b"]
        for tag in ("tiny-a", "tiny-b"):  # --models-max 1: the second request swaps the first out
            res = httpx.post(
                f"{base}/v1/completions", timeout=120, json={"model": tag, "prompt": "hello", "max_tokens": 2}
            )
            assert res.status_code == 200, res.text
        models = {m["id"]: m for m in httpx.get(f"{base}/v1/models", timeout=10).json()["data"]}
        status = {k: (m.get("status") or {}).get("value") for k, m in models.items()}
        assert status["tiny-b"] == "loaded" and status["tiny-a"] != "loaded", models


def test_llama_swap_models_that_run_together_are_fitted_together(tmp_path):
    from typer.testing import CliRunner

    from vramc.cli.commands import app
    from vramc.plan.servers import gpu_use

    f = project(
        tmp_path,
        """name: swapfit
hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
engine: llama-swap
models:
  - name: chat
    model: llama-3.1-8b-instruct-q8_0
    settings:
      ctx: auto
  - name: coder
    model: qwen2.5-coder-7b-instruct-q4_k_m
    settings:
      ctx: auto
groups:
  both: {swap: false, members: [chat, coder]}
""",
    )
    r = run_check([f])
    assert codes(r) == []
    ((need, have, _),) = gpu_use(r.plans).values()
    assert need <= have * 0.95  # together, with the margin free
    assert CliRunner().invoke(app, ["fit", "--write", str(f)]).exit_code == 0
    after = run_check([f])
    assert [d for d in after.diagnostics if d.severity.name in ("ERROR", "WARNING")] == []
    assert "ctx: 32768  # vramc fit: auto" in f.read_text()  # the coder's trained context


def test_plan_json_says_what_decides_the_resident_sets(tmp_path):
    from vramc.plan.view import plan_record

    r = run_check([project(tmp_path / "swap", SWAP.replace("CODER", "4096"))])
    rec = plan_record(r.plans[0])["server"]
    assert (rec["engine"], rec["max_resident_from"], rec["max_resident"]) == ("llama-swap", "groups", 2)
    r = run_check([project(tmp_path / "ollama", three(settings="{}"))])
    rec = plan_record(r.plans[0])["server"]
    assert (rec["engine"], rec["max_resident_from"], rec["max_resident"]) == ("ollama", "ollama-default", 3)
    f, _ = router_project(tmp_path / "router", models_max=1)
    rec = plan_record(run_check([f]).plans[0])["server"]
    assert (rec["engine"], rec["max_resident_from"], rec["max_resident"]) == ("llama-server", "max_loaded_models", 1)
