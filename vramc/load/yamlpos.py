"""Load YAML into plain Python values plus a table of source positions.

The profile models stay plain pydantic; positions live beside them, keyed by the path of each value
(("settings", "tensor_split", 1)), so any finding about any value can name its line and column.
We compose the node graph (C loader when available) and construct scalars ourselves, which lets us
report duplicate keys at the key and refuse merge keys, instead of PyYAML silently taking the last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from vramc.diagnostics import Diagnostic, Span
from vramc.lint.codes import diagnostic

try:  # the C loader composes ~10x faster; fall back where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader

_constructor = yaml.constructor.SafeConstructor()
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"


def _scalar(node):
    # Most scalars are plain strings and small integers: build those directly (the generic
    # constructor costs ~30 us a scalar, which dominates reading a large locked tensor table).
    if node.tag == _STR_TAG:
        return node.value
    if node.tag == _INT_TAG and node.value.isdigit() and not node.value.startswith("0"):
        return int(node.value)
    return _constructor.construct_object(node)


def _span(node) -> Span:
    s, e = node.start_mark, node.end_mark
    return Span(s.line + 1, s.column + 1, e.line + 1, e.column + 1)


@dataclass
class Positions:
    """Where each path's key and value sit in the file."""

    keys: dict[tuple, Span] = field(default_factory=dict)
    values: dict[tuple, Span] = field(default_factory=dict)

    def locate(self, path: tuple, prefer_key: bool = False) -> Span | None:
        """The span of the longest recorded prefix of `path` (the value, or the key if asked)."""
        path = tuple(path)
        while True:
            table = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            for t in table:
                if path in t:
                    return t[path]
            if not path:
                return None
            path = path[:-1]

    def sub(self, prefix: tuple) -> "Positions":
        """Positions re-rooted at `prefix`, for a document embedded in another."""
        n = len(prefix)
        out = Positions()
        for src, dst in ((self.keys, out.keys), (self.values, out.values)):
            for p, s in src.items():
                if p[:n] == prefix:
                    dst[p[n:]] = s
        return out


@dataclass
class Loaded:
    file: str
    data: object
    positions: Positions
    text: str
    diagnostics: list[Diagnostic]


# Aliases may repeat a node many times ("billion laughs"); no profile needs anywhere near this.
MAX_NODES = 200_000


class _TooLarge(Exception):
    pass


class _Walker:
    def __init__(self, file: str):
        self.file = file
        self.positions = Positions()
        self.diagnostics: list[Diagnostic] = []
        self.nodes = 0
        self.open: set[int] = set()  # collections being walked: an alias back to one is a cycle

    def walk(self, node, path: tuple):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge
        self.positions.values[path] = _span(node)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in self.open:
                self.diagnostics.append(
                    diagnostic(
                        "VR003",
                        "a YAML alias refers to the collection that contains it",
                        self.file,
                        _span(node),
                        path,
                        "remove the recursive alias",
                    )
                )
                return None
            self.open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self.open.discard(id(node))
        return _scalar(node)

    def _collection(self, node, path: tuple):
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.diagnostics.append(
                        diagnostic(
                            "VR003",
                            "YAML merge keys (<<) are not supported in profiles",
                            self.file,
                            _span(key_node),
                            path,
                            "write the keys out, or use a variant",
                        )
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.diagnostics.append(
                        diagnostic(
                            "VR003",
                            "mapping keys must be plain scalars",
                            self.file,
                            _span(key_node),
                            path,
                        )
                    )
                    continue
                key = _scalar(key_node)
                if not isinstance(key, (str, int)):
                    key = str(key)
                child = path + (key,)
                if key in out:
                    first = self.positions.keys.get(child)
                    where = f" (first at line {first.line})" if first else ""
                    self.diagnostics.append(
                        diagnostic(
                            "VR002",
                            f"duplicate key {key!r}{where}",
                            self.file,
                            _span(key_node),
                            child,
                            "remove one of them: YAML keeps only the last, silently",
                        )
                    )
                    continue
                self.positions.keys[child] = _span(key_node)
                out[key] = self.walk(value_node, child)
            return out
        return [self.walk(item, path + (i,)) for i, item in enumerate(node.value)]


# Deeper flow nesting is refused before parsing: libyaml's composer recurses in C and crashes the
# process (no RecursionError) somewhere past 50,000 levels; a profile needs a handful.
MAX_FLOW_DEPTH = 1000


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ ] and { } (quotes ignored: an overestimate at worst)."""
    depth = deepest = 0
    for c in re.sub(r"[^\[\]{}]+", "", text):
        depth = depth + 1 if c in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _tab_at(text: str, line: int, column: int) -> tuple[int, int, bool] | None:
    """The tab that a syntax error at (line, column) is about: (line, column, in the indentation).

    Both PyYAML and libyaml stop at a tab with "found character that cannot start any token",
    which does not tell a person that the character is an invisible tab."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    row = lines[line]
    if column < len(row) and row[column] == "\t":
        return line, column, not row[:column].strip()
    lead = row[: len(row) - len(row.lstrip(" \t"))]
    if "\t" in lead:
        return line, lead.index("\t"), True
    return None


