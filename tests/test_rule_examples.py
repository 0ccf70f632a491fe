"""Every rule's examples, exactly as `vramc explain CODE` prints them, are executed: the `Bad:`
example raises the rule and the `Good:` example does not. The rules come from the registry, so a
code added later is covered without touching this file.

Examples are fragments of a profile (what the docs need to show, not a whole file). How a fragment
becomes files that `vramc check` reads is fixed here, in one place:

- command: an example whose lines start with `vramc ` is a command line. It runs through the CLI
  in the context folder and the diagnostics it prints are read. VR000 is about a path that cannot
  be read, which no profile can show; its examples are such commands (see
  test_vr000_examples_are_commands; tests/fixtures/unreadable/ covers a file that is not UTF-8).
- raw: a fragment that vramc's YAML loader itself rejects (syntax, duplicate keys, merge keys:
  VR001-VR003) cannot be merged as data. It is appended as text to BASE_DEPLOYMENT, less the
  top-level keys it writes itself.
- whole: a fragment with `kind:`, or of a rule in WHOLE_FILE (about what a whole file lacks), is
  the whole file.
- deployments: a fragment with `deployments:` is a deployments file on `hardware: workstation`;
  each listed deployment is completed as in `deployment`.
- hardware: a fragment whose keys are all hardware keys and whose `gpus` are GPU mappings is
  merged into BASE_HARDWARE and written as hardware/workstation.yaml, which the base deployment
  uses.
- model: a fragment whose keys are all model keys (`lock`, `gguf`, `hf`, ...) is merged into the
  model profile of the context with the same `gguf` (else the base deployment's model) and
  written over it.
- deployment (everything else): merged into BASE_DEPLOYMENT. A fragment without `engine` gets the
  first engine of ENGINE_ORDER that takes all its settings (so `gpu_memory_utilization` means
  vLLM), and one without `model` gets DEFAULT_MODEL of its engine.

Merging sets the fragment's keys in the base; mappings merge key by key, any other value
replaces. The context folder is a copy of this repository's profiles/, the test fixtures' model
profiles, `hardware/workstation.yaml` (two RTX 4090s) and real GGUF files written by vramc.dev.synth:
models/demo-tiny.gguf (the same file as models/complete.gguf), models/half-downloaded.gguf (its
first 4 KiB) and models/gemma-3-12b.gguf (Gemma 3 12B Q4_K_M, sparse).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.lint.rules import load_rules

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = Path(__file__).parent / "fixtures" / "profiles" / "bad" / "models"
WORKSTATION = {
    "kind": "hardware",
    "name": "workstation",
    "gpus": [{"name": "RTX 4090", "vram": "24GiB"}, {"name": "RTX 4090", "vram": "24GiB"}],
}
BASE_HARDWARE = WORKSTATION
BASE_DEPLOYMENT = {"name": "example", "hardware": "workstation"}  # + engine and model: complete()
ENGINE_ORDER = ("llama-server", "vllm", "ollama", "llama-cpp-python")
DEFAULT_MODEL = {"vllm": "mistral-7b-instruct-awq"}  # the others: a GGUF model
GGUF_MODEL = "llama-3.1-8b-instruct-q8_0"
# Rules whose examples are whole files: a missing key (VR102) or the kind itself (VR004).
WHOLE_FILE = {"VR004", "VR102"}
HARDWARE_KEYS = {"kind", "name", "description", "gpus", "host_ram", "overhead", "device_order"}
MODEL_KEYS = {
    "kind",
    "name",
    "description",
    "source",
    "gguf",
    "mmproj",
    "mmproj_size",
    "draft",
    "draft_size",
    "lock",
    "hf",
    "config",
    "quantization",
    "weights_size",
    "params",
    "quant",
    "quants",
}
DIAG_RE = re.compile(r"^\S+:\d+:\d+: (VR\d{3}) ", re.M)

runner = CliRunner()


def printed_examples(code: str) -> dict[str, str]:
    """The `Bad:` and `Good:` blocks of `vramc explain CODE`, read back from its output."""
    res = runner.invoke(app, ["explain", code])
    assert res.exit_code == 0, res.output
    out: dict[str, list[str]] = {}
    label = None
    for line in res.output.splitlines():
        if line in ("Bad:", "Good:"):
            label = line[:-1].lower()
            out[label] = []
        elif label and (line.startswith("    ") or not line.strip()):
            out[label].append(line[4:])
        else:
            label = None
    return {k: "\n".join(v).strip("\n") + "\n" for k, v in out.items()}


@pytest.fixture(scope="module")
def context_template(tmp_path_factory) -> Path:
    from vramc.dev.synth.shapes import CATALOG
    from vramc.dev.synth.writer import write_sparse_gguf, write_tiny_model

    base = tmp_path_factory.mktemp("context")
    shutil.copytree(ROOT / "profiles", base / "profiles")
    for f in FIXTURE_MODELS.glob("*.yaml"):
        shutil.copy(f, base / "profiles" / "models" / f.name)
    (base / "profiles" / "hardware" / "workstation.yaml").write_text(yaml.safe_dump(WORKSTATION, sort_keys=False))
    # GGUF files live outside the template and are linked in: each example copies the template,
    # and a sparse file copied would be written out in full.
    files = tmp_path_factory.mktemp("gguf")
    tiny = write_tiny_model(files / "demo-tiny.gguf")
    (files / "half-downloaded.gguf").write_bytes(tiny.read_bytes()[:4096])
    write_sparse_gguf(files / "gemma-3-12b.gguf", CATALOG["gemma-3-12b-it"], "Q4_K_M")
    (base / "models").mkdir()
    for name, target in (
        ("demo-tiny.gguf", tiny),
        ("complete.gguf", tiny),
        ("half-downloaded.gguf", files / "half-downloaded.gguf"),
        ("gemma-3-12b.gguf", files / "gemma-3-12b.gguf"),
    ):
        (base / "models" / name).symlink_to(target)
    return base


def merge(base, frag):
    if isinstance(base, dict) and isinstance(frag, dict):
        out = dict(base)
        for k, v in frag.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return frag


def complete(dep: dict) -> dict:
    """A deployment with the engine and model its fragment leaves out."""
    from vramc.lint.rules.engine_options import ENGINE_SETTINGS

    dep = dict(dep)
    if "engine" not in dep:
        keys = set((dep.get("settings") or {}).keys())
        dep["engine"] = next((e for e in ENGINE_ORDER if keys <= ENGINE_SETTINGS[e]), ENGINE_ORDER[0])
    if "models" not in dep:  # a server with several models (issue 14) names each one
        dep.setdefault("model", DEFAULT_MODEL.get(dep["engine"], GGUF_MODEL))
    return dep


def context_of(code: str, text: str) -> str:
    from vramc.load.yamlpos import load_text

    if text.lstrip().startswith("vramc "):
        return "command"
    loaded = load_text(text, "example.yaml")
    if loaded.diagnostics or not isinstance(loaded.data, dict):
        return "raw"
    data = loaded.data
    if code in WHOLE_FILE or "kind" in data:
        return "whole"
    if "deployments" in data:
        return "deployments"
    gpus = data.get("gpus")
    if set(data) <= HARDWARE_KEYS and isinstance(gpus, list) and all(isinstance(g, dict) for g in gpus):
        return "hardware"
    if set(data) <= MODEL_KEYS:
        return "model"
    return "deployment"


def run_example(code: str, text: str, folder: Path) -> set[str]:
    """The codes `vramc check` reports for one example in its context (copied to `folder`)."""
    from vramc.lint.check import run_check

    profiles = folder / "profiles"
    kind = context_of(code, text)
    if kind == "command":
        lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
        codes: set[str] = set()
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            for argv in (shlex.split(ln) for ln in lines if ln):
                assert argv[0] == "vramc", text
                res = runner.invoke(app, argv[1:])
                assert res.exit_code in (0, 1) and isinstance(res.exception, (SystemExit, type(None))), (
                    text,
                    res.output,
                    res.exception,
                )
                codes |= set(DIAG_RE.findall(res.output))
        finally:
            os.chdir(cwd)
        return codes
    dep_file = profiles / "example.yaml"
    checked = [dep_file]
    base = complete(BASE_DEPLOYMENT)
    if kind == "raw":
        own = set(re.findall(r"^([A-Za-z_][\w.-]*)\s*:", text, re.M))
        dep_file.write_text(yaml.safe_dump({k: v for k, v in base.items() if k not in own}, sort_keys=False) + text)
    else:
        data = yaml.safe_load(text)
        if kind == "whole":
            doc = data
        elif kind == "deployments":
            doc = merge({"hardware": "workstation"}, data)
            doc["deployments"] = [complete(d) for d in doc["deployments"]]
        elif kind == "deployment":
            doc = complete(merge(BASE_DEPLOYMENT, data))
        else:
            doc = base
            if kind == "hardware":
                target = profiles / "hardware" / "workstation.yaml"
                ref = BASE_HARDWARE
            else:
                target = next(
                    (
                        p
                        for p in sorted((profiles / "models").glob("*.yaml"))
                        if data.get("gguf") and (yaml.safe_load(p.read_text()) or {}).get("gguf") == data["gguf"]
                    ),
                    profiles / "models" / f"{base['model']}.yaml",
                )
                ref = yaml.safe_load(target.read_text())
                doc = dict(base, model=target.stem)
            target.write_text(yaml.safe_dump(merge(ref, data), sort_keys=False))
            checked.append(target)
        dep_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {d.code for d in run_check(checked).diagnostics}


CODES = sorted(load_rules())


@pytest.mark.parametrize("code", CODES)
def test_printed_examples_raise_their_rule(code, context_template, tmp_path):
    examples = printed_examples(code)
    assert set(examples) == {"bad", "good"}, f"{code}: explain prints no Bad/Good example"
    found = {}
    for label, text in examples.items():
        folder = tmp_path / label
        shutil.copytree(context_template, folder, symlinks=True)
        found[label] = run_example(code, text, folder)
    assert code in found["bad"], (
        f"{code}'s Bad example ({context_of(code, examples['bad'])} context) does not raise it: "
        f"{sorted(found['bad'])}\n{examples['bad']}"
    )
    assert code not in found["good"], (
        f"{code}'s Good example ({context_of(code, examples['good'])} context) raises it\n{examples['good']}"
    )


def test_vr000_examples_are_commands():
    # A path that cannot be read (missing, not UTF-8) is not a profile: no fragment merged into
    # one can show it. VR000's examples are `vramc check PATH` command lines, run as commands by
    # the test above; test_check_fixtures runs tests/fixtures/unreadable/VR000-not-utf8.yaml.
    ex = printed_examples("VR000")
    assert [context_of("VR000", ex[k]) for k in ("bad", "good")] == ["command", "command"]
