"""The command layer: the only code that prints or chooses an exit code."""


def main() -> None:
    """The `vramc` console script (pyproject.toml) and `python -m vramc`: the commands are imported
    only when it runs, so that importing vramc.cli costs nothing."""
    from vramc.cli.commands import main as run

    run()
