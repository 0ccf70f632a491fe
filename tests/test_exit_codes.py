"""Exit codes and NAME@VARIANT are each written once (issue 12): the exit codes in vramc/cli/common.py
(a stage returns an outcome, the command layer maps it: README's tables are the contract), and the
reading of a deployment named NAME@VARIANT in vramc.load.profiles.split_label, which `vramc run`,
`plan -d` and `fit -d` share."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from vramc.build.builder import Outcome as BuildOutcome
from vramc.cli.common import EXIT_INTERNAL, build_exit_code, run_exit_code
from vramc.load.profiles import split_label
from vramc.run.runner import Outcome as RunOutcome

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vramc"

# --- exit codes ------------------------------------------------------------------------------------


def exit_names(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, name) of every EXIT_* name a module binds: assigned (also in a tuple, a class body, a
    loop, with :=), imported, or defined as a function or class."""
    found = []
    for node in ast.walk(tree):
        names: list[tuple[int, str]] = []
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append((node.lineno, node.id))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(node.lineno, a.asname or a.name) for a in node.names]
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.lineno, node.name))
        found += [(line, n) for line, n in names if n.rpartition(".")[2].upper().startswith("EXIT_")]
    return sorted(set(found))


def test_exit_codes_are_defined_only_in_the_command_layer():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("cli/"):
            continue
        found = exit_names(ast.parse(path.read_text(), str(path)))
        if found:
            offenders[rel] = found
    assert offenders == {}, f"return an outcome and map it in vramc/cli/common.py: {offenders}"


def test_the_exit_scan_finds_each_way_of_binding_one():
    src = (
        "EXIT_OK = 0\n"
        "A, EXIT_X = 1, 2\n"
        "from vramc.cli.common import EXIT_USAGE\n"
        "import m as exit_y\n"
        "class C:\n    EXIT_Z: int = 3\n"
        "for EXIT_W in ():\n    pass\n"
        "def f():\n    global EXIT_V\n    EXIT_V = 4\n"
        "EXITS = 1\nexit_code = 2\n"  # a stage has no exit code, in any case of letters
    )
    assert [line for line, _ in exit_names(ast.parse(src))] == [1, 2, 3, 4, 6, 7, 11, 13]


def literal_codes(tree: ast.Module, every_function: bool) -> list[tuple[int, str]]:
    """(line, function) of each exit code written as a number: `return <int>` (alone or in a
    tuple), typer.Exit(<int>), sys.exit(<int>); in functions named cli_* (a command's entry point),
    or with `every_function` in all of them (the command layer, which has names for its codes)."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not (every_function or fn.name.startswith("cli_")):
            continue
        for node in ast.walk(fn):
            values = [node.value] if isinstance(node, ast.Return) else []
            if values and isinstance(values[0], ast.Tuple):
                values = values[0].elts
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                if (getattr(node.func.value, "id", None), node.func.attr) in (("typer", "Exit"), ("sys", "exit")):
                    values = node.args[:1]
            while any(isinstance(v, ast.IfExp) for v in values):  # 0 if ok else 1
                values = [w for v in values for w in ((v.body, v.orelse) if isinstance(v, ast.IfExp) else (v,))]
            if any(isinstance(v, ast.Constant) and type(v.value) is int for v in values):
                found.append((node.lineno, fn.name))
    return sorted(set(found))


def test_exit_codes_are_never_written_as_numbers():
    """A stage's entry point returns an outcome; the command layer uses common.py's names."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "cli/common.py":
            continue
        found = literal_codes(ast.parse(path.read_text(), str(path)), every_function=rel.startswith("cli/"))
        if found:
            offenders[rel] = found
    assert offenders == {}, f"return an outcome, or use vramc.cli.common's EXIT_ names: {offenders}"


def test_the_number_scan_finds_each_way_of_writing_one():
    src = (
        "def cli_x(a):\n    if a:\n        return 2\n    return Outcome.DONE\n"
        "def g():\n    return 1\n"
        "def h():\n    raise typer.Exit(2)\n"
        "def k():\n    sys.exit(130)\n"
        "def m():\n    return None, 5\n"
        "def n(ok):\n    return EXIT_OK if ok else 1\n"
    )
    tree = ast.parse(src)
    assert literal_codes(tree, every_function=False) == [(3, "cli_x")]
    assert literal_codes(tree, every_function=True) == [
        (3, "cli_x"),
        (6, "g"),
        (8, "h"),
        (10, "k"),
        (12, "m"),
        (14, "n"),
    ]


