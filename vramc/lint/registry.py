"""Rule registry and runner.

A rule is a small function registered with `@rule(code, slug, severity, scope)`; its docstring is
its documentation (`vramc explain CODE`): a summary line, an explanation, then `Bad:` and `Good:`
YAML examples. Rules yield `Finding`s (what, where in the deployment, what to do); the runner turns
them into positioned Diagnostics and applies the profile's `lint:` ignores and severity overrides.
Codes are public: never reuse one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from vramc.diagnostics import Diagnostic, Severity

CODE_RE = re.compile(r"^VR\d{3}\Z")
# Errors the llama.cpp memory model reports in llama.cpp's words, and the rule that documents each.
ESTIMATE_CODES = {
    "llama-split-row": "VR311", "llama-quantized-v-needs-fa": "VR305",
    "llama-kv-types-differ": "VR321", "llama-kv-type-block": "VR321",
    "llama-override-device": "VR322",
}
# The setting each engine error is about, so the diagnostic points at it when the profile sets it.
ESTIMATE_ANCHORS = {
    "VR305": "cache_type_v", "VR311": "split_mode", "VR321": "cache_type_v", "VR322": "override_tensor", "VR330": "gpu_memory_utilization",
    "VR331": "max_model_len", "VR332": "gpu_memory_utilization", "VR333": "max_num_batched_tokens",
    "VR334": "max_model_len", "VR337": "tensor_parallel_size",
}


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
        RULES[code] = Rule(code, slug, severity, scope, func if scope in ("plan", "group") else None,
                           func.__doc__ or "")
        return func

    return register


def load_rules() -> dict[str, Rule]:
    """Import the rule modules (explicitly, so the registry never depends on directory scans)."""
    from vramc.lint.rules import engine_options, load, memory, ollama, quoting, settings, vllm  # noqa: F401

    return RULES


def _locate(dep, f: Finding):
    """Span and full path of a finding; settings set by a variant point at the variant."""
    if f.target == "hardware":
        doc = dep.hardware
    elif f.target == "model":
        doc = dep.model
    else:
        doc = dep.doc
        path = f.path
        if dep.variant and path and path[0] in ("settings", "env"):
            vpath = ("variants", dep.variant) + path
            raw = dep.doc.raw
            try:
                node = raw
                for seg in vpath[:3]:
                    node = node[seg]
                if len(path) < 2 or path[1] in node:
                    return doc.file, doc.positions.locate(vpath), doc.prefix + vpath
            except (KeyError, TypeError, IndexError):
                pass
        if path and path[0] == "margin" and dep.variant:
            return doc.file, doc.positions.locate(("variants", dep.variant, "margin")), doc.prefix
    return doc.file, doc.positions.locate(f.path), doc.prefix + f.path


def _apply_config(code: str, default: Severity, lint_cfg) -> Severity | None:
    if lint_cfg is None:
        return default
    if code in lint_cfg.ignore:
        return None
    if code in lint_cfg.severity:
        return Severity.parse(lint_cfg.severity[code])
    return default


def run_plan_rules(plans) -> list[Diagnostic]:
    rules = load_rules()
    out: list[Diagnostic] = []
    for plan in plans:
        out.extend(plan.diagnostics)
        for code, message in (plan.estimate.errors if plan.estimate else ()):
            r = rules.get(ESTIMATE_CODES.get(code, code)) or rules["VR320"]
            key = ESTIMATE_ANCHORS.get(r.code)
            if key and key in plan.dep.settings.model_fields_set:
                anchor = ("settings", key)
            elif isinstance(plan.dep.doc.raw, dict) and "settings" in plan.dep.doc.raw:
                anchor = ("settings",)
            else:
                anchor = ("name",)
            who = "vLLM" if plan.engine == "vllm" else "llama.cpp"
            out.extend(_to_diagnostics(r, Finding(f"{who} would stop with: {message}", anchor), plan.dep))
        for r in rules.values():
            if r.scope != "plan":
                continue
            for f in r.func(plan) or ():
                out.extend(_to_diagnostics(r, f, plan.dep))
    from dataclasses import replace

    from vramc.plan.planner import combinations

    # a machine's deployments run together in each combination of their variants (plan.Combination)
    combos = combinations(plans)
    for r in rules.values():
        if r.scope != "group":
            continue
        said: set = set()  # a base combination's finding met again in a variant's is said once
        for combo in combos:
            for plan, f in r.func(combo.members) or ():
                if (id(plan), f.message) in said:
                    continue
                said.add((id(plan), f.message))
                if combo.variant is not None:
                    f = replace(f, message=f"with variant {combo.variant} ({combo.label}): {f.message}")
                out.extend(_to_diagnostics(r, f, plan.dep))
    return out


def _to_diagnostics(r: Rule, f: Finding, dep) -> Iterator[Diagnostic]:
    sev = _apply_config(r.code, f.severity or r.severity, dep.lint)
    if sev is None:
        return
    file, span, path = _locate(dep, f)
    yield Diagnostic(r.code, sev, f.message, file, span, path, f.hint, dep.label, f.data)


def apply_config_to_load(diags: list[Diagnostic], lint_by_file: dict) -> list[Diagnostic]:
    """Ignores and severity overrides for diagnostics raised while loading a file."""
    out = []
    for d in diags:
        sev = _apply_config(d.code, d.severity, lint_by_file.get(d.file))
        if sev is None:
            continue
        out.append(d if sev == d.severity else Diagnostic(
            d.code, sev, d.message, d.file, d.span, d.path, d.hint, d.deployment, d.data))
    return out


def dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    """One diagnostic per (code, place, message): variants often repeat their base's findings."""
    seen: dict[tuple, Diagnostic] = {}
    for d in sorted(diags, key=Diagnostic.sort_key):
        key = (d.code, d.file, d.line, d.column, d.message)
        if key in seen:
            continue
        seen[key] = d
    return list(seen.values())


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
