"""From a model's name to a plan (issue 15): `vramc analyze hf://ORG/REPO --write` locks every quant
of a repository into one model profile (`quant: auto`, `quants:`); `check` and `plan` then choose
the largest quant that fits, without the network. The repository is the local Hub of
test_remote.py, serving sparse GGUFs written by vramc.dev.synth (Llama 3.1 8B: Q8_0 7.95 GiB,
Q4_K_M 4.58 GiB, Q2_K 2.95 GiB of weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from test_remote import COMMIT, models, server  # noqa: F401  (the local Hub and its files)
from vramc.cli.commands import app
from vramc.lint.check import run_check
from vramc.load.schema import Model
from vramc.model.gguf import read_gguf

runner = CliRunner()

DEPLOYMENT = """\
name: {name}
hardware:
  gpus:
    - {{name: RTX 4060, vram: {vram}}}
model: llama8b
engine: llama-server
settings:
  ctx: 8192
  gpu_layers: {layers}
"""


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "profiles" / "models").mkdir(parents=True)
    return project


def _deploy(project: Path, name: str, vram: str, layers: str = "auto") -> Path:
    f = project / "profiles" / f"{name}.yaml"
    f.write_text(DEPLOYMENT.format(name=name, vram=vram, layers=layers))
    return f


def _plan(path: Path) -> dict:
    res = runner.invoke(app, ["plan", str(path), "--format", "json"])
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)["deployments"]
    return rec


def _analyze_repo(project: Path) -> Path:
    dest = project / "profiles" / "models" / "llama8b.yaml"
    res = runner.invoke(app, ["analyze", "hf://org/quants", "--write", str(dest), "--name", "llama8b"])
    assert res.exit_code == 0, res.output
    return dest


def test_analyze_a_repository_writes_every_quant(server, tmp_path):  # noqa: F811
    project = _project(tmp_path)
    dest = _analyze_repo(project)
    text = dest.read_text()
    model = Model.model_validate(yaml.safe_load(text))
    assert (model.hf, model.quant, model.source) == ("org/quants", "auto", f"hf://org/quants@{COMMIT}")
    # largest first, the mmproj left out; each entry pinned to the commit and the header's sha256
    assert [q.quant for q in model.quants] == ["Q8_0", "Q4_K_M", "Q2_K"]
    for q in model.quants:
        file = f"llama-8b-{q.quant}.gguf"
        assert q.gguf == f"models/{file}"
        assert q.source == f"hf://org/quants@{COMMIT}/{file}"
        assert q.lock.file.header_sha256 == read_gguf(server.files[file]).header_sha256
        assert f"# download {q.quant}: {server.base}/org/quants/resolve/{COMMIT}/{file}\n" in text
    # deterministic: the same command writes the same bytes
    again = runner.invoke(app, ["analyze", "hf://org/quants", "--write", str(dest), "--name", "llama8b"])
    assert again.exit_code == 0 and dest.read_text() == text


def test_analyze_again_offline_writes_the_same_bytes(server, tmp_path, monkeypatch):  # noqa: F811
    """A repository's listing is cached with its headers: `analyze hf://ORG/REPO --write` and
    `hf://ORG/REPO:QUANT --write` run again with the Hub gone write the same profiles, and say
    which commit's listing they used."""
    project = _project(tmp_path)
    whole = _analyze_repo(project)
    one = project / "profiles" / "models" / "q4.yaml"
    res = runner.invoke(app, ["analyze", "hf://org/quants:Q4_K_M", "--write", str(one)])
    assert res.exit_code == 0, res.output
    written = {whole: whole.read_bytes(), one: one.read_bytes()}
    seen = len(server.seen)
    # a commit's listing never changes: a pinned reference asks for the header only, once
    res = runner.invoke(app, ["analyze", f"hf://org/quants@{COMMIT}/llama-8b-Q2_K.gguf"])
    assert res.exit_code == 0 and not [p for p, _ in server.seen[seen:] if p.startswith("/api/")]
    server.shutdown()
    server.server_close()
    for env in ("VRAMC_OFFLINE", "HF_HUB_OFFLINE", None):  # None: no network, not told so
        if env:
            monkeypatch.setenv(env, "1")
        for path in written:
            path.unlink()
        res = runner.invoke(app, ["analyze", "hf://org/quants", "--write", str(whole), "--name", "llama8b"])
        assert res.exit_code == 0, res.output
        assert f"the cached listing of org/quants at commit {COMMIT} (main then)" in res.output
        res = runner.invoke(app, ["analyze", "hf://org/quants:Q4_K_M", "--write", str(one)])
        assert res.exit_code == 0, res.output
        assert {p: p.read_bytes() for p in written} == written
        # another quant of the repository: its listing and header were cached by the first command
        res = runner.invoke(app, ["analyze", "hf://org/quants:q2_k"])
        assert res.exit_code == 0 and "llama-8b-Q2_K.gguf: header read from the cache" in res.output, res.output
        if env:
            monkeypatch.delenv(env)
    monkeypatch.setenv("VRAMC_OFFLINE", "1")
    monkeypatch.chdir(project)  # plan --quants too: the listing and the headers at its commit
    res = runner.invoke(app, ["plan", str(_deploy(project, "mid", "8GiB")), "--quants", "hf://org/quants"])
    assert res.exit_code == 0 and "choice: Q4_K_M (llama-8b-Q4_K_M.gguf)" in res.output, res.output
    assert f"org/quants@{COMMIT[:12]}: 3 quant files" in res.output
    res = runner.invoke(app, ["analyze", "hf://org/repo", "--write", str(tmp_path / "x.yaml")])
    assert res.exit_code == 1 and "no listing of org/repo at main is cached under $VRAMC_CACHE" in res.output
    assert not (tmp_path / "x.yaml").exists()


