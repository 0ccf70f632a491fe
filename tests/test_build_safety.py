"""`vramc build` never reaches outside its output folder and never deletes what it did not write.

Symbolic links below the output folder (a deployment's folder, a subfolder, a file) make the
build refuse before anything is written; the manifest in each folder says which files vramc
wrote, and only those (unchanged since) are removed; folders no deployment owns are reported;
outputs that cannot be written are a clear message and exit 2; variants' Ollama env files also
get their flat name beside the deployment's folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest

from build_support import FIXTURE, build, copy_fixture, read_tree
from vramc.build.builder import MANIFEST
from vramc.cli.common import EXIT_USAGE

GOLDEN = read_tree(FIXTURE / "out")


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = copy_fixture(tmp_path / "project")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def victim(tmp_path):
    """A folder outside the project with a file nobody may touch."""
    v = tmp_path / "victim"
    v.mkdir()
    (v / "precious.txt").write_text("precious\n")
    return v


def cli(project, *args):
    return subprocess.run(
        [sys.executable, "-m", "vramc", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VRAMC_NO_CACHE": "1"},
    )


def snapshot(folder):
    return {p: (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in sorted(folder.rglob("*"))}


# --- 1. links below the output folder ---------------------------------------------------------


@pytest.mark.parametrize("check_only", [False, True], ids=["build", "check"])
def test_a_deployment_folder_linked_elsewhere_is_refused_and_nothing_written(project, victim, capsys, check_only):
    build(["profiles"])
    shutil.rmtree(project / "out" / "mistral-split")
    (project / "out" / "mistral-split").symlink_to(os.path.relpath(victim, project / "out"))
    before_out, before_victim = snapshot(project / "out"), snapshot(victim)
    assert build(["profiles"], check_only=check_only) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "refused: out/mistral-split is a symbolic link" in err and "remove the link" in err
    assert "removed" not in err
    assert snapshot(victim) == before_victim  # precious.txt kept, nothing written there
    assert snapshot(project / "out") == before_out  # nor anywhere else


def test_the_reported_attack_through_the_cli(project, victim):
    """`ln -s ../../victim out/NAME; vramc build` used to write there and print `removed
    .../precious.txt`."""
    (project / "out").mkdir()
    (project / "out" / "mistral-split").symlink_to("../../victim")
    proc = cli(project, "build")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "precious" not in proc.stdout + proc.stderr
    assert "out/mistral-split is a symbolic link (to ../../victim)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert [p.name for p in (project / "out").iterdir()] == ["mistral-split"]


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_a_usage_error_not_the_project_top(project, out):
    """`vramc build --out "$OUT"` with OUT unset was Path("") = ".": every deployment's folder
    written into the project's top, beside (or into) profiles/."""
    before = snapshot(project)
    proc = cli(project, "build", "--out", out)
    assert proc.returncode == EXIT_USAGE and "--out is empty" in proc.stderr, proc.stderr
    assert snapshot(project) == before


@pytest.mark.parametrize(
    "out,args",
    [(".", []), ("./", []), ("..", []), ("profiles", []), ("profiles/gen", []), (".", ["profiles/ollama.yaml"])],
)
def test_an_out_that_holds_or_lies_among_the_profiles_is_a_usage_error(project, out, args):
    """`--out .` wrote every deployment's folder into the project's top and then reported
    `stray: profiles/ (no .vramc-manifest ...): remove it`; `--out profiles` put vllm.yaml where
    `vramc check profiles/` read it as a broken profile (VR004)."""
    before = snapshot(project)
    proc = cli(project, "build", "--out", out, *args)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert f"--out {out} holds or lies in " in proc.stderr and "nothing was written" in proc.stderr
    assert "stray: " not in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(project) == before
    assert cli(project, "build", "--out", "elsewhere/out").returncode == 0  # beside them is fine


