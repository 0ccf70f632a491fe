"""What the commands share: the exit codes, and a deployment named on the command line as
NAME@VARIANT (`vramc plan --deployment`, `vramc fit --deployment`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramc.load.profiles import Deployment

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def split_selection(text: str | None) -> tuple[str, str]:
    """NAME@VARIANT -> (NAME, VARIANT); VARIANT is "" for the deployment itself."""
    name, _, variant = (text or "").partition("@")
    return name, variant


def is_selected(dep: Deployment, text: str | None) -> bool:
    """Whether `dep` is the one NAME@VARIANT names (every deployment when nothing is named)."""
    if not text:
        return True
    name, variant = split_selection(text)
    return dep.name == name and (dep.variant or "") == variant
