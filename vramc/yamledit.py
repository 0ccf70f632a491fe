"""Minimal, layout-preserving edits of a YAML file: set a key under a mapping to a value.

Used by `vramc fit --write`: the chosen settings go into the profile the user wrote, and every
comment, blank line and key order stays as it was. Edits are made on the text at the positions
PyYAML reported, so nothing is re-serialised except the values being set.
"""

from __future__ import annotations

import yaml

from vramc.yamlpos import load_text


def flow(value) -> str:
    """A value in YAML flow style, on one line: 33, [16, 12], auto."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _offsets(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


class Editor:
    def __init__(self, text: str, file: str = "<profile>"):
        self.text = text
        self.file = file

    def _reload(self):
        loaded = load_text(self.text, self.file)
        if loaded.diagnostics:
            raise ValueError(f"{self.file} does not parse: {loaded.diagnostics[0].message}")
        return loaded

    def set(self, mapping_path: tuple, key: str, value) -> None:
        """Set `key` in the mapping at `mapping_path` (creating the mapping if it is missing)."""
        loaded = self._reload()
        pos, data = loaded.positions, loaded.data
        starts = _offsets(self.text)

        def off(line: int, col: int) -> int:
            return starts[line - 1] + col - 1

        node = data
        for seg in mapping_path:
            node = node.get(seg) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            span = pos.values[mapping_path + (key,)]
            a, b = off(span.line, span.column), off(span.end_line, span.end_column)
            self.text = self.text[:a] + flow(value) + self.text[b:]
            return
        if isinstance(node, dict) and node:
            mspan = pos.values[mapping_path]
            start = off(mspan.line, mspan.column)
            if self.text[start] == "{":  # flow mapping: add before the closing brace
                end = off(mspan.end_line, mspan.end_column) - 1
                while self.text[end] != "}":
                    end -= 1
                self.text = self.text[:end].rstrip() + f", {key}: {flow(value)}" + self.text[end:]
                return
            last = max((pos.values[mapping_path + (k,)] for k in node), key=lambda s: (s.end_line, s.end_column))
            first_key = pos.keys[mapping_path + (next(iter(node)),)]
            indent = " " * (first_key.column - 1)
            line_end = self.text.find("\n", off(last.end_line, last.end_column) if last.end_column > 1 else off(last.end_line, 1))
            insert_at = len(self.text) if line_end < 0 else line_end + 1
            if last.end_column == 1:  # block value ended at the start of the next line
                insert_at = off(last.end_line, 1)
            prefix = "" if insert_at == 0 or self.text[insert_at - 1] == "\n" else "\n"
            self.text = self.text[:insert_at] + f"{prefix}{indent}{key}: {flow(value)}\n" + self.text[insert_at:]
            return
        # the mapping does not exist (or is empty): create it as a flow mapping under its parent
        parent_path, name = mapping_path[:-1], mapping_path[-1]
        if isinstance(node, dict):  # `settings: {}`
            span = pos.values[mapping_path]
            a, b = off(span.line, span.column), off(span.end_line, span.end_column)
            self.text = self.text[:a] + f"{{{key}: {flow(value)}}}" + self.text[b:]
            return
        self.set(parent_path, name, {key: value})
