"""Diagnostic output formats: text, json, github (workflow annotations) and sarif (2.1.0).

Each format is a pure function of the sorted diagnostics and the rule registry; only the CLI
prints. Formats other than text are public interfaces (CI and code scanning read them).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import PurePath

from vramc import __version__
from vramc.diagnostics import Diagnostic, Severity

FORMATS = ("text", "json", "github", "sarif")
INFO_URI = "https://github.com/vramc/vramc"


def _uri(file: str) -> str:
    return PurePath(file).as_posix()


def summary(diags: list[Diagnostic], n_files: int) -> str:
    c = Counter(d.severity for d in diags)
    parts = []
    for sev, word in ((Severity.ERROR, "error"), (Severity.WARNING, "warning"), (Severity.INFO, "note")):
        n = c.get(sev, 0)
        if n:
            parts.append(f"{n} {word}{'s' if n != 1 else ''}")
    files = f"{n_files} file{'s' if n_files != 1 else ''}"
    return f"{', '.join(parts)} in {files}" if parts else f"no problems in {files}"


def _one_line(text: str) -> str:
    # Values from profiles end up in messages; a newline in one must not forge a second finding.
    return text.replace("\r", "\\r").replace("\n", "\\n")


def format_text(diags: list[Diagnostic], rules: dict) -> str:
    lines = [
        f"{_one_line(d.file)}:{d.line}:{d.column}: {d.code} {d.severity.label}: {_one_line(d.full_message())}"
        for d in diags
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def _record(d: Diagnostic, rules: dict) -> dict:
    r = rules.get(d.code)
    span = d.span
    return {
        "code": d.code,
        "slug": r.slug if r else "",
        "severity": d.severity.label,
        "message": d.message,
        "hint": d.hint,
        "deployment": d.deployment or None,
        "file": _uri(d.file),
        "line": d.line,
        "column": d.column,
        "end_line": span.end_line if span else d.line,
        "end_column": span.end_column if span else d.column,
        "path": [p for p in d.path],
        "data": d.data,
    }


def format_json(diags: list[Diagnostic], rules: dict) -> str:
    c = Counter(d.severity.label for d in diags)
    doc = {
        "version": 1,
        "tool": "vramc",
        "tool_version": __version__,
        "diagnostics": [_record(d, rules) for d in diags],
        "summary": {k: c.get(k, 0) for k in ("error", "warning", "info")},
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _gh_escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_escape_prop(s: str) -> str:
    return _gh_escape_data(s).replace(":", "%3A").replace(",", "%2C")


def format_github(diags: list[Diagnostic], rules: dict) -> str:
    kind = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
    out = []
    for d in diags:
        r = rules.get(d.code)
        props = [f"file={_gh_escape_prop(_uri(d.file))}", f"line={d.line}"]
        if d.span and d.span.end_line != d.line:
            props.append(f"endLine={d.span.end_line}")
        else:
            props.append(f"col={d.column}")
            if d.span:
                props.append(f"endColumn={d.span.end_column}")
        title = f"{d.code} {r.slug}" if r else d.code
        props.append(f"title={_gh_escape_prop(title)}")
        out.append(f"::{kind[d.severity]} {','.join(props)}::{_gh_escape_data(d.full_message())}")
    return "\n".join(out) + ("\n" if out else "")


def _fingerprint(d: Diagnostic) -> str:
    key = "\0".join([d.code, _uri(d.file), d.deployment, ".".join(str(p) for p in d.path)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def format_sarif(diags: list[Diagnostic], rules: dict) -> str:
    from vramc.lint.registry import parse_rule_doc

    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
    used = sorted({d.code for d in diags} | set(rules))
    rule_list, index = [], {}
    for code in used:
        r = rules.get(code)
        doc = parse_rule_doc(r.doc) if r else {"summary": code, "body": ""}
        index[code] = len(rule_list)
        entry = {
            "id": code,
            "name": r.slug if r else code,
            "shortDescription": {"text": doc["summary"]},
            "fullDescription": {"text": doc["body"] or doc["summary"]},
            "help": {"text": f"vramc explain {code}"},
            "defaultConfiguration": {"level": level[r.severity] if r else "error"},
        }
        rule_list.append(entry)
    results = []
    for d in diags:
        region = {"startLine": d.line, "startColumn": d.column}
        if d.span:
            region.update(endLine=d.span.end_line, endColumn=d.span.end_column)
        results.append(
            {
                "ruleId": d.code,
                "ruleIndex": index[d.code],
                "level": level[d.severity],
                "message": {"text": d.full_message()},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _uri(d.file), "uriBaseId": "%SRCROOT%"},
                            "region": region,
                        }
                    }
                ],
                "partialFingerprints": {"vramcDiagnostic/v1": _fingerprint(d)},
            }
        )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {"name": "vramc", "version": __version__, "informationUri": INFO_URI, "rules": rule_list}
                },
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


FORMATTERS = {"text": format_text, "json": format_json, "github": format_github, "sarif": format_sarif}
