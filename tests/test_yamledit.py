"""Writes into a user's profile (vramc.load.yamledit, vramc.writer, `fit --write`, `analyze --write`).

The editor's guarantees are checked as a property over every shipped profile, every fixture that
parses, and a seeded corpus of generated profiles in every layout we could think of: one `set`
changes only that value's bytes (or adds one line to a block mapping, one entry to a flow
mapping), the result loads back to exactly the expected data, line endings and a missing final
newline stay as they were, and a write that cannot be made safely is refused with the text
untouched. The CLI tests run the real `vramc` in a subprocess.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from vramc.load.yamledit import Editor, EditRefused, flow, write_new
from vramc.load.yamlpos import load_text
from vramc.writer import write_atomic

ROOT = Path(__file__).resolve().parent.parent
MARK = "vramc fit: auto"
LLAMA8B = ROOT / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml"


# --- helpers -------------------------------------------------------------------------------------
def same(a, b) -> bool:
    """Equal as data, with bools and strings compared by type too (numbers by value: 16.0 == 16)."""
    if isinstance(a, (bool, str)) or isinstance(b, (bool, str)):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == [k for k in a if k in b] and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def plain(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def expected_after(data, path, key, value):
    out = copy.deepcopy(data)
    node = out
    for seg in path:
        if isinstance(node, dict) and seg not in node:
            node[seg] = {}
        node = node[seg]
    node[key] = plain(value)
    return out


def line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]


def offset(text: str, starts: list[int], line: int, col: int) -> int:
    bom = text.startswith("\ufeff") and line == 1  # libyaml's columns do not count a byte-order mark
    return starts[line - 1] + col - 1 + bom


def breaks(text: str) -> set[str]:
    return set(re.findall(r"\r\n|\r|\n", text))


def get(data, path):
    for seg in path:
        data = data[seg]
    return data


def check_set(text: str, path: tuple, key, value, *, comment=None, must_refuse=False, allow_refuse=None):
    """Apply one set to `text` and check every guarantee; returns the new text (or None if refused)."""
    before = _load_before(text)
    assert not before.diagnostics
    ed = Editor(text, "t.yaml")
    full = path + (key,)
    try:
        placed = ed.set(path, key, value, comment=comment)
    except EditRefused as e:
        assert ed.text == text, "a refused edit changed the text"
        assert "t.yaml" in str(e) and str(key) in str(e)
        if must_refuse or (allow_refuse is not None and allow_refuse(e)):
            return None
        raise AssertionError(f"refused unexpectedly: {e}\n{text}") from e
    assert not must_refuse, f"set {full} should have been refused:\n{ed.text}"
    after = ed.text
    loaded = load_text(after, "t.yaml")
    assert not loaded.diagnostics, (loaded.diagnostics, after)
    assert same(loaded.data, expected_after(before.data, path, key, value)), after
    # line breaks: no new kind of break; a missing final newline stays missing
    if breaks(text):
        assert breaks(after) <= breaks(text), (text, after)
    assert after.endswith(("\n", "\r")) == text.endswith(("\n", "\r")) or not text
    existed = isinstance(get(before.data, path) if _has(before.data, path) else None, dict) and key in get(
        before.data, path
    )
    if existed:
        span = before.positions.values[full]
        starts = line_starts(text)
        a, b = offset(text, starts, span.line, span.column), offset(text, starts, span.end_line, span.end_column)
        tail = len(text) - b
        assert after[:a] == text[:a] and after[len(after) - tail :] == text[b:], (text, after)
        assert not re.search(r"[\r\n]", after[a : len(after) - tail])
    else:
        old_lines, new_lines = text.splitlines(), after.splitlines()
        if len(new_lines) == len(old_lines):  # a flow entry: one insertion, no line break in it
            i = next(i for i, (x, y) in enumerate(zip(text, after)) if x != y)
            ins = len(after) - len(text)
            assert after[:i] + after[i + ins :] == text and not re.search(r"[\r\n]", after[i : i + ins])
        else:  # whole lines inserted together: one, plus one per mapping created
            created = sum(1 for i in range(len(path)) if not _has(before.data, path[: i + 1]))
            n = len(new_lines) - len(old_lines)
            assert n == 1 + created, (text, after)
            i = next((i for i, (x, y) in enumerate(zip(old_lines, new_lines)) if x != y), len(old_lines))
            assert new_lines[:i] + new_lines[i + n :] == old_lines, (text, after)
    if comment is not None:
        assert ((path, key) in ed.marked(comment)) == placed
        again = Editor(after, "t.yaml")
        again.set(path, key, value, comment=comment)
        assert again.text == after  # setting it again: one marker, nothing else moves
    return after


@functools.lru_cache(maxsize=8)
def _load_before(text: str):
    return load_text(text, "t.yaml")


def _has(data, path) -> bool:
    for seg in path:
        if isinstance(data, dict) and seg in data:
            data = data[seg]
        elif isinstance(data, list) and isinstance(seg, int) and 0 <= seg < len(data):
            data = data[seg]
        else:
            return False
    return True


# --- the bug of issue 10, at the editor ----------------------------------------------------------
TWO = """\
kind: deployments
hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
deployments:
  - name: a
    model: MODEL
    engine: llama-server
    settings:
      ctx: 4096   # per slot
      parallel: 1
      gpu_layers: auto
  - name: b
    model: MODEL
    engine: llama-server
    settings: {ctx: 4096, parallel: 1, gpu_layers: auto}
