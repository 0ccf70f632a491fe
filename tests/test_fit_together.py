"""`vramc fit` and `check` on deployments that run at the same time (issue 10).

A `deployments:` file is one machine: its deployments share its GPUs, in each combination of their
variants (README, Profiles). Their `auto` settings are fitted together; `--write` never writes what
`check` would reject; `--relax` frees fixed settings; `--refit` solves again what `--write` wrote.
Real model profiles (the shipped locks), the real solver and estimate, the CLI in-process.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.diagnostics import Severity
from vramc.lint.check import run_check

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "profiles" / "models"
CHAT = MODELS / "llama-3.1-8b-instruct-q8_0.yaml"  # 33 layers, 7.95 GiB
CODER = MODELS / "deepseek-r1-distill-qwen-14b-q4_k_m.yaml"  # 49 layers, 8.4 GiB
GiB = 1024**3


def fit(*args):
    return CliRunner().invoke(app, ["fit", *map(str, args)])


def errors(path: Path) -> list:
    return [d for d in run_check([path]).diagnostics if d.severity == Severity.ERROR]


def pair(tmp_path: Path, chat: str, coder: str, vram: str = "16GiB", name: str = "pair.yaml") -> Path:
    """Two models on one card; `chat` and `coder` are each one's settings block, block style."""
    p = tmp_path / name
    p.write_text(
        f"# two models, one card\nkind: deployments\nhardware: {{gpus: [{{name: RTX 4080, vram: {vram}}}]}}\n"
        f"deployments:\n  - name: chat\n    model: {CHAT}\n    engine: llama-server\n{chat}"
        f"  - name: coder\n    model: {CODER}\n    engine: llama-server\n{coder}"
    )
    return p


def settings(**kv) -> str:
    return "    settings:\n" + "".join(f"      {k}: {v}\n" for k, v in kv.items())


def gpu0_together(plans) -> int:
    return sum(d.total_bytes for p in plans for d in p.estimate.devices if d.gpu == 0)


def test_two_models_on_one_card_are_fitted_together_and_check_clean(tmp_path):
    from vramc.plan.estimate_cache import solve

    prof = pair(
        tmp_path, settings(ctx=8192, parallel=1, gpu_layers="auto"), settings(ctx=8192, parallel=1, gpu_layers="auto")
    )
    plans = run_check([prof]).plans
    # alone, each would take every layer: together that is over the card (the VR312)
    for p in plans:
        alone = solve(p.meta, p.gpus, p.requested, p.margins, None)
        assert alone.choice.gpu_layers == p.meta.n_layer + 1
    res = fit(prof, "--write")
    assert res.exit_code == 0, res.output
    assert "run together (chat, coder)" in res.output
    text = prof.read_text()
    assert len(re.findall(r"gpu_layers: \d+  # vramc fit: auto\n", text)) == 2
    assert errors(prof) == []
    after = run_check([prof]).plans
    assert all(p.auto == () for p in after)  # fixed values now, as written
    margin = int(0.05 * 16 * GiB)
    assert gpu0_together(after) <= 16 * GiB - margin  # together, with the margin left free
    assert sum(p.params.n_gpu_layers for p in after) > 0


def test_auto_contexts_share_the_card_and_check_clean(tmp_path):
    prof = pair(
        tmp_path,
        settings(ctx="auto", parallel=1, gpu_layers="all"),
        settings(ctx="auto", parallel=1, gpu_layers="all"),
        vram="24GiB",
    )
    res = fit(prof, "--write")
    assert res.exit_code == 0, res.output
    after = run_check([prof]).plans
    assert errors(prof) == []
    assert all(isinstance(p.params.n_ctx, int) and p.params.n_ctx >= 4096 for p in after)
    assert gpu0_together(after) <= 24 * GiB - int(0.05 * 24 * GiB)


def test_a_write_check_would_reject_is_not_made(tmp_path):
    # the 14B model at 40960 tokens with every layer on the card leaves nothing for the other
    prof = pair(
        tmp_path, settings(ctx=8192, parallel=1, gpu_layers="auto"), settings(ctx=40960, parallel=1, gpu_layers="all")
    )
    before = prof.read_bytes()
    res = fit(prof, "--write")
    assert res.exit_code == 1
    assert "VR312" in res.output and "nothing was written" in res.output
    assert prof.read_bytes() == before


# --- variants: each combination runs together ----------------------------------------------------


