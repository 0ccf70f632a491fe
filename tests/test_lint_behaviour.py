"""Lint behaviour beyond single fixtures: configuration, variants, info-level rules, engine errors
that have no rule of their own, and the GGUF lock fingerprint."""

import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.dev.synth.writer import write_tiny_model
from vramc.lint.check import run_check
from vramc.lint.runner import run_plan_rules

ROOT = Path(__file__).resolve().parent.parent
LLAMA8B = ROOT / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).replace("LLAMA8B", str(LLAMA8B)))
    return p


def codes(path: Path) -> list[tuple[str, str, int, int]]:
    return [(d.code, d.severity.label, d.line, d.column) for d in run_check([path]).diagnostics]


def test_missing_path_is_vr000_and_exit_1(tmp_path):
    res = CliRunner().invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 1 and "VR000" in res.output


def test_info_rules_partial_offload_and_ctx_rounding(tmp_path):
    p = write(
        tmp_path,
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: LLAMA8B
        engine: llama-server
        settings: {ctx: 10000, parallel: 3, gpu_layers: 20}
        """,
    )
    found = codes(p)
    assert ("VR309", "info", 5, 49) in found  # 20 of 33 layers on the GPU
    assert ("VR313", "info", 5, 17) in found  # 10000 tokens over 3 slots
    # info never fails a check, even with --strict
    assert CliRunner().invoke(app, ["check", "--strict", str(p)]).exit_code == 0


def test_ctx_rounding_counts_the_padded_context_as_llama_cpp_does(tmp_path):
    """llama_context pads ctx to 256 before dividing it among slots: ctx 1 over 4 slots gives
    each 256 tokens (no rounding), ctx 10000 over 3 gives 3584 each, not 3333."""
    for ctx, parallel, per_slot in ((1, 4, None), (10000, 3, 3584)):
        p = write(
            tmp_path,
            f"d{ctx}.yaml",
            f"""\
            name: d{ctx}
            hardware: {{gpus: [{{name: RTX 4090, vram: 24GiB}}]}}
            model: LLAMA8B
            engine: llama-server
            settings: {{ctx: {ctx}, parallel: {parallel}}}
            """,
        )
        msgs = [d.message for d in run_check([p]).diagnostics if d.code == "VR313"]
        if per_slot is None:
            assert msgs == []
        else:
            assert len(msgs) == 1 and f"each slot gets {per_slot} tokens" in msgs[0], msgs


def test_lint_config_ignores_and_overrides(tmp_path):
    p = write(
        tmp_path,
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: LLAMA8B
        engine: llama-server
        settings: {ctx: 10000, parallel: 3, gpu_layers: 40}
        lint:
          ignore: [VR313]
          severity: {VR302: error}
        """,
    )
    found = {c[:2] for c in codes(p)}
    assert ("VR302", "error") in found and not any(c == "VR313" for c, _ in found)
    assert CliRunner().invoke(app, ["check", str(p)]).exit_code == 1


def test_variant_findings_point_at_the_variant(tmp_path):
    p = write(
        tmp_path,
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: LLAMA8B
        engine: llama-server
        settings: {ctx: 4096, gpu_layers: all}
        variants:
          big:
            settings:
              gpu_layers: 99
        """,
    )
    [(code, sev, line, col)] = codes(p)
    assert (code, line, col) == ("VR302", 9, 19)
    [d] = run_check([p]).diagnostics
    assert d.deployment == "d@big" and d.path == ("variants", "big", "settings", "gpu_layers")


def test_margin_warning_and_strict(tmp_path):
    p = write(
        tmp_path,
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4080, vram: 16GiB}]}
        model: LLAMA8B
        engine: llama-server
        settings: {ctx: 40960, parallel: 1, gpu_layers: all, flash_attn: on}
        lint: {margin: 25%}
        """,
    )
    assert [c[0] for c in codes(p)] == ["VR301"]
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(p)]).exit_code == 0
    assert runner.invoke(app, ["check", "--strict", str(p)]).exit_code == 1


@pytest.mark.parametrize("cli,written", [("0.1", None), (None, '"0.1"'), (None, "0.1"), ("10%", None)])
def test_a_fraction_margin_is_a_fraction_however_it_arrives(tmp_path, cli, written):
    """README: fractions take 0.25 or 25%. `--margin 0.1` (a string on the command line) and a
    quoted `margin: "0.1"` were read as 0.1 MiB, so a plan with no real margin read `fits`."""
    import json

    lint = f"lint: {{margin: {written}}}\n" if written else ""
    p = tmp_path / "d.yaml"
    p.write_text(
        f"name: d\nhardware: {{gpus: [{{name: RTX 4080, vram: 16GiB}}]}}\nmodel: {LLAMA8B}\n"
        f"engine: llama-server\nsettings: {{ctx: 8192}}\n{lint}"
    )
    res = CliRunner().invoke(app, ["plan", "--format", "json", str(p)] + (["--margin", cli] if cli else []))
    assert res.exit_code == 0, res.output
    [dev] = json.loads(res.output)["deployments"][0]["devices"]
    assert dev["margin_bytes"] == int(0.1 * 16 * 2**30), dev


