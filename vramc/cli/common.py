"""What the commands share: the exit codes, a deployment named on the command line as
NAME@VARIANT (`vramc plan --deployment`, `vramc fit --deployment`), and the writers that the
stages are given for what they report (only the command layer prints)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from vramc.build.builder import Report
    from vramc.diagnostics import Diagnostic
    from vramc.load.profiles import Deployment

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_FAILED = EXIT_FINDINGS  # 1 too: what was asked could not be done (a file not read or written)


def split_selection(text: str | None) -> tuple[str, str]:
    """NAME@VARIANT -> (NAME, VARIANT); VARIANT is "" for the deployment itself."""
    name, _, variant = (text or "").partition("@")
    return name, variant


def selection_problem(text: str | None) -> str | None:
    """Why --deployment TEXT names no deployment at all, or None: `-d ''` (an unset variable) must
    not be read as no filter, which would act on every deployment the user meant to narrow down."""
    if text is None:
        return None
    name, _, variant = text.partition("@")
    if not name.strip():
        return "--deployment is empty (an unset variable?); give a deployment's name, NAME or NAME@VARIANT"
    if "@" in text and not variant.strip():
        return f"--deployment {text}: the variant after @ is empty; give NAME or NAME@VARIANT"
    return None


def is_selected(dep: Deployment, text: str | None) -> bool:
    """Whether `dep` is the one NAME@VARIANT names (every deployment when nothing is named)."""
    if text is None:
        return True
    name, variant = split_selection(text)
    return dep.name == name and (dep.variant or "") == variant


def say_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    """Diagnostics on stderr, one line each (`FILE:LINE:COLUMN: CODE SEVERITY: MESSAGE`), as every
    command shows the ones it stops at."""
    for d in diagnostics:
        sys.stderr.write(d.one_line() + "\n")


def say(command: str) -> Callable[[str], None]:
    """A writer of one-line messages to stderr as COMMAND says them: `vramc build: TEXT`."""

    def write(text: str) -> None:
        sys.stderr.write(f"vramc {command}: {text}\n")

    return write


def show(text: str) -> None:
    """A command's result on stdout, as it is."""
    sys.stdout.write(text)


def build_report() -> Report:
    """Where `vramc build` writes: its messages to stderr, its listing and diffs to stdout."""
    from vramc.build.builder import Report

    return Report(say=say("build"), show=show)
