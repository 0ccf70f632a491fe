"""Rule codes are owned by the registry (issue 12): a stage that finds a problem outside a rule
names its code and takes the severity from the registry (vramc.lint.codes.diagnostic); every code
written anywhere in vramc is registered; the memory models name no code, and their refusal kinds
reach a rule through one table (vramc.plan.refusals)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from vramc.lint.codes import DECLARING, diagnostic
from vramc.lint.rules import load_rules
from vramc.plan import refusals

PACKAGE = Path(__file__).resolve().parent.parent / "vramc"
CODE = re.compile(r"\bVR\d{3}\b")
# where a severity may be written beside a code: the rules declare them, the registry and
# vramc.lint.codes look them up
OWNERS = ("lint/rules/", "lint/registry.py", "lint/codes.py")


def sources() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _is_severity_literal(node: ast.expr) -> bool:
    """Severity.ERROR, or Severity(3) / Severity.parse("error"): a severity chosen where it is written."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Severity":
        return True
    return isinstance(node, ast.Call) and all(isinstance(a, ast.Constant) for a in node.args) and bool(node.args)


def diagnostic_calls(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("Diagnostic", "diagnostic"):
                yield name, node


def test_no_stage_writes_a_severity_beside_a_code():
    bad = []
    for rel, tree in sources().items():
        if rel.startswith(OWNERS):
            continue
        for name, call in diagnostic_calls(tree):
            if name != "Diagnostic":
                continue
            sev = (
                call.args[1]
                if len(call.args) > 1
                else next((k.value for k in call.keywords if k.arg == "severity"), None)
            )
            code = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "code"), None)
            if (sev is not None and _is_severity_literal(sev)) or isinstance(code, ast.Constant):
                bad.append(f"{rel}:{call.lineno}")
    assert bad == [], f"Diagnostic(CODE, Severity.X, ...) outside the registry; use vramc.lint.codes.diagnostic: {bad}"


def test_every_code_written_in_vramc_is_registered():
    rules = load_rules()
    unknown = []
    for rel, tree in sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                unknown += [f"{rel}:{node.lineno}: {c}" for c in CODE.findall(node.value) if c not in rules]
    assert unknown == []


def test_codes_raised_outside_a_rule_are_declared_where_diagnostic_finds_them():
    # diagnostic() imports only DECLARING, not every rule (rule bodies import the loader and the
    # planner): each code the modules that raise through it write must be found from a fresh start
    raising = [tree for tree in sources().values() if any(name == "diagnostic" for name, _ in diagnostic_calls(tree))]
    codes = sorted(
        {
            node.value
            for tree in raising
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.fullmatch(node.value)
        }
    )
    assert len(raising) >= 3 and "VR001" in codes and "VR320" in codes
    script = (
        "import json, sys\nfrom vramc.lint.codes import severity\nbad = []\n"
        "for c in json.loads(sys.argv[1]):\n    try:\n        severity(c)\n    except KeyError:\n        bad.append(c)\n"
        "print(json.dumps([bad, sorted(m for m in sys.modules if m.startswith('vramc.lint.rules.'))]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(codes)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    bad, imported = json.loads(proc.stdout)
    assert bad == [], f"declare these in one of {DECLARING}"
    assert imported == sorted(DECLARING)  # only those: the rule bodies import the loader and the planner


def test_diagnostic_takes_the_registered_severity():
    rules = load_rules()
    for code in ("VR000", "VR104", "VR202", "VR320", "VR343"):
        d = diagnostic(code, "m", "f.yaml", None, ("settings",), "h", "dep")
        assert d.severity == rules[code].severity and (d.code, d.message, d.hint, d.deployment) == (
            code,
            "m",
            "h",
            "dep",
        )
    assert rules["VR104"].severity.label == "warning"


def test_memory_models_name_no_rule_code():
    found = [
        f"{rel}:{node.lineno}: {node.value!r}"
        for rel, tree in sources().items()
        if rel.startswith("memory/")
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.fullmatch(node.value)
    ]
    assert found == []


def _refusal_kinds() -> set[str]:
    """The kinds the memory models report: the first item of each (kind, message) they append."""
    kinds = set()
    for rel, tree in sources().items():
        if not rel.startswith("memory/"):
            continue
        names = {
            t.id: n.value.value
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and len(node.elts) in (2, 3):
                first = node.elts[-2] if len(node.elts) == 3 else node.elts[0]
                if (
                    isinstance(first, ast.Name)
                    and first.id in names
                    and names[first.id].startswith(("vllm-", "llama-"))
                ):
                    kinds.add(names[first.id])
                elif isinstance(first, ast.Constant) and isinstance(first.value, str):
                    if re.fullmatch(r"(llama|vllm)-[a-z0-9-]+", first.value):
                        kinds.add(first.value)
    return kinds


def test_every_refusal_kind_has_its_rule_in_the_one_table():
    kinds = _refusal_kinds()
    assert {"llama-split-row", "vllm-start-check", "vllm-colocated-start-fails"} <= kinds
    assert sorted(kinds - set(refusals.REFUSALS)) == []
    rules = load_rules()
    assert sorted(r.code for r in refusals.REFUSALS.values() if r.code not in rules) == []
    assert refusals.UNKNOWN in rules


def test_plan_shows_the_codes_it_always_showed():
    # `plan --format json` errors[].code is public: vLLM's refusals show their rule's code,
    # llama.cpp's their own name; an unknown kind shows as itself and is reported as VR320
    assert refusals.shown_code("vllm-start-check") == "VR330"
    assert refusals.shown_code("vllm-parallel-invalid") == "VR337"
    assert refusals.shown_code("llama-split-row") == "llama-split-row"
    assert refusals.rule_code("llama-split-row") == "VR311"
    assert refusals.rule_code("llama-kv-type-block") == "VR321"
    assert (refusals.shown_code("llama-new"), refusals.rule_code("llama-new")) == ("llama-new", "VR320")
