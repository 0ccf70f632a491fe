"""`vramc diff`: what it prints and its exit code (the comparison is vramc.diff)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vramc.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from vramc.diff.revisions import DiffError


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


def cli_diff(
    args: list[str],
    *,
    base_dir: Path | None,
    head_dir: Path | None,
    fmt: str,
    fail_on: list[str],
    margin=None,
    show_unchanged: bool = False,
    allow_empty: bool = False,
    artifacts: bool = True,
) -> int:
    from vramc.diff import FORMATS, _has_profiles, _side_doc, _sides, formats
    from vramc.diff.compare import (
        SidePlans,
        broken_by_head,
        diff_deployments,
        errors_new_in_head,
        parse_policy,
        plan_side,
        regressions,
        render,
        to_render,
    )

    if fmt not in FORMATS:
        _say(f"vramc diff: --format must be one of {', '.join(FORMATS)}")
        return EXIT_USAGE
    try:
        policy = parse_policy(fail_on)
    except ValueError as e:
        _say(f"vramc diff: {e}")
        return EXIT_USAGE
    sides = []
    try:
        base, head, paths = _sides(args, base_dir, head_dir, sides)
        for side in (base, head):
            if not _has_profiles(side, paths):
                where = ", ".join(paths)
                msg = f"{side.label} has no profiles under {where}"
                if not allow_empty:
                    raise DiffError(
                        f"{msg}; give the PATH of the profiles, another revision, or "
                        "--allow-empty to count every deployment as added or removed"
                    )
                _say(f"vramc diff: note: {msg}")
        bp, hp = (
            plan_side(side, paths, margin=margin) if _has_profiles(side, paths) else SidePlans()
            for side in (base, head)
        )
        if artifacts:  # before the temporary copies go: rendering reads the project's templates/
            keys = to_render(bp, hp)
            render(base, bp, keys)
            render(head, hp, keys)
    except DiffError as e:
        _say(f"vramc diff: {e}")
        return EXIT_USAGE
    finally:
        for s in sides:
            s.close()
    for side, p in zip((base, head), (bp, hp)):
        for e in p.errors:
            _say(f"{side.label}: {e}")
    deps = diff_deployments(bp, hp)
    flagged = regressions(deps, policy)
    broken = broken_by_head(bp, hp, policy)
    for file in broken:
        _say(f"vramc diff: regression: {file} does not load in {head.label} (it did, or was absent, in {base.label})")
    new_errors = errors_new_in_head(bp, hp, policy)
    for file, code, message in new_errors:
        _say(f"vramc diff: regression: {file}: {code} error in {head.label}, not in {base.label}: {message}")
    broken = broken or [file for file, _, _ in new_errors]
    doc = formats.document(_side_doc(base), _side_doc(head), deps, flagged)
    if fmt == "json":
        out = formats.to_json(doc)
    elif fmt == "markdown":
        out = formats.markdown(doc)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            try:
                with open(summary, "a", encoding="utf-8") as f:
                    f.write(out)
            except OSError as e:
                _say(f"vramc diff: cannot append to $GITHUB_STEP_SUMMARY ({summary}): {e.strerror or e}")
    elif fmt == "github":
        out = formats.github(doc, failing=bool(flagged))
    else:
        out = formats.text(doc, show_unchanged=show_unchanged)
    sys.stdout.write(out)
    if fmt == "github" and not flagged and not broken:
        _say(f"vramc diff: {formats.counts(deps)}; no regression")
    return EXIT_FINDINGS if flagged or broken else EXIT_OK  # 1: a regression