def test_the_largest_quant_that_fits_offline(server, tmp_path, monkeypatch):  # noqa: F811
    """Locked online once; then checked and planned with the Hub gone: 12 GiB takes Q8_0 whole,
    8 GiB Q4_K_M whole (Q8_0 only partly), 4 GiB none whole: Q8_0 partly, and the trade-off."""
    project = _project(tmp_path)
    _analyze_repo(project)
    server.shutdown()
    server.server_close()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("VRAMC_OFFLINE", "1")
    monkeypatch.chdir(project)
    big, mid, small = (_deploy(project, n, v) for n, v in (("big", "12GiB"), ("mid", "8GiB"), ("small", "4GiB")))

    rec = _plan(big)
    assert rec["quant"]["chosen"] == "Q8_0" and rec["quant"]["outcome"] == "all-layers"
    assert rec["settings"]["gpu_layers"] == 33 and rec["verdict"] == "fits"

    rec = _plan(mid)
    q = rec["quant"]
    assert (q["chosen"], q["gguf"], q["auto"], q["outcome"]) == (
        "Q4_K_M",
        "models/llama-8b-Q4_K_M.gguf",
        True,
        "all-layers",
    )
    rows = mid_rows = {c["quant"]: c for c in q["candidates"]}
    assert rows["Q8_0"]["gpu_layers"] < 33 and rows["Q4_K_M"]["gpu_layers"] == rows["Q2_K"]["gpu_layers"] == 33
    assert rows["Q8_0"]["weights_bytes"] > rows["Q4_K_M"]["weights_bytes"] > rows["Q2_K"]["weights_bytes"]
    # the plan's devices are Q4_K_M's: its weights, not Q8_0's
    assert 4 * 2**30 < rec["devices"][0]["weights_bytes"] < 5 * 2**30

    rec = _plan(small)
    q = rec["quant"]
    rows = {c["quant"]: c for c in q["candidates"]}
    assert (q["chosen"], q["outcome"]) == ("Q8_0", "partial")
    assert rows["Q2_K"]["gpu_layers"] > rows["Q8_0"]["gpu_layers"] == rec["settings"]["gpu_layers"]

    res = runner.invoke(app, ["check", str(mid), str(small), str(big)])
    assert res.exit_code == 0, res.output
    assert "VR380 info: [mid] quant: auto chose Q4_K_M (models/llama-8b-Q4_K_M.gguf)" in res.output
    assert (
        f"larger ones fit only with layers on the CPU (slower): Q8_0 ({mid_rows['Q8_0']['gpu_layers']}/33" in res.output
    )
    warn = next(line for line in res.output.splitlines() if "VR381" in line)
    assert warn.startswith("profiles/small.yaml:5:8: VR381 warning: [small] no quant fits with all layers")
    assert f"the trade-off: Q2_K ({rows['Q2_K']['gpu_layers']}/33 layers on the GPUs)" in warn

    text = runner.invoke(app, ["plan", str(mid)]).stdout
    assert "  quant=Q4_K_M*  models/llama-8b-Q4_K_M.gguf\n" in text
    table = [line.split() for line in text.splitlines() if line.startswith("  Q")]
    assert [(r[0], r[3], r[4]) for r in table] == [
        ("Q8_0", "fits", "27/33"),
        ("Q4_K_M", "fits", "33/33"),
        ("Q2_K", "fits", "33/33"),
    ]


