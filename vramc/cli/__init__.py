"""The command layer: the only code that prints or chooses an exit code."""

import gc
import os
import sys

# Commands that leave nothing to release when they end (no child process, thread, temporary file
# or atexit handler): the console script ends them without Python's teardown, which frees every
# object and module one by one and costs `vramc check` (pre-commit) about 50 ms, a tenth of a
# cold run, for nothing the OS would not reclaim anyway. Being short-lived, they also run without
# the cyclic garbage collector: it would only rescan what the imports built (about a hundred
# collections, ~15 ms); what little garbage goes round is freed with the process.
NO_TEARDOWN = ("check",)


def main() -> None:
    """The `vramc` console script (pyproject.toml) and `python -m vramc`: the commands are imported
    only when it runs, so that importing vramc.cli costs nothing."""
    quick = len(sys.argv) > 1 and sys.argv[1] in NO_TEARDOWN
    if quick:
        gc.disable()
        _no_plugin_discovery()
    from vramc.cli.commands import main as run

    try:
        run()
    except SystemExit as e:
        if quick and (e.code is None or type(e.code) is int):
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


_PLUGIN_LOADER = "pydantic.plugin._loader"


def _no_plugin_discovery() -> None:
    """pydantic's plugin loader imports importlib.metadata (email, zipfile, csv: ~20 ms of a cold
    check) to look for plugins, even when PYDANTIC_DISABLE_PLUGINS (vramc/__init__.py sets it
    unless the user did) turns them all off and its get_plugins() answers none at once. Then a
    check uses a loader that answers the same without the import; any other name it is asked
    for comes from pydantic's own module."""
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS") not in ("__all__", "1", "true") or _PLUGIN_LOADER in sys.modules:
        return
    import types

    def get_plugins(*args: object, **kwargs: object) -> tuple:
        return ()

    def real(name: str) -> object:
        if name.startswith("__"):  # the import system asks a module for __path__ and the like
            raise AttributeError(name)
        import importlib

        if sys.modules.get(_PLUGIN_LOADER) is loader:
            del sys.modules[_PLUGIN_LOADER]
        return getattr(importlib.import_module(_PLUGIN_LOADER), name)

    loader = types.ModuleType(_PLUGIN_LOADER, "pydantic's plugin loader, all plugins disabled (vramc.cli)")
    loader.get_plugins = get_plugins  # type: ignore[attr-defined]
    loader.__getattr__ = real  # type: ignore[method-assign]
    sys.modules[_PLUGIN_LOADER] = loader
