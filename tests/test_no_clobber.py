"""The files a user has are never replaced by a report or a generated profile: `check --output` at a
profile it reads, `analyze --write` at a deployment profile or at the GGUF file itself. Each is
refused with the file byte for byte as it was (through the CLI, as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vramc.load.yamledit import EditRefused, write_new

ROOT = Path(__file__).resolve().parent.parent


def vramc(*args, cwd):
    env = dict(os.environ, VRAMC_NO_CACHE="1")
    return subprocess.run(
        [sys.executable, "-m", "vramc", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


@pytest.fixture
def project(tmp_path):
    prof = tmp_path / "profiles"
    (prof / "hardware").mkdir(parents=True)
    (prof / "models").mkdir()
    for sub in ("hardware/gpu-16gb.yaml", "models/llama-3.1-8b-instruct-q8_0.yaml", "16gb.yaml"):
        (prof / sub).write_bytes((ROOT / "profiles" / sub).read_bytes())
    (tmp_path / "models").mkdir()
    subprocess.run(
        [sys.executable, "-m", "vramc.synth", "tiny", str(tmp_path / "models" / "t.gguf")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return tmp_path


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "target",
    [
        "profiles/16gb.yaml",
        "profiles/hardware/gpu-16gb.yaml",
        "profiles/../profiles/16gb.yaml",
        "profiles/report.txt",
        "models/t.gguf",
        "link",
    ],
)
def test_check_output_never_replaces_what_check_reads(project, target):
    (project / "link").symlink_to("profiles/16gb.yaml")
    before = snapshot(project)
    r = vramc("check", "profiles", "-o", target, cwd=project)
    assert r.returncode == 2, r.stderr
    assert "write the report elsewhere" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(project) == before


def test_check_output_elsewhere_is_written(project):
    r = vramc("check", "profiles/16gb.yaml", "-o", "report.txt", cwd=project)
    assert r.returncode == 0, r.stderr
    assert (project / "report.txt").exists()


@pytest.mark.parametrize("target", ["profiles/16gb.yaml", "models/t.gguf", "profiles/hardware/gpu-16gb.yaml"])
def test_analyze_write_never_replaces_another_kind_of_file(project, target):
    before = snapshot(project)
    r = vramc("analyze", "models/t.gguf", "--write", target, cwd=project)
    assert r.returncode == 2, r.stderr
    assert "is not a model profile" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(project) == before


def test_analyze_write_replaces_a_model_profile(project):
    r = vramc("analyze", "models/t.gguf", "--write", "profiles/models/t.yaml", cwd=project)
    assert r.returncode == 0, r.stderr
    first = (project / "profiles/models/t.yaml").read_bytes()
    (project / "profiles/models/t.yaml").write_bytes(first.replace(b"name: t", b"name: t\n# edited", 1))
    r = vramc("analyze", "models/t.gguf", "--write", "profiles/models/t.yaml", cwd=project)
    assert r.returncode == 0, r.stderr  # re-locking a model profile is what --write is for
    assert (project / "profiles/models/t.yaml").read_bytes() == first


def test_write_new_refuses_what_is_not_a_profile_of_its_kind(tmp_path):
    model = "kind: model\nname: m\ngguf: m.gguf\n"
    for existing in (
        b"GGUF\x03\x00\x00\x00" + b"\x00" * 64,
        b"name: d\nhardware: h\nmodel: m\nengine: ollama\n",
        b"\xff\xfe not text",
        b"just: [a, list",
    ):
        p = tmp_path / "x.yaml"
        p.write_bytes(existing)
        with pytest.raises(EditRefused, match="is not a model profile"):
            write_new(p, model)
        assert p.read_bytes() == existing
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(EditRefused, match="not a regular file"):
        write_new(fifo, model)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"kind: model\n" + b"#" * (5 << 20))
    with pytest.raises(EditRefused):
        write_new(big, model)
    for fine in (b"", b"kind: model\nname: old\nlock: {}\n"):
        p.write_bytes(fine)
        write_new(p, model)
        assert p.read_text() == model