"""


def test_list_index_in_path_edits_that_item_only():
    text = check_set(TWO, ("deployments", 1, "settings"), "gpu_layers", 33)
    text = check_set(text, ("deployments", 0, "settings"), "gpu_layers", 33)
    assert text == TWO.replace("gpu_layers: auto", "gpu_layers: 33")


def test_path_steps_must_match_the_data():
    for path, reason in [
        (("deployments", "0"), "deployments is not a mapping"),
        (("deployments", 2, "settings"), "deployments has no item 2"),
        (("kind", "x"), "kind is not a mapping"),
        (("deployments", 0, "settings", "ctx"), "deployments[0].settings.ctx is not a mapping"),
        (("hardware", "gpus", 0, "x", 3), "hardware.gpus[0].x does not exist"),
    ]:
        with pytest.raises(EditRefused, match=re.escape(reason)) as e:
            Editor(TWO, "two.yaml").set(path, "gpu_layers", 1)
        assert str(e.value).startswith("two.yaml:") and "gpu_layers" in str(e.value)


def test_marker_comments():
    ed = Editor(TWO, "two.yaml")
    assert ed.set(("deployments", 0, "settings"), "gpu_layers", 33, comment=MARK) is True
    assert "      gpu_layers: 33  # vramc fit: auto\n" in ed.text
    assert ed.set(("deployments", 0, "settings"), "ctx", 8192, comment=MARK) is True
    assert "      ctx: 8192  # vramc fit: auto   # per slot\n" in ed.text  # the user's comment stays
    ed.set(("deployments", 0, "settings"), "ctx", 4096, comment=MARK)
    assert ed.text.count(MARK) == 2 and "ctx: 4096  # vramc fit: auto   # per slot" in ed.text
    assert ed.set(("deployments", 0, "settings"), "tensor_split", [16.0, 12.5], comment=MARK)
    assert "      tensor_split: [16, 12.5]  # vramc fit: auto\n      parallel" not in ed.text
    # a flow mapping has no line of its own for a value: no comment, and set says so
    assert ed.set(("deployments", 1, "settings"), "gpu_layers", 33, comment=MARK) is False
    assert ed.marked(MARK) == [(("deployments", 0, "settings"), k) for k in ("ctx", "gpu_layers", "tensor_split")]
    assert ed.marked("per slot") == [(("deployments", 0, "settings"), "ctx")]
    with pytest.raises(ValueError):
        ed.set(("deployments", 0, "settings"), "ctx", 1, comment="two\nlines")


def test_missing_mappings_are_created():
    text = "name: x  # top\nengine: ollama\nvariants:\n    a: {margin: 5%}\n    b:\n        margin: 5%\n"
    after = check_set(text, ("settings",), "gpu_layers", 33, comment=MARK)
    assert after.endswith("b:\n        margin: 5%\nsettings:\n    gpu_layers: 33  # vramc fit: auto\n")
    after = check_set(text, ("variants", "a", "settings"), "gpu_layers", 3)
    assert "    a: {margin: 5%, settings: {gpu_layers: 3}}\n" in after
    after = check_set(text, ("variants", "b", "settings"), "ctx", 3)
    assert after.endswith("        margin: 5%\n        settings:\n            ctx: 3\n")
    after = check_set("settings: {}\n", ("settings",), "ctx", 3)
    assert after == "settings: {ctx: 3}\n"


def test_values_are_written_as_yaml_would_read_them():
    for value in [
        "auto",
        "yes",
        "a, b",
        "#x",
        "x: y",
        "",
        "33",
        "ünï 😀",
        None,
        True,
        0.5,
        16.0,
        ["blk\\.(\\d+)\\.ffn_.*_exps\\.=CPU", "a,b=CUDA0"],
        {"k": [1, 2]},
    ]:
        check_set("settings: {ctx: 1}\nname: a\n", ("settings",), "v", value)
        check_set("settings:\n  ctx: 1\nname: a\n", ("settings",), "ctx", value)
    assert flow([16.0, 12.0]) == "[16, 12]" and flow("on") == "'on'"


@pytest.mark.parametrize(
    "text, path, key, reason",
    [
        ("a: &x {b: 1}\nc: *x\n", ("a",), "b", "anchor that an alias shares"),
        ("a: &x {b: 1}\nc: *x\n", ("c",), "b", "anchor that an alias shares"),
        ("a: &x 1\nc: *x\n", (), "c", "alias"),
        ("a: &x 1\nc: *x\n", (), "a", "alias"),
        ("a: {b: &x 1}\nc: *x\n", (), "a", "holds a YAML anchor"),
        ("d: |\n  one\n  two\ne: 1\n", (), "d", "block scalar"),
        ("d: >-\n  one\ne: 1\n", (), "d", "block scalar"),
        ("d: one\n  two\ne: 1\n", (), "d", "spans several lines"),
        ("d: {a: 1,\n  b: 2}\n", (), "d", "spans several lines"),
        ("d:\n  - 1\n", (), "d", "block collection"),
        ("? a\n: 1\n", (), "b", "would not load back as intended"),  # caught by the reload check
        ("? [a, b]\n: 1\nc: 2\n", (), "c", "does not load cleanly"),
        ("a: 1\na: 2\n", (), "b", "does not load cleanly"),
        ("a: [1, 2\n", (), "b", "does not load cleanly"),
        ("", (), "b", "the file is empty"),
        ("- 1\n", (), "b", "the file is not a mapping"),
    ],
)
def test_unsafe_writes_are_refused(text, path, key, reason):
    ed = Editor(text, "p.yaml")
    with pytest.raises(EditRefused, match=re.escape(reason)):
        ed.set(path, key, 5)
    assert ed.text == text


def test_a_byte_order_mark_stays_and_is_not_counted():
    after = check_set("\ufeffa: 1\nb: {c: 2}\n", (), "a", 5, comment=MARK)
    assert after == "\ufeffa: 5  # vramc fit: auto\nb: {c: 2}\n"
    assert check_set(after, ("b",), "d", 1) == "\ufeffa: 5  # vramc fit: auto\nb: {c: 2, d: 1}\n"


def test_keys_go_after_an_alias_value():
    assert check_set("x: &x 1\nm: {a: 1, b: *x}\n", ("m",), "k", 2) == "x: &x 1\nm: {a: 1, b: *x, k: 2}\n"
    text = "x: &x 1\nm:\n  a: 1\n  b: *x   # c\nz: 2\n"
    assert check_set(text, ("m",), "k", 2) == "x: &x 1\nm:\n  a: 1\n  b: *x   # c\n  k: 2\nz: 2\n"


def test_an_unused_anchor_is_not_shared():
    after = check_set("a: &x {b: 1}\nc: 2\n", ("a",), "b", 3)
    assert after == "a: &x {b: 3}\nc: 2\n"


# --- the property, over shipped profiles, fixtures and a generated corpus ------------------------
def _mapping_paths(data, path=()):
    if isinstance(data, dict):
        yield path
        for k, v in data.items():
            yield from _mapping_paths(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _mapping_paths(v, path + (i,))


VALUES = [33, "auto", [16.0, 12.5], "q8_0", "ünï", ["a=CPU"], 0, "yes", 4096]


def _ops_for(data, rng, limit):
    ops = []
    for path in _mapping_paths(data):
        m = get(data, path)
        if m:
            ops.append((path, rng.choice(list(m)), rng.choice(VALUES)))
        ops.append((path, rng.choice(["gpu_layers", "vramc new", "ключ"]), rng.choice(VALUES)))
    rng.shuffle(ops)
    return ops[:limit]


def _real_files():
    files = sorted((ROOT / "profiles").rglob("*.yaml")) + sorted((ROOT / "tests/fixtures/profiles").rglob("*.yaml"))
    out = []
    for f in files:
        text = f.read_bytes().decode("utf-8", errors="strict")
        if not load_text(text, str(f)).diagnostics and isinstance(load_text(text, str(f)).data, dict):
            out.append((f, text))
    return out


def test_property_over_shipped_profiles_and_fixtures():
    files = _real_files()
    assert len(files) >= 40  # every shipped profile and the fixtures that parse
    rng = random.Random(10)
    done = 0
    for f, text in files:
        loaded = load_text(text, str(f))

        def multiline(e, loaded=loaded):
            span = loaded.positions.values.get(e.path + (e.key,))
            return span is not None and span.line != span.end_line

        for path, key, value in _ops_for(loaded.data, rng, 8):
            if check_set(text, path, key, value, comment=rng.choice([None, MARK]), allow_refuse=multiline):
                done += 1
    assert done > 200


class Gen:
    """A random profile-like YAML text in every layout, and which edits it must refuse."""

    WORDS = ["alpha", "llama-server", "RTX 4090", "q8_0", "gpu-16gb", "grüße", "日本語", "naïve café", "😀 emoji"]
    ODD = ["yes", "1.5", "a, b", "#not a comment", "x: y", "", " padded ", "it's", 'say "hi"', "null"]
    COMMENTS = ["note", "tab\there\t", "ünïcode ✓ 😀", "# hash # again", "key: value", "'quote\"", MARK]

    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.step = self.r.choice([2, 2, 4])
        self.lines: list[str] = []
        self.shared: set[tuple] = set()  # edits at or under these paths touch an alias or its anchor
        self.used_anchors: set[tuple] = set()  # replacing a value that holds one of these drops it
        self.multiline: set[tuple] = set()  # values that span lines
        self.anchors: dict[str, tuple] = {}
        self.n = 0

    # data
    def settings(self):
        r = self.r
        kind = r.choice(["missing", "empty", "full", "full"])
        if kind == "missing":
            return None
        if kind == "empty":
            return {}
        s = {"ctx": r.choice([2048, 4096]), "parallel": r.randint(1, 4)}
        if r.random() < 0.7:
            s["gpu_layers"] = r.choice(["auto", 33, "all"])
        if r.random() < 0.3:
            s["tensor_split"] = [16, 12.5]
        return s

    def deployment(self, i):
        r = self.r
        d = {"name": f"dep{i}", "model": r.choice(self.WORDS), "engine": r.choice(["llama-server", "ollama"])}
        if r.random() < 0.4:
            d["description"] = r.choice(self.WORDS + self.ODD) + " and more words"
        s = self.settings()
        if s is not None:
            d["settings"] = s
        if r.random() < 0.5:
            d["variants"] = {
                f"v{j}": ({"margin": "25%"} | ({"settings": self.settings() or {}} if r.random() < 0.5 else {}))
                for j in range(r.randint(1, 2))
            }
        return d

    def doc(self):
        r = self.r
        if r.random() < 0.5:
            top = {
                "kind": "deployments",
                "name": "multi",
                "hardware": {"gpus": [{"name": "RTX 4090", "vram": "24GiB"}]},
                "deployments": [self.deployment(i) for i in range(r.randint(1, 3))],
            }
        else:
            top = {"name": "single", "hardware": "gpu-16gb"} | self.deployment(0)
        return top

    # text
    def comment(self) -> str:
        if self.r.random() < 0.35:
            return self.r.choice([" ", "  ", "\t", "   "]) + "# " + self.r.choice(self.COMMENTS)
        return ""

    def key(self, k) -> str:
        c = self.r.random()
        if c < 0.15:
            return "'" + k.replace("'", "''") + "'"
        if c < 0.3:
            return json.dumps(k, ensure_ascii=False)
        return flow(k)

    def scalar(self, v) -> str:
        if isinstance(v, str) and self.r.random() < 0.3:
            text = json.dumps(v, ensure_ascii=False)
            if self.r.random() < 0.3:  # YAML escapes: \u for the BMP, \U beyond it (no surrogate pairs)
                text = "".join(
                    c if ord(c) < 128 else (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
                    for c in text
                )
            return text
        if isinstance(v, str) and self.r.random() < 0.3:
            return "'" + v.replace("'", "''") + "'"
        return flow(v)

    def flow_of(self, v, path) -> str:
        sp = self.r.choice(["", " "])
        if isinstance(v, dict):
            inner = ", ".join(f"{self.key(k)}: {self.alias_or_flow(x, path + (k,))}" for k, x in v.items())
            return "{" + sp + inner + sp + "}" if inner else "{}"
        if isinstance(v, list):
            return "[" + ", ".join(self.flow_of(x, path + (i,)) for i, x in enumerate(v)) + "]"
        return self.scalar(v)

    def alias_or_flow(self, v, path) -> str:
        done = [a for a, p in self.anchors.items() if p is not None]
        if done and self.r.random() < 0.05:
            name = self.r.choice(done)
            self.shared |= {path, self.anchors[name]}
            self.used_anchors.add(self.anchors[name])
            return "*" + name
        return self.flow_of(v, path)

    def between(self, indent: int):
        r = self.r
        if r.random() < 0.15:
            self.lines.append(" " * r.choice([0, indent]) + "# " + r.choice(self.COMMENTS))
        if r.random() < 0.1:
            self.lines.append(r.choice(["", "  "]))

    def block_map(self, d: dict, indent: int, path: tuple, first: str | None = None):
        for j, (k, v) in enumerate(d.items()):
            if j or first is None:
                self.between(indent)
            lead = first if (j == 0 and first is not None) else " " * indent
            self.value(lead + self.key(k) + ":", v, indent, path + (k,))

    def value(self, head: str, v, indent: int, path: tuple):
        r = self.r
        done = [a for a, p in self.anchors.items() if p is not None]
        if done and r.random() < 0.08:
            name = r.choice(done)
            self.lines.append(f"{head} *{name}{self.comment()}")
            self.shared |= {path, self.anchors[name]}
            self.used_anchors.add(self.anchors[name])
            return
        anchor = ""
        if r.random() < 0.1:
            self.n += 1
            anchor = f" &a{self.n}"
            self.anchors[f"a{self.n}"] = None  # not complete until written
        child = indent + self.step
        if isinstance(v, dict) and v and r.random() < 0.6:
            self.lines.append(head + anchor + self.comment())
            self.multiline.add(path)
            self.block_map(v, child, path)
        elif isinstance(v, list) and v and all(isinstance(x, dict) and x for x in v) and r.random() < 0.7:
            self.lines.append(head + anchor + self.comment())
            self.multiline.add(path)
            lead = r.choice([child, indent])  # indented, or YAML's indentless sequence
            for i, item in enumerate(v):
                self.between(lead)
                self.block_map(item, lead + 2, path + (i,), first=" " * lead + "- ")
        elif isinstance(v, str) and " " in v.strip() and r.random() < 0.25:
            self.multiline.add(path)
            words = v.split(" ")
            if r.random() < 0.5 or not re.fullmatch(r"\w[\w .-]*", v):
                self.lines.append(head + anchor + " " + r.choice(["|", ">", "|-", ">+"]))
                self.lines.extend(" " * child + w for w in words)
            else:  # a plain scalar folded over lines
                self.lines.append(head + anchor + " " + words[0])
                self.lines.append(" " * child + " ".join(words[1:]))
        elif isinstance(v, dict) and len(v) > 1 and r.random() < 0.2:  # a flow mapping over lines
            self.multiline.add(path)
            items = [f"{self.key(k)}: {self.flow_of(x, path + (k,))}" for k, x in v.items()]
            self.lines.append(head + anchor + " {" + items[0] + ",")
            self.lines.extend(" " * child + it + ("," if i < len(items) - 2 else "") for i, it in enumerate(items[1:]))
            self.lines[-1] += " }" + self.comment()
        else:
            self.lines.append(head + anchor + " " + self.flow_of(v, path) + self.comment())
        if anchor:
            self.anchors[anchor.strip()[1:]] = path

    def render(self) -> str:
        r = self.r
        if r.random() < 0.5:
            self.lines.append("# a profile " + r.choice(self.COMMENTS))
        self.block_map(self.doc(), 0, ())
        if r.random() < 0.2:
            self.lines.append("# the end")
        text = "\n".join(self.lines) + "\n"
        if r.random() < 0.2:
            text = text.rstrip("\n")
        if r.random() < 0.3:
            text = text.replace("\n", "\r\n")
        if r.random() < 0.05:
            text = "\ufeff" + text
        return text


def test_property_over_a_generated_corpus():
    docs = ops_done = refused = 0
    for seed in range(200):
        g = Gen(seed)
        text = g.render()
        loaded = load_text(text, "t.yaml")
        assert not loaded.diagnostics, (seed, loaded.diagnostics[0].message, text)
        docs += 1
        rng = random.Random(seed)
        ops = _ops_for(loaded.data, rng, 6)
        deps = loaded.data.get("deployments")
        bodies = (
            [(("deployments", i), d) for i, d in enumerate(deps)] if isinstance(deps, list) else [((), loaded.data)]
        )
        for base, d in bodies:  # settings that may be missing, in items and in variants
            if isinstance(d, dict):
                ops.append((base + ("settings",), "gpu_layers", 33))
                for v in d.get("variants") if isinstance(d.get("variants"), dict) else ():
                    ops.append((base + ("variants", v, "settings"), "gpu_layers", 20))
        for path, key, value in ops:
            full = path + (key,)
            prefixes = {full[:i] for i in range(len(full) + 1)}
            replaced = _has(loaded.data, full)
            must = bool(prefixes & g.shared) or (
                replaced and (full in g.multiline or any(a[: len(full)] == full for a in g.used_anchors))
            )
            if _has(loaded.data, path) and not isinstance(get(loaded.data, path), dict):
                continue
            out = check_set(text, path, key, value, comment=rng.choice([None, MARK]), must_refuse=must)
            ops_done += 1
            refused += out is None
        # a run of edits, as fit makes them, on one editor
        ed = Editor(text, "t.yaml")
        expected = loaded.data
        for path, key, value in ops:
            try:
                ed.set(path, key, value, comment=MARK)
            except EditRefused:
                continue
            expected = expected_after(expected, path, key, value)
        assert same(load_text(ed.text, "t.yaml").data, expected)
    assert docs == 200 and ops_done > 1200 and 20 < refused < ops_done / 3


# --- the writer ---------------------------------------------------------------------------------
def test_writer_keeps_mode_and_symlinks(tmp_path):
    real = tmp_path / "real" / "p.yaml"
    real.parent.mkdir()
    real.write_text("a: 1\n")
    os.chmod(real, 0o640)
    link = tmp_path / "p.yaml"
    link.symlink_to(real)
    write_atomic(link, b"a: 2\n")
    assert link.is_symlink() and real.read_text() == "a: 2\n" and (real.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in real.parent.iterdir()) == ["p.yaml"]  # no temporary file left
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "real", b"x")


def test_editor_refuses_a_file_changed_under_it(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("a: 1\n")
    ed = Editor.open(p)
    ed.set((), "a", 2)
    p.write_text("a: 1\nb: 2\n")
    with pytest.raises(EditRefused, match="changed on disk"):
        ed.save()
    assert p.read_text() == "a: 1\nb: 2\n"


def test_write_new_refuses_yaml_that_does_not_load(tmp_path):
    with pytest.raises(EditRefused):
        write_new(tmp_path / "x.yaml", "a: [1\n")
    assert not (tmp_path / "x.yaml").exists()


# --- through the CLI ----------------------------------------------------------------------------
def vramc(*args, fsize: int | None = None, cwd=None):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = dict(os.environ, VRAMC_NO_CACHE="1")
    return subprocess.run(
        [sys.executable, "-m", "vramc", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        preexec_fn=limit if fsize else None,
    )


def _two(tmp_path, newline="\n") -> Path:
    prof = tmp_path / "profiles" / "two.yaml"
    prof.parent.mkdir(parents=True, exist_ok=True)
    prof.write_bytes(TWO.replace("MODEL", str(LLAMA8B)).replace("\n", newline).encode())
    return prof


def test_fit_write_on_a_deployments_list(tmp_path):
    """Issue 10: `fit --write` rewrote a `deployments:` list as a mapping of indices."""
    prof = _two(tmp_path)
    before = prof.read_text()
    res = vramc("fit", "--write", prof)
    assert res.returncode == 0, res.stderr
    after = prof.read_text()
    # fit may mark what it chose with a comment on the value's line; nothing else may change
    assert re.sub(r"  # vramc fit: [^\r\n]*", "", after) == before.replace("gpu_layers: auto", "gpu_layers: 33")
    res = vramc("check", prof)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "{0:" not in after


def test_fit_write_keeps_crlf(tmp_path):
    """Issue 11: a CRLF profile stays CRLF, and keeps its mode."""
    prof = _two(tmp_path, "\r\n")
    os.chmod(prof, 0o600)
    before = prof.read_bytes()
    res = vramc("fit", "--write", prof)
    assert res.returncode == 0, res.stderr
    after = prof.read_bytes()
    assert re.sub(rb"  # vramc fit: [^\r\n]*", b"", after) == before.replace(b"gpu_layers: auto", b"gpu_layers: 33")
    assert after.count(b"\r\n") == after.count(b"\n") and (prof.stat().st_mode & 0o777) == 0o600


def test_fit_write_refuses_an_anchored_setting(tmp_path):
    # the first edit (deployment a) can be made, the second (its variant, whose settings deployment
    # b shares through an alias) cannot: nothing is written at all
    prof = tmp_path / "anchored.yaml"
    prof.write_text(
        f"kind: deployments\nhardware: {{gpus: [{{name: RTX 4090, vram: 24GiB}}]}}\n"
        f"deployments:\n  - name: a\n    model: {LLAMA8B}\n    engine: llama-server\n"
        f"    settings:\n      ctx: 4096\n      parallel: 1\n      gpu_layers: auto\n"
        f"    variants:\n      v: {{settings: &s {{ctx: 2048, parallel: 1, gpu_layers: auto}}}}\n"
        f"  - name: b\n    model: {LLAMA8B}\n    engine: llama-server\n    settings: *s\n"
    )
    before = prof.read_bytes()
    res = vramc("fit", "--write", prof)
    assert res.returncode == 2, res.stderr
    assert (
        f"{prof}:12:21: cannot set deployments[0].variants.v.settings.gpu_layers: it is inside a "
        "YAML anchor that an alias shares"
    ) in res.stderr
    assert "Traceback" not in res.stderr and prof.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchored.yaml"]


def test_hostile_files_are_refused_not_damaged(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(EditRefused, match="not UTF-8"):
        Editor.open(bad)
    laughs = (
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
        + "s: {k: 1}\n"
    )
    deep = "s: {k: 1}\nd: " + "[" * 2000 + "]" * 2000 + "\n"
    for text in (laughs, deep, "s: {k: 1}\n---\nt: 2\n"):
        ed = Editor(text, "h.yaml")
        with pytest.raises(EditRefused, match="does not load cleanly"):
            ed.set(("s",), "k", 2)
        assert ed.text == text
    # a tag is only text to vramc's loader (nothing is constructed from it), and it stays
    tagged = "s: !!python/object:os.system {k: 1}\n"
    assert check_set(tagged, ("s",), "k", 2) == "s: !!python/object:os.system {k: 2}\n"


def test_fit_write_that_cannot_replace_the_file(tmp_path):
    # root ignores a read-only folder, so the failure here is a real one any user can hit: the
    # file-size limit makes writing the temporary file fail with EFBIG
    prof = _two(tmp_path)
    before = prof.read_bytes()
    res = vramc("fit", "--write", prof, fsize=64)
    assert res.returncode == 1, res.stderr
    assert "two.yaml: cannot write: File too large; the file was left as it was" in res.stderr
    assert "Traceback" not in res.stderr
    assert prof.read_bytes() == before and sorted(p.name for p in prof.parent.iterdir()) == ["two.yaml"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_fit_write_into_a_read_only_folder(tmp_path):
    prof = _two(tmp_path)
    before = prof.read_bytes()
    os.chmod(prof.parent, 0o555)
    try:
        res = vramc("fit", "--write", prof)
    finally:
        os.chmod(prof.parent, 0o755)
    assert res.returncode == 1 and "cannot write: Permission denied" in res.stderr
    assert prof.read_bytes() == before


def test_fit_write_through_a_symlink(tmp_path):
    prof = _two(tmp_path)
    link = tmp_path / "linked.yaml"
    link.symlink_to(prof)
    res = vramc("fit", "--write", link)
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and "gpu_layers: 33" in prof.read_text()


def test_analyze_write_through_a_symlink_and_onto_a_folder(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    subprocess.run([sys.executable, "-m", "vramc.dev.synth", "tiny", str(gguf)], check=True, capture_output=True)
    real = tmp_path / "locks" / "tiny.yaml"
    real.parent.mkdir()
    real.write_text("kind: model\nname: old\n")  # only a model profile is replaced (test_no_clobber.py)
    link = tmp_path / "tiny.yaml"
    link.symlink_to(real)
    res = vramc("analyze", gguf, "--write", link)
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and real.read_text().startswith("# Locked by `vramc analyze")
    res = vramc("analyze", gguf, "--write", real.parent)
    assert res.returncode == 1 and f"{real.parent}: cannot write: Is a directory" in res.stderr
    assert "Traceback" not in res.stderr
