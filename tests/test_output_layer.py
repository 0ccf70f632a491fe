"""Only the command layer prints or exits (issue 12): outside vramc/cli (and vramc/dev, the
developers' tools), no module calls print() or sys.exit, or touches sys.stdout / sys.stderr;
the stages return what they found, or write through what the command layer gives them
(vramc.build.builder.Report, vramc.run.runner.Console)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vramc"
COMMAND_LAYER = ("cli/", "dev/", "__main__.py")


EXITS = (("sys", "exit"), ("os", "_exit"), ("typer", "Exit"))


def writes(tree: ast.Module) -> list[int]:
    """Lines that print or exit: print(...), sys.stdout / sys.stderr (write, flush, passed on),
    typer.echo; sys.exit, os._exit, SystemExit, typer.Exit."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in (("sys", "stdout"), ("sys", "stderr"), ("typer", "echo"), *EXITS)
        ):
            found.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id == "SystemExit":
            found.append(node.lineno)
    return sorted(found)


def test_only_the_command_layer_prints():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(COMMAND_LAYER):
            continue
        lines = writes(ast.parse(path.read_text(), str(path)))
        if lines:
            offenders[rel] = lines
    assert offenders == {}, f"print through vramc/cli instead: {offenders}"


def test_the_scan_finds_each_way_of_printing():
    src = "import sys, typer\nprint(1)\nsys.stdout.write('x')\nf(sys.stderr)\ntyper.echo('y')\nsys.modules\n"
    assert writes(ast.parse(src)) == [2, 3, 4, 5]
    src = "import os, sys\nsys.exit(1)\nos._exit(0)\nraise SystemExit(2)\nos.path\n"
    assert writes(ast.parse(src)) == [2, 3, 4]