def test_variants_are_checked_in_combination(tmp_path):
    """`big` exists only for chat: chat@big runs with coder's base settings."""
    chat = settings(ctx=4096, parallel=1, gpu_layers="all") + "    variants:\n      big: {settings: {ctx: 65536}}\n"
    prof = pair(tmp_path, chat, settings(ctx=4096, parallel=1, gpu_layers=30), vram="20GiB")
    found = [d for d in errors(prof) if d.code == "VR312"]
    # the bases fit together; chat@big with coder does not, and both are told which combination
    assert {d.deployment for d in found} == {"chat@big", "coder"}
    assert all(d.message.startswith("with variant big (chat@big, coder): GPU 0") for d in found)
    # without the variant nothing is over: the combination is what the finding is about
    plain = pair(
        tmp_path,
        settings(ctx=4096, parallel=1, gpu_layers="all"),
        settings(ctx=4096, parallel=1, gpu_layers=30),
        vram="20GiB",
        name="plain.yaml",
    )
    assert errors(plain) == []


def test_variants_are_fitted_in_combination(tmp_path):
    chat = settings(ctx=8192, parallel=1, gpu_layers="auto") + "    variants:\n      big: {settings: {ctx: 32768}}\n"
    coder = settings(ctx=8192, parallel=1, gpu_layers="auto") + "    variants:\n      big: {settings: {ctx: 32768}}\n"
    prof = pair(tmp_path, chat, coder, vram="24GiB")
    plans = {p.dep.label: p for p in run_check([prof]).plans}
    for combo in (("chat", "coder"), ("chat@big", "coder@big")):
        assert gpu0_together([plans[n] for n in combo]) <= 24 * GiB - int(0.05 * 24 * GiB), combo
    assert plans["chat@big"].params.n_gpu_layers < plans["chat"].params.n_gpu_layers
    res = fit(prof, "--write")
    assert res.exit_code == 0, res.output
    assert errors(prof) == []


def test_one_deployment_of_a_machine_is_planned_as_it_runs_with_the_others(tmp_path):
    """`vramc run NAME` checks one deployment: its plan is the one fitted with the others."""
    from vramc.load.profiles import load_paths

    prof = pair(
        tmp_path, settings(ctx=8192, parallel=1, gpu_layers="auto"), settings(ctx=8192, parallel=1, gpu_layers="auto")
    )
    together = {p.dep.label: p.params for p in run_check([prof]).plans}
    [chat] = [d for d in load_paths([prof]).deployments if d.name == "chat"]
    [alone] = run_check([prof], deployments=[chat]).plans
    assert alone.dep.label == "chat" and alone.params == together["chat"]


# --- --relax --------------------------------------------------------------------------------------


def one(tmp_path: Path, vram: str, ngl) -> Path:
    p = tmp_path / "one.yaml"
    p.write_text(
        f"name: one\nhardware: {{gpus: [{{name: RTX 3060, vram: {vram}}}]}}\nmodel: {CHAT}\n"
        f"engine: llama-server\nsettings:\n  ctx: 8192\n  parallel: 1\n  gpu_layers: {ngl}   # my choice\n"
    )
    return p


def test_fixed_values_that_do_not_fit_name_the_relax_command(tmp_path):
    prof = one(tmp_path, "8GiB", 40)
    res = fit(prof)
    assert res.exit_code == 1
    m = re.search(r"gpu_layers 40 does not fit; (\d+) would: `vramc fit --relax gpu_layers (\S+)`", res.output)
    assert m, res.output
    assert Path(m.group(2)).resolve() == prof.resolve()
    assert "vramc fit shows the plan" not in res.output
    # check's hint names the same command
    [vr300] = [d for d in errors(prof) if d.code == "VR300"]
    assert f"gpu_layers {m.group(1)} would fit (`vramc fit --relax gpu_layers " in vr300.hint
    res = fit(prof, "--relax", "gpu_layers", "--write")
    assert res.exit_code == 0, res.output
    assert f"  gpu_layers: {m.group(1)}  # vramc fit: auto   # my choice\n" in prof.read_text()
    assert errors(prof) == []


def test_relax_refuses_what_it_cannot_change(tmp_path):
    prof = one(tmp_path, "8GiB", 40)
    before = prof.read_bytes()
    for bad in ("gpu_layer", "parallel", ",", "ctx,,bogus"):
        res = fit(prof, "--relax", bad, "--write")
        assert res.exit_code == 2 and "--relax takes one or more of ctx, gpu_layers" in res.output, bad
        assert "Traceback" not in res.output
    assert prof.read_bytes() == before


# --- --refit --------------------------------------------------------------------------------------