@pytest.mark.parametrize("command", ["check", "plan", "diff"])
def test_a_bare_cli_margin_from_1_to_100_is_a_usage_error(tmp_path, command):
    """VR104 warns of a profile's `margin: 10` (10 MiB, almost always meant as 10%); `--margin 10`
    was read as 10 MiB with no word. It is a usage error naming both spellings, nothing planned."""
    p = tmp_path / "d.yaml"
    p.write_text(
        f"name: d\nhardware: {{gpus: [{{name: RTX 4080, vram: 16GiB}}]}}\nmodel: {LLAMA8B}\n"
        "engine: llama-server\nsettings: {ctx: 8192}\n"
    )
    args = ["--base-dir", str(tmp_path), "--head-dir", str(tmp_path)] if command == "diff" else [str(p)]
    res = CliRunner().invoke(app, [command, "--margin", "10", *args])
    assert res.exit_code == 2, res.output
    assert "--margin 10%" in res.output and "--margin 10MiB" in res.output and "Traceback" not in res.output
    # Outside 1..100 a bare number stays MiB, as in a profile.
    res = CliRunner().invoke(app, ["plan", "--format", "json", "--margin", "512", str(p)])
    assert res.exit_code == 0, res.output
    import json

    [dev] = json.loads(res.output)["deployments"][0]["devices"]
    assert dev["margin_bytes"] == 512 * 2**20


def test_engine_error_without_its_own_rule_is_vr320(tmp_path):
    p = write(
        tmp_path,
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: LLAMA8B
        engine: llama-server
        settings: {ctx: 4096, gpu_layers: all}
        """,
    )
    plan = run_check([p]).plans[0]
    plan.estimate.errors.append(("llama-new-failure", "some new refusal"))
    [d] = [d for d in run_plan_rules([plan]) if d.code == "VR320"]
    assert d.message == "llama.cpp would stop with: some new refusal" and d.severity.label == "error"


def test_lock_fingerprint_mismatch_is_vr202(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    gguf = write_tiny_model(models / "tiny.gguf")
    (tmp_path / "profiles" / "models").mkdir(parents=True)
    shutil.copy(ROOT / "profiles" / "models" / "demo-tiny.yaml", tmp_path / "profiles" / "models" / "tiny.yaml")
    lock = tmp_path / "profiles" / "models" / "tiny.yaml"
    lock.write_text(lock.read_text().replace("gguf: models/demo-tiny.gguf", "gguf: models/tiny.gguf"))
    dep = write(
        tmp_path / "profiles",
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: tiny
        engine: llama-cpp-python
        settings: {ctx: 256, gpu_layers: all}
        """,
    )
    assert [c for c in codes(dep) if c[0] == "VR202"] == []  # the generated file matches its lock
    with open(gguf, "ab") as f:  # the file changes under the lock
        f.write(b"\0" * 64)
    [(code, sev, line, col)] = [c for c in codes(dep) if c[0] == "VR202"]
    assert sev == "warning" and line > 1


def test_mmproj_and_draft_are_counted_on_the_first_gpu_and_by_the_solver(tmp_path):
    import yaml

    lock = yaml.safe_load(LLAMA8B.read_text())["lock"]
    base = {
        "name": "mm",
        "hardware": {"gpus": [{"name": "RTX 4080", "vram": "16GiB"}]},
        "engine": "llama-server",
        "settings": {"ctx": 8192, "gpu_layers": "all", "parallel": 1},
        "model": {"gguf": "nowhere.gguf", "lock": lock},
    }
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(base))
    base["name"] = "mm2"
    base["model"].update(mmproj="mm.gguf", mmproj_size="600MiB", draft="d.gguf", draft_size="1GiB")
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(base))
    [plain] = run_check([tmp_path / "plain.yaml"]).plans
    [extra] = run_check([tmp_path / "extra.yaml"]).plans
    added = extra.estimate.devices[0].weights_bytes - plain.estimate.devices[0].weights_bytes
    assert added == (600 + 1024) * 1024 * 1024
    assert any("mmproj mm.gguf" in n for n in extra.estimate.notes)
    # with ctx auto the solver leaves room for them: less context, still within the margin
    for name in ("plain", "extra"):
        doc = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        doc["settings"]["ctx"] = "auto"
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    [plain] = run_check([tmp_path / "plain.yaml"]).plans
    [extra] = run_check([tmp_path / "extra.yaml"]).plans
    assert extra.params.n_ctx < plain.params.n_ctx
    assert extra.verdict == "fits" and extra.estimate.devices[0].free_bytes >= extra.margins[0]


