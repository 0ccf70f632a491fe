"""Where the two sides of a diff come from: a git revision, the working tree, or a folder.

A revision's profiles are read from git's objects (`git ls-tree`, then `git cat-file --batch`,
the plumbing behind `git show`) and written into a private temporary folder, laid out as in the
repository; nothing in the user's working tree, index or refs is read through a checkout or
changed. Every git command runs with GIT_OPTIONAL_LOCKS=0 (a read must not refresh the index).

GGUF files are not in git (models/ is ignored): a profile's relative model path is resolved
against the working tree for both sides, by a link from the temporary folder to the working
tree's file; a model lock (`lock:` in the model profile) is read from each revision as written.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_SUFFIXES = (".yaml", ".yml")
BLOB_LIMIT = 4 * 1024 * 1024  # a profile larger than this is not a profile (the check cache's bound)
LINK_DEPTH = 8


class DiffError(Exception):
    """A usage problem: bad revision, not a repository, a path outside it, a hostile blob."""


def _git(root: Path | None, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):  # the repository is the one at `root`
        env.pop(k, None)
    try:
        return subprocess.run(["git", *args], cwd=root, input=input, capture_output=True, env=env, timeout=120)
    except FileNotFoundError:
        raise DiffError(
            "git is not installed (or not on PATH); use --base-dir/--head-dir to compare two folders"
        ) from None
    except subprocess.TimeoutExpired:
        raise DiffError(f"git {args[0]} took over 120 s") from None


def _err(p: subprocess.CompletedProcess) -> str:
    text = p.stderr.decode(errors="replace").strip().splitlines()
    return text[-1] if text else f"exit {p.returncode}"


def repo_root(cwd: Path) -> Path:
    p = _git(cwd, "rev-parse", "--show-toplevel")
    if p.returncode != 0:
        raise DiffError(
            f"{cwd} is not in a git repository ({_err(p)}); compare two folders with --base-dir DIR --head-dir DIR"
        )
    return Path(p.stdout.decode().strip())


def resolve_rev(root: Path, rev: str) -> str:
    """The commit `rev` names, or DiffError with git's words."""
    if not rev or rev.startswith("-") or "\0" in rev or any(c in rev for c in "\n\r"):
        raise DiffError(f"{rev!r} is not a revision")
    p = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if p.returncode != 0:
        shallow = _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
        raise DiffError(
            f"unknown revision {rev!r}: git cannot resolve it to a commit "
            "(a branch, tag, commit or expression such as HEAD~1)"
            + (
                "; this clone is shallow: fetch the history (git fetch --unshallow, or "
                "fetch-depth: 0 in actions/checkout)"
                if shallow
                else ""
            )
        )
    return p.stdout.decode().strip()


def is_rev(root: Path, rev: str) -> bool:
    try:
        resolve_rev(root, rev)
        return True
    except DiffError:
        return False


