"""The example profile of issue 2, verbatim, with the sparse GGUF it names generated beside it."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.dev.synth.shapes import get_shape
from vramc.dev.synth.writer import write_sparse_gguf

FIXTURE = Path(__file__).parent / "fixtures" / "profiles" / "ok" / "llama8b-split.yaml"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    (root / "profiles").mkdir()
    shutil.copy(FIXTURE, root / "profiles" / "llama8b-split.yaml")
    (root / "models").mkdir()
    write_sparse_gguf(
        root / "models" / "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf", get_shape("llama-3.1-8b-instruct"), "Q8_0"
    )
    return root


def test_accepted_as_it_stands(project, monkeypatch):
    monkeypatch.chdir(project)
    res = CliRunner().invoke(app, ["check", "profiles/llama8b-split.yaml"])
    assert res.exit_code == 0, res.output
    assert "VR" not in res.output and "no problems in 1 file" in res.output


def test_plan_json_has_the_documented_shape(project, monkeypatch):
    monkeypatch.chdir(project)
    res = CliRunner().invoke(app, ["plan", "profiles/llama8b-split.yaml", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["version"] == 1
    [dep] = doc["deployments"]
    assert {"name", "engine", "devices", "host", "verdict"} <= set(dep)
    assert (dep["name"], dep["engine"], dep["verdict"]) == ("llama8b-split", "llama-server", "fits")
    assert dep["compute_model"] == "exact"  # Llama's graph is replayed, not approximated
    for d in dep["devices"]:
        assert {
            "id",
            "name",
            "capacity_bytes",
            "weights_bytes",
            "kv_bytes",
            "compute_bytes",
            "overhead_bytes",
            "total_bytes",
            "layers",
        } <= set(d)
        assert d["total_bytes"] == d["weights_bytes"] + d["kv_bytes"] + d["compute_bytes"] + d["overhead_bytes"]
        assert all(isinstance(v, int) for k, v in d.items() if k.endswith("_bytes"))
    assert {"weights_bytes", "kv_bytes", "compute_bytes"} <= set(dep["host"])
    cuda0, cuda1 = dep["devices"]
    # -ts 16,12 over 33 layers: blocks 0-18 on CUDA0; 19-31 and the output layer (32) on CUDA1
    assert cuda0["layers"] == [0, 18] and cuda1["layers"] == [19, 32]
    # 32 blocks of 221.03 MiB (Q8_0), the output layer 532.33 MiB; token_embd stays on the host
    assert cuda0["weights_bytes"] // MiB == 19 * 221 + 0  # 19 blocks of 221.03 MiB = 4199 MiB
    # KV: -c 8192 -np 2 is 8192 cells in total (2 streams of 4096), 128 KiB per cell at f16
    assert cuda0["kv_bytes"] + cuda1["kv_bytes"] == 8192 * 128 * 1024
    assert dep["host"]["weights_bytes"] // MiB == 532