def test_compute_approximated_for_an_unknown_architecture_with_llama_tensors(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    text = LLAMA8B.read_text().replace("architecture: llama\n", "architecture: llamalike\n")
    (models / "llamalike-8b.yaml").write_text(text.replace("name: llama-3.1-8b-instruct-q8_0", "name: llamalike-8b"))
    p = write(
        tmp_path,
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: llamalike-8b
        engine: llama-server
        settings: {ctx: 8192}
        """,
    )
    found = [d for d in run_check([p]).diagnostics if d.code == "VR315"]
    assert [(d.severity.label, d.line, d.column) for d in found] == [("warning", 3, 8)]
    assert "approximated with the llama graph" in found[0].message
    # the approximation is the llama graph's figure, not zero
    plan = run_check([p]).plans[0]
    assert plan.estimate.compute_model == "approximate" and plan.estimate.devices[0].compute_bytes > 0
    # the real llama architecture is replayed exactly: no finding
    assert "VR315" not in {
        c
        for c, *_ in codes(
            write(
                tmp_path,
                "e.yaml",
                """\
        name: e
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: LLAMA8B
        engine: llama-server
        """,
            )
        )
    }


def test_plan_and_build_of_a_missing_path_say_so_and_exit_1(tmp_path):
    for cmd in (["plan"], ["build", "--out", str(tmp_path / "out")]):
        res = CliRunner().invoke(app, [*cmd, str(tmp_path / "nope.yaml")])
        assert res.exit_code == 1, (cmd, res.output)
        assert "VR000" in res.output and "nope.yaml" in res.output


def test_a_cached_check_does_not_depend_on_what_was_checked_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VRAMC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VRAMC_NO_CACHE", raising=False)
    (tmp_path / "models").mkdir()
    bad = LLAMA8B.read_text().replace("kind: model\n", "kind: model\ncolour: blue\n")
    (tmp_path / "models" / "llama8b.yaml").write_text(bad)
    dep = write(
        tmp_path,
        "d.yaml",
        """\
        name: d
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        model: llama8b
        engine: llama-server
        """,
    )

    def check(*paths):
        res = CliRunner().invoke(app, ["check", *map(str, paths)])
        return res.exit_code, sorted(
            line.split(": ")[1].split()[0]
            for line in res.output.splitlines()
            if "d.yaml" in line or "llama8b.yaml" in line
        )

    monkeypatch.setenv("VRAMC_NO_CACHE", "1")
    alone = check(dep)
    assert alone[0] == 1 and "VR100" in alone[1]  # the model profile's unknown key
    monkeypatch.delenv("VRAMC_NO_CACHE")
    check(tmp_path)  # the model file checked together with the deployment fills the cache
    assert check(dep) == alone  # answered from the cache, with the model's own finding


@pytest.mark.parametrize(
    "engine,ignored",
    [
        ("llama-cpp-python", "override_tensor: ['blk\\.[0-9]\\..*=CPU']"),  # Llama() takes no -ot
        ("llama-cpp-python", "parallel: 4"),  # one sequence
        ("llama-cpp-python", "n_cpu_moe: 3"),
        ("ollama", "override_tensor: ['blk\\.[0-9]\\..*=CPU']"),
        ("ollama", "kv_offload: false"),
        ("ollama", "kv_unified: true"),
        ("ollama", "swa_full: true"),
    ],
)
def test_a_setting_the_engine_ignores_is_not_planned(tmp_path, engine, ignored):
    """VR400 says the engine never gets the setting, so the plan must be the one without it: an
    override_tensor planned for llama-cpp-python moved 2.2 GiB of weights off a GPU that the
    rendered Llama() kwargs keep there (a "fits" that runs out of memory)."""
    hw = "{gpus: [{name: RTX 3060, vram: 12GiB}, {name: RTX 3090, vram: 24GiB}], host_ram: 64GiB}"
    body = f"hardware: {hw}\nmodel: {LLAMA8B}\nengine: {engine}\n"
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"name: plain\n{body}settings: {{ctx: 8192, gpu_layers: all}}\n")
    ign = tmp_path / "ign.yaml"
    ign.write_text(f"name: ign\n{body}settings: {{ctx: 8192, gpu_layers: all, {ignored}}}\n")
    [want], res = run_check([plain]).plans, run_check([ign])
    [got] = res.plans
    assert [(d.id, d.total_bytes, d.n_layers) for d in got.estimate.devices] == [
        (d.id, d.total_bytes, d.n_layers) for d in want.estimate.devices
    ]
    assert got.estimate.host.total_bytes == want.estimate.host.total_bytes
    assert got.params == want.params
    assert [d.code for d in res.diagnostics] == ["VR400"]
