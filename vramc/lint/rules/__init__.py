"""Lint rules, one module per area: load (0xx-2xx, raised while loading), memory (3xx),
settings (3xx, sanity of the settings against the model), vllm and ollama (3xx), engine_options
(4xx, what each engine accepts) and quoting (4xx, values no launch artifact can hold)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramc.lint.registry import Rule


def load_rules() -> dict[str, Rule]:
    """Import the rule modules (explicitly, so the registry never depends on directory scans)."""
    from vramc.lint.registry import RULES
    from vramc.lint.rules import (  # noqa: F401
        engine_options,
        hosts,
        load,
        memory,
        ollama,
        quants,
        quoting,
        servers,
        settings,
        vllm,
        vllm_nodes,
    )

    return RULES
