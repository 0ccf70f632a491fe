"""`vramc diff` over throwaway git repositories: one commit per kind of change, compared with
golden text, markdown and JSON, and the JSON's numbers checked against `plan --format json` run
at each commit. Regenerate goldens after an intended change with VRAMC_UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vramc.cli.commands import app

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "fixtures" / "diff"
UPDATE = bool(os.environ.get("VRAMC_UPDATE_GOLDEN"))
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}

CHAT = """\
name: chat
hardware: gpu16
model: llama8b
engine: llama-server
settings:
  ctx: 8192
  gpu_layers: 33
  flash_attn: true
"""

TEAM = """\
hardware: gpu16
deployments:
  - name: small
    model: llama8b
    engine: llama-server
    settings: {ctx: 4096, gpu_layers: 33, flash_attn: true}
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def commit(repo: Path, msg: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)


def write(repo: Path, rel: str, text: str) -> None:
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def edit(repo: Path, rel: str, old: str, new: str) -> None:
    p = repo / rel
    text = p.read_text()
    assert old in text, (rel, old)
    p.write_text(text.replace(old, new, 1))


# (commit message, change to make) in order; each is diffed against the one before it
STEPS = [
    ("ctx-fits", lambda r: edit(r, "profiles/chat.yaml", "ctx: 8192", "ctx: 16384")),
    ("ctx-does-not-fit", lambda r: edit(r, "profiles/chat.yaml", "ctx: 16384", "ctx: 131072")),
    (
        "rename",
        lambda r: (
            edit(r, "profiles/chat.yaml", "ctx: 131072", "ctx: 8192"),
            edit(r, "profiles/chat.yaml", "name: chat", "name: assistant"),
        ),
    ),
    ("hardware", lambda r: edit(r, "profiles/hardware/gpu16.yaml", "vram: 16GiB", "vram: 12GiB")),
    (
        "model-lock",
        lambda r: edit(r, "profiles/models/llama8b.yaml", "attention.head_count_kv: 8", "attention.head_count_kv: 16"),
    ),
    ("deleted-file", lambda r: (r / "profiles/team.yaml").unlink()),
    (
        "added-variant",
        lambda r: edit(
            r,
            "profiles/chat.yaml",
            "  flash_attn: true\n",
            "  flash_attn: true\nvariants:\n  long:\n    settings: {ctx: 32768}\n",
        ),
    ),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("diffrepo")
    git(r, "init", "-q", "-b", "main")
    write(r, ".gitignore", "/models/\n")
    shutil.copy(ROOT / "profiles/hardware/gpu-16gb.yaml", r / "gpu16.tmp")
    write(r, "profiles/hardware/gpu16.yaml", (r / "gpu16.tmp").read_text().replace("name: gpu-16gb", "name: gpu16"))
    (r / "gpu16.tmp").unlink()
    model = (ROOT / "profiles/models/llama-3.1-8b-instruct-q8_0.yaml").read_text()
    write(r, "profiles/models/llama8b.yaml", model.replace("name: llama-3.1-8b-instruct-q8_0", "name: llama8b"))
    write(r, "profiles/chat.yaml", CHAT)
    write(r, "profiles/team.yaml", TEAM)
    commit(r, "base")
    for msg, change in STEPS:
        change(r)
        commit(r, msg)
    return r


def run(repo: Path, *args: str, env: dict | None = None):
    old = os.getcwd()
    os.chdir(repo)
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:
        os.chdir(old)


def rev(i: int) -> str:
    return f"HEAD~{len(STEPS) - i}" if i < len(STEPS) else "HEAD"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with VRAMC_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("step", range(1, len(STEPS) + 1), ids=[s[0] for s in STEPS])
def test_goldens(repo, step):
    name = STEPS[step - 1][0]
    for fmt, ext in (("text", "txt"), ("markdown", "md"), ("json", "json")):
        res = run(repo, "diff", rev(step - 1), rev(step), "--format", fmt)
        assert res.exit_code in (0, 1), res.output
        golden(f"{step}-{name}.{ext}", res.stdout)


def _plan_json(repo: Path, commit: str, tmp: Path) -> dict:
    """`vramc plan --format json` in a checkout of `commit` (a worktree of the test's own repo)."""
    wt = tmp / commit[:12]
    if not wt.exists():
        git(repo, "worktree", "add", "-q", "--detach", str(wt), commit)
    res = run(wt, "plan", "--format", "json")
    return json.loads(res.stdout)


@pytest.mark.parametrize("step", range(1, len(STEPS) + 1), ids=[s[0] for s in STEPS])
def test_json_is_the_difference_of_two_plans(repo, step, tmp_path):
    res = run(repo, "diff", rev(step - 1), rev(step), "--format", "json")
    doc = json.loads(res.stdout)
    assert doc["version"] == 1
    base = _plan_json(repo, doc["base"]["commit"], tmp_path)
    head = _plan_json(repo, doc["head"]["commit"], tmp_path)
    key = lambda d: (d["file"], d["name"], d["variant"])  # noqa: E731
    b = {key(d): d for d in base["deployments"]}
    h = {key(d): d for d in head["deployments"]}
    assert {key(d) for d in doc["deployments"]} == set(b) | set(h)
    for d in doc["deployments"]:
        br, hr = b.get(key(d)), h.get(key(d))
        assert d["verdict"] == {"base": br and br["verdict"], "head": hr and hr["verdict"]}
        assert d["change"] == ("added" if br is None else "removed" if hr is None else d["change"])
        bdev = {x["id"]: x for x in (br or {}).get("devices", [])}
        hdev = {x["id"]: x for x in (hr or {}).get("devices", [])}
        assert [x["id"] for x in d["devices"]] == list(dict.fromkeys([*bdev, *hdev]))
        for row in d["devices"]:
            bx, hx = bdev.get(row["id"]), hdev.get(row["id"])
            for side, plan in (("base", bx), ("head", hx)):
                if plan is None:
                    assert row[side] is None
                else:
                    assert row[side] == {k: plan[k] for k in row[side]}
            assert row["delta_bytes"] == (hx or {}).get("total_bytes", 0) - (bx or {}).get("total_bytes", 0)
        hb, hh = (br or {}).get("host"), (hr or {}).get("host")
        assert d["host"]["delta_bytes"] == (hh or {}).get("total_bytes", 0) - (hb or {}).get("total_bytes", 0)
        changed = [s["key"] for s in d["settings"]]
        bs, hs = (br or {}).get("settings", {}), (hr or {}).get("settings", {})
        assert changed == [k for k in dict.fromkeys([*bs, *hs]) if bs.get(k) != hs.get(k)]


def _by_label(doc):
    return {(d["name"], d["variant"]): d for d in doc["deployments"]}


def test_what_each_change_reports(repo):
    def diff(i, *extra):
        res = run(repo, "diff", rev(i - 1), rev(i), "--format", "json", *extra)
        return res.exit_code, _by_label(json.loads(res.stdout))

    code, d = diff(1)  # a longer context that still fits: exit 0, KV grew, the flag changed in out/
    chat = d[("chat", None)]
    assert code == 0 and chat["change"] == "changed" and chat["verdict"] == {"base": "fits", "head": "fits"}
    assert {"key": "ctx", "base": 8192, "head": 16384} in chat["settings"]
    assert chat["devices"][0]["deltas"]["kv_bytes"] > 0 and chat["devices"][0]["delta_bytes"] > 0
    assert "out/chat/llama-server.args" in [a["path"] for a in chat["artifacts"]]
    assert d[("small", None)]["change"] == "unchanged"
    code, d = diff(2)  # no longer fits: exit 1
    assert code == 1 and d[("chat", None)]["verdict"]["head"] == "does-not-fit"
    assert d[("chat", None)]["regression"]
    code, d = diff(3)  # renamed: one removed, one added
    assert d[("chat", None)]["change"] == "removed" and d[("assistant", None)]["change"] == "added"
    code, d = diff(4)  # hardware: every deployment that uses it changed, its files untouched
    for k in (("assistant", None), ("small", None)):
        assert d[k]["change"] == "changed"
        assert d[k]["inputs_changed"] == ["profiles/hardware/gpu16.yaml"]
        assert d[k]["devices"][0]["base"]["free_bytes"] - d[k]["devices"][0]["head"]["free_bytes"] == 4 << 30
    code, d = diff(5)  # the model's lock: KV doubles for both
    for k in (("assistant", None), ("small", None)):
        assert d[k]["inputs_changed"] == ["profiles/models/llama8b.yaml"]
        assert d[k]["devices"][0]["deltas"]["kv_bytes"] == d[k]["devices"][0]["base"]["kv_bytes"]
    code, d = diff(6)  # a deleted file
    assert d[("small", None)]["change"] == "removed" and d[("assistant", None)]["change"] == "unchanged"
    code, d = diff(7)  # an added variant
    assert d[("assistant", "long")]["change"] == "added"
    assert d[("assistant", None)]["change"] == "unchanged"


def test_fail_on_policies(repo):
    assert run(repo, "diff", rev(0), rev(1)).exit_code == 0
    assert run(repo, "diff", rev(0), rev(1), "--fail-on", "growth:5%").exit_code == 1
    assert run(repo, "diff", rev(0), rev(1), "--fail-on", "growth:500%").exit_code == 0
    assert run(repo, "diff", rev(1), rev(2), "--fail-on", "never").exit_code == 0
    assert run(repo, "diff", rev(1), rev(2), "--fail-on", "growth:500%").exit_code == 1  # worse verdict
    assert run(repo, "diff", rev(0), rev(1), "--fail-on", "tight").exit_code == 0
    for bad in ("growth:x", "sometimes", "growth:-1%"):
        res = run(repo, "diff", rev(0), rev(1), "--fail-on", bad)
        assert res.exit_code == 2 and "--fail-on" in res.output


def test_github_annotates_the_changed_line(repo):
    res = run(repo, "diff", rev(1), rev(2), "--format", "github")
    assert res.exit_code == 1
    line = CHAT.splitlines().index("  ctx: 8192") + 1
    assert res.stdout.startswith(f"::error file=profiles/chat.yaml,line={line},")
    assert "does-not-fit" in res.stdout
    # a hardware change that makes it worse points at the deployment's hardware line
    res = run(repo, "diff", rev(3), rev(4), "--format", "github", "--fail-on", "growth:0%")
    assert res.exit_code == 0 and res.stdout == ""


def test_markdown_goes_to_the_step_summary(repo, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    res = run(repo, "diff", rev(1), rev(2), "--format", "markdown", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert summary.read_text() == "earlier step\n" + res.stdout
    assert "<details>" in res.stdout and "| chat | profiles/chat.yaml | changed | fits → does-not-fit" in res.stdout


def test_working_tree_and_default_base(repo, tmp_path):
    """HEAD defaults to the working tree and BASE to HEAD without an upstream; the user's tree,
    index and HEAD are left exactly as they were."""
    clone = tmp_path / "clone"
    git(repo, "clone", "-q", str(repo), str(clone))
    edit(clone, "profiles/chat.yaml", "ctx: 32768", "ctx: 65536")
    before = (git(clone, "status", "--porcelain"), git(clone, "rev-parse", "HEAD"), (clone / ".git/index").read_bytes())
    res = run(clone, "diff", "--format", "json")
    doc = json.loads(res.stdout)
    assert doc["head"] == {"rev": "working tree", "commit": None}
    assert doc["base"]["rev"].startswith("merge base")  # the clone tracks origin/main
    long = _by_label(doc)[("assistant", "long")]
    assert long["settings"][0] == {"key": "ctx", "base": 32768, "head": 65536}
    after = (git(clone, "status", "--porcelain"), git(clone, "rev-parse", "HEAD"), (clone / ".git/index").read_bytes())
    assert before == after
    git(clone, "branch", "-q", "--unset-upstream")
    doc = json.loads(run(clone, "diff", "--format", "json").stdout)
    assert doc["base"]["rev"] == "HEAD"


def test_two_folders(repo, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, r in ((a, rev(0)), (b, rev(1))):
        git(repo, "worktree", "add", "-q", "--detach", str(d), r)
    res = run(tmp_path, "diff", "--base-dir", str(a), "--head-dir", str(b), "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    chat = _by_label(doc)[("chat", None)]
    assert chat["change"] == "changed" and chat["settings"][0]["key"] == "ctx"
    positional = run(tmp_path, "diff", "a", "b", "--format", "json")  # outside a repository
    assert positional.exit_code == 0 and json.loads(positional.stdout)["deployments"] == doc["deployments"]
    gitdoc = json.loads(run(repo, "diff", rev(0), rev(1), "--format", "json").stdout)
    strip = lambda ds: [{k: v for k, v in d.items()} for d in ds]  # noqa: E731
    assert strip(doc["deployments"]) == strip(gitdoc["deployments"])


def test_plan_markdown(repo):
    res = run(repo, "plan", "--format", "markdown")
    assert res.exit_code == 0
    assert "### assistant" in res.stdout and "| CUDA0 | 16 GB GPU |" in res.stdout
    assert "**fits**" in res.stdout


def test_model_files_come_from_the_working_tree(tmp_path):
    """A GGUF file is not in git: both revisions read the working tree's (models/ is ignored)."""
    import sys

    r = tmp_path / "g"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(r, ".gitignore", "/models/\n")
    (r / "models").mkdir()
    subprocess.run([sys.executable, "-m", "vramc.dev.synth", "tiny", str(r / "models/tiny.gguf")], check=True)
    write(r, "profiles/models/tiny.yaml", "kind: model\nname: tiny\ngguf: models/tiny.gguf\n")
    write(r, "profiles/hardware/gpu16.yaml", "kind: hardware\nname: gpu16\ngpus:\n  - name: G\n    vram: 1GiB\n")
    write(
        r,
        "profiles/t.yaml",
        "name: t\nhardware: gpu16\nmodel: tiny\nengine: llama-server\nsettings: {ctx: 512, gpu_layers: 3}\n",
    )
    commit(r, "base")
    edit(r, "profiles/t.yaml", "ctx: 512", "ctx: 1024")
    commit(r, "ctx")
    res = run(r, "diff", "HEAD~1", "HEAD", "--format", "json")
    assert res.exit_code == 0, res.output
    assert "VR2" not in res.output and "error" not in res.stderr
    d = json.loads(res.stdout)["deployments"][0]
    assert d["verdict"] == {"base": "fits", "head": "fits"}
    assert d["devices"][0]["deltas"]["kv_bytes"] == d["devices"][0]["base"]["kv_bytes"] > 0
    assert sorted(p.name for p in r.rglob("*") if ".git" not in p.parts and p.is_symlink()) == []


def test_example_workflow_runs_these_commands(repo, tmp_path):
    """The GitHub Actions example in examples/: the base revision is fetched, and each vramc
    command line it runs is one this vramc accepts (run here against the test repository)."""
    import shlex

    import yaml

    wf = yaml.safe_load((ROOT / "examples/github-actions/vramc.yml").read_text())
    steps = wf["jobs"]["vram"]["steps"]
    assert steps[0]["with"]["fetch-depth"] == 0
    assert wf["permissions"]["pull-requests"] == "write"
    script = "\n".join(s.get("run", "") for s in steps)
    lines = [ln.strip() for ln in script.splitlines() if ln.strip().startswith("vramc diff")]
    assert {"markdown", "github"} <= {ln.split()[ln.split().index("--format") + 1] for ln in lines}
    summary = tmp_path / "summary.md"
    for ln in lines:
        argv = shlex.split(ln.split(">")[0].replace('"$base"', rev(1)))[1:]
        res = run(repo, *argv, env={"GITHUB_STEP_SUMMARY": str(summary)})
        assert res.exit_code in (0, 1), (ln, res.output)
    assert summary.read_text().startswith("### vramc diff")
    assert "gh api --method PATCH" in script and "<!-- vramc-diff -->" in script


def test_rendered_files_are_what_build_writes(repo, tmp_path):
    """The out/ files diff compares are byte for byte what `vramc build` writes."""
    from vramc.diff import revisions
    from vramc.diff.compare import plan_side, render

    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), rev(1))
    assert run(wt, "build").exit_code == 0
    side = revisions.revision(repo, rev(1))
    try:
        sp = plan_side(side, ["profiles"])
        render(side, sp, list(sp.planned))
    finally:
        side.close()
    files = {path: data for p in sp.planned.values() for path, data in p.artifacts.items()}
    assert len(files) >= 10
    on_disk = {p.relative_to(wt).as_posix(): p.read_bytes() for p in (wt / "out").rglob("*") if p.is_file()}
    assert files == on_disk


def test_paths_from_a_subfolder(repo):
    """PATHs are relative to where the user is; files are still named from the project's top."""
    res = run(repo / "profiles", "diff", rev(0), rev(1), "chat.yaml", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [(d["file"], d["name"]) for d in doc["deployments"]] == [("profiles/chat.yaml", "chat")]


def test_layers_that_moved(tmp_path):
    """A new tensor split moves blocks from one GPU to the other: both devices are listed with
    their layers before and after, in text and JSON."""
    r = tmp_path / "split"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(
        r,
        "profiles/hardware/two.yaml",
        "kind: hardware\nname: two\ngpus:\n  - {name: A, vram: 16GiB}\n  - {name: B, vram: 16GiB}\n",
    )
    model = (ROOT / "profiles/models/llama-3.1-8b-instruct-q8_0.yaml").read_text()
    write(r, "profiles/models/llama8b.yaml", model.replace("name: llama-3.1-8b-instruct-q8_0", "name: llama8b"))
    write(
        r,
        "profiles/s.yaml",
        "name: s\nhardware: two\nmodel: llama8b\nengine: llama-server\n"
        "settings: {ctx: 8192, gpu_layers: 33, tensor_split: [1, 1]}\n",
    )
    commit(r, "even")
    edit(r, "profiles/s.yaml", "tensor_split: [1, 1]", "tensor_split: [3, 1]")
    res = run(r, "diff", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)["deployments"][0]
    moved = {m["id"]: (m["base"], m["head"]) for m in d["layers_moved"]}
    assert set(moved) == {"CUDA0", "CUDA1"}
    (a0, b0), (a1, b1) = moved["CUDA0"][0], moved["CUDA0"][1]
    assert a0 == a1 == 0 and b1 > b0  # CUDA0 holds more blocks
    assert moved["CUDA1"][1][0] == b1 + 1  # CUDA1 starts after them
    assert d["devices"][0]["deltas"]["weights_bytes"] > 0 > d["devices"][1]["deltas"]["weights_bytes"]
    text = run(r, "diff").stdout
    assert f"layers: CUDA0 0-{b0} -> 0-{b1}; CUDA1 {b0 + 1}-" in text


def test_a_change_the_solver_made_counts(tmp_path):
    """`gpu_layers: auto` on a smaller card: the deployment file did not change, the solver's
    answer did, and that is a changed setting."""
    r = tmp_path / "auto"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(r, "profiles/hardware/one.yaml", "kind: hardware\nname: one\ngpus:\n  - {name: A, vram: 16GiB}\n")
    model = (ROOT / "profiles/models/llama-3.1-8b-instruct-q8_0.yaml").read_text()
    write(r, "profiles/models/llama8b.yaml", model.replace("name: llama-3.1-8b-instruct-q8_0", "name: llama8b"))
    write(
        r,
        "profiles/a.yaml",
        "name: a\nhardware: one\nmodel: llama8b\nengine: llama-server\nsettings: {ctx: 8192, gpu_layers: auto}\n",
    )
    commit(r, "16 GiB")
    edit(r, "profiles/hardware/one.yaml", "vram: 16GiB", "vram: 6GiB")
    commit(r, "6 GiB")
    res = run(r, "diff", "HEAD~1", "HEAD", "--format", "json")
    d = json.loads(res.stdout)["deployments"][0]
    assert d["change"] == "changed" and d["inputs_changed"] == ["profiles/hardware/one.yaml"]
    (s,) = [x for x in d["settings"] if x["key"] == "gpu_layers"]
    assert s["base"] == 33 and 0 < s["head"] < 33
    assert d["devices"][0]["deltas"]["weights_bytes"] < 0 and d["host"]["deltas"]["weights_bytes"] > 0
