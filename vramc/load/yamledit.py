"""Safe, layout-preserving edits of a user's YAML file: the one way vramc writes into a profile.

`vramc fit --write` puts the solver's choices into the profile the user wrote; every comment,
blank line, key order, quoting style, line ending and the file's mode stay as they were. Edits are
made on the text at the positions the YAML composer reports, so nothing is re-serialised except
the value being set.

API (stable; other modules build on it):

    ed = Editor.open(path)                 # or Editor(text, file) for text in memory
    ed.set(("deployments", 1, "settings"), "gpu_layers", 33, comment="vramc fit: auto")
    ed.marked("vramc fit: auto")           # -> [(("deployments", 1, "settings"), "gpu_layers")]
    ed.save()                              # atomic; False when nothing changed
    write_new(path, text)                  # a whole file vramc generated (analyze --write)

- A path is a tuple of mapping keys (str) and list indices (int), from the top of the file to the
  mapping that holds `key`. Mappings on the path that do not exist yet are created (block style
  under a block mapping, flow style inside a flow one); list items are never created.
- What one `set` changes: the bytes of that one value (a key that has its value already keeps its
  bytes); or, where the key is absent, one new line in a block mapping (one more per mapping it
  has to create) or one `key: value` entry in a flow mapping. Nothing else.
- `comment` puts ` # comment` after the value on its line (block style). A value whose line
  comment already holds that text keeps exactly one copy; other comments on the line stay after
  it. Inside a flow mapping a comment cannot sit on the value's line alone, so none is written
  there and `set` returns False (True otherwise).
- `marked(marker)`: the (path, key) of every block-style value whose line comment holds `marker`
  as one of its `#` parts.
- Every `set` re-reads the edited text with vramc's own loader (vramc.load.yamlpos.load_text) and keeps
  the edit only if it gives exactly the original data with that one change. A write that cannot be
  made safely raises EditRefused and leaves the text (and so the file) as it was: the file does not
  load cleanly; the value or a mapping on the path is an alias, or an anchored node that an alias
  elsewhere shares; the value is a block or multi-line scalar, or a multi-line collection; a step
  of the path is not a mapping (or not a list, for an index); or the result would not reload to
  the expected data.
- `save` writes with vramc.writer.write_atomic (temporary file, fsync, rename; mode, owner and a
  symlink kept), and refuses if the file changed on disk since `open` read it. OSError from the
  write is left to the caller (the CLI prints it and exits 1).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from vramc.load.yamlpos import _Loader, _scalar, load_text

BOM = "\ufeff"


class EditRefused(ValueError):
    """An edit vramc will not make, because it could not be made safely; nothing was changed."""

    def __init__(self, file: str, path: tuple, key, reason: str, line: int | None = None, column: int | None = None):
        self.file, self.path, self.key, self.reason = file, tuple(path), key, reason
        self.line, self.column = line, column
        super().__init__(str(self))

    @property
    def where(self) -> str:
        """The key as a dotted path: deployments[1].settings.gpu_layers."""
        out = ""
        for seg in self.path + (() if self.key is None else (self.key,)):
            out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
        return out or "the file"

    def __str__(self) -> str:
        at = f":{self.line}:{self.column}" if self.line else ""
        return f"{self.file}{at}: cannot set {self.where}: {self.reason}; the file was left as it was"


def _plain_numbers(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    return value


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NOT_PLAIN = {"yes", "no", "true", "false", "on", "off", "null"}  # PyYAML reads these as bools/null


def flow(value) -> str:
    """A value in YAML flow style, on one line: 33, [16, 12], auto, '0755' (whole floats as ints)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in _NOT_PLAIN:
        return value
    # Dumped as the only item of a flow list, so strings get the quoting a flow context needs
    # (a plain `a, b` would split in `{k: a, b}`).
    text = yaml.safe_dump(
        [_plain_numbers(value)], default_flow_style=True, width=10**9, allow_unicode=True, sort_keys=False
    ).strip()
    return text[1:-1]