def test_a_linked_subfolder_is_refused(project, victim, capsys):
    build(["profiles"])
    dropin = project / "out" / "mistral-ollama" / "ollama.service.d"
    shutil.rmtree(dropin)
    dropin.symlink_to(victim)
    assert build(["profiles"]) == EXIT_USAGE
    assert "refused: out/mistral-ollama/ollama.service.d is a symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


def test_a_linked_file_with_the_right_content_is_not_up_to_date(project, tmp_path, capsys):
    build(["profiles"])
    vllm_yaml = project / "out" / "qwen-chat" / "vllm.yaml"
    elsewhere = tmp_path / "vllm.yaml"
    shutil.copy(vllm_yaml, elsewhere)
    vllm_yaml.unlink()
    vllm_yaml.symlink_to(elsewhere)
    capsys.readouterr()
    assert build(["profiles"], check_only=True) != 0
    assert "out/qwen-chat/vllm.yaml is a symbolic link" in capsys.readouterr().err
    assert build(["profiles"]) == EXIT_USAGE
    assert vllm_yaml.is_symlink() and elsewhere.read_bytes() == GOLDEN["qwen-chat/vllm.yaml"]


def test_a_fifo_where_a_file_goes_is_refused_without_hanging(project, capsys):
    build(["profiles"])
    target = project / "out" / "qwen-chat" / "vllm.args"
    target.unlink()
    os.mkfifo(target)
    result = {}
    worker = threading.Thread(target=lambda: result.update(rc=build(["profiles"], check_only=True)))
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "build --check hung on a FIFO"
    assert result["rc"] == EXIT_USAGE
    assert "out/qwen-chat/vllm.args is not a regular file" in capsys.readouterr().err


def test_the_tree_never_follows_a_link_swapped_in_after_the_check(tmp_path, victim):
    """The preflight sees folders; if one is replaced by a link before the write, the write
    fails (O_NOFOLLOW) instead of landing outside."""
    from vramc.build.outtree import OutTree

    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    tree = OutTree(out)
    assert tree.problem(("d", "f"), writing=True) is None
    (out / "d").rmdir()
    (out / "d").symlink_to(victim)
    with pytest.raises(OSError):
        tree.write(("d", "f"), b"x\n", 0o644)
    with pytest.raises(OSError):
        tree.remove(("d", "precious.txt"))
    with pytest.raises(OSError):
        tree.read(("d", "precious.txt"))
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    (out / "link").symlink_to(victim / "precious.txt")
    tree.remove(("link",))  # the link itself goes, never its target
    assert (victim / "precious.txt").read_text() == "precious\n"


# --- 1. the manifest ---------------------------------------------------------------------------


