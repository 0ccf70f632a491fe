"""`vramc diff` on hostile input: every problem is a clear message and exit 2 (never 3, never a
traceback), and the user's working tree, index and HEAD are left exactly as they were."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_diff import CHAT, GIT_ENV, ROOT, commit, git, write
from vramc.cli.commands import app


def _repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(r, "README", "no profiles yet\n")
    commit(r, "empty")
    write(r, "profiles/hardware/gpu16.yaml", "kind: hardware\nname: gpu16\ngpus:\n  - name: G\n    vram: 16GiB\n")
    model = (ROOT / "profiles/models/llama-3.1-8b-instruct-q8_0.yaml").read_text()
    write(r, "profiles/models/llama8b.yaml", model.replace("name: llama-3.1-8b-instruct-q8_0", "name: llama8b"))
    write(r, "profiles/chat.yaml", CHAT)
    commit(r, "profiles")
    return r


def _state(r: Path):
    return (
        git(r, "status", "--porcelain", "--ignored"),
        git(r, "rev-parse", "HEAD"),
        (r / ".git/index").read_bytes(),
        sorted(str(p) for p in r.rglob("*") if ".git" not in p.parts),
    )


def _ours() -> list[str]:
    import tempfile

    try:
        return sorted(n for n in os.listdir(tempfile.gettempdir()) if n.startswith("vramc-diff-"))
    except FileNotFoundError:
        return []


def run(cwd: Path, *args: str, env=None):
    is_repo = (cwd / ".git").exists()
    before = _state(cwd) if is_repo else None
    temps = _ours()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(app, ["diff", *args], env=env)
    finally:
        os.chdir(old)
    if is_repo:
        assert _state(cwd) == before, "vramc diff changed the user's repository"
    assert _ours() == temps, "a temporary copy was left behind"
    # an exception other than the exit typer raises would be exit 3 (an internal error) under main()
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    return res


@pytest.fixture
def repo(tmp_path):
    return _repo(tmp_path)


def test_not_a_git_repository(tmp_path):
    res = run(tmp_path)
    assert res.exit_code == 2 and "not in a git repository" in res.output and "--base-dir" in res.output


def test_bad_revisions(repo):
    res = run(repo, "no-such-branch")
    assert res.exit_code == 2 and "unknown revision 'no-such-branch'" in res.output
    res = run(repo, "no-such-branch", "profiles")
    assert res.exit_code == 2 and "unknown revision 'no-such-branch'" in res.output
    res = run(repo, "HEAD~99", "HEAD")
    assert res.exit_code == 2 and "unknown revision 'HEAD~99'" in res.output
    res = run(repo, "HEAD", "HEAD", "HEAD")
    assert res.exit_code == 2 and "at most two revisions" in res.output
    res = run(repo, "--", "--upload-pack=touch /tmp/x")  # no option smuggled into git
    assert res.exit_code == 2


def test_revision_without_profiles(repo):
    res = run(repo, "HEAD~1", "HEAD")
    assert res.exit_code == 2 and "HEAD~1 has no profiles under profiles" in res.output
    res = run(repo, "HEAD~1", "HEAD", "--allow-empty", "--format", "json")
    assert res.exit_code == 0 and '"change": "added"' in res.stdout


def test_path_outside_the_repository(repo, tmp_path):
    res = run(repo, "HEAD", "--", str(tmp_path))
    assert res.exit_code == 2 and "outside the repository" in res.output
    res = run(repo, "HEAD", "--", "../..")
    assert res.exit_code == 2 and "outside the repository" in res.output


@pytest.mark.parametrize(
    "target,why",
    [
        ("/etc/passwd", "absolute path"),
        ("../../outside.yaml", "outside the repository"),
        ("loop.yaml", "loop"),
        ("missing.yaml", "does not have"),
    ],
)
def test_symbolic_links_in_git_objects(repo, target, why):
    os.symlink(target, repo / ("profiles/loop.yaml" if target == "loop.yaml" else "profiles/evil.yaml"))
    commit(repo, "link")
    res = run(repo, "HEAD~1", "HEAD")
    assert res.exit_code == 2 and why in res.output and "symbolic link" in res.output


def test_a_link_inside_the_repository_is_followed(repo):
    os.symlink("hardware/gpu16.yaml", repo / "profiles/hw-link.yaml")
    edit_chat = (repo / "profiles/chat.yaml").read_text().replace("hardware: gpu16", "hardware: hw-link.yaml")
    (repo / "profiles/chat.yaml").write_text(edit_chat)
    commit(repo, "link inside")
    res = run(repo, "HEAD~1", "HEAD", "--format", "json")
    assert res.exit_code == 0, res.output
    import json

    d = json.loads(res.stdout)["deployments"][0]
    assert d["verdict"] == {"base": "fits", "head": "fits"}
    assert [r["delta_bytes"] for r in d["devices"]] == [0]  # the same GPU, read through the link
    assert "profiles/hw-link.yaml" in d["inputs_changed"]
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # the test's own repository


def test_huge_and_binary_blobs(repo):
    write(repo, "profiles/big.yaml", "# " + "x" * (5 * 1024 * 1024) + "\n")
    commit(repo, "big")
    res = run(repo, "HEAD~1", "HEAD")
    assert res.exit_code == 2 and "HEAD:profiles/big.yaml is 5,242,883 bytes" in res.output
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # the test's own repository
    (repo / "profiles/bin.yaml").write_bytes(b"name: x\0\x01\x02")
    commit(repo, "binary")
    res = run(repo, "HEAD~1", "HEAD")
    assert res.exit_code == 2 and "HEAD:profiles/bin.yaml is binary" in res.output
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # the test's own repository


def test_broken_profile_in_one_revision_is_reported_not_fatal(repo):
    write(repo, "profiles/chat.yaml", "name: chat\nsettings: [unclosed\n")
    commit(repo, "broken")
    res = run(repo, "HEAD~1", "HEAD", "--format", "json")
    # the newer revision broke a profile: a regression (it exited 0, the error on stderr only)
    assert res.exit_code == 1, res.output
    assert '"change": "removed"' in res.stdout
    assert "HEAD: profiles/chat.yaml" in res.output  # the load error, on stderr
    assert "regression: profiles/chat.yaml does not load in HEAD" in res.stderr
    assert run(repo, "HEAD~1", "HEAD", "--fail-on", "never").exit_code == 0
    # the other way round (the newer revision repairs it) is no regression, nor is a profile
    # broken on both sides
    assert run(repo, "HEAD", "HEAD~1").exit_code == 0
    assert run(repo, "HEAD", "HEAD").exit_code == 0
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # the test's own repository


def test_check_error_new_in_head_is_a_regression(repo):
    """A profile that still plans ("fits") but that check refuses in the newer revision (two
    tensor_split numbers for one GPU: VR303) is a regression, not a silent exit 0."""
    write(repo, "profiles/chat.yaml", CHAT + "  tensor_split: [1, 1]\n")
    commit(repo, "two proportions for one GPU")
    res = run(repo, "HEAD~1", "HEAD")
    assert res.exit_code == 1, res.output
    assert "regression: profiles/chat.yaml: VR303 error in HEAD, not in HEAD~1" in res.stderr
    assert run(repo, "HEAD~1", "HEAD", "--fail-on", "never").exit_code == 0
    # the error on both sides (a line moved above it) or only in the older revision: no regression
    assert run(repo, "HEAD", "HEAD~1").exit_code == 0
    write(repo, "profiles/chat.yaml", "# a comment moves every line\n" + CHAT + "  tensor_split: [1, 1]\n")
    commit(repo, "comment")
    assert run(repo, "HEAD~1", "HEAD").exit_code == 0
    git(repo, "reset", "-q", "--hard", "HEAD~2")  # the test's own repository


def test_bad_options(repo, tmp_path):
    assert run(repo, "--format", "yaml").exit_code == 2
    assert run(repo, "--base-dir", str(tmp_path)).exit_code == 2
    res = run(repo, "--base-dir", str(tmp_path / "nope"), "--head-dir", str(tmp_path))
    assert res.exit_code == 2 and "not a folder" in res.output
    res = run(
        repo,
        "HEAD~1",
        "HEAD",
        "--allow-empty",
        "--format",
        "markdown",
        env={"GITHUB_STEP_SUMMARY": str(tmp_path / "no/such/dir/summary.md")},
    )
    assert res.exit_code == 0 and "cannot append to $GITHUB_STEP_SUMMARY" in res.output


def test_subprocess_exit_codes_and_stderr(repo):
    """As a process: exit 2 with one line on stderr, nothing on stdout, no traceback."""
    vramc = Path(os.sys.executable).parent / "vramc"
    p = subprocess.run(
        [str(vramc), "diff", "nope", "--"], cwd=repo, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.startswith("vramc diff: unknown revision 'nope'")


def test_a_folder_link_inside_the_repository_is_followed(repo):
    (repo / "shared").mkdir()
    os.rename(repo / "profiles/hardware", repo / "shared/hw")
    os.symlink("../shared/hw", repo / "profiles/hardware")
    os.symlink("..", repo / "profiles/up")  # a link to a folder above: never walked into
    commit(repo, "hardware in a linked folder")
    res = run(repo, "HEAD~1", "HEAD", "--format", "json")
    assert res.exit_code == 0, res.output
    import json

    d = json.loads(res.stdout)["deployments"][0]
    assert d["verdict"] == {"base": "fits", "head": "fits"} and d["devices"][0]["delta_bytes"] == 0


def test_text_from_profiles_is_escaped(repo):
    """A GPU name (free text in a hardware profile) cannot open HTML, end a table cell, mention
    someone or link an issue in the pull-request comment."""
    hw = repo / "profiles/hardware/gpu16.yaml"
    hw.write_text(
        hw.read_text()
        .replace("name: G\n", "name: '<img src=x onerror=alert(1)>|x @team #1'\n")
        .replace("vram: 16GiB", "vram: 15GiB")
    )
    commit(repo, "gpu renamed")
    res = run(repo, "HEAD~1", "HEAD", "--format", "markdown")
    assert res.exit_code == 0, res.output
    assert "<img" not in res.stdout and "|x" not in res.stdout and "@team" not in res.stdout
    assert " #1" not in res.stdout and "&lt;img src=x onerror=alert(1)&gt;&#124;x &#64;team &#35;1" in res.stdout


def test_no_writable_temporary_folder(repo, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))  # as TMPDIR would set it
    res = run(repo, "HEAD")
    assert res.exit_code == 2 and "cannot create a temporary folder" in res.output and "TMPDIR" in res.output


def test_a_shallow_clone_says_to_fetch_the_history(repo, tmp_path):
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    res = run(shallow, "HEAD~1", "HEAD")
    assert res.exit_code == 2 and "unknown revision 'HEAD~1'" in res.output and "fetch-depth: 0" in res.output
