"""A cache of `vramc check` results per file, as ruff and mypy keep one: in pre-commit most runs
see the files the last run saw, and an edit touches one or two of them.

An entry is keyed by the checked file, the working directory, the margin and vramc's own code;
it records every path that checking it read or looked for (the file itself, the hardware and
model profiles it names, candidates for names that did not resolve, the folders whose presence
decides where names resolve, GGUF files), each as it was found: missing, a folder, or a file with
its size and content hash (size, modification time and inode for model files of gigabytes), and
where a symlink led. It is used only if all of them are found again the same.
`VRAMC_NO_CACHE=1` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from vramc.cache import cache_root, enabled, read_entry, write_entry
from vramc.diagnostics import Diagnostic, Severity, Span

_code_hash: str | None = None
HASH_LIMIT = 4 * 1024 * 1024  # profiles are hashed; bigger files (models) are stamped by stat


def _code() -> str:
    global _code_hash
    if _code_hash is None:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parents[1]  # the whole vramc package
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
    """What is at `path` now, as a JSON list: [path, where it leads, kind, ...].

    Only a regular file is opened (a FIFO would block, /dev/zero never end), without blocking, and
    only one of at most HASH_LIMIT bytes is read: its content hash; a bigger one is stamped by
    size, modification time and inode. Where a symlink (or a linked folder above) leads is part
    of the stamp, so a link pointed elsewhere is a change even to a file of the same content.
    """
    try:
        real = os.path.realpath(path)
        st = os.stat(path)
    except OSError as e:  # absent, or unreadable (another answer than absent)
        return [path, "", "missing", e.errno or 0]
    except ValueError:
        return [path, "", "missing", 0]
    if stat.S_ISDIR(st.st_mode):
        return [path, real, "dir"]
    if not stat.S_ISREG(st.st_mode):
        return [path, real, "other", stat.S_IFMT(st.st_mode)]
    if st.st_size <= HASH_LIMIT:
        digest = _hash_small(path)
        if digest is not None:
            return [path, real, "file", st.st_size, digest]
    return [path, real, "file", st.st_size, st.st_mtime_ns, st.st_ino]


def _hash_small(path: str) -> str | None:
    from vramc.writer import read_regular

    data = read_regular(path, HASH_LIMIT)  # None also when swapped for a FIFO since the stat
    return None if data is None else hashlib.sha256(data).hexdigest()


def load(file: str, margin) -> list[Diagnostic] | None:
    """The diagnostics of checking `file`, if nothing it depends on changed; else None.

    An entry that is not what `store` writes (cut short, edited, of another shape) is a miss."""
    if not enabled():
        return None
    text = read_entry(_entry_path(file, margin))
    if text is None:
        return None
    try:
        entry = json.loads(text)
        depends, records = entry["depends"], entry["diagnostics"]
        if not isinstance(depends, list) or not isinstance(records, list):
            return None
        for rec in depends:
            if not (isinstance(rec, list) and rec and isinstance(rec[0], str)) or _stamp(rec[0]) != rec:
                return None
        return [_diagnostic(d) for d in records]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        return None


def store(file: str, margin, depends: set[str], diagnostics) -> None:
    if not enabled():
        return
    entry = {"depends": [_stamp(p) for p in sorted(depends)], "diagnostics": [_record(d) for d in diagnostics]}
    try:
        text = json.dumps(entry)
    except (TypeError, ValueError):
        return  # something JSON cannot hold: the cache only ever saves time
    write_entry(_entry_path(file, margin), text)


def _record(d: Diagnostic) -> dict:
    s = d.span
    return {
        "code": d.code,
        "severity": int(d.severity),
        "message": d.message,
        "file": d.file,
        "span": [s.line, s.column, s.end_line, s.end_column] if s else None,
        "path": list(d.path),
        "hint": d.hint,
        "deployment": d.deployment,
        "data": d.data,
    }


def _diagnostic(r: dict) -> Diagnostic:
    """A recorded diagnostic back, or ValueError if any field is not of the type it was stored as."""
    if not isinstance(r, dict):
        raise ValueError("not a record")
    for key in ("code", "message", "file", "hint", "deployment"):
        if not isinstance(r[key], str):
            raise ValueError(f"{key} is not text")
    severity, span, path, data = r["severity"], r["span"], r["path"], r["data"]
    if type(severity) is not int or not isinstance(path, list) or not isinstance(data, dict):
        raise ValueError("bad severity, path or data")
    if not all(type(p) in (str, int) for p in path):
        raise ValueError("bad path")
    if span is not None and not (isinstance(span, list) and len(span) == 4 and all(type(x) is int for x in span)):
        raise ValueError("bad span")
    return Diagnostic(
        r["code"],
        Severity(severity),
        r["message"],
        r["file"],
        Span(*span) if span else None,
        tuple(path),
        r["hint"],
        r["deployment"],
        data,
    )