def table(section: str) -> dict[int, str]:
    """The exit-code table of README's `## section`."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = body.split("| exit code | meaning |", 1)[1]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.+) \|$", rows, re.M)}


def test_every_build_outcome_has_the_code_readme_gives():
    codes = {o: build_exit_code(o) for o in BuildOutcome}
    assert codes == {BuildOutcome.DONE: 0, BuildOutcome.INCOMPLETE: 1, BuildOutcome.CANNOT_WRITE: 2}
    assert set(codes.values()) | {EXIT_INTERNAL} == set(table("`vramc build`"))
    assert "cannot be written" in table("`vramc build`")[2]


def test_every_run_outcome_has_the_code_readme_gives():
    codes = {o: run_exit_code(o) for o in RunOutcome}
    assert codes == {
        RunOutcome.DONE: 0,
        RunOutcome.CHECK_FAILED: 1,
        RunOutcome.USAGE: 2,
        RunOutcome.NO_ENGINE: 4,
        RunOutcome.LOAD_FAILED: 5,
        RunOutcome.NO_ADDRESS: 6,
        RunOutcome.INTERRUPTED: 130,
    }
    readme = table("`vramc run`")
    assert set(codes.values()) | {EXIT_INTERNAL} == set(readme)
    assert "not installed" in readme[4] and "cannot be loaded" in readme[5] and "bound" in readme[6]
    assert "interrupted" in readme[130]


# --- NAME@VARIANT ----------------------------------------------------------------------------------

SPLITTERS = {"partition", "rpartition", "split", "rsplit", "find", "rfind", "index", "rindex", "count"}
# Where an `@` is read, and why that is no deployment name.
READERS = {
    ("load/profiles.py", "split_label"): "the one reader of NAME@VARIANT",
    ("model/remote.py", "parse_ref"): "hf://ORG/REPO@REVISION: a git revision",
}


def at_reads(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, enclosing function) of every place that looks for an `@` in a string: a split, find or
    count by "@" (or by a module constant that is "@": the build's VARIANT_PREFIX), `"@" in text`.
    A prefix test is no reading (the build's `@VARIANT` folders)."""
    ats = {"@"}
    for node in tree.body:  # VARIANT_PREFIX = "@"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value == "@":
            ats |= {t.id for t in node.targets if isinstance(t, ast.Name)}

    def is_at(node: ast.AST) -> bool:
        return (isinstance(node, ast.Constant) and node.value in ats) or (isinstance(node, ast.Name) and node.id in ats)

    found = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            where = node.name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            args = [*node.args, *(k.value for k in node.keywords)]
            if node.func.attr in SPLITTERS and any(is_at(a) for a in args):
                found.append((node.lineno, where))
        if (
            isinstance(node, ast.Compare)
            and is_at(node.left)
            and any(isinstance(o, (ast.In, ast.NotIn)) for o in node.ops)
        ):
            found.append((node.lineno, where))
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree, "<module>")
    return sorted(set(found))


def test_name_at_variant_is_read_in_one_place():
    """A command that takes NAME@VARIANT reads it with vramc.load.profiles.split_label (and
    Deployment.is_named); nowhere else in vramc, the command layer included, splits at `@`."""
    offenders, seen = {}, set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, where in at_reads(ast.parse(path.read_text(), str(path))):
            if (rel, where) in READERS:
                seen.add((rel, where))
            else:
                offenders.setdefault(rel, []).append((line, where))
    assert offenders == {}, f"use vramc.load.profiles.split_label: {offenders}"
    assert seen == set(READERS), "a reader listed here no longer reads `@`: take it off the list"