def test_refit_solves_the_written_values_again_in_one_command(tmp_path):
    prof = one(tmp_path, "8GiB", "auto")
    assert fit(prof, "--write").exit_code == 0
    [first] = run_check([prof]).plans
    n8 = first.params.n_gpu_layers
    assert 0 < n8 < 33 and first.auto == ()  # check reads the written value as fixed
    prof.write_text(prof.read_text().replace("vram: 8GiB", "vram: 12GiB"))  # a bigger card
    # without --refit the written value is the user's: it stays
    res = fit(prof, "--write")
    assert "nothing to choose" in res.output
    assert run_check([prof]).plans[0].params.n_gpu_layers == n8
    res = fit(prof, "--refit", "--write")
    assert res.exit_code == 0, res.output
    assert "  gpu_layers: 33  # vramc fit: auto   # my choice\n" in prof.read_text()
    [after] = run_check([prof]).plans
    assert after.params.n_gpu_layers == 33 and after.auto == ()


def test_refit_frees_only_marked_settings(tmp_path):
    prof = one(tmp_path, "12GiB", 20)
    prof.write_text(prof.read_text().replace("name: one", "name: one   # vramc fit: auto"))
    res = fit(prof, "--refit", "--format", "json")
    assert res.exit_code == 0, res.output
    assert '"chosen": {}' in res.output  # gpu_layers 20 carries no marker: it is the user's
    res = fit(prof, "--refit")
    assert "no value in" in res.output and "nothing to re-fit" in res.output


def test_solver_answer_is_what_relax_writes(tmp_path):
    """The suggestion is the very solve that --relax runs (not a neighbouring one)."""
    from vramc.plan.fit import suggestions

    prof = one(tmp_path, "8GiB", 40)
    [p] = run_check([prof]).plans
    _, ideas = suggestions(p.meta, p.gpus, p.choice, p.margins, None)
    [(keys, values)] = [i for i in ideas if i[0] == ("gpu_layers",)]
    assert fit(prof, "--relax", "gpu_layers", "--write").exit_code == 0
    [after] = run_check([prof]).plans
    assert after.choice == replace(p.choice, gpu_layers=values["gpu_layers"])


def test_refit_ignores_markers_outside_the_settings(tmp_path):
    """Markers a user copied onto other keys (or onto the settings block itself) free nothing."""
    p = tmp_path / "odd.yaml"
    p.write_text(
        f"name: odd\nhardware:\n  gpus:\n    - name: RTX 3060\n      vram: 12GiB   # vramc fit: auto\n"
        f"model: {CHAT}\nengine: llama-server\nsettings:   # vramc fit: auto\n  ctx: 8192\n"
        "  parallel: 1\n  gpu_layers: 20   # vramc fit: autox\n"
    )  # not the marker: another word
    before = p.read_bytes()
    res = fit(p, "--refit", "--write")
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "nothing to re-fit" in res.output
    assert p.read_bytes() == before
    assert run_check([p]).plans[0].params.n_gpu_layers == 20


def test_vr312_names_the_command_that_shares_the_card(tmp_path):
    prof = pair(
        tmp_path, settings(ctx=16384, parallel=1, gpu_layers="all"), settings(ctx=16384, parallel=1, gpu_layers="all")
    )
    found = [d for d in errors(prof) if d.code == "VR312"]
    assert len(found) == 2
    [cmd] = {re.search(r"`(vramc fit --relax gpu_layers \S+)`", d.hint).group(1) for d in found}
    res = fit(*cmd.split()[2:], "--write")
    assert res.exit_code == 0, res.output
    assert errors(prof) == []


def test_vllm_instances_are_checked_in_each_combination(tmp_path):
    """VR335 per combination: `general@long` asks for more of the card beside coder's base."""
    import shutil

    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    prof = tmp_path / "profiles" / "vllm-96gb.yaml"
    text = prof.read_text()
    assert "      port: 8001\n" in text
    prof.write_text(
        text.replace(
            "      port: 8001\n",
            "      port: 8001\n    variants:\n      long: {settings: {gpu_memory_utilization: 0.5}}\n",
        )
    )
    found = [d for d in errors(prof) if d.code == "VR335"]
    assert found and all(d.message.startswith("with variant long (coder, general@long): ") for d in found)
    assert {d.deployment for d in found} <= {"coder", "general@long"}


def test_refit_takes_back_expert_overrides_a_bigger_card_no_longer_needs(tmp_path):
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
        "engine: llama-server\nsettings:\n  ctx: 8192\n  parallel: 1\n  gpu_layers: auto\n"
    )
    assert fit(prof, "--write").exit_code == 0
    assert re.search(r"\n  override_tensor: \[.+=CPU\]  # vramc fit: auto\n", prof.read_text())
    prof.write_text(prof.read_text().replace("12GiB", "24GiB"))
    res = fit(prof, "--refit", "--write")
    assert res.exit_code == 0, res.output
    assert "\n  override_tensor: []  # vramc fit: auto\n" in prof.read_text()
    [after] = run_check([prof]).plans
    assert after.choice.overrides == () and after.params.n_gpu_layers == 49
    assert errors(prof) == []