def test_none_fits_plans_the_smallest(server, tmp_path, monkeypatch):  # noqa: F811
    project = _project(tmp_path)
    _analyze_repo(project)
    monkeypatch.chdir(project)
    f = _deploy(project, "tiny", "2GiB", layers="all")
    res = runner.invoke(app, ["plan", str(f), "--format", "json"])
    [rec] = json.loads(res.stdout)["deployments"]
    assert (rec["quant"]["chosen"], rec["quant"]["outcome"], rec["verdict"]) == ("Q2_K", "none-fits", "does-not-fit")
    out = runner.invoke(app, ["check", str(f)]).output
    assert "VR382 info: [tiny] none of the 3 quants fits on these GPUs" in out and "VR300 error" in out


def test_build_fit_and_a_fixed_quant(server, tmp_path, monkeypatch):  # noqa: F811
    project = _project(tmp_path)
    model = _analyze_repo(project)
    monkeypatch.chdir(project)
    f = _deploy(project, "mid", "8GiB")
    res = runner.invoke(app, ["build", str(f)])
    assert res.exit_code == 0, res.output
    assert "--model models/llama-8b-Q4_K_M.gguf \\\n" in (project / "out" / "mid" / "launch.sh").read_text()
    # fit --write sets the deployment's settings and never the model's quant
    before = model.read_bytes()
    res = runner.invoke(app, ["fit", str(f), "--write"])
    assert res.exit_code == 0, res.output
    assert model.read_bytes() == before
    assert "gpu_layers: 33" in f.read_text() and _plan(f)["quant"]["chosen"] == "Q4_K_M"
    # a fixed quant plans its entry, even one that does not fit whole
    model.write_text(model.read_text().replace("quant: auto\n", "quant: q8_0\n", 1))
    rec = _plan(_deploy(project, "fixed", "8GiB"))
    assert (rec["quant"]["chosen"], rec["quant"]["auto"], rec["quant"]["candidates"]) == ("Q8_0", False, [])
    assert rec["settings"]["gpu_layers"] == 27


def _analyzed_project(tmp_path, monkeypatch, files_of: dict, *files: str) -> tuple[Path, Path]:
    """A project with the Q8_0 and Q4_K_M files linked under models/, the check cache on, and
    `vramc analyze FILES --write profiles/models/llama8b.yaml` run there: (project, that profile)."""
    project = _project(tmp_path)
    (project / "models").mkdir()
    for q in ("Q8_0", "Q4_K_M"):
        (project / "models" / f"llama-8b-{q}.gguf").symlink_to(files_of[f"llama-8b-{q}.gguf"])
    monkeypatch.chdir(project)
    monkeypatch.setenv("VRAMC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VRAMC_NO_CACHE", raising=False)
    dest = project / "profiles" / "models" / "llama8b.yaml"
    res = runner.invoke(app, ["analyze", *files, "--write", str(dest)])
    assert res.exit_code == 0, res.output
    return project, dest


def test_local_files_and_the_check_cache(tmp_path, monkeypatch, models):  # noqa: F811
    """`vramc analyze A.gguf B.gguf --write`: paths relative to the project, as the loader reads
    them; the check cache notices a quant's file appearing (its lock is then compared with it)."""
    project, dest = _analyzed_project(
        tmp_path, monkeypatch, models, "models/llama-8b-Q4_K_M.gguf", "models/llama-8b-Q8_0.gguf"
    )
    model = Model.model_validate(yaml.safe_load(dest.read_text()))
    assert [(q.quant, q.gguf) for q in model.quants] == [
        ("Q8_0", "models/llama-8b-Q8_0.gguf"),
        ("Q4_K_M", "models/llama-8b-Q4_K_M.gguf"),
    ]
    assert model.name == "llama-8b" and model.hf is None
    f = _deploy(project, "mid", "8GiB")
    assert runner.invoke(app, ["check", str(f)]).exit_code == 0
    # the Q4_K_M file is replaced by another: the cached answer must not stand
    (project / "models" / "llama-8b-Q4_K_M.gguf").unlink()
    (project / "models" / "llama-8b-Q4_K_M.gguf").symlink_to(models["llama-8b-Q2_K.gguf"])
    res = runner.invoke(app, ["check", str(f)])
    assert "VR202" in res.output and "models/llama8b.yaml:" in res.output, res.output


