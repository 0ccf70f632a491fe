"""Rule codes are a public interface: unique, well formed, documented with bad and good examples,
and each plan/group rule is exercised by at least one test fixture or test."""

import re
from pathlib import Path

from typer.testing import CliRunner

from vramc.cli.commands import app
from vramc.lint.registry import CODE_RE, parse_rule_doc
from vramc.lint.rules import load_rules


def test_codes_are_well_formed_and_slugs_unique():
    rules = load_rules()
    assert all(CODE_RE.match(c) for c in rules)
    slugs = [r.slug for r in rules.values()]
    assert len(slugs) == len(set(slugs))
    assert all(re.match(r"^[a-z0-9]+(-[a-z0-9]+)*$", s) for s in slugs)


def test_every_rule_has_summary_bad_and_good():
    for r in load_rules().values():
        doc = parse_rule_doc(r.doc)
        assert doc["summary"].endswith("."), r.code
        assert doc["bad"] and doc["good"], f"{r.code} lacks examples"


def test_every_rule_is_exercised_by_a_test():
    tests = Path(__file__).parent
    # bytes: tests/fixtures/unreadable holds a profile that is not UTF-8 on purpose (VR000)
    text = "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in tests.rglob("*") if p.suffix in (".py", ".yaml")
    )
    missing = [c for c in load_rules() if c not in text.replace("test_rules_meta", "")]
    assert missing == []


def test_every_rule_has_an_expect_fixture():
    # Every code, info level included, is pinned by a fixture that test_check_fixtures runs: the
    # `# expect: CODE@LINE:COL` lines say where `vramc check` must report it. Codes added later
    # are held to this too (the registry is the list).
    from test_check_fixtures import BAD, expectations

    fixtured = {code for path in BAD for code, _, _, _ in expectations(path)}
    missing = sorted(set(load_rules()) - fixtured)
    assert missing == [], f"no `# expect:` fixture under tests/fixtures/profiles/bad for {missing}"


def test_explain_and_rules_commands():
    runner = CliRunner()
    res = runner.invoke(app, ["explain", "VR302"])
    assert res.exit_code == 0
    assert "Bad:" in res.output and "Good:" in res.output and "33" in res.output
    assert runner.invoke(app, ["explain", "does-not-fit"]).output.startswith("VR300 does-not-fit")
    assert runner.invoke(app, ["explain", "VR999"]).exit_code == 2
    md = runner.invoke(app, ["rules", "--format", "md"]).output
    assert md.splitlines()[0].startswith("| code |") and "| VR401 |" in md


def test_explain_keeps_the_examples_indentation():
    # inspect.cleandoc once stripped an example's first line on its own, so that VR100's
    # `settings:\n  parallel: 2` printed as two top-level keys: another structure
    import yaml

    out = CliRunner().invoke(app, ["explain", "VR100"]).output
    assert "Good:\n    settings:\n      parallel: 2\n" in out
    good = out.split("Good:\n", 1)[1]
    assert yaml.safe_load("\n".join(line[4:] for line in good.splitlines())) == {"settings": {"parallel": 2}}


def test_readme_rules_table_is_current():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "update_readme.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_shipped_profiles_pass_strict_check_and_the_shipped_hooks():
    # The project passes what it asks of others: `check --strict` (warnings fail), and every hook
    # in .pre-commit-hooks.yaml as pre-commit would run it. A finding the shipped profiles accept
    # is acknowledged in their `lint:` block, with a comment saying why.
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, VRAMC_NO_CACHE="1")
    runs = [["check", "--strict", "profiles/"]]
    for hook in yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text()):
        argv = hook["entry"].split() + hook.get("args", [])
        assert argv[0] == "vramc", hook
        runs.append(argv[1:])
    for argv in runs:
        proc = subprocess.run(
            [sys.executable, "-m", "vramc", *argv], cwd=root, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (argv, proc.stdout[-3000:], proc.stderr[-3000:])
    for f in sorted((root / "profiles").glob("*.yaml")):
        lines = f.read_text().splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith("lint:")), None)
        if start is None:
            continue
        end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "#", "")), len(lines))
        block = "\n".join(lines[start:end])
        if "ignore" in block or "severity" in block:
            assert "#" in block, f"{f.name}: lint accepts a finding without a comment saying why"
