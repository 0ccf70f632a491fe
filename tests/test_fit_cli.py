"""`vramc fit`: what it prints, and `--write`, which must keep the profile's comments and layout."""

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.lint.check import run_check

ROOT = Path(__file__).resolve().parent.parent


def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    return tmp_path / "profiles"


def test_fit_prints_choices_and_search(tmp_path):
    prof = project(tmp_path) / "deepseek-14b-split.yaml"
    res = CliRunner().invoke(app, ["fit", str(prof)])
    assert res.exit_code == 0, res.output
    assert "chosen: gpu_layers: " in res.output and "tensor_split: [" in res.output
    assert "search: " in res.output and "full estimates" in res.output


def test_fit_on_a_profile_without_deployments_says_why(tmp_path):
    """`vramc fit profiles/hardware/x.yaml` exited 1 and printed nothing at all."""
    prof = project(tmp_path)
    for target in (prof / "hardware" / "gpu-16gb.yaml", prof / "models"):
        res = CliRunner().invoke(app, ["fit", str(target)])
        assert res.exit_code == 1
        assert "vramc fit takes a deployment profile" in res.stderr, res.output


def test_plan_of_a_profile_without_deployments_says_why(tmp_path):
    """`vramc plan profiles/hardware/x.yaml` printed nothing at all (exit 0, an empty plan)."""
    res = CliRunner().invoke(app, ["plan", str(project(tmp_path) / "hardware" / "gpu-16gb.yaml")])
    assert res.exit_code == 0 and "plan takes deployment profiles" in res.stderr, res.output


def test_an_empty_deployment_name_is_a_usage_error(tmp_path):
    """`vramc fit -d ''` (an unset variable) fitted every deployment, as if no -d had been given."""
    prof = project(tmp_path) / "16gb.yaml"
    for command in ("fit", "plan"):
        for name in ("", " ", "@v", "x@"):
            res = CliRunner().invoke(app, [command, str(prof), "-d", name])
            assert res.exit_code == 2, (command, name, res.output)
            assert "--deployment" in res.stderr and "NAME@VARIANT" in res.stderr, res.stderr
            assert "chosen:" not in res.stdout and "gpu" not in res.stdout.lower()


def test_fit_json(tmp_path):
    prof = project(tmp_path) / "16gb.yaml"
    res = CliRunner().invoke(app, ["fit", str(prof), "--format", "json"])
    doc = json.loads(res.stdout)
    by = {(d["name"], d["variant"]): d for d in doc["deployments"]}
    assert by[("16gb", "stable")]["chosen"] == {"gpu_layers": 33}
    assert by[("16gb", None)]["fits"] is True and by[("16gb", None)]["plan"]["verdict"] == "fits"


def test_fit_write_keeps_comments_and_layout(tmp_path):
    prof = project(tmp_path) / "deepseek-14b-split.yaml"
    before = prof.read_text()
    plan_before = run_check([prof]).plans[0]
    res = CliRunner().invoke(app, ["fit", str(prof), "--write"])
    assert res.exit_code == 0, res.output
    after = prof.read_text()
    # only the two auto values changed, in place; every comment and other line is untouched
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    assert [a.split(":")[0] for a, _ in changed] == ["  gpu_layers", "  tensor_split"]
    assert all(b.startswith(a.split(":")[0] + ": ") for a, b in changed)
    plan_after = run_check([prof]).plans[0]
    assert plan_after.auto == ()  # nothing left to choose: the values are fixed now
    assert plan_after.params == plan_before.params  # and they give the same plan


def test_fit_write_adds_keys_to_variants(tmp_path):
    prof = project(tmp_path) / "16gb.yaml"
    CliRunner().invoke(app, ["fit", str(prof), "--write"])
    text = prof.read_text()
    # the written value carries the marker `vramc fit --refit` looks for; the user's comment stays
    assert "  gpu_layers: 33  # vramc fit: auto   # num_gpu: chosen by vramc fit" in text
    # the variants inherited `auto` and got the same answer, so they need no key of their own
    import re

    assert len(re.findall(r"^\s*gpu_layers:|[{,] gpu_layers:", text, re.M)) == 1
    assert "settings: {ctx: 4096}" in text and "settings: {ctx: 2048, parallel: 1}" in text
    assert [p.params.n_gpu_layers for p in run_check([prof]).plans] == [33, 33, 33]


def _kv_profile(tmp_path, ctx) -> Path:
    p = tmp_path / "kv.yaml"
    p.write_text(
        f"name: kv\nhardware: {{gpus: [{{name: RTX 4080, vram: 16GiB}}]}}\n"
        f"model: {ROOT / 'profiles' / 'models' / 'llama-3.1-8b-instruct-q8_0.yaml'}\n"
        f"engine: llama-server\nsettings: {{ctx: {ctx}, parallel: 1, gpu_layers: auto, "
        f"cache_type_k: auto, cache_type_v: auto}}\n"
    )
    return p


def test_cache_types_auto_prefer_f16_then_q8_0(tmp_path):
    [fits_f16] = run_check([_kv_profile(tmp_path, 8192)]).plans
    assert (fits_f16.params.type_k, fits_f16.params.type_v) == ("f16", "f16")
    assert fits_f16.params.n_gpu_layers == 33
    # 65536 tokens of f16 KV (8 GiB) plus the 7.4 GiB of weights do not fit 16 GiB; q8_0 does
    [needs_q8] = run_check([_kv_profile(tmp_path, 65536)]).plans
    assert (needs_q8.params.type_k, needs_q8.params.type_v) == ("q8_0", "q8_0")
    assert needs_q8.params.n_gpu_layers == 33 and needs_q8.verdict in ("fits", "tight")
    assert {"cache_type_k", "cache_type_v"} <= set(needs_q8.auto)


def test_moe_expert_offload_is_written_and_planned_back(tmp_path):
    from vramc.dev.synth.shapes import get_shape
    from vramc.dev.synth.writer import model_meta
    from vramc.model.analyze import profile_yaml

    (tmp_path / "profiles" / "models").mkdir(parents=True)
    meta = model_meta(get_shape("qwen3-30b-a3b"), "Q4_K_M")
    meta.file_size, meta.header_sha256 = 0, ""
    lock = "".join(
        line
        for line in profile_yaml(meta, gguf="m.gguf", name="qwen3", command="test").splitlines(keepends=True)
        if not line.startswith("  file: ")
    )
    (tmp_path / "profiles" / "models" / "qwen3.yaml").write_text(lock)
    prof = tmp_path / "profiles" / "moe.yaml"
    prof.write_text(
        "name: moe\nhardware: {gpus: [{name: RTX 4070 Ti, vram: 12GiB}]}\nmodel: qwen3\n"
        "engine: llama-server\nsettings: {ctx: 8192, parallel: 1, gpu_layers: auto}\n"
    )
    [before] = run_check([prof]).plans
    assert "override_tensor" in before.auto and before.params.n_gpu_layers == 49
    res = CliRunner().invoke(app, ["fit", str(prof), "--write"])
    assert res.exit_code == 0, res.output
    [after] = run_check([prof]).plans
    assert after.auto == () and after.params == before.params
    assert after.estimate.devices[0].weights_bytes == before.estimate.devices[0].weights_bytes
