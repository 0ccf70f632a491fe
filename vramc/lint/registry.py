"""Rule registry: what a rule module needs to declare its rules, and nothing that runs them
(vramc.lint.runner does; vramc.lint.rules lists the modules).

A rule is a small function registered with `@rule(code, slug, severity, scope)`; its docstring is
its documentation (`vramc explain CODE`): a summary line, an explanation, then `Bad:` and `Good:`
YAML examples. Rules yield `Finding`s (what, where in the deployment, what to do); the runner turns
them into positioned Diagnostics and applies the profile's `lint:` ignores and severity overrides.
Codes are public: never reuse one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from vramc.diagnostics import Severity

CODE_RE = re.compile(r"^VR\d{3}\Z")


@dataclass(frozen=True)
class Finding:
    message: str
    path: tuple = ()  # inside the deployment body: ("settings", "tensor_split")
    hint: str = ""
    target: str = "deployment"  # deployment | hardware | model: which document `path` is in
    severity: Severity | None = None  # None: the rule's default
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    code: str
    slug: str
    severity: Severity
    scope: str  # "load" (loader), "estimate" (memory model), "plan" (one deployment), "group" (a machine)
    func: Callable | None
    doc: str
    # a "plan" rule's check of the deployments that run together (scope "group"'s signature), its
    # code and docs the same: one deployment's limit that co-located ones share (VR360)
    together: Callable | None = None

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else self.slug


RULES: dict[str, Rule] = {}


def rule(code: str, slug: str, severity: Severity, scope: str = "plan"):
    def register(func):
        if not CODE_RE.match(code):
            raise ValueError(f"bad rule code {code}")
        if code in RULES:
            raise ValueError(f"rule code {code} registered twice")
        RULES[code] = Rule(
            code, slug, severity, scope, func if scope in ("plan", "group") else None, func.__doc__ or ""
        )
        return func

    return register


def together(code: str):
    """Registers a group check under an already registered plan rule's code (`Rule.together`)."""

    def register(func):
        from dataclasses import replace

        RULES[code] = replace(RULES[code], together=func)
        return func

    return register


def parse_rule_doc(doc: str) -> dict:
    """Split a rule docstring into summary, body, bad and good examples.

    Examples keep their relative indentation (they are YAML): `textwrap.dedent` removes only the
    margin all their lines share, where `inspect.cleandoc` would strip the first line on its own.
    """
    import inspect
    import textwrap

    text = inspect.cleandoc(doc)
    parts = re.split(r"^(Bad|Good):\s*$", text, flags=re.M)
    head = parts[0].strip()
    summary, _, body = head.partition("\n")
    out = {"summary": summary.strip(), "body": body.strip(), "bad": "", "good": ""}
    for label, content in zip(parts[1::2], parts[2::2]):
        out[label.lower()] = textwrap.dedent(content.strip("\n")).rstrip()
    return out
