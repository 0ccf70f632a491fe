"""A Diagnostic by its rule code, for the stages that find problems outside a rule's body: the
loader (vramc.load.yamlpos, vramc.load.profiles) and the planner (vramc.plan.planner).

The registry owns every code's severity: a stage names the code, the registry says how bad it is
(`@rule(code, slug, severity, scope)` in vramc.lint.rules), and a profile's `lint:` block may
change it later (vramc.lint.runner). `tests/test_rules_meta.py` fails when a module outside the
rules builds a Diagnostic with a severity of its own, or raises a code that is not registered.

This is not in registry.py because it needs the rule modules imported, and they import the
registry.
"""

from __future__ import annotations

from typing import Any

from vramc.diagnostics import Diagnostic, Severity, Span


def severity(code: str) -> Severity:
    """The registered severity of `code`; KeyError for a code no rule declares (a bug in vramc)."""
    from vramc.lint.rules import load_rules

    return load_rules()[code].severity


def diagnostic(
    code: str,
    message: str,
    file: str,
    span: Span | None = None,
    path: tuple[str | int, ...] = (),
    hint: str = "",
    deployment: str = "",
    data: dict[str, Any] | None = None,
) -> Diagnostic:
    """`Diagnostic(code, <its registered severity>, message, ...)`: the fields in Diagnostic's order."""
    return Diagnostic(code, severity(code), message, file, span, path, hint, deployment, data or {})