def _same(a, b) -> bool:
    """Equal as data: bools and strings by type too; numbers by value (16.0 is written as 16)."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _key_of(node):
    """A key as vramc.load.yamlpos keys its paths (str or int; other scalars as str)."""
    key = _scalar(node)
    return key if isinstance(key, (str, int)) and not isinstance(key, bool) else str(key)


def _comment_parts(comment: str) -> list[str]:
    return [p.strip() for p in re.split(r"(?:^|\s)#", comment) if p.strip()]


class _Doc:
    """One parse of the text: its data (as vramc loads it) and its node graph (for positions)."""

    def __init__(self, text: str, file: str, loaded=None):
        loaded = loaded or load_text(text, file)
        if loaded.diagnostics:
            d = loaded.diagnostics[0]
            raise EditRefused(
                file,
                (),
                None,
                f"it does not load cleanly ({d.code}: {d.message})",
                d.span.line if d.span else None,
                d.span.column if d.span else None,
            )
        self.data = loaded.data
        self.root = yaml.compose(text, Loader=_Loader)
        # How often each node is referred to: more than once means an anchor that an alias shares.
        self.refs: dict[int, int] = {}
        stack = [self.root] if self.root is not None else []
        if stack:
            self.refs[id(self.root)] = 1
        while stack:
            node = stack.pop()
            for child in _children(node):
                self.refs[id(child)] = self.refs.get(id(child), 0) + 1
                if self.refs[id(child)] == 1:
                    stack.append(child)

    def shared(self, node) -> bool:
        return self.refs.get(id(node), 0) > 1

    def anchors_shared_inside(self, node) -> bool:
        """Whether replacing `node`'s text would drop an anchor that an alias elsewhere uses.
        (An alias inside it is no node of its own: its node lies where the anchor is.)"""
        lo, hi = node.start_mark.index, node.end_mark.index
        seen, stack = set(), list(_children(node))
        while stack:
            n = stack.pop()
            if id(n) in seen or not lo <= n.start_mark.index < hi:
                continue
            seen.add(id(n))
            if self.shared(n):
                return True
            stack.extend(_children(n))
        return False


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class Editor:
    def __init__(self, text: str, file: str = "<profile>"):
        self.text = text
        self.file = file
        self.path: Path | None = None
        self._disk: bytes | None = None
        self._original = text
        self._doc: _Doc | None = None
        self._doc_text: str | None = None
        self._verified = None  # what the last edit's reload check loaded, reused by the next edit

    @classmethod
    def open(cls, path, display: str | None = None) -> "Editor":
        """Read a file to edit (OSError if it cannot be read; EditRefused if it is not UTF-8)."""
        path = Path(path)
        raw = path.read_bytes()
        display = display or str(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EditRefused(display, (), None, f"it is not UTF-8 text ({e.reason} at byte {e.start})") from None
        ed = cls(text, display)
        ed.path, ed._disk = path, raw
        return ed

    @property
    def changed(self) -> bool:
        return self.text != self._original

    def save(self) -> bool:
        """Write the edited text back atomically; False when there was nothing to write."""
        from vramc.writer import write_atomic

        if self.path is None:
            raise ValueError("this Editor was made from text, not opened from a file")
        if not self.changed:
            return False
        if self.path.read_bytes() != self._disk:
            raise EditRefused(
                self.file, (), None, "it changed on disk while vramc was working on it; run the command again"
            )
        write_atomic(self.path, self.text.encode("utf-8"))
        self._disk, self._original = self.text.encode("utf-8"), self.text
        return True

    # --- reading ---------------------------------------------------------------------------------
    def _parse(self) -> _Doc:
        if self._doc is None or self._doc_text != self.text:
            loaded = self._verified if self._verified and self._verified.text == self.text else None
            self._doc, self._doc_text = _Doc(self.text, self.file, loaded), self.text
        return self._doc

    def _line_end(self, i: int) -> int:
        """The index of the line break (or the end of the text) at or after `i`."""
        ends = [j for j in (self.text.find("\n", i), self.text.find("\r", i)) if j >= 0]
        return min(ends) if ends else len(self.text)

    def _line_comment(self, after: int, text: str | None = None) -> str | None:
        """The comment between `after` and the end of its line, if the rest of the line is one."""
        text = self.text if text is None else text
        ends = [j for j in (text.find("\n", after), text.find("\r", after)) if j >= 0]
        stripped = text[after : min(ends) if ends else len(text)].lstrip(" \t")
        return stripped if stripped.startswith("#") else None

    def marked(self, marker: str) -> list[tuple[tuple, object]]:
        """The (mapping path, key) of every block-style value whose line comment holds `marker`."""
        if self.text.startswith(BOM):
            return Editor(self.text[1:], self.file).marked(marker)
        doc = self._parse()
        out: list[tuple[tuple, object]] = []
        seen: set[int] = set()

        def walk(node, path: tuple):
            if id(node) in seen:
                return
            seen.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    walk(item, path + (i,))
            elif isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    key = _key_of(k) if isinstance(k, yaml.ScalarNode) else None
                    if key is None:
                        continue
                    if not node.flow_style:
                        if isinstance(v, yaml.ScalarNode) or v.flow_style:
                            comment = self._line_comment(v.end_mark.index)
                        else:  # a block collection: its comment sits after `key:`
                            m = re.match(r"[ \t]*:", self.text[k.end_mark.index :])
                            comment = self._line_comment(k.end_mark.index + m.end()) if m else None
                        if comment and marker in _comment_parts(comment):
                            out.append((path, key))
                    walk(v, path + (key,))

        if doc.root is not None:
            walk(doc.root, ())
        return out

    # --- writing ---------------------------------------------------------------------------------
    def set(self, path: tuple, key, value, comment: str | None = None) -> bool:
        """Set `key` in the mapping at `path` to `value` (see the module docstring)."""
        if self.text.startswith(BOM):  # libyaml's marks do not count a byte-order mark: edit after it
            inner = Editor(self.text[1:], self.file)
            placed = inner.set(path, key, value, comment)
            self.text = BOM + inner.text
            return placed
        path = tuple(path)
        if comment is not None and (not comment.strip() or re.search(r"[\r\n\x85\u2028\u2029]", comment)):
            raise ValueError(f"a comment must be one non-empty line, not {comment!r}")
        doc = self._parse()

        def refuse(reason: str, node=None):
            mark = node.start_mark if node is not None else None
            raise EditRefused(
                self.file, path, key, reason, mark.line + 1 if mark else None, mark.column + 1 if mark else None
            )

        text_value = flow(value)
        if re.search(r"[\r\n\x85\u2028\u2029]", text_value):
            refuse("the value does not fit on one line")
        node = doc.root
        if node is None:
            refuse("the file is empty")
        expected = _shallow(doc.data)  # copied along the path only; the rest is shared, never changed
        target = expected
        missing: tuple = ()
        for i, seg in enumerate(path):
            here = path[:i]
            if doc.shared(node):
                refuse("it is inside a YAML anchor that an alias shares; edit it by hand", node)
            if isinstance(seg, int) and not isinstance(seg, bool):
                if not isinstance(node, yaml.SequenceNode):
                    refuse(f"{_show(here)} is not a list", node)
                if not 0 <= seg < len(node.value):
                    refuse(f"{_show(here)} has no item {seg}", node)
                target[seg] = _shallow(target[seg])
                node, target = node.value[seg], target[seg]
                continue
            if not isinstance(node, yaml.MappingNode):
                refuse(f"{_show(here)} is not a mapping", node)
            found = _lookup(node, seg)
            if found is None:
                missing = path[i:]
                if any(not isinstance(s, str) for s in missing):
                    refuse(f"{_show(path[: i + 1])} does not exist", node)
                break
            target[seg] = _shallow(target[seg])
            node, target = found[1], target[seg]
        else:
            if doc.shared(node):
                refuse("it is inside a YAML anchor that an alias shares; edit it by hand", node)
            if not isinstance(node, yaml.MappingNode):
                refuse(f"{_show(path)} is not a mapping", node)

        placed = True
        if missing:
            for seg in missing:
                target[seg] = {}
                target = target[seg]
            target[key] = copy.deepcopy(value)
            new_text, placed = self._insert(doc, node, missing, key, text_value, comment)
        else:
            found = _lookup(node, key)
            target[key] = copy.deepcopy(value)
            if found is None:
                new_text, placed = self._insert(doc, node, (), key, text_value, comment)
            else:
                new_text, placed = self._replace(doc, node, found, path, key, value, text_value, comment, refuse)
        if new_text == self.text:
            return placed
        self._verified = self._verify(new_text, expected, path, key)
        self.text = new_text
        return placed

    def _replace(self, doc, mapping, found, path, key, value, text_value, comment, refuse):
        knode, vnode = found
        if doc.shared(vnode):
            refuse("its value is a YAML alias, or an anchor that an alias shares; edit it by hand", vnode)
        if isinstance(vnode, yaml.ScalarNode):
            if vnode.style in ("|", ">"):
                refuse("its value is a block scalar (| or >); edit it by hand", vnode)
        elif not vnode.flow_style:
            refuse("its value is a block collection over several lines; edit it by hand", vnode)
        elif doc.anchors_shared_inside(vnode):
            refuse("its value holds a YAML anchor that an alias shares; edit it by hand", vnode)
        if vnode.start_mark.line != vnode.end_mark.line:
            refuse("its value spans several lines; edit it by hand", vnode)
        a, b = vnode.start_mark.index, vnode.end_mark.index
        current = _plain_value(doc.data, path, key)
        text = self.text
        if not _same(current, _plain_numbers(value)):
            new = text_value if a != b else " " + text_value  # `key:` with no value yet
            text = text[:a] + new + text[b:]
            b = a + len(new)
        if comment is None:
            return text, True
        if mapping.flow_style:
            return text, False
        existing = self._line_comment(b, text)
        if existing is not None and comment.strip() in _comment_parts(existing):
            return text, True
        return text[:b] + "  # " + comment.strip() + text[b:], True

    def _insert(self, doc, mapping, missing: tuple, key, text_value: str, comment):
        """Add `missing...: key: value` to `mapping`, where none of it exists yet."""
        text = self.text
        if mapping.flow_style:
            entry = f"{flow(key)}: {text_value}"
            for seg in reversed(missing):
                entry = f"{flow(seg)}: {{{entry}}}"
            if not mapping.value:
                brace = text.index("{", mapping.start_mark.index)
                return text[: brace + 1] + entry + text[brace + 1 :], comment is None
            end = _content_end(text, mapping)
            return text[:end] + ", " + entry + text[end:], comment is None
        # a block mapping: new lines after its last content, at its keys' indentation
        indent = mapping.value[0][0].start_mark.column
        step = _indent_step(doc.root, mapping)
        end = _content_end(text, mapping)
        if end > 0 and text[end - 1] in "\n\r":  # the content ends with its line break (a block scalar)
            at = end
        else:
            at = self._line_end(end)
            at += 2 if text.startswith("\r\n", at) else (1 if at < len(text) else 0)
        nl = _newline_before(text, at)
        lines = []
        for depth, seg in enumerate(missing):
            lines.append(" " * (indent + depth * step) + f"{flow(seg)}:")
        line = " " * (indent + len(missing) * step) + f"{flow(key)}: {text_value}"
        if comment is not None:
            line += "  # " + comment.strip()
        lines.append(line)
        if at == len(text) and (not text or text[-1] not in "\n\r"):  # no final line break: keep it so
            return text + "".join(nl + x for x in lines), True
        return text[:at] + "".join(x + nl for x in lines) + text[at:], True

    def _verify(self, new_text: str, expected, path: tuple, key):
        loaded = load_text(new_text, self.file)
        if loaded.diagnostics or not _same(loaded.data, expected):
            d = loaded.diagnostics[0].message if loaded.diagnostics else "other values would change"
            raise EditRefused(
                self.file, path, key, f"the edited file would not load back as intended ({d}); edit it by hand"
            )
        return loaded


def _shallow(data):
    return dict(data) if isinstance(data, dict) else list(data) if isinstance(data, list) else data


def _show(path: tuple) -> str:
    return EditRefused("", path, None, "").where


def _lookup(mapping, key):
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and _key_of(k) == key and type(_key_of(k)) is type(key):
            return k, v
    return None


def _plain_value(data, path: tuple, key):
    for seg in path:
        data = data[seg]
    return data[key]


_ALIAS_VALUE = re.compile(r"[ \t]*:[ \t]*\*[^\s,\[\]{}]+")


def _content_end(text: str, mapping) -> int:
    """Where the mapping's last content ends in the text (nodes shared from elsewhere skipped)."""
    lo, hi = mapping.start_mark.index, mapping.end_mark.index
    end = mapping.value[-1][0].end_mark.index if mapping.value else lo
    for k, v in mapping.value:
        if not lo <= v.start_mark.index < hi:  # `key: *alias`: the alias has no node of its own here
            m = _ALIAS_VALUE.match(text, k.end_mark.index)
            if m:
                end = max(end, m.end())
    stack, seen = [n for pair in mapping.value for n in pair], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if lo <= n.start_mark.index < hi:
            if isinstance(n, yaml.ScalarNode) or n.flow_style:
                end = max(end, n.end_mark.index)
            else:  # a block collection ends at the next token, after any comments: look inside
                stack.extend(_children(n))
    if mapping.flow_style:
        end = min(end, hi - 1)  # before the closing brace
    return end


