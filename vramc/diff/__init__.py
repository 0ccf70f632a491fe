"""`vramc diff`: what a change does to every GPU, between two git revisions or two folders.

revisions.py reads each side's profiles (from git's objects, never through a checkout),
compare.py plans both sides as `vramc plan --format json` does and pairs and diffs the
deployments, formats.py shows the result; the command itself (what it prints, its exit code) is vramc.cli.diff.
"""

from __future__ import annotations

import os
from pathlib import Path

from vramc.diff.revisions import DiffError

FORMATS = ("text", "markdown", "json", "github")


def _repo_paths(root: Path, paths: list[str]) -> list[str]:
    """PATHs as the user typed them (relative to the working directory) -> relative to the
    repository's top, refused when they lead outside it."""
    out = []
    real_root = os.path.realpath(root)
    for p in paths:
        if "\0" in p:
            raise DiffError(f"{p!r} is not a path")
        absolute = os.path.normpath(os.path.join(os.getcwd(), p))
        rel = (
            os.path.relpath(absolute, real_root) if absolute.startswith(real_root) else os.path.relpath(absolute, root)
        )
        if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            raise DiffError(f"{p}: outside the repository ({root}); give paths inside it")
        out.append(Path(rel).as_posix())
    return out


def _has_profiles(side, paths: list[str]) -> bool:
    from vramc.load.profiles import PROFILE_SUFFIXES

    for p in paths:
        full = side.root / p
        if full.is_file() and p.endswith(PROFILE_SUFFIXES):
            return True
        if full.is_dir():
            for _, _, files in os.walk(full):
                if any(f.endswith(PROFILE_SUFFIXES) for f in files):
                    return True
    return False


def _side_doc(side) -> dict:
    return {"rev": side.label, "commit": side.commit}


def _sides(args: list[str], base_dir, head_dir, sides: list):
    """(base, head, paths) from the command line; each opened side is appended to `sides` so
    that the caller removes its temporary folder whatever happens."""
    from vramc.diff import revisions

    if base_dir is not None or head_dir is not None:
        if base_dir is None or head_dir is None:
            raise DiffError("--base-dir and --head-dir go together")
        return _folders(base_dir, head_dir, args, sides)
    try:
        root = revisions.repo_root(Path.cwd())
    except DiffError:
        if len(args) == 2 and all(Path(a).is_dir() for a in args):
            return _folders(Path(args[0]), Path(args[1]), [], sides)
        raise
    # click takes `--` itself, so revisions are told from paths as git does: the leading
    # arguments git resolves to commits (at most two), then paths that exist
    revs, rest = [], list(args)
    while rest and len(revs) < 2 and revisions.is_rev(root, rest[0]):
        revs.append(rest.pop(0))
    for a in rest:
        if not os.path.lexists(a):
            if revisions.is_rev(root, a):
                raise DiffError(f"{a!r}: at most two revisions (BASE HEAD), then paths")
            try:
                revisions.resolve_rev(root, a)
            except DiffError as e:
                raise DiffError(f"{e}; no file or folder has that name either") from None
    paths = rest
    for r in revs:
        revisions.resolve_rev(root, r)  # a clear error for a bad revision before --
    rel = _repo_paths(root, paths) if paths else ["profiles"]
    base_rev = revs[0] if revs else revisions.default_base(root)
    base = revisions.revision(root, base_rev)
    sides.append(base)
    if len(revs) == 2:
        head = revisions.revision(root, revs[1])
        sides.append(head)
    else:
        head = revisions.working_tree(root)
    if not revs:
        base.label = "HEAD" if base_rev == "HEAD" else f"merge base ({base_rev[:12]})"
    return base, head, rel


def _folders(base_dir: Path, head_dir: Path, paths: list[str], sides: list):
    from vramc.diff import revisions

    base, head = revisions.folder(base_dir), revisions.folder(head_dir)
    rel = paths or ["profiles"]
    for p in rel:
        if os.path.isabs(p) or ".." in Path(p).parts:
            raise DiffError(f"{p}: give paths relative to the folders")
    if not paths and not (base.root / "profiles").is_dir() and not (head.root / "profiles").is_dir():
        rel = ["."]
    return base, head, rel
