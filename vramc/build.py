"""`vramc build`: compile every checked deployment into its launch artifacts, or (--check) say
whether out/ is up to date.

Layout: a deployment's files go to `OUT/NAME/` and each of its variants gets a complete set in
`OUT/NAME/@VARIANT/` (a variant replaces its deployment on the machine, so its files keep the same
names: `vramc-NAME.service`, `ollama.service.d/override.conf`, `Modelfile`, ...). Which files a
deployment gets depends on its engine (vramc.targets.ENGINE_TARGETS), plus every target folder the
project adds to its templates/ (vramc.render).

vramc owns OUT/NAME/ of each deployment it builds: a file there that it no longer generates is
stale (removed by a build, reported by --check). Folders of deployments that are not being built
are never touched. Output is byte-identical across runs and machines: paths in files are
relative to the project root, nothing records a time or the build machine.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vramc.diagnostics import Severity

EXIT_OK, EXIT_FAILED = 0, 1
VARIANT_PREFIX = "@"


@dataclass
class Job:
    """One deployment (or variant) to build: where its files go and what they are."""

    plan: object
    folder: Path  # OUT/NAME or OUT/NAME/@VARIANT
    files: dict[str, tuple[bytes, bool]] = field(default_factory=dict)  # path: (bytes, executable)
    warnings: list[str] = field(default_factory=list)


def cli_build(paths: list[Path], *, out: Path, check_only: bool, force: bool) -> int:
    from vramc.check import run_check
    from vramc.lint import run_plan_rules
    from vramc.targets.common import assign_ports

    result = run_check(paths)
    # per deployment, before run_check's dedupe folds a variant's findings into its base's
    findings = run_plan_rules(result.plans)
    errors = [d for d in result.diagnostics if d.severity == Severity.ERROR]
    for d in errors:
        _say(f"{d.file}:{d.line}:{d.column}: {d.code} error: {d.full_message()}")
    # errors of files that did not load at all: their deployments are not even known
    labels = {p.dep.label for p in result.plans}
    of_plans = {d for p in result.plans for d in p.diagnostics}
    unloaded = sorted({d.file for d in errors if d.deployment not in labels and d not in of_plans})
    for file in unloaded:
        _say(f"not built: {file} does not load (see the errors above)")
    ports = assign_ports(result.plans)
    jobs: list[Job] = []
    plans, failed = _unique_folders(result.plans, out)
    failed |= bool(unloaded)
    for plan in plans:
        blocking = _blocking(plan, findings)
        if blocking and not force:
            failed = True
            _say(f"not built: {plan.dep.label} fails check ({_codes(blocking)}); fix it, or build "
                 "anyway with --force")
            continue
        if blocking:
            _say(f"--force: BUILDING {plan.dep.label} ALTHOUGH CHECK FAILS ({_codes(blocking)}); "
                 "these artifacts may not start or may not fit")
        job = Job(plan, _folder(out, plan))
        try:
            _render(job, ports, out)
        except ValueError as e:  # TargetError, UnsafeValue: something about the profile
            failed = True
            _say(f"not built: {plan.dep.label}: {e}")
            continue
        for w in job.warnings:
            _say(f"warning: {plan.dep.label}: {w}")
        jobs.append(job)
    stale = _stale_files(jobs, result.plans)
    if check_only:
        failed |= _compare(jobs, stale)
    else:
        _write(jobs, stale)
    return EXIT_FAILED if failed else EXIT_OK


def _say(text: str) -> None:
    sys.stderr.write(f"vramc build: {text}\n")


def _codes(diags) -> str:
    return ", ".join(sorted({d.code for d in diags}))


def _blocking(plan, findings) -> list:
    own = set(plan.diagnostics)  # the model's load errors, which name no deployment
    return [d for d in findings if d.severity == Severity.ERROR
            and (d.deployment == plan.dep.label or d in own)]


def _folder(out: Path, plan) -> Path:
    dep = plan.dep
    folder = Path(out) / dep.name
    return folder / f"{VARIANT_PREFIX}{dep.variant}" if dep.variant else folder


def _unique_folders(plans, out: Path) -> tuple[list, bool]:
    """Plans whose folder is theirs alone, and whether any were dropped: two files defining a
    deployment NAME would both write OUT/NAME, so neither is built."""
    owners: dict[str, set[str]] = {}
    for p in plans:
        owners.setdefault(p.dep.name, set()).add(p.dep.doc.file)
    ok = []
    for p in plans:
        files = owners[p.dep.name]
        if len(files) == 1:
            ok.append(p)
        elif p.dep.variant is None:
            _say(f"not built: {Path(out) / p.dep.name} would hold deployment {p.dep.name!r} of "
                 f"{' and '.join(sorted(files))}; rename one")
    return ok, len(ok) < len(plans)


def _render(job: Job, ports: dict, out: Path) -> None:
    import shlex

    from vramc.render import project_target_folders, project_templates_dir, render_target
    from vramc.targets import ENGINE_TARGETS, TARGETS
    from vramc.targets.common import Context, TargetError, port_of, relative

    plan = job.plan
    if plan.estimate is None:
        raise TargetError("it has no memory plan (see the diagnostics above)")
    root = plan.dep.project_root
    profile = relative(plan.dep.doc.path, root)
    out_rel = relative(Path(out), root)
    command = f"vramc build {shlex.quote(profile)}"
    if out_rel != "out":
        command += f" --out {shlex.quote(out_rel)}"
    ctx = Context(plan=plan, port=port_of(plan, ports), profile=profile, command=command,
                  root=relative(root, job.folder), folder=relative(job.folder, root),
                  warnings=job.warnings)
    project_dir = project_templates_dir(root)
    builtin = {m.FOLDER for m in TARGETS.values()}
    targets = [(TARGETS[n].FOLDER, TARGETS[n].outputs(plan), TARGETS[n].data(plan, ctx))
               for n in ENGINE_TARGETS[plan.engine]]
    targets += [(f, {}, {}) for f in project_target_folders(project_dir) if f not in builtin]
    for folder, outputs, data in targets:
        for r in render_target(folder, outputs, {**ctx.variables(), "t": data}, project_dir):
            if r.path in job.files:
                raise TargetError(f"two templates write {r.path}")
            job.files[r.path] = (r.text.encode(), r.executable)
    job.warnings[:] = list(dict.fromkeys(job.warnings))  # several targets share the environment


def _stale_files(jobs: list[Job], plans) -> list[tuple[Path, Path]]:
    """(file, its job's folder) for the files in built deployments' folders that no job generates.

    A deployment's folder holds its variants' folders too: those of variants still in the profile
    belong to their own jobs (or are left alone when not built); those of variants it no longer
    has are stale."""
    expected = {job.folder / p for job in jobs for p in job.files}
    variants: dict[str, set[str]] = {}
    for p in plans:
        if p.dep.variant is not None:
            variants.setdefault(p.dep.name, set()).add(VARIANT_PREFIX + p.dep.variant)
    stale = []
    for job in jobs:
        if not job.folder.is_dir():
            continue
        for f in sorted(job.folder.rglob("*")):
            if f.is_dir() or f in expected:
                continue
            first = f.relative_to(job.folder).parts[0]
            if job.plan.dep.variant is None and first in variants.get(job.plan.dep.name, ()):
                continue
            stale.append((f, job.folder))
    return stale


def _compare(jobs: list[Job], stale: list[tuple[Path, Path]]) -> bool:
    differs = False
    for job in jobs:
        for rel, (data, executable) in sorted(job.files.items()):
            path = job.folder / rel
            old = path.read_bytes() if path.is_file() else None
            if old == data and _is_executable(path) == executable:
                continue
            differs = True
            if old is None:
                _say(f"missing: {path}")
            elif old == data:
                _say(f"mode differs: {path} should {'' if executable else 'not '}be executable")
            sys.stdout.writelines(_diff(old, data, path))
    for path, _ in stale:
        differs = True
        _say(f"stale: {path} (no longer generated)")
        sys.stdout.writelines(_diff(path.read_bytes(), b"", path))
    if differs:
        _say("out of date: run `vramc build` and commit the result")
    return differs


def _diff(old: bytes | None, new: bytes, path: Path) -> list[str]:
    a = (old or b"").decode(errors="replace").splitlines(keepends=True)
    b = new.decode(errors="replace").splitlines(keepends=True)
    lines = list(difflib.unified_diff(a, b, f"{path} (on disk)" if old is not None else "/dev/null",
                                      f"{path} (generated)" if new else "/dev/null"))
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def _is_executable(path: Path) -> bool:
    return path.is_file() and bool(path.stat().st_mode & 0o111)


def _write(jobs: list[Job], stale: list[tuple[Path, Path]]) -> None:
    from vramc.writer import write_atomic

    for job in jobs:
        for rel, (data, executable) in sorted(job.files.items()):
            path = job.folder / rel
            old = path.read_bytes() if path.is_file() else None
            mode = 0o755 if executable else 0o644
            if old == data and _is_executable(path) == executable:
                status = "unchanged"
            else:
                write_atomic(path, data, mode=mode)
                status = "created" if old is None else "changed"
            sys.stdout.write(f"{status:<10} {path}\n")
    for path, top in stale:
        path.unlink()
        sys.stdout.write(f"{'removed':<10} {path}\n")
        folder = path.parent
        while folder != top and not any(folder.iterdir()):  # folders it leaves empty
            folder.rmdir()
            folder = folder.parent
