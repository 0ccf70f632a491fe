"""The pipeline behind `check`, `plan`, `build` and `run`: load -> validate -> plan -> lint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vramc.diagnostics import Diagnostic


@dataclass
class CheckResult:
    diagnostics: list[Diagnostic]
    plans: list = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    probed: set[str] = field(default_factory=set)  # every file the result depends on


def cached_check(paths: list[Path], margin=None) -> CheckResult:
    """`run_check` for `vramc check`, answered from the check cache when no input changed."""
    from vramc import check_cache, profiles

    discovered = [str(p) for p in profiles.discover(paths)[0]]
    hit = check_cache.load(paths, margin, discovered)
    if hit is not None:
        return CheckResult(hit[0], [], hit[1])
    result = run_check(paths, margin)
    check_cache.store(paths, margin, discovered, result.probed, result.diagnostics, result.files)
    return result


def run_check(paths: list[Path], margin=None, deployments=None) -> CheckResult:
    """Load and plan every deployment under `paths` (or only `deployments`, if given) and lint.

    `margin` (a schema.Margin) replaces the default margin where a profile sets none.
    """
    from vramc import lint, profiles
    from vramc.plan import plan_all

    loaded = profiles.load_paths(paths)
    deps = loaded.deployments if deployments is None else deployments
    if margin is not None:
        for d in deps:
            if d.lint.margin is None and not _variant_margin(d):
                d.margin = margin
    plans = plan_all(deps)
    lint_by_file = {d.file: getattr(d.obj, "lint", None) for d in loaded.docs}
    diags = lint.apply_config_to_load(loaded.diagnostics, lint_by_file)
    diags += lint.run_plan_rules(plans)
    return CheckResult(lint.dedupe(diags), plans, loaded.files, loaded.probed)


def _variant_margin(dep) -> bool:
    if not dep.variant:
        return False
    v = dep.doc.obj.variants.get(dep.variant)
    return v is not None and v.margin is not None
