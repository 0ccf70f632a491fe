"""The one diagnostic type every stage of vramc reports through.

YAML syntax errors, schema errors, GGUF read failures and lint findings all become `Diagnostic`s,
sorted by file and position, so that every output format shows them the same way.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}; use error, warning or info") from None


# Values in messages are shown as YAML writes them, the language the user wrote them in: `true`,
# `"0"`, `{a: 1}`, `.nan`, never Python's repr (`True`, `'0'`, `{'a': 1}`, `nan`, `b'...'`).
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def show_value(value: object, limit: int = 40) -> str:
    """`value` in YAML flow style, cut to `limit` characters ("..." marks a cut)."""
    text = _yaml(value)
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def show_bytes(data: bytes) -> str:
    """Raw bytes from a file as a YAML double-quoted string: printable ASCII as text ("# Lo"),
    any other byte in hex ("general.\\xff")."""
    out = []
    for b in data:
        c = chr(b)
        out.append("\\" + c if c in '"\\' else c if 32 <= b < 127 else f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def _yaml(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a YAML double-quoted one
    if isinstance(v, (bytes, bytearray)):
        return show_bytes(bytes(v))
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)}: {_yaml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml(x) for x in v) + "]"
    return str(v)


def _key(k: object) -> str:
    if isinstance(k, str) and _PLAIN_KEY.fullmatch(k) and k.lower() not in _YAML_WORDS:
        return k
    return _yaml(k)


@dataclass(frozen=True)
class Span:
    """1-based start and end of a region in a file."""

    line: int
    column: int
    end_line: int
    end_column: int

    def __post_init__(self) -> None:
        # 0 is the classic off-by-one from PyYAML marks; refuse it early (ansible-lint does the same).
        if self.line < 1 or self.column < 1:
            raise ValueError(f"positions are 1-based, got {self.line}:{self.column}")


@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    file: str
    span: Span | None = None
    path: tuple[str | int, ...] = ()  # key path in the profile, e.g. ("settings", "tensor_split", 1)
    hint: str = ""  # what to do about it
    deployment: str = ""  # which deployment (and variant) it is about, if any
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # machine-readable extras

    @property
    def line(self) -> int:
        return self.span.line if self.span else 1

    @property
    def column(self) -> int:
        return self.span.column if self.span else 1

    def sort_key(self) -> tuple[str, int, int, str, str, str]:
        return (self.file, self.line, self.column, self.code, self.deployment, self.message)

    def one_line(self) -> str:
        """`FILE:LINE:COLUMN: CODE SEVERITY: MESSAGE`: how every command prints a diagnostic on its own."""
        return f"{self.file}:{self.line}:{self.column}: {self.code} {self.severity.label}: {self.full_message()}"

    def full_message(self) -> str:
        text = self.message
        if self.deployment:
            text = f"[{self.deployment}] {text}"
        if self.hint and text.endswith("."):  # a sentence quoted from an engine: the hint is the next one
            text = f"{text} {self.hint[:1].upper()}{self.hint[1:]}"
        elif self.hint:
            text = f"{text}; {self.hint}"
        return text


def worst(diagnostics: Iterable[Diagnostic]) -> Severity | None:
    return max((d.severity for d in diagnostics), default=None)
