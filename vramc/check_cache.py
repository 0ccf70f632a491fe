"""A cache of `vramc check` results per file, as ruff and mypy keep one: in pre-commit most runs
see the files the last run saw, and an edit touches one or two of them.

An entry is keyed by the checked file, the working directory, the margin and vramc's own code;
it records every file that checking it read or looked for (the file itself, the hardware and
model profiles it names, candidates for names that did not resolve, GGUF files, present or
absent) with its size and content hash (size and modification time for model files of
gigabytes), and is used only if all of them are found again, unchanged. `VRAMC_NO_CACHE=1` turns
it off.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vramc.cache import cache_root, enabled, write_atomic
from vramc.diagnostics import Diagnostic, Severity, Span

_code_hash: str | None = None


def _code() -> str:
    global _code_hash
    if _code_hash is None:
        h = hashlib.sha256()
        root = Path(__file__).parent
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
        _code_hash = h.hexdigest()
    return _code_hash


def _entry_path(file: str, margin) -> Path:
    key = repr((_code(), os.getcwd(), file, repr(margin)))
    digest = hashlib.sha256(key.encode()).hexdigest()
    return cache_root() / "checks" / f"{digest}.json"


def _stamp(path: str) -> list:
    """Size and content hash of a profile; size and mtime of a (multi-GB) model file."""
    try:
        st = os.stat(path)
        if st.st_size <= 4 * 1024 * 1024:
            with open(path, "rb") as f:
                return [path, st.st_size, hashlib.sha256(f.read()).hexdigest()]
        return [path, st.st_size, st.st_mtime_ns]
    except OSError:
        return [path, -1, 0]  # absent: appearing later must invalidate the entry


def load(file: str, margin) -> list[Diagnostic] | None:
    """The diagnostics of checking `file`, if nothing it depends on changed; else None."""
    if not enabled():
        return None
    try:
        entry = json.loads(_entry_path(file, margin).read_text())
        if any(_stamp(rec[0]) != rec for rec in entry["depends"]):
            return None
        return [_diagnostic(d) for d in entry["diagnostics"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(file: str, margin, depends: set[str], diagnostics) -> None:
    if not enabled():
        return
    entry = {"depends": [_stamp(p) for p in sorted(depends)],
             "diagnostics": [_record(d) for d in diagnostics]}
    try:
        text = json.dumps(entry)
    except (TypeError, ValueError):
        return  # something JSON cannot hold: the cache only ever saves time
    write_atomic(_entry_path(file, margin), text)


def _record(d: Diagnostic) -> dict:
    s = d.span
    return {"code": d.code, "severity": int(d.severity), "message": d.message, "file": d.file,
            "span": [s.line, s.column, s.end_line, s.end_column] if s else None,
            "path": list(d.path), "hint": d.hint, "deployment": d.deployment, "data": d.data}


def _diagnostic(r: dict) -> Diagnostic:
    return Diagnostic(r["code"], Severity(r["severity"]), r["message"], r["file"],
                      Span(*r["span"]) if r["span"] else None, tuple(r["path"]), r["hint"],
                      r["deployment"], r["data"])
