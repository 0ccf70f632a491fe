import json

from vramc.diagnostics import Diagnostic, Severity, Span
from vramc.lint.report import format_github, format_json, format_sarif, format_text, summary
from vramc.lint.rules import load_rules

DIAGS = [
    Diagnostic(
        "VR300",
        Severity.ERROR,
        "CUDA1 (RTX 3060) needs 13 GiB: 1.2 GiB over",
        "profiles/a b.yaml",
        Span(12, 5, 12, 20),
        ("settings",),
        "use gpu_layers: 28",
        "chat@stable",
    ),
    Diagnostic(
        "VR301", Severity.WARNING, "100% used, line1\nline2", "profiles/x,y.yaml", Span(3, 1, 5, 2), ("margin",)
    ),
    Diagnostic("VR309", Severity.INFO, "some layers on the CPU", "profiles/c.yaml", None),
]


def test_text_is_path_line_col_code_message():
    lines = format_text(DIAGS, load_rules()).splitlines()
    assert lines[0] == (
        "profiles/a b.yaml:12:5: VR300 error: [chat@stable] CUDA1 (RTX 3060) needs 13 GiB: "
        "1.2 GiB over; use gpu_layers: 28"
    )
    assert lines[1].endswith("100% used, line1\\nline2")
    assert lines[2].startswith("profiles/c.yaml:1:1: VR309 info: ")


def test_summary_counts():
    assert summary(DIAGS, 3) == "1 error, 1 warning, 1 note in 3 files"
    assert summary([], 1) == "no problems in 1 file"


def test_json_records():
    doc = json.loads(format_json(DIAGS, load_rules()))
    assert doc["version"] == 1
    first = doc["diagnostics"][0]
    assert first["code"] == "VR300" and first["slug"] == "does-not-fit"
    assert (first["line"], first["column"], first["end_line"], first["end_column"]) == (12, 5, 12, 20)
    assert first["deployment"] == "chat@stable" and first["path"] == ["settings"]
    assert doc["summary"] == {"error": 1, "warning": 1, "info": 1}


def test_github_annotations_escape_properties_and_data():
    out = format_github(DIAGS, load_rules()).splitlines()
    assert out[0].startswith("::error file=profiles/a b.yaml,line=12,col=5,endColumn=20,title=VR300 does-not-fit::")
    # a multi-line span gives endLine and no column; ',' in the file name and '%'/newline escaped
    assert out[1].startswith("::warning file=profiles/x%2Cy.yaml,line=3,endLine=5,title=VR301 below-margin::")
    assert out[1].endswith("100%25 used, line1%0Aline2")
    assert out[2].startswith("::notice ")


def test_sarif_structure():
    doc = json.loads(format_sarif(DIAGS, load_rules()))
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert ids == sorted(ids) and "VR300" in ids
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        loc = res["locations"][0]["physicalLocation"]
        assert loc["region"]["startLine"] >= 1 and not loc["artifactLocation"]["uri"].startswith("/")
        assert res["level"] in ("error", "warning", "note")
        assert len(res["partialFingerprints"]["vramcDiagnostic/v1"]) == 32
    assert [r["level"] for r in run["results"]] == ["error", "warning", "note"]
    # fingerprints are stable across runs and differ between findings
    again = json.loads(format_sarif(DIAGS, load_rules()))
    fps = [r["partialFingerprints"] for r in run["results"]]
    assert fps == [r["partialFingerprints"] for r in again["runs"][0]["results"]]
    assert len({json.dumps(f) for f in fps}) == 3