def default_base(root: Path) -> str:
    """The merge base with the upstream branch, else HEAD."""
    up = _git(root, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
    if up.returncode == 0 and up.stdout.strip():
        mb = _git(root, "merge-base", "HEAD", "@{upstream}")
        if mb.returncode == 0 and mb.stdout.strip():
            return mb.stdout.decode().strip()
    return "HEAD"


@dataclass
class Side:
    label: str  # what the user named: a revision, "working tree", a folder
    commit: str | None  # the commit, for a revision
    root: Path  # the project folder its profiles lie in (a private copy for a revision)
    worktree: Path | None = None  # where GGUF files are looked for (a revision's)
    tmp: str | None = None  # our temporary folder, removed by close()
    digests: dict = field(default_factory=dict)  # resolved path -> sha256 of its content

    def digest(self, path: Path) -> str | None:
        """The content hash of a profile file, to tell whether a deployment's inputs changed."""
        key = str(path)
        if key not in self.digests:
            try:
                with open(path, "rb") as f:
                    self.digests[key] = hashlib.sha256(f.read(BLOB_LIMIT + 1)).hexdigest()
            except OSError:
                self.digests[key] = None
        return self.digests[key]

    def close(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def working_tree(root: Path) -> Side:
    return Side("working tree", None, root, worktree=root)


def folder(path: Path) -> Side:
    if not path.is_dir():
        raise DiffError(f"{path}: not a folder")
    return Side(str(path), None, path.resolve(), worktree=path.resolve())


def _wanted(path: str) -> bool:
    return path.endswith(PROFILE_SUFFIXES) or "templates" in path.split("/")[:-1]


def revision(root: Path, rev: str) -> Side:
    """The profiles (and templates) of `rev`, written into a private temporary folder."""
    commit = resolve_rev(root, rev)
    ls = _git(root, "ls-tree", "-r", "-t", "-z", "-l", "--full-tree", commit)
    if ls.returncode != 0:
        raise DiffError(f"cannot list {rev!r}: {_err(ls)}")
    blobs: dict[str, tuple[str, str, int]] = {}  # path -> (mode, sha, size)
    trees: set[str] = set()
    for entry in ls.stdout.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, sha, size = meta.decode().split()
        path = name.decode("utf-8", "surrogateescape")
        if kind == "tree":
            trees.add(path)
        elif kind == "blob":
            blobs[path] = (mode, sha, int(size) if size.isdigit() else 0)
    chosen = {p: b for p, b in blobs.items() if _wanted(p) or b[0] == "120000"}
    for p, (mode, _, size) in chosen.items():
        if mode != "120000" and size > BLOB_LIMIT:
            raise DiffError(
                f"{rev}:{p} is {size:,} bytes, over the {BLOB_LIMIT // 1048576} MiB a "
                "profile may have; it is not a profile (rename it, or move it out of the "
                "profiles)"
            )
    contents = _cat(root, [b[1] for b in chosen.values()])
    try:
        tmp = tempfile.mkdtemp(prefix="vramc-diff-")
    except OSError as e:
        raise DiffError(
            f"cannot create a temporary folder for {rev} in {tempfile.gettempdir()}: "
            f"{e.strerror or e}; point TMPDIR at a writable folder"
        ) from None
    side = Side(rev, commit, Path(tmp), worktree=root, tmp=tmp)
    try:
        for p, (mode, sha, _) in sorted(chosen.items()):
            if mode == "160000":  # a submodule: nothing of it is in this repository
                continue
            if mode == "120000":
                _place_link(side, rev, p, blobs, trees, contents)
                continue
            if not _wanted(p):
                continue
            data = contents[sha]
            if p.endswith(PROFILE_SUFFIXES) and b"\0" in data:
                raise DiffError(
                    f"{rev}:{p} is binary (it holds NUL bytes), not a YAML profile; "
                    "remove it from the profiles or give it another name"
                )
            _write(side.root, p, data)
    except OSError as e:  # a full disk or a quota: nothing of the user's was touched
        side.close()
        raise DiffError(f"cannot write {rev}'s profiles into {tmp}: {e.strerror or e}") from None
    except BaseException:
        side.close()
        raise
    return side


def _cat(root: Path, shas: list[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    unique = list(dict.fromkeys(shas))
    p = _git(root, "cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
    if p.returncode != 0:
        raise DiffError(f"git cat-file failed: {_err(p)}")
    out, buf, pos = {}, p.stdout, 0
    for sha in unique:
        nl = buf.index(b"\n", pos)
        header = buf[pos:nl].decode().split()
        if len(header) < 3 or header[1] == "missing":
            raise DiffError(f"object {sha} is missing from the repository (a shallow or partial clone?)")
        size = int(header[2])
        out[sha] = buf[nl + 1 : nl + 1 + size]
        pos = nl + 1 + size + 1
    return out


def _safe_rel(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "" not in parts


def _write(base: Path, rel: str, data: bytes) -> None:
    if not _safe_rel(rel):  # git refuses such names in a tree; a crafted object is refused here
        raise DiffError(f"refusing the path {rel!r} from git: not a plain relative path")
    dest = base.joinpath(*rel.split("/"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as f:
        f.write(data)


def _place_link(side: Side, rev: str, path: str, blobs: dict, trees: set, contents: dict) -> None:
    """A symbolic link committed to git: followed inside the revision's own tree only.

    A link to a profile (or through links to one) becomes a copy of that profile; a link to a
    folder of the revision becomes a link inside the temporary copy. A link that leads out of the
    repository (an absolute path, or `..` past its root), in a loop, or nowhere is refused when it
    has a profile's name, and skipped otherwise (it cannot be a profile)."""
    seen, cur = [], path
    for _ in range(LINK_DEPTH):
        mode, sha, _ = blobs[cur]
        target = contents.get(sha)
        if target is None:  # a link we did not read (no profile name, pointing at a blob)
            target = _cat(side.worktree, [sha])[sha]
        t = target.decode("utf-8", "surrogateescape")
        if t.startswith("/"):
            return _bad_link(rev, path, f"it points to the absolute path {t!r}, outside the repository")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(cur), t))
        if joined == ".." or joined.startswith("../"):
            return _bad_link(rev, path, f"it points to {t!r}, outside the repository")
        seen.append(cur)
        if joined in trees:
            if path.endswith(PROFILE_SUFFIXES):
                return _bad_link(rev, path, f"it points to the folder {joined!r}")
            dest = side.root.joinpath(*path.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(side.root.joinpath(*joined.split("/")), dest.parent), dest)
            return None
        if joined not in blobs:
            return _bad_link(rev, path, f"it points to {t!r}, which {rev} does not have")
        if blobs[joined][0] != "120000":
            if not path.endswith(PROFILE_SUFFIXES):
                return None
            data = contents.get(blobs[joined][1])
            if data is None:
                if blobs[joined][2] > BLOB_LIMIT:
                    raise DiffError(f"{rev}:{path} links to {joined}, over {BLOB_LIMIT // 1048576} MiB: not a profile")
                data = _cat(side.worktree, [blobs[joined][1]])[blobs[joined][1]]
            if b"\0" in data:
                raise DiffError(f"{rev}:{path} links to {joined}, which is binary: not a YAML profile")
            _write(side.root, path, data)
            return None
        if joined in seen:
            break
        cur = joined
    return _bad_link(rev, path, "its links go round in a loop (or nest deeper than 8)")


def _bad_link(rev: str, path: str, why: str) -> None:
    if path.endswith(PROFILE_SUFFIXES):
        raise DiffError(
            f"{rev}:{path} is a symbolic link that vramc diff does not follow: {why}; "
            "commit the profile itself, or a link to a file inside the repository"
        )
    return None


def link_models(side: Side, gguf: Path) -> None:
    """Make a revision's relative model path lead to the working tree's file, by a link placed in
    the temporary copy (the GGUF file is not in git; its lock is)."""
    if side.tmp is None or side.worktree is None:
        return
    try:
        rel = Path(os.path.relpath(gguf, side.root))
    except ValueError:
        return
    if rel.parts[:1] == ("..",) or rel.is_absolute():
        return  # an absolute model path: the same file for both sides already
    cur = side.root
    for part in rel.parts:
        nxt = cur / part
        if not os.path.lexists(nxt):
            src = side.worktree / nxt.relative_to(side.root)
            if os.path.lexists(src):
                try:
                    os.symlink(src, nxt)
                except OSError:  # the model is then missing on this side, and the plan says so
                    return
                if nxt == side.root.joinpath(*rel.parts):  # a split model's other parts sit beside it
                    _link_parts(side, nxt)
            return
        if not nxt.is_dir():
            return
        cur = nxt


def _link_parts(side: Side, first: Path) -> None:
    import re

    m = re.match(r"^(.*)-\d{5}-of-(\d{5})\.gguf$", first.name)
    if not m:
        return
    for i in range(1, int(m.group(2)) + 1):
        part = first.parent / f"{m.group(1)}-{i:05d}-of-{m.group(2)}.gguf"
        src = side.worktree / part.relative_to(side.root)
        if not os.path.lexists(part) and os.path.lexists(src):
            os.symlink(src, part)