def test_the_at_scan_finds_each_way_of_reading_one():
    src = (
        'P = "@"\n'
        'def f(t, u):\n    a = t.partition("@")\n'
        "    b = t.split(P)\n"
        '    c = "@" in t\n'
        '    d = t.rsplit(sep="@")\n'
        '    e = t.find("@")\n'
        "    g = t.startswith(P)\n"  # a prefix test is no reading
        '    h = f"{t}@{u}"\n'  # writing a label is no reading of one
        '    i = t.partition(":")\n'
    )
    assert at_reads(ast.parse(src)) == [(3, "f"), (4, "f"), (5, "f"), (6, "f"), (7, "f")]


@pytest.mark.parametrize(
    "text, parts",
    [("a", ("a", None)), ("a@b", ("a", "b")), ("a@", ("a", "")), ("@b", ("", "b")), ("a@b@c", ("a", "b@c"))],
)
def test_split_label(text, parts):
    assert split_label(text) == parts


# --- vramc run NAME@VARIANT, through the command's own code (no model is loaded) -------------------

SERVER = """\
name: srv
hardware: {name: cpu-only, gpus: []}
model: tiny
engine: llama-server
settings: {ctx: 1024, gpu_layers: 0}
variants:
  fast: {settings: {ctx: 512}}
  slow: {settings: {ctx: 2048}}
"""


class Said:
    """vramc run's Console, keeping what it says."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def say(self, text: str) -> None:
        self.lines.append(f"vramc run: {text}")

    def answer(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    from vramc.dev.synth import write_tiny_model

    (tmp_path / "profiles" / "models").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    write_tiny_model(tmp_path / "models" / "tiny.gguf")
    (tmp_path / "profiles" / "models" / "tiny.yaml").write_text("kind: model\nname: tiny\ngguf: models/tiny.gguf\n")
    (tmp_path / "profiles" / "srv.yaml").write_text(SERVER)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(name: str, variant: str | None = None, profiles: str = "profiles", threshold: str = "5%") -> tuple[int, str]:
    from vramc.run.runner import cli_run

    said = Said()
    outcome = cli_run(
        name,
        console=said,
        variant=variant,
        profiles_dir=Path(profiles),
        prompt="x",
        max_tokens=1,
        host="127.0.0.1",
        port=None,
        api_key_file=None,
        insecure=False,
        threshold=threshold,
    )
    return run_exit_code(outcome), "\n".join(said.lines)


def test_run_finds_the_variant_however_it_is_named(project):
    refused = "vramc run: srv@fast is a llama-server deployment; vramc run loads llama-cpp-python deployments only"
    for name, variant in (("srv@fast", None), ("srv", "fast"), ("srv@fast", "fast")):
        code, said = run(name, variant)
        assert code == 2 and said.startswith(refused), (name, variant, said)
    # a trailing @ (an unset $VARIANT) is refused, as plan -d and fit -d refuse it, not the base run
    assert run("srv@") == (2, "vramc run: 'srv@': the variant after @ is empty; give NAME or NAME@VARIANT")
    assert run("srv@ ", "fast")[0] == 2
    code, said = run("srv@nope")
    assert code == 2 and said == "vramc run: no deployment 'srv@nope' in profiles; it has: srv, srv@fast, srv@slow"


def test_run_reports_conflicting_variants_after_the_options_and_before_the_profiles(project):
    """The order of the checks is the one before the helper: options, then the two variants, then
    the profiles folder."""
    conflict = "vramc run: 'srv@fast' and --variant 'slow' name different variants"
    assert run("srv@fast", "slow") == (2, conflict)
    assert run("srv@fast", "slow", profiles="nowhere") == (2, conflict)
    code, said = run("srv@fast", "slow", threshold="much")
    assert code == 2 and said.startswith("vramc run: --threshold 'much'"), said
    assert run("srv", "fast", profiles="nowhere") == (
        2,
        "vramc run: no profiles folder nowhere (give one with --profiles)",
    )


def test_plan_selects_the_variant_with_the_same_reading(project):
    import json

    from typer.testing import CliRunner

    from vramc.cli.commands import app

    for name, labels in (("srv@fast", [("srv", "fast")]), ("srv", [("srv", None)])):
        res = CliRunner().invoke(app, ["plan", "profiles", "-d", name, "--format", "json"])
        assert res.exit_code == 0, res.output
        got = [(d["name"], d["variant"]) for d in json.loads(res.stdout)["deployments"]]
        assert got == labels, (name, got)
