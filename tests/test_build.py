"""`vramc build` and `vramc build --check`: what is written where, what is reported, determinism,
atomic writes, stale files, failing profiles, --force, and project templates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from build_support import FIXTURE, build, copy_fixture, read_tree

GOLDEN = read_tree(FIXTURE / "out")


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = copy_fixture(tmp_path / "project")
    monkeypatch.chdir(root)
    return root


def test_layout_variants_and_reported_status(project, capsys):
    assert build(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "created    out/mistral-split/launch.sh" in out
    assert "created    out/mistral-split/@stable/vramc-mistral-split.service" in out
    assert "created    out/mistral-ollama/ollama.service.d/override.conf" in out
    assert read_tree(project / "out") == GOLDEN
    assert os.access(project / "out" / "mistral-split" / "launch.sh", os.X_OK)
    assert not os.access(project / "out" / "mistral-split" / "llama-server.env", os.X_OK)
    # a second build changes nothing and says so, file by file
    assert build(["profiles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(GOLDEN) and all(line.startswith("unchanged  ") for line in lines)


def test_changed_and_stale_files_are_reported_and_repaired(project, capsys):
    """A generated file that was edited is regenerated; a file vramc wrote and no longer
    generates (a variant taken out of the profile) is removed with its folder; a file vramc did
    not write, or one it would remove but that was edited since, is reported and kept."""
    build(["profiles"])
    capsys.readouterr()
    launch = project / "out" / "qwen-chat" / "launch.sh"
    launch.write_text(launch.read_text().replace("--port 8000", "--port 9999"))
    notes = project / "out" / "qwen-chat" / "notes.txt"
    notes.write_text("hand-written\n")
    hand_made = project / "out" / "mistral-split" / "@gone" / "launch.sh"
    hand_made.parent.mkdir()
    hand_made.write_text("#!/bin/sh\n")
    profile = project / "profiles" / "ollama.yaml"
    profile.write_text(profile.read_text().split("variants:")[0])  # @one-slot is gone
    one_slot = project / "out" / "mistral-ollama" / "@one-slot"
    (one_slot / "app.env").write_text("EDITED=1\n")
    assert build(["profiles"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "changed    out/qwen-chat/launch.sh" in out
    assert "removed    out/mistral-ollama/@one-slot/Modelfile" in out
    assert "removed    out/mistral-ollama/@one-slot/ollama.service.d/override.conf" in out
    assert "removed    out/mistral-ollama/ollama.env.one-slot" in out  # its flat copy
    assert "removed    out/mistral-ollama/@one-slot/.vramc-manifest" in out
    assert not (one_slot / "ollama.service.d").exists()
    assert "left alone: out/qwen-chat/notes.txt (vramc build did not write it)" in captured.err
    assert "left alone: out/mistral-split/@gone/launch.sh (vramc build did not write it)" in captured.err
    assert (
        "left alone: out/mistral-ollama/@one-slot/app.env (no longer generated, and changed since vramc wrote it)"
    ) in captured.err
    assert notes.read_text() == "hand-written\n" and hand_made.read_text() == "#!/bin/sh\n"
    assert (one_slot / "app.env").read_text() == "EDITED=1\n"
    notes.unlink()
    shutil.rmtree(hand_made.parent)
    shutil.rmtree(one_slot)
    expected = {k: v for k, v in GOLDEN.items() if "one-slot" not in k}
    built = read_tree(project / "out")
    assert {k for k in built if k.startswith("mistral-ollama/")} == {
        k for k in expected if k.startswith("mistral-ollama/")
    }
    assert {k: v for k, v in built.items() if not k.startswith("mistral-ollama/")} == {
        k: v for k, v in expected.items() if not k.startswith("mistral-ollama/")
    }
    assert build(["profiles"], check_only=True) == 0


def test_check_mode_writes_nothing_and_shows_a_diff(project, capsys):
    assert build(["profiles"], check_only=True) == 1  # nothing built yet: everything missing
    assert not (project / "out").exists()
    assert "missing: out/qwen-chat/vllm.yaml" in capsys.readouterr().err
    build(["profiles"])
    capsys.readouterr()
    assert build(["profiles"], check_only=True) == 0
    assert capsys.readouterr().out == ""
    env = project / "out" / "mistral-ollama" / "ollama.env"
    env.write_text(env.read_text().replace("OLLAMA_NUM_PARALLEL=2", "OLLAMA_NUM_PARALLEL=4"))
    (project / "out" / "qwen-batch" / "stale.conf").write_text("x\n")
    (project / "out" / "qwen-chat" / "launch.sh").chmod(0o644)
    before = read_tree(project / "out")
    assert build(["profiles"], check_only=True) == 1
    captured = capsys.readouterr()
    assert "-OLLAMA_NUM_PARALLEL=4\n+OLLAMA_NUM_PARALLEL=2\n" in captured.out
    assert "--- out/mistral-ollama/ollama.env (on disk)" in captured.out
    assert "unknown: out/qwen-batch/stale.conf (vramc build did not write it)" in captured.err
    assert "mode differs: out/qwen-chat/launch.sh should be executable" in captured.err
    assert read_tree(project / "out") == before  # --check wrote nothing


def test_output_is_identical_from_any_directory_and_any_machine_path(tmp_path, monkeypatch):
    """No absolute path, time or machine detail: a copy of the project elsewhere, built from
    another working directory, gives the same bytes as the committed golden files."""
    copy = copy_fixture(tmp_path / "somewhere" / "else")
    monkeypatch.chdir(tmp_path)
    profiles = [copy / "profiles" / "llama-server.yaml", copy / "profiles" / "ollama.yaml"]
    assert build(profiles, out=copy / "out") == 0
    built = read_tree(copy / "out")
    assert built == {k: v for k, v in GOLDEN.items() if k.startswith(("mistral-split/", "mistral-ollama/"))}
    for data in built.values():
        assert str(tmp_path).encode() not in data


def test_a_killed_build_leaves_old_or_new_files_never_half_written(project, monkeypatch):
    build(["profiles"])
    old = b"# Generated by vramc from an older profile\n"  # vramc's (its header): may be replaced
    for path in (project / "out").rglob("*"):
        if path.is_file():
            path.write_bytes(old)
    calls = {"n": 0}
    real_fsync = os.fsync

    def dying_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # the build is killed while writing its fifth file
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        build(["profiles"])
    files = [p for p in (project / "out").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]
    rel = {p.relative_to(project / "out").as_posix(): p.read_bytes() for p in files}
    assert sum(data != old for data in rel.values()) == 4
    assert all(data in (old, GOLDEN[name]) for name, data in rel.items())


def test_failing_profiles_are_not_built_unless_forced(project, capsys):
    profile = project / "profiles" / "llama-cpp-python.yaml"
    profile.write_text(profile.read_text().replace("ctx: 8192", "ctx: 8192\n  tensor_split: [1, 1]"))
    assert build(["profiles/llama-cpp-python.yaml"]) == 1
    err = capsys.readouterr().err
    assert "VR303 error" in err and "not built: mistral-python fails check (VR303)" in err
    assert not (project / "out").exists()
    assert build(["profiles/llama-cpp-python.yaml"], force=True) == 0
    assert "--force: BUILDING mistral-python ALTHOUGH CHECK FAILS (VR303)" in capsys.readouterr().err
    assert (project / "out" / "mistral-python" / "serve.py").is_file()


def test_a_model_without_a_file_says_where_to_add_it(project, capsys):
    """A locked or config-only model plans without its file, but a launch needs one: the build
    says which profile lacks `gguf:` and what to write there."""
    (project / "profiles" / "nofile.yaml").write_text(
        "name: nofile\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nmodel:\n"
        "  config: {architecture: LlamaForCausalLM, num_hidden_layers: 4, hidden_size: 256, num_attention_heads: 4,\n"
        "           num_key_value_heads: 2, intermediate_size: 512, vocab_size: 1000, max_position_embeddings: 2048}\n"
        "  quant: Q8_0\nengine: llama-server\nsettings: {ctx: 1024}\n"
    )
    assert build(["profiles/nofile.yaml"]) == 1
    err = capsys.readouterr().err
    assert "not built: nofile: the model (profiles/nofile.yaml) has no `gguf:` path" in err, err
    assert "add `gguf: models/FILE.gguf` to it" in err
    assert not (project / "out" / "nofile").exists()


def test_one_name_in_two_files_is_built_by_neither(project, capsys):
    shutil.copy(project / "profiles" / "llama-cpp-python.yaml", project / "profiles" / "again.yaml")
    assert build(["profiles"]) == 1
    assert (
        "would hold deployment 'mistral-python' of profiles/again.yaml and profiles/llama-cpp-python.yaml"
    ) in capsys.readouterr().err
    assert not (project / "out" / "mistral-python").exists()
    assert (project / "out" / "mistral-split").is_dir()


def test_project_templates_override_add_and_skip(project):
    """templates/ollama/Modelfile.j2 overrides the built-in (and includes it as builtin/...),
    templates/app/ is a target of the project's own, and a template that renders to nothing
    writes no file."""
    (project / "templates" / "app" / "vllm-only.txt.j2").write_text(
        "{% if engine == 'vllm' %}{{ header() }}\nport {{ port }}\n{% endif %}"
    )
    build(["profiles"])
    out = project / "out"
    modelfile = (out / "mistral-ollama" / "Modelfile").read_text()
    assert modelfile.startswith("# Generated by vramc from profiles/ollama.yaml")
    assert modelfile.endswith("PARAMETER temperature 0.2\n")
    assert (out / "mistral-python" / "app.env").read_text().splitlines()[-3:] == [
        "OPENAI_BASE_URL=http://127.0.0.1:8000/v1",
        "OPENAI_MODEL=mistral-python",
        "MAX_CONTEXT_TOKENS=8192",
    ]
    assert (out / "qwen-batch" / "vllm-only.txt").read_text().endswith("port 8001\n")
    assert not (out / "mistral-python" / "vllm-only.txt").exists()


def test_every_file_starts_with_its_header():
    for name, data in GOLDEN.items():
        lines = data.decode().splitlines()
        if lines[0].startswith("#!"):
            lines = lines[1:]
        assert lines[0].startswith("# Generated by vramc from profiles/"), name
        assert lines[2].startswith("#   vramc build profiles/"), name


def test_cli_exit_codes():
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "vramc", "build", *args], cwd=FIXTURE, capture_output=True, text=True
        )

    ok = run("--check", "profiles")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert run("--check", "--out", "elsewhere", "profiles").returncode == 1
    assert not (FIXTURE / "elsewhere").exists()


def test_a_profile_that_does_not_load_fails_the_build(project, capsys):
    (project / "profiles" / "broken.yaml").write_text("kind: deployment\nname: b\nengine: vllm\n")
    assert build(["profiles"]) == 1
    assert "not built: profiles/broken.yaml does not load" in capsys.readouterr().err
    assert (project / "out" / "qwen-chat" / "vllm.args").is_file()  # the others are built
