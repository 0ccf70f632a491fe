"""Every fixture under fixtures/profiles/bad/ declares the diagnostics it must produce:
`# expect: CODE@LINE:COL` lines at the top. The check must report exactly those (errors and
warnings), at exactly those positions, and the CLI must exit 1 without a traceback."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vramc.diagnostics import Severity
from vramc.lint.check import run_check

FIXTURES = Path(__file__).parent / "fixtures"
# unreadable/: files that are not UTF-8 (VR000), kept apart from profiles/ whose files tests read as text
BAD = sorted((FIXTURES / "profiles" / "bad").glob("*.yaml")) + sorted((FIXTURES / "unreadable").glob("*.yaml"))
# `# expect: CODE@LINE:COL`, or `CODE@other/file.yaml:LINE:COL` for a finding in a referenced file
EXPECT_RE = re.compile(r"^# expect: (VR\d{3})@(?:([\w./-]+\.yaml):)?(\d+):(\d+)\s*$", re.M)


def expectations(path: Path) -> set[tuple[str, str, int, int]]:
    return {
        (c, str(path.parent / f) if f else str(path), int(line), int(col))
        for c, f, line, col in EXPECT_RE.findall(path.read_bytes().decode("utf-8", "replace"))
    }


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_fixture_reports_exactly_what_it_expects(path):
    expected = expectations(path)
    assert expected, f"{path.name} declares no expectations"
    result = run_check([path])
    # notes (info) count where the fixture is about them (VR309, VR313), else only warnings and errors
    codes = {c for c, _, _, _ in expected}
    found = {
        (d.code, str(Path(d.file).resolve()), d.line, d.column)
        for d in result.diagnostics
        if d.severity >= Severity.WARNING or d.code in codes
    }
    assert found == {(c, str(Path(f).resolve()), line, col) for c, f, line, col in expected}
    # the file name starts with the code it is about
    assert path.name.split("-")[0] in {c for c, _, _, _ in expected}


@pytest.mark.parametrize("path", BAD[:3], ids=lambda p: p.name)
def test_cli_exits_1_without_traceback(path):
    proc = subprocess.run([sys.executable, "-m", "vramc", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{path.name}:" in proc.stdout
