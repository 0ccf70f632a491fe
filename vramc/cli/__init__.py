"""The command layer: the only code that prints or chooses an exit code."""

import os
import sys

# Commands that leave nothing to release when they end (no child process, thread, temporary file
# or atexit handler): the console script ends them without Python's teardown, which frees every
# object and module one by one and costs `vramc check` (pre-commit) about 50 ms, a tenth of a
# cold run, for nothing the OS would not reclaim anyway.
NO_TEARDOWN = ("check",)


def main() -> None:
    """The `vramc` console script (pyproject.toml) and `python -m vramc`: the commands are imported
    only when it runs, so that importing vramc.cli costs nothing."""
    from vramc.cli.commands import main as run

    try:
        run()
    except SystemExit as e:
        if sys.argv[1:2] and sys.argv[1] in NO_TEARDOWN and (e.code is None or type(e.code) is int):
            _exit_now(e)
        raise


def _exit_now(e: SystemExit) -> None:
    """os._exit with `e`'s status once the output is flushed; a flush that fails (a closed pipe)
    takes the ordinary way out, which reports it as it always did."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        raise e from None
    os._exit(e.code or 0)