def _indent_step(root, near) -> int:
    """How far this file indents a nested block mapping (the first one found; else 2)."""

    def step_of(m):
        for _, v in m.value:
            if isinstance(v, yaml.MappingNode) and not v.flow_style and v.value:
                d = v.value[0][0].start_mark.column - m.value[0][0].start_mark.column
                if d > 0:
                    return d
        return None

    found = step_of(near)
    if found:
        return found
    stack = [root]
    seen = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode) and not n.flow_style and n.value:
            found = step_of(n)
            if found:
                return found
        stack.extend(_children(n))
    return 2


def _newline_before(text: str, at: int) -> str:
    """The line break that ends the line before `at` (else the file's first; "\\n" if it has none)."""
    if text[:at].endswith("\r\n"):
        return "\r\n"
    if text[:at].endswith(("\n", "\r")):
        return text[at - 1]
    m = re.search(r"\r\n|\n|\r", text)
    return m.group() if m else "\n"


class WriteRefused(EditRefused):
    """A whole file vramc will not replace (write_new)."""

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}; the file was left as it was"


# a profile is a few KiB; a file larger than this is no profile (a GGUF model is gigabytes)
MAX_REPLACED = 4 * 1024 * 1024


def write_new(path, text: str, file: str | None = None) -> None:
    """Write a whole file vramc generated, after checking that it loads cleanly as YAML, replacing
    an existing file only if it is a profile of the same kind (`analyze --write` re-locks a model
    profile; `analyze X.gguf --write X.gguf` replaced the model itself, and `--write` at a
    deployment profile replaced it with a model profile)."""
    from vramc.writer import write_atomic

    shown = file or str(path)
    loaded = load_text(text, shown)
    if loaded.diagnostics:  # a generator bug: never leave it on the user's disk
        raise EditRefused(
            shown,
            (),
            None,
            f"vramc generated YAML that does not load ({loaded.diagnostics[0].message}); please report this",
        )
    _check_replaceable(Path(path), loaded.data, shown)
    write_atomic(Path(path), text.encode("utf-8"))


def _check_replaceable(path: Path, new, shown: str) -> None:
    import os
    import stat

    from vramc.load.profiles import _kind_of
    from vramc.writer import read_regular

    try:
        st = os.stat(path)  # through a link: the file it points to is what would be replaced
    except OSError:
        return  # nothing there (or a dangling link): a new file; other errors are the write's
    kind = _kind_of(new) if isinstance(new, dict) else None
    what = f"a {kind} profile" if kind else "a profile vramc wrote"
    refuse = f"it exists and is not {what}, so vramc will not replace it; write to another path"
    if stat.S_ISDIR(st.st_mode):
        return  # the write says "Is a directory"
    if not stat.S_ISREG(st.st_mode):
        raise WriteRefused(
            shown, (), None, "it is not a regular file, so vramc will not replace it; write to another path"
        )
    raw = read_regular(path, MAX_REPLACED)  # None: larger (a model), unreadable, swapped
    try:
        old_text = raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        old_text = None
    if old_text is None:
        raise WriteRefused(shown, (), None, refuse)
    old = load_text(old_text, shown).data
    if old_text.strip() and not (isinstance(old, dict) and kind is not None and _kind_of(old) == kind):
        raise WriteRefused(shown, (), None, refuse)