@pytest.mark.parametrize("engine", ["ollama", "llama-swap"])
def test_a_servers_quant_files_are_in_the_check_cache(tmp_path, monkeypatch, models, engine):  # noqa: F811
    """A model of a server (`models:`) with `quant: auto`: its quants' files are inputs of the
    cached check as a single deployment's are; a file that appears later is compared with its lock."""
    project, dest = _analyzed_project(
        tmp_path, monkeypatch, models, "models/llama-8b-Q8_0.gguf", "models/llama-8b-Q4_K_M.gguf"
    )
    (project / "models" / "llama-8b-Q4_K_M.gguf").unlink()  # not downloaded (yet): the lock is used
    f = project / "profiles" / "server.yaml"
    f.write_text(
        f"name: server\nhardware: {{gpus: [{{name: RTX 4060, vram: 8GiB}}]}}\nengine: {engine}\n"
        "models:\n  - name: chat\n    model: llama8b\n    settings: {ctx: 8192}\n"
    )
    first = runner.invoke(app, ["check", str(f)])
    assert first.exit_code == 0, first.output
    assert "profiles/server.yaml:6:12: VR380 info: [server.chat] quant: auto chose Q4_K_M" in first.output
    # the Q4_K_M file appears, but it is another file than the one locked: the cached answer must not stand
    (project / "models" / "llama-8b-Q4_K_M.gguf").symlink_to(models["llama-8b-Q2_K.gguf"])
    res = runner.invoke(app, ["check", str(f)])
    assert "VR202" in res.output and "models/llama8b.yaml:" in res.output, res.output


