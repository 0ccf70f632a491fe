"""The package layout (docs/architecture.md): every module imports on its own in a fresh
interpreter, and no module imports (at module level) another that imports it back, directly or
through others; the stage packages depend on each other in one direction only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vramc"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: set[str], module_level: bool, parents: bool = True) -> set[str]:
    """The vramc modules `name` imports: at module level only, or everywhere (function bodies too);
    with `parents`, also the packages those are in."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:
                    if f"{mod}.{a.name}" in known:
                        found.add(f"{mod}.{a.name}")
                    elif mod in known:
                        found.add(mod)
            elif isinstance(node, ast.If) and _type_checking(node):
                visit(node.orelse)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not module_level:
                    visit(ast.iter_child_nodes(node))
            elif isinstance(node, ast.AST):
                visit(ast.iter_child_nodes(node))

    visit(tree.body)
    # importing a.b.c runs a/__init__ and a/b/__init__ first (except the importer's own packages,
    # which are already running when it runs)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    for mod in list(found) if parents else ():
        parts = mod.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in known)
    found -= own | {name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def graph(module_level: bool) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    if module_level:
        return {name: imports(name, path, known, True) for name, path in mods.items()}
    # Importing a.b.c runs the module body of its package a.b, not the functions there: a package
    # reached only as the parent of what is imported brings what its module body imports (the rules
    # package's load_rules imports every rule module, but importing vramc.lint.rules.load does not).
    top = {name: imports(name, path, known, True) for name, path in mods.items()}
    out = {}
    for name, path in mods.items():
        direct = imports(name, path, known, False, parents=False)
        with_parents = imports(name, path, known, False)
        edges = set(direct)
        for package in with_parents - direct:
            edges |= top[package] - {name}
        out[name] = edges
    return out


def test_no_import_cycles_at_module_level():
    assert cycles(graph(module_level=True)) == []


# Imports inside functions that still go round: the fit solver and its cache call each other, and
# the planner calls both (a plan asks the solver; the solver re-plans with extra models); a model of
# several quants (`quant: auto`, vramc.plan.quants) is planned once per quant by the planner it is
# called from.
KNOWN_FUNCTION_LEVEL_CYCLES = [
    ["vramc.plan.estimate_cache", "vramc.plan.fit", "vramc.plan.planner", "vramc.plan.quants"]
]


def test_no_new_cycles_through_function_level_imports():
    """Deferred imports keep `vramc check` fast, but must not hide new cycles: the lint <-> rules
    loop is gone (lint/registry.py declares, lint/rules lists, lint/runner.py runs)."""
    assert cycles(graph(module_level=False)) == KNOWN_FUNCTION_LEVEL_CYCLES


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_on_its_own():
    """Each module imported first in a fresh set of vramc modules: an import that only works after
    another module happened to be imported (a hidden cycle or a missing import) fails here."""
    code = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    for m in [m for m in sys.modules if m == "vramc" or m.startswith("vramc.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:  # an optional extra (vramc[run]) that is not installed
        if e.name and e.name.split(".")[0] == "vramc":
            failed[name] = repr(e)
    except Exception as e:
        failed[name] = repr(e)
print(json.dumps(failed))
"""
    names = [n for n in modules() if not n.endswith("__main__")]
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}