def test_every_folder_has_a_manifest_that_sha256sum_accepts(project):
    build(["profiles"])
    manifests = sorted((project / "out").rglob(MANIFEST))
    assert len(manifests) == 10  # 7 deployments, 3 variants
    listed = set()
    for m in manifests:
        text = m.read_text()
        assert text.startswith("# Generated by vramc from profiles/")
        entries = [line.split("  ", 1)[1] for line in text.splitlines() if not line.startswith("#")]
        listed |= {os.path.normpath(m.parent / e) for e in entries}
    on_disk = {str(p) for p in (project / "out").rglob("*") if p.is_file() and p.name != MANIFEST}
    assert on_disk == listed
    for m in manifests:
        if shutil.which("sha256sum"):
            proc = subprocess.run(
                ["sha256sum", "--strict", "-c", MANIFEST], cwd=m.parent, capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_tree_without_manifests_is_adopted(project, capsys):
    """The first build after an upgrade: out/ as an older vramc wrote it (no manifests). Files
    that are what vramc generates are kept as they are and recorded; others are left alone."""
    shutil.copytree(FIXTURE / "out", project / "out")
    for m in (project / "out").rglob(MANIFEST):
        m.unlink()
    (project / "out" / "mistral-split" / "mine.txt").write_text("mine\n")
    assert build(["profiles"], check_only=True) == 1
    assert "missing: out/mistral-split/.vramc-manifest" in capsys.readouterr().err
    assert build(["profiles"]) == 0
    captured = capsys.readouterr()
    statuses = dict(line.split(None, 1)[::-1] for line in captured.out.splitlines())
    assert statuses["out/mistral-split/launch.sh"] == "unchanged"
    assert statuses["out/mistral-split/.vramc-manifest"] == "created"
    assert "left alone: out/mistral-split/mine.txt (vramc build did not write it)" in captured.err
    assert (project / "out" / "mistral-split" / "mine.txt").read_text() == "mine\n"
    built = read_tree(project / "out")
    del built["mistral-split/mine.txt"]
    assert built == GOLDEN


@pytest.mark.parametrize("with_manifest", [False, True], ids=["no-manifest", "manifest"])
def test_a_file_vramc_did_not_write_is_never_overwritten(project, capsys, with_manifest):
    """A user's own launch.sh where vramc would write one (no manifest lists it, no vramc header)
    makes the build refuse with exit 2, and nothing in out/ changes."""
    build(["profiles"])
    folder = project / "out" / "mistral-split"
    if not with_manifest:
        for m in (project / "out").rglob(MANIFEST):
            m.unlink()
    else:  # a manifest that does not list it: written by an older build, before the file was
        m = folder / MANIFEST
        m.write_text(
            "".join(line for line in m.read_text().splitlines(True) if not line.rstrip().endswith("  launch.sh"))
        )
    (folder / "launch.sh").write_text("#!/bin/sh\n# my own launcher\nexec my-server\n")
    before = snapshot(project / "out")
    assert build(["profiles"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "out/mistral-split/launch.sh exists and vramc did not write it" in err
    assert "nothing was written" in err
    assert snapshot(project / "out") == before


def test_an_edited_file_vramc_wrote_is_regenerated(project, capsys):
    """A generated file edited by hand is vramc's (its manifest lists it): rebuilt, reported."""
    build(["profiles"])
    f = project / "out" / "mistral-split" / "launch.sh"
    f.write_text(f.read_text().replace("Generated by vramc from ", "Edited: "))
    assert build(["profiles"]) == 0
    assert "changed    out/mistral-split/launch.sh" in capsys.readouterr().out
    assert read_tree(project / "out") == GOLDEN


def test_a_planted_manifest_cannot_make_it_delete_elsewhere(project, capsys):
    """Entries that leave the folder (`../x`, `../../x`, absolute) are ignored, even with the
    right hash: a manifest only speaks for its own folder (and, for a variant, its flat copies)."""
    import hashlib

    build(["profiles"])
    capsys.readouterr()
    other = project / "out" / "qwen-batch" / "launch.sh"
    outside = project / "profiles" / "llama-server.yaml"
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (other, outside)}
    manifest = project / "out" / "mistral-split" / "@stable" / MANIFEST
    manifest.write_text(
        manifest.read_text()
        + "".join(
            f"{digest[p]}  {rel}\n"
            for p, rel in [
                (other, "../../qwen-batch/launch.sh"),
                (outside, "../../../profiles/llama-server.yaml"),
                (outside, str(outside)),
            ]
        )
    )
    top = project / "out" / "mistral-split" / MANIFEST
    top.write_text(top.read_text() + f"{digest[other]}  ../qwen-batch/launch.sh\n")
    assert build(["profiles"]) == 0
    assert "removed" not in capsys.readouterr().out
    assert other.is_file() and outside.is_file()


# --- 2. --check: strays ------------------------------------------------------------------------


def test_check_reports_folders_no_deployment_owns(project, tmp_path, capsys):
    build(["profiles"])
    out = project / "out"
    (out / "hand-made").mkdir()
    (out / "hand-made" / "x.conf").write_text("x\n")
    (out / "linked").symlink_to(tmp_path)
    (out / "README.txt").write_text("plain files at the top are not output folders\n")
    shutil.copytree(out / "qwen-batch", out / "renamed")  # a deployment renamed since
    shutil.copy(project / "profiles" / "llama-cpp-python.yaml", project / "profiles" / "gone.yaml")
    shutil.copytree(out / "mistral-python", out / "from-a-deleted-profile")
    manifest = out / "from-a-deleted-profile" / MANIFEST
    manifest.write_text(manifest.read_text().replace("profiles/llama-cpp-python.yaml", "profiles/deleted.yaml"))
    (project / "profiles" / "gone.yaml").unlink()
    capsys.readouterr()
    assert build(["profiles"], check_only=True) == 1
    err = capsys.readouterr().err
    assert "stray: out/hand-made/ (no .vramc-manifest: vramc build did not write it)" in err
    assert "stray: out/linked (a symbolic link, which vramc never follows)" in err
    assert "stray: out/renamed/ (profiles/vllm-shared.yaml no longer defines deployment renamed)" in err
    assert "stray: out/from-a-deleted-profile/ (its profile profiles/deleted.yaml no longer exists)" in err
    assert "README" not in err
    # a build reports them too, and touches none of them
    before = snapshot(out / "renamed")
    assert build(["profiles"]) == 0
    assert "stray: out/renamed/" in capsys.readouterr().err
    assert snapshot(out / "renamed") == before and (out / "hand-made" / "x.conf").is_file()


def test_building_one_profile_leaves_the_others_folders_alone(project, capsys):
    build(["profiles"])
    capsys.readouterr()
    assert build(["profiles/ollama.yaml"], check_only=True) == 0, capsys.readouterr()
    assert build(["profiles/ollama.yaml"]) == 0
    assert "stray" not in capsys.readouterr().err
    assert read_tree(project / "out") == GOLDEN


# --- 3. outputs that cannot be written ---------------------------------------------------------


@pytest.mark.parametrize("out", ["afile", "afile/sub"])
def test_out_at_or_under_a_file_is_a_usage_error(project, out):
    (project / "afile").write_text("keep\n")
    for args in (["build", "--out", out], ["build", "--check", "--out", out]):
        proc = cli(project, *args)
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr
    assert (project / "afile").read_text() == "keep\n"


def test_check_output_under_a_file_is_a_usage_error(project):
    (project / "afile").write_text("keep\n")
    proc = cli(project, "check", "-o", "afile/report.txt", "profiles")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "afile/report.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert (project / "afile").read_text() == "keep\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_a_usage_error(project):
    (project / "ro").mkdir()
    (project / "ro").chmod(0o555)
    try:
        proc = cli(project, "build", "--out", "ro/out")
    finally:
        (project / "ro").chmod(0o755)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project / "ro" / "out").exists()


# --- 5. flat names of variant env files ----------------------------------------------------------


def test_variant_ollama_env_also_has_its_flat_name(project, capsys):
    build(["profiles"])
    out = project / "out" / "mistral-ollama"
    flat = out / "ollama.env.one-slot"
    assert flat.read_bytes() == (out / "@one-slot" / "ollama.env").read_bytes()
    assert flat.read_bytes() != (out / "ollama.env").read_bytes()
    assert "ollama.env.one-slot" in (out / "@one-slot" / MANIFEST).read_text()
    assert not (project / "out" / "mistral-split" / "app.env.stable").exists()  # env files only
    flat.write_text(flat.read_text().replace("OLLAMA_NUM_PARALLEL=1", "OLLAMA_NUM_PARALLEL=3"))
    capsys.readouterr()
    assert build(["profiles"], check_only=True) == 1
    assert "+OLLAMA_NUM_PARALLEL=1" in capsys.readouterr().out
    build(["profiles"])
    assert flat.read_bytes() == (out / "@one-slot" / "ollama.env").read_bytes()
