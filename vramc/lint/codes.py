"""A Diagnostic by its rule code, for the stages that find problems outside a rule's body: the
loader (vramc.load.yamlpos, vramc.load.profiles) and the planner (vramc.plan.planner).

The registry owns every code's severity: a stage names the code, the registry says how bad it is
(`@rule(code, slug, severity, scope)` in vramc.lint.rules), and a profile's `lint:` block may
change it later (vramc.lint.runner). `tests/test_rules_meta.py` fails when a module outside the
rules builds a Diagnostic with a severity of its own, or raises a code that is not registered.

Only the modules that declare such codes are imported here, not every rule (load_rules): rule
bodies import the planner and the loader, which import this. A code raised through `diagnostic` is
declared in one of DECLARING (tests/test_codes.py checks it). This is not in registry.py because
those modules import the registry.
"""

from __future__ import annotations

from typing import Any

from vramc.diagnostics import Diagnostic, Severity, Span

# the rule modules whose (bodiless) rules are raised outside a rule
DECLARING = ("vramc.lint.rules.load", "vramc.lint.rules.memory", "vramc.lint.rules.quants", "vramc.lint.rules.servers")


def severity(code: str) -> Severity:
    """The registered severity of `code`; KeyError for a code DECLARING does not declare (a bug)."""
    from vramc.lint.registry import RULES
    from vramc.lint.rules import load, memory, quants, servers  # noqa: F401  (DECLARING: they register their rules)

    rule = RULES.get(code)
    if rule is None:
        raise KeyError(f"{code} is raised outside a rule but not declared in any of {', '.join(DECLARING)}")
    return rule.severity


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
