"""The pipeline behind `check`, `plan`, `build` and `run`: load -> validate -> plan -> lint."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vramc.diagnostics import Diagnostic


@dataclass
class CheckResult:
    diagnostics: list[Diagnostic]
    plans: list = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    by_file: dict = field(default_factory=dict)  # checked file (resolved) -> its diagnostics
    depends: dict = field(default_factory=dict)  # checked file (resolved) -> files its result read


def cached_check(paths: list[Path], margin=None) -> CheckResult:
    """`run_check` for `vramc check`: files whose inputs did not change answer from the check
    cache, and only the others are loaded and planned (pre-commit mostly sees one edited file)."""
    from vramc.lint import check_cache
    from vramc.lint import runner as lint
    from vramc.load import profiles

    found, problems = profiles.discover(paths)
    files = [str(f.resolve()) for f in found]
    cached = {f: check_cache.load(f, margin) for f in files}
    misses = [f for f in files if cached[f] is None]
    diags = list(problems)
    if misses:
        fresh = run_check([Path(f) for f in misses], margin)
        for f in misses:
            check_cache.store(f, margin, fresh.depends.get(f, {f}), fresh.by_file.get(f, []))
            cached[f] = fresh.by_file.get(f, [])
    for f in files:
        diags.extend(cached[f])
    # a FIFO or a device given or found, and a file given that is not there (a typo, a dangling
    # link), is a file checked too ("1 error in 0 files" read as nothing)
    given = {profiles.display_path(p) for p in paths}
    others = [
        d.file
        for d in problems
        if d.code == "VR000"
        and (
            d.message == profiles.NOT_REGULAR
            or (d.file in given and (d.message == profiles.NO_SUCH or d.message.startswith("a symbolic link to ")))
        )
    ]
    checked = [profiles.display_path(f) for f in found]
    return CheckResult(lint.dedupe(diags), [], checked + [f for f in dict.fromkeys(others) if f not in checked])


def run_check(paths: list[Path], margin=None, deployments=None, adjust=None, texts=None) -> CheckResult:
    """Load and plan every deployment under `paths` (or only `deployments`, if given) and lint.

    `margin` (a schema.Margin) replaces the default margin where a profile sets none. `adjust`,
    if given, is called with each deployment before planning (`vramc fit --relax` turns fixed
    settings into `auto`); `texts` (path -> text) stands in for files (an edit checked before
    it is written).
    """
    from vramc.lint import runner as lint
    from vramc.load import profiles
    from vramc.plan.planner import plan_all

    loaded = profiles.load_paths(paths, texts)
    deps = loaded.deployments if deployments is None else _with_colocated(deployments, loaded.deployments)
    if margin is not None:
        for d in deps:
            if d.lint.margin is None and not _variant_margin(d):
                d.margin = margin
    if adjust is not None:
        for d in deps:
            adjust(d)
    plans = plan_all(deps)
    lint_by_file = {d.file: getattr(d.obj, "lint", None) for d in loaded.docs}
    load_diags = lint.apply_config_to_load(loaded.diagnostics, lint_by_file)
    by_file = _by_file(loaded, load_diags, plans)
    diags = [d for ds in by_file.values() for d in ds]
    depends = {f: _with_probes({f} | loaded.refs.get(f, set())) for f in by_file}
    if deployments is not None:  # the ones asked for; those they run with were planned with them
        asked = {_ident(d) for d in deployments}
        plans = [p for p in plans if _ident(p.dep) in asked]
    return CheckResult(lint.dedupe(diags), plans, loaded.files, by_file, depends)


def _with_probes(paths: set[str]) -> set[str]:
    """`paths` and, for each profile among them, the folders whose presence decides where its
    names and relative model paths resolve (profiles.profiles_root): a hardware/ or models/
    folder created beside a profile shadows the one above it, and a cached answer must notice."""
    out = set(paths)
    for p in paths:
        if p.endswith((".yaml", ".yml")):
            d = os.path.dirname(os.path.realpath(p))
            for folder in (d, os.path.dirname(d)):
                out.update(os.path.join(folder, sub) for sub in ("hardware", "models"))
    return out


def _ident(dep) -> tuple:
    return (dep.group, dep.name, dep.variant)


def _with_colocated(deployments, loaded) -> list:
    """`deployments` and every deployment that runs on the same machine with one of them (its
    `deployments:` file): their `auto` settings are fitted together, so none is planned alone."""
    out = list(deployments)
    asked = {_ident(d) for d in out}
    groups = {d.group for d in out}
    out += [d for d in loaded if d.group in groups and _ident(d) not in asked]
    return out


def _by_file(loaded, load_diags, plans) -> dict[str, list[Diagnostic]]:
    """Each diagnostic under the file whose checking produced it: a deployment's findings under
    the file that defines it (even those that point into the model profile it uses); a file's
    load problems under that file and under every file that refers to it (so a file's cached
    result does not depend on what was checked with it; lint.dedupe drops the repeats)."""
    from vramc.lint import runner as lint
    from vramc.load import profiles

    checked = {str(Path(f).resolve()) for f in loaded.files}
    out: dict[str, list[Diagnostic]] = {f: [] for f in checked}
    for d in load_diags:
        f = str(profiles.safe_resolve(Path(d.file)))  # a symlink loop's VR000 names the loop
        owners = ([f] if f in checked else []) + [o for o, refs in loaded.refs.items() if f in refs]
        # a path that could not be read at all is its own owner
        owners = owners or list(checked) or [f]
        for o in owners:
            out.setdefault(o, []).append(d)
    per_file: dict[str, list] = {}
    for p in plans:
        per_file.setdefault(str(p.dep.doc.path.resolve()), []).append(p)
    for f, ps in per_file.items():
        out.setdefault(f, []).extend(lint.run_plan_rules(ps))
    return out


def _variant_margin(dep) -> bool:
    if not dep.variant:
        return False
    v = dep.doc.obj.variants.get(dep.variant)
    return v is not None and v.margin is not None