def test_markdown_and_diff_show_the_chosen_quant(tmp_path, monkeypatch, models):  # noqa: F811
    """`plan --format markdown` names the chosen quant and every candidate; `vramc diff` shows the
    chosen quant changing between two revisions (the GPU shrinks from 12 to 8 GiB: Q8_0 -> Q4_K_M)."""
    from test_diff import commit, edit, git

    r = tmp_path / "g"
    (r / "profiles" / "models").mkdir(parents=True)
    (r / "models").mkdir()
    for q in ("Q8_0", "Q4_K_M", "Q2_K"):
        (r / "models" / f"llama-8b-{q}.gguf").symlink_to(models[f"llama-8b-{q}.gguf"])
    monkeypatch.chdir(r)
    monkeypatch.setenv("VRAMC_CACHE", str(tmp_path / "cache"))
    files = [f"models/llama-8b-{q}.gguf" for q in ("Q2_K", "Q4_K_M", "Q8_0")]
    res = runner.invoke(app, ["analyze", *files, "--write", "profiles/models/llama8b.yaml", "--name", "llama8b"])
    assert res.exit_code == 0, res.output
    for f in files:  # not in git, not here: the locks plan them
        (r / f).unlink()
    (r / ".gitignore").write_text("/models/\n")
    _deploy(r, "gpu", "12GiB")
    res = runner.invoke(app, ["plan", "profiles/gpu.yaml", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert (
        "Quant: **Q8_0** (models/llama-8b-Q8_0.gguf), chosen by quant: auto among Q8_0 (fits, 33/33 layers on "
        "the GPUs), Q4_K_M (fits, 33/33 layers on the GPUs), Q2_K (fits, 33/33 layers on the GPUs)\n"
    ) in res.stdout
    git(r, "init", "-q", "-b", "main")
    commit(r, "12 GiB")
    edit(r, "profiles/gpu.yaml", "vram: 12GiB", "vram: 8GiB")
    commit(r, "8 GiB")
    res = runner.invoke(app, ["diff", "HEAD~1", "HEAD"])
    assert res.exit_code == 0, res.output
    assert "\n  quant: Q8_0* -> Q4_K_M*  (* chosen by quant: auto)\n" in res.stdout, res.stdout
    res = runner.invoke(app, ["diff", "HEAD~1", "HEAD", "--format", "markdown"])
    assert "\nQuant: Q8_0&#42; → Q4_K_M&#42; (&#42; chosen by quant: auto)\n" in res.stdout, res.stdout
    res = runner.invoke(app, ["diff", "HEAD~1", "HEAD", "--format", "json"])
    [d] = json.loads(res.stdout)["deployments"]
    assert d["quant"] == {"base": "Q8_0*", "head": "Q4_K_M*"} and d["change"] == "changed"
    # a fixed quant has no star; between two fixed quants no legend
    edit(r, "profiles/models/llama8b.yaml", "quant: auto", "quant: Q2_K")
    commit(r, "fixed")
    res = runner.invoke(app, ["diff", "HEAD~1", "HEAD"])
    assert "\n  quant: Q4_K_M* -> Q2_K  (* chosen by quant: auto)\n" in res.stdout, res.stdout
    edit(r, "profiles/models/llama8b.yaml", "quant: Q2_K", "quant: Q4_K_M")
    commit(r, "another")
    res = runner.invoke(app, ["diff", "HEAD~1", "HEAD"])
    assert "\n  quant: Q2_K -> Q4_K_M\n" in res.stdout, res.stdout


TEAM = """\
hardware: {{gpus: [{{name: RTX 4060, vram: {vram}}}]}}
deployments:
  - name: chat
    model: llama8b
    engine: llama-server
    settings: {{ctx: 8192, gpu_layers: {layers}}}
  - name: helper
    model: small
    engine: llama-server
    settings: {{ctx: 8192, gpu_layers: all}}
"""


def test_quant_auto_beside_the_deployments_it_runs_with(tmp_path, monkeypatch, models):  # noqa: F811
    """A `deployments:` file: `quant: auto` picks the largest quant that fits with all layers in
    what the others leave (alone on 12 GiB it would take Q8_0, which beside a 4.2 GiB helper keeps
    only part of its layers on the GPU); when none fits beside them the joint check says so."""
    project = _project(tmp_path)
    (project / "models").mkdir()
    for q in ("Q8_0", "Q4_K_M", "Q2_K"):
        (project / "models" / f"llama-8b-{q}.gguf").symlink_to(models[f"llama-8b-{q}.gguf"])
    monkeypatch.chdir(project)
    files = [f"models/llama-8b-{q}.gguf" for q in ("Q8_0", "Q4_K_M", "Q2_K")]
    for args in ([*files, "--name", "llama8b"], [files[2], "--name", "small"]):
        dest = f"profiles/models/{args[-1]}.yaml"
        res = runner.invoke(app, ["analyze", *args[:-2], "--write", dest, "--name", args[-1]])
        assert res.exit_code == 0, res.output
    assert _plan(_deploy(project, "alone", "12GiB"))["quant"]["chosen"] == "Q8_0"

    team = project / "profiles" / "team.yaml"
    team.write_text(TEAM.format(vram="12GiB", layers="auto"))
    res = runner.invoke(app, ["plan", str(team), "--format", "json"])
    chat, helper = json.loads(res.stdout)["deployments"]
    q = chat["quant"]
    assert (q["chosen"], q["outcome"], chat["settings"]["gpu_layers"]) == ("Q4_K_M", "all-layers", 33)
    rows = {c["quant"]: c for c in q["candidates"]}
    assert rows["Q8_0"]["gpu_layers"] < 33 == rows["Q4_K_M"]["gpu_layers"]  # beside the helper
    assert 4 * 2**30 < chat["devices"][0]["weights_bytes"] < 5 * 2**30 and helper["settings"]["gpu_layers"] == 33
    together = chat["devices"][0]["total_bytes"] + helper["devices"][0]["total_bytes"]
    assert together <= chat["devices"][0]["capacity_bytes"]
    res = runner.invoke(app, ["check", str(team)])
    assert res.exit_code == 0 and "VR312" not in res.output, res.output
    assert "chosen beside helper (run together on these GPUs); alone it would be Q8_0" in res.output
    assert "VR380 info: [chat] quant: auto chose Q4_K_M" in res.output
    res = runner.invoke(app, ["build", str(team)])
    assert res.exit_code == 0, res.output
    assert "--model models/llama-8b-Q4_K_M.gguf \\\n" in (project / "out" / "chat" / "launch.sh").read_text()

    # no quant fits with all layers beside the helper: the smallest, and the joint check flags it
    team.write_text(TEAM.format(vram="6GiB", layers="all"))
    res = runner.invoke(app, ["check", str(team)])
    assert res.exit_code == 1, res.output
    assert "VR382 info: [chat] none of the 3 quants fits on these GPUs: quant: auto planned the smallest, Q2_K" in (
        res.output
    )
    assert "VR312 error: [chat] GPU 0 (RTX 4060) is shared by chat" in res.output

    # a server's model keeps the quant chosen alone, and says so
    (project / "profiles" / "srv.yaml").write_text(
        "name: srv\nhardware: {gpus: [{name: RTX 4060, vram: 12GiB}]}\nengine: llama-swap\n"
        "groups:\n  both: {swap: false, members: [chat, helper]}\nmodels:\n"
        "  - {name: chat, model: llama8b, settings: {ctx: 8192, gpu_layers: auto}}\n"
        "  - {name: helper, model: small, settings: {ctx: 8192, gpu_layers: all}}\n"
    )
    team.unlink()
    res = runner.invoke(app, ["check", "profiles/srv.yaml"])
    assert "quant: auto chose Q8_0" in res.output
    assert "chosen alone: srv.helper may be loaded beside it (a server's models keep their own quant)" in res.output


def _readme_steps() -> list[tuple[str, str, list[str]]]:
    """README's "I have a model name" section in order: ("run", command, shown output lines) for
    each `vramc ...` line of a code block (joined over a trailing backslash) and the backticked
    `vramc analyze hf://...` of the prose, ("write", path, lines) for each `# profiles/X.yaml` block
    (not the one marked as written by vramc)."""
    import re

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index("## I have a model name")
    lines = text[start : text.index("\n## ", start + 1)].splitlines()
    steps: list[tuple[str, str, list[str]]] = []
    i = 0
    while i < len(lines):
        line, s = lines[i], lines[i].strip()
        i += 1
        if not line.startswith("    "):
            steps += [("run", m, []) for m in re.findall(r"`(vramc analyze hf://[^`]+)`", line)]
            continue
        if s.startswith(("vramc ", "$ vramc ")):
            command = s.removeprefix("$ ")
            while command.endswith("\\"):
                command = command[:-1].strip() + " " + lines[i].strip()
                i += 1
            shown = []
            while s.startswith("$ ") and i < len(lines) and lines[i].startswith("    "):
                shown.append(lines[i][4:])
                i += 1
            steps.append(("run", re.split(r"\s+#", command)[0], shown))
        elif re.match(r"# profiles/\S+\.yaml(:| *$)", s):
            body = []
            while i < len(lines) and lines[i].startswith("    "):
                body.append(lines[i][4:])
                i += 1
            steps.append(("write", s[2:].split(":")[0].split()[0], body))
    return steps


def test_the_readme_section_runs_verbatim(server, tmp_path, monkeypatch, models):  # noqa: F811
    """Every command of README's "I have a model name" section, as written, in a project with the
    shipped profiles (hf:// from the local Hub, which serves files of the names it shows; the
    example.com URL cannot be reached here and says so); the `--quants` table is the one shown."""
    import shutil

    from test_lock_config import config_of
    from vramc.dev.synth import CATALOG, write_sparse_gguf

    for q in ("Q8_0", "Q4_K_M", "Q2_K"):
        server.files[f"Llama-3.1-8B-Instruct-{q}.gguf"] = models[f"llama-8b-{q}.gguf"]
    server.listing["ORG/Llama-3.1-8B-Instruct-GGUF"] = [
        f"Llama-3.1-8B-Instruct-{q}.gguf" for q in ("Q8_0", "Q4_K_M", "Q2_K")
    ]
    server.files["FILE-Q4_K_M.gguf"] = models["llama-8b-Q4_K_M.gguf"]
    server.files["FILE-Q8_0.gguf"] = models["llama-8b-Q8_0.gguf"]
    server.listing["ORG/REPO"] = ["FILE-Q4_K_M.gguf", "FILE-Q8_0.gguf"]
    qwen = "Qwen2.5-32B-Instruct"
    for q in ("Q8_0", "Q4_K_M"):
        server.files[f"{qwen}-{q}.gguf"] = write_sparse_gguf(
            tmp_path / f"{qwen}-{q}.gguf", CATALOG["qwen2.5-32b-instruct"], q
        )
    server.listing[f"bartowski/{qwen}-GGUF"] = ["README.md", f"{qwen}-Q8_0.gguf", f"{qwen}-Q4_K_M.gguf"]
    project = tmp_path / "clone"
    shutil.copytree(Path(__file__).resolve().parent.parent / "profiles", project / "profiles")
    (project / "models").mkdir()
    for q in ("Q8_0", "Q4_K_M"):
        (project / "models" / f"m-{q}.gguf").symlink_to(models[f"llama-8b-{q}.gguf"])
    (project / "path" / "to").mkdir(parents=True)
    (project / "path" / "to" / "config.json").write_text(json.dumps(config_of("qwen2.5-32b-instruct")))
    monkeypatch.chdir(project)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:1")  # example.com: not reached from a test
    steps = _readme_steps()
    ran = [step[1].split()[1] for step in steps if step[0] == "run"]
    assert ran.count("analyze") >= 6 and {"lock", "plan", "fit"} <= set(ran), steps
    for kind, what, lines in steps:
        if kind == "write":
            (project / what).write_text("\n".join(lines) + "\n")
            continue
        res = runner.invoke(app, what.split()[1:])
        if "example.com" in what:
            assert res.exit_code == 1 and "cannot reach" in res.output, res.output
            continue
        assert res.exit_code == 0, (what, res.output)
        for want, got in zip(lines, res.stdout.splitlines()):
            assert got.startswith(want.removesuffix("...")), (what, want, got)
        assert len(res.stdout.splitlines()) >= len(lines)
    # the last analyze of the repository left a `quant: auto` model that the deployment plans
    rec = _plan(project / "profiles" / "qwen32b.yaml")
    assert rec["quant"]["auto"] and rec["verdict"] in ("fits", "tight")


def test_vllm_is_told(tmp_path, monkeypatch):
    project = _project(tmp_path)
    fixture = Path(__file__).parent / "fixtures" / "profiles" / "bad" / "models" / "llama8b-quants.yaml"
    (project / "profiles" / "models" / "llama8b.yaml").write_text(fixture.read_text())
    f = project / "profiles" / "v.yaml"
    f.write_text("name: v\nhardware: {gpus: [{name: H100, vram: 80GiB}]}\nmodel: llama8b\nengine: vllm\n")
    codes = {d.code for d in run_check([f]).diagnostics}
    assert "VR209" in codes


# --- hostile input -------------------------------------------------------------------------
LOCK = """\
      lock:
        architecture: llama
        hparams: {block_count: 1, context_length: 4096, embedding_length: 32, attention.head_count: 2}
        vocab_size: 32
        tensors:
          token_embd.weight: [q8_0, 32, 32]
"""


@pytest.mark.parametrize(
    "model, code, line, col, words",
    [
        ("  hf: org/repo\n  quant: auto\n", "VR207", 7, 10, "vramc analyze hf://org/repo --write"),
        ("  quant: auto\n  quants:\n    - quant: Q8_0\n", "VR208", 8, 7, "neither `gguf:` nor `lock:`"),
        (
            "  quant: auto\n  quants:\n    - {quant: Q8_0, gguf: a.gguf}\n    - {quant: Q8_0, gguf: b.gguf}\n",
            "VR208",
            9,
            15,
            "listed twice",
        ),
        ("  quant: Q6_K\n  quants:\n    - {quant: Q8_0, gguf: a.gguf}\n", "VR208", 6, 10, "Q6_K is not in `quants:`"),
        ("  quant: auto\n  quants:\n    - {quant: Q8_0, gguf: models/gone.gguf}\n", "VR200", 8, 27, "not found"),
        ("  quant: auto\n  quants:\n    - quant: Q8_0\n      lock: 42\n", "VR101", 9, 13, "lock"),
        (
            "  quant: auto\n  quants:\n    - quant: Q8_0\n" + LOCK.replace("q8_0, 32", "q9_9, 32"),
            "VR203",
            14,
            30,
            "q9_9",
        ),
        ("  quant: auto\n  quants: Q8_0\n", "VR101", 7, 11, "quants"),
        ("  quant: auto\n  quants:\n    - {quant: 'Q8 0', gguf: a.gguf}\n", "VR101", 8, 15, "is not a quant type"),
        (
            "  quant: auto\n  gguf: a.gguf\n  quants:\n    - {quant: Q8_0, gguf: b.gguf}\n",
            "VR208",
            7,
            9,
            "beside `quants:`",
        ),
    ],
)
def test_hostile_quants(tmp_path, model, code, line, col, words):
    f = tmp_path / "d.yaml"
    f.write_text(
        "name: d\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nengine: llama-server\nmodel:\n  name: m\n" + model
    )
    diags = [d for d in run_check([f]).diagnostics if d.code == code]
    assert diags, [d.one_line() for d in run_check([f]).diagnostics]
    assert (diags[0].line, diags[0].column) == (line, col), diags[0].one_line()
    assert words in diags[0].full_message()
    proc = subprocess.run(
        [sys.executable, "-m", "vramc", "check", str(f)],
        capture_output=True,
        text=True,
        env={**os.environ, "VRAMC_NO_CACHE": "1"},
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert f"d.yaml:{line}:{col}: {code} error" in proc.stdout


def test_hostile_analyze(server, tmp_path, models):  # noqa: F811
    dest = tmp_path / "profiles" / "models" / "m.yaml"
    same = [str(models["llama-8b-Q4_K_M.gguf"]), "hf://org/quants:Q4_K_M"]
    res = runner.invoke(app, ["analyze", *same, "--write", str(dest)])
    assert res.exit_code == 2 and "several files are of the same quant" in res.output and not dest.exists()
    res = runner.invoke(app, ["analyze", *same])
    assert res.exit_code == 2 and "give --write PROFILE" in res.output
    server.listing["org/empty"] = ["README.md", "mmproj-F16.gguf"]
    res = runner.invoke(app, ["analyze", "hf://org/empty", "--write", str(dest)])
    assert res.exit_code == 1 and "no GGUF model files in org/empty" in res.output and not dest.exists()
    res = runner.invoke(
        app, ["analyze", str(models["llama-8b-Q2_K.gguf"]), str(tmp_path / "none.gguf"), "--write", str(dest)]
    )
    assert res.exit_code == 1 and not dest.exists()


def test_run_loads_the_chosen_file(tmp_path):
    """`vramc run` of a `quant: auto` model loads the file the plan chose (real llama-cpp-python)."""
    from vramc.dev.synth import write_tiny_model

    project = _project(tmp_path)
    (project / "models").mkdir()
    for q in ("F32", "Q8_0"):
        write_tiny_model(project / "models" / f"tiny-{q}.gguf", ftype=q)
    env = {**os.environ, "VRAMC_NO_CACHE": "1"}
    argv = [sys.executable, "-m", "vramc"]
    res = subprocess.run(
        argv + ["analyze", "models/tiny-Q8_0.gguf", "models/tiny-F32.gguf", "--write", "profiles/models/tiny.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    (project / "profiles" / "tiny.yaml").write_text(
        "name: tiny\nhardware: {gpus: []}\nmodel: tiny\nengine: llama-cpp-python\n"
        "settings: {ctx: 512, gpu_layers: 0, flash_attn: off}\n"
    )
    plan = subprocess.run(
        argv + ["plan", "profiles/tiny.yaml", "--format", "json"], cwd=project, capture_output=True, text=True, env=env
    )
    [rec] = json.loads(plan.stdout)["deployments"]
    assert (rec["quant"]["chosen"], rec["quant"]["outcome"]) == ("F32", "cpu-only")
    log = tmp_path / "llama.log"
    res = subprocess.run(
        argv + ["run", "tiny", "--prompt", "Hi", "--max-tokens", "2"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**env, "VRAMC_LLAMA_LOG": str(log)},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "tiny-F32.gguf" in log.read_text()


PAIR = """\
hardware: {{gpus: [{{name: RTX 4060, vram: {vram}}}]}}
deployments:
  - name: first
    model: llama8b
    engine: llama-server
    settings: {{ctx: 8192, gpu_layers: all}}
  - name: second
    model: llama8b
    engine: llama-server
    settings: {{ctx: 8192, gpu_layers: all}}
"""


def test_two_quant_auto_deployments_on_one_gpu_say_they_were_not_chosen_jointly(
    tmp_path,
    monkeypatch,
    models,  # noqa: F811
):
    """Two `quant: auto` deployments on one GPU: each is chosen beside the other at the quant it
    takes alone (Q8_0), not jointly, so on 16 GiB both take Q4_K_M (Q8_0 beside Q4_K_M would fit
    too) and on 12 GiB neither fits; the note says so instead of implying a joint choice."""
    project = _project(tmp_path)
    (project / "models").mkdir()
    for q in ("Q8_0", "Q4_K_M", "Q2_K"):
        (project / "models" / f"llama-8b-{q}.gguf").symlink_to(models[f"llama-8b-{q}.gguf"])
    monkeypatch.chdir(project)
    files = [f"models/llama-8b-{q}.gguf" for q in ("Q8_0", "Q4_K_M", "Q2_K")]
    res = runner.invoke(app, ["analyze", *files, "--write", "profiles/models/llama8b.yaml", "--name", "llama8b"])
    assert res.exit_code == 0, res.output
    pair = project / "profiles" / "pair.yaml"
    for vram, quant in (("16GiB", "Q4_K_M"), ("12GiB", "Q2_K")):
        pair.write_text(PAIR.format(vram=vram))
        res = runner.invoke(app, ["plan", str(pair), "--format", "json"])
        assert [d["quant"]["chosen"] for d in json.loads(res.stdout)["deployments"]] == [quant, quant]
        res = runner.invoke(app, ["check", str(pair)])
        for me, other in (("first", "second"), ("second", "first")):
            assert (
                f"[{me}] " in res.output
                and f"chosen beside {other} (run together on these GPUs); alone it would be Q8_0; {other} (Q8_0 "
                "alone) also quant: auto, counted here at the quant chosen alone: the quants are chosen one by "
                "one, not jointly"
                in res.output
            ), res.output
