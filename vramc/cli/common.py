"""What the commands share: the exit codes (the only place they are defined: a stage returns an
outcome, mapped here), a deployment named on the command line as NAME@VARIANT (`vramc plan
--deployment`, `vramc fit --deployment`; `vramc run NAME@VARIANT` reads it with the same
vramc.load.profiles.split_label), and the writers that the stages are given for what they report
(only the command layer prints). tests/test_exit_codes.py keeps it so."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from vramc.build.builder import Outcome as BuildOutcome
    from vramc.build.builder import Report
    from vramc.diagnostics import Diagnostic
    from vramc.load.profiles import Deployment
    from vramc.run.runner import Outcome as RunOutcome

# README's exit-code tables. 0-3 are every command's; 4-6 and 130 are `vramc run`'s.
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_FAILED = EXIT_FINDINGS  # 1 too: what was asked could not be done (a file not read or written)
EXIT_NO_ENGINE, EXIT_LOAD, EXIT_ADDRESS = 4, 5, 6
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def build_exit_code(outcome: BuildOutcome) -> int:
    """`vramc build`'s exit code: 1 a deployment not built or out/ stale, 2 out/ cannot be written."""
    from vramc.build.builder import Outcome

    codes = {Outcome.DONE: EXIT_OK, Outcome.INCOMPLETE: EXIT_FAILED, Outcome.CANNOT_WRITE: EXIT_USAGE}
    return codes[outcome]


def run_exit_code(outcome: RunOutcome) -> int:
    """`vramc run`'s exit code (README's table; vramc.run.runner.Outcome says when each applies)."""
    from vramc.run.runner import Outcome

    codes = {
        Outcome.DONE: EXIT_OK,
        Outcome.CHECK_FAILED: EXIT_FINDINGS,
        Outcome.USAGE: EXIT_USAGE,
        Outcome.NO_ENGINE: EXIT_NO_ENGINE,
        Outcome.LOAD_FAILED: EXIT_LOAD,
        Outcome.NO_ADDRESS: EXIT_ADDRESS,
        Outcome.INTERRUPTED: EXIT_INTERRUPTED,
    }
    return codes[outcome]


def selection_problem(text: str | None) -> str | None:
    """Why --deployment TEXT names no deployment at all, or None: `-d ''` (an unset variable) must
    not be read as no filter, which would act on every deployment the user meant to narrow down."""
    from vramc.load.profiles import split_label

    if text is None:
        return None
    name, variant = split_label(text)
    if not name.strip():
        return "--deployment is empty (an unset variable?); give a deployment's name, NAME or NAME@VARIANT"
    if variant is not None and not variant.strip():
        return f"--deployment {text}: the variant after @ is empty; give NAME or NAME@VARIANT"
    return None


def is_selected(dep: Deployment, text: str | None) -> bool:
    """Whether `dep` is the one NAME@VARIANT names (every deployment when nothing is named)."""
    return text is None or dep.is_named(text)


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