def _reader_error(e: yaml.reader.ReaderError, text: str, file: str) -> Diagnostic:
    """A character YAML does not allow in a file (a control character such as NUL or BEL): where it
    is and what it is, not PyYAML's `#x0007 ... in "<unicode string>", position 42`."""
    where = e.position if isinstance(e.position, int) and 0 <= e.position <= len(text) else 0
    line = text.count("\n", 0, where)
    column = where - (text.rfind("\n", 0, where) + 1)
    char = e.character if isinstance(e.character, str) else text[where : where + 1]
    n = ord(char) if len(char) == 1 else 0
    escape = f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
    return diagnostic(
        "VR001",
        f"YAML does not allow U+{n:04X} (a non-printable character) in a file",
        file,
        Span(line + 1, column + 1, line + 1, column + 2),
        (),
        f'remove it, or write it as "{escape}" inside a double-quoted string if it is meant',
    )


def load_text(text: str, file: str) -> Loaded:
    walker = _Walker(file)
    data: object = None
    try:
        if _flow_depth(text) > MAX_FLOW_DEPTH:
            raise RecursionError
        node = yaml.compose(text, Loader=_Loader)
        if node is not None:
            data = walker.walk(node, ())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        span = Span(mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 1) if mark else None
        problem = e.problem or e.context or "invalid YAML"
        hint = "fix the YAML syntax (yamllint shows more detail)"
        tab = _tab_at(text, mark.line, mark.column) if mark else None
        if tab is not None:
            line, col, indent = tab
            span = Span(line + 1, col + 1, line + 1, col + 2)
            problem = "YAML forbids tabs for indentation" if indent else "YAML does not allow a tab here"
            hint = "indent with spaces" if indent else "use spaces"
        walker.diagnostics.append(diagnostic("VR001", f"YAML syntax error: {problem}", file, span, (), hint))
        data = None
    except yaml.reader.ReaderError as e:
        walker.diagnostics.append(_reader_error(e, text, file))
        data = None
    except yaml.YAMLError as e:
        walker.diagnostics.append(diagnostic("VR001", f"YAML error: {e}", file, None, ()))
        data = None
    except _TooLarge:
        walker.diagnostics.append(
            diagnostic(
                "VR003",
                f"the YAML expands to more than {MAX_NODES} values (aliases?)",
                file,
                None,
                (),
                "write the profile out without aliases",
            )
        )
        data = None
    except RecursionError:
        walker.diagnostics.append(
            diagnostic(
                "VR003",
                "the YAML is nested too deeply",
                file,
                None,
                (),
                "a profile needs a few levels of nesting, not hundreds",
            )
        )
        data = None
    except (ValueError, TypeError) as e:  # e.g. a timestamp PyYAML cannot construct
        walker.diagnostics.append(diagnostic("VR001", f"YAML value error: {e}", file, None, ()))
        data = None
    return Loaded(file, data, walker.positions, text, walker.diagnostics)


def load_file(path, display: str | None = None) -> Loaded:
    display = display or str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Loaded(
            display,
            None,
            Positions(),
            "",
            [
                diagnostic(
                    "VR000",
                    f"not UTF-8 text ({e.reason} at byte {e.start})",
                    display,
                    None,
                    (),
                    "save the profile as UTF-8",
                )
            ],
        )
    except OSError as e:
        return Loaded(
            display,
            None,
            Positions(),
            "",
            [diagnostic("VR000", f"cannot read file: {e.strerror}", display, None, ())],
        )
    return load_text(text, display)
