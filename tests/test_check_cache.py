"""The check cache answers only when nothing the check read (or looked for) has changed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def check(project: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VRAMC_NO_CACHE"}
    env["VRAMC_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "vramc", "check", "profiles/"], capture_output=True, text=True, cwd=project, env=env
    )


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "checks").glob("*.json"))


def test_cache_hits_and_invalidation(tmp_path):
    project, cache = tmp_path / "p", tmp_path / "cache"
    (project / "profiles" / "models").mkdir(parents=True)
    shutil.copy(ROOT / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml", project / "profiles" / "models")
    dep = project / "profiles" / "d.yaml"
    dep.write_text(
        "name: d\nhardware: box\nmodel: llama-3.1-8b-instruct-q8_0\nengine: llama-server\n"
        "settings: {ctx: 8192, gpu_layers: all}\n"
    )
    first = check(project, cache)
    assert first.returncode == 1 and "VR110" in first.stdout  # hardware/box.yaml does not exist
    stamps = {e: e.stat().st_mtime_ns for e in entries(cache)}
    assert len(stamps) == 2  # one entry per checked file: d.yaml and the model profile
    again = check(project, cache)
    assert (again.returncode, again.stdout) == (first.returncode, first.stdout)
    assert {e: e.stat().st_mtime_ns for e in entries(cache)} == stamps  # answered from the cache

    # a file that was looked for and missing appears: the answer changes
    (project / "profiles" / "hardware").mkdir()
    (project / "profiles" / "hardware" / "box.yaml").write_text("gpus: [{name: RTX 4090, vram: 24GiB}]\n")
    fixed = check(project, cache)
    assert fixed.returncode == 0 and fixed.stdout == ""

    # a referenced file changes: the answer changes
    (project / "profiles" / "hardware" / "box.yaml").write_text("gpus: [{name: RTX 3060, vram: 6GiB}]\n")
    small = check(project, cache)
    assert small.returncode == 1 and "VR300" in small.stdout

    # a new profile in the folder is checked too, and only it is checked again
    stamps = {e: e.stat().st_mtime_ns for e in entries(cache)}
    (project / "profiles" / "e.yaml").write_text("name: e\nhardware: box\nmodel: nowhere\nengine: ollama\n")
    more = check(project, cache)
    assert "e.yaml" in more.stdout and "VR110" in more.stdout
    assert "d.yaml" in more.stdout  # d.yaml's own (cached) finding is still reported
    after = {e: e.stat().st_mtime_ns for e in entries(cache)}
    assert len(after) == len(stamps) + 1 and all(after[e] == t for e, t in stamps.items())


def test_model_file_appearing_invalidates(tmp_path):
    from vramc.dev.synth.writer import write_tiny_model

    project, cache = tmp_path / "p", tmp_path / "cache"
    (project / "profiles").mkdir(parents=True)
    (project / "profiles" / "d.yaml").write_text(
        "name: d\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nmodel: {gguf: models/tiny.gguf}\n"
        "engine: llama-cpp-python\nsettings: {ctx: 256, gpu_layers: all}\n"
    )
    assert "VR200" in check(project, cache).stdout  # no file, no lock
    write_tiny_model(project / "models" / "tiny.gguf")
    after = check(project, cache)
    assert after.returncode == 0 and "VR200" not in after.stdout
