"""The one diagnostic type every stage of vramc reports through.

YAML syntax errors, schema errors, GGUF read failures and lint findings all become `Diagnostic`s,
sorted by file and position, so that every output format shows them the same way.
"""

from __future__ import annotations

import enum
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
        if self.hint:
            text = f"{text}; {self.hint}"
        return text


def worst(diagnostics: Iterable[Diagnostic]) -> Severity | None:
    return max((d.severity for d in diagnostics), default=None)
