"""vramc's command line. Only this module prints or exits; heavy imports stay inside commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from vramc import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Check VRAM budgets of local LLM deployments before launch, and compile launch artifacts.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vramc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


@app.command()
def analyze(
    model: Path = typer.Argument(..., help="A GGUF file (the first part of a split model is enough)."),
    layers: bool = typer.Option(False, "--layers", help="Print the full per-block table."),
    fmt: str = typer.Option("text", "--format", help="text or json."),
    write: Optional[Path] = typer.Option(None, "--write", help="Write a model profile with the locked metadata."),
    name: Optional[str] = typer.Option(None, "--name", help="Name for the written model profile."),
) -> None:
    """Read a GGUF header (never its tensor data) and describe the model."""
    from vramc.analyze import cli_analyze

    raise typer.Exit(cli_analyze(model, layers=layers, fmt=fmt, write=write, name=name))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
