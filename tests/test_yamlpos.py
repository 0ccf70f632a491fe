import subprocess
import sys

from vramc.load.yamlpos import load_text


def test_positions_of_keys_and_values():
    text = "name: x\nsettings:\n  ctx: 8192\n  tensor_split: [16, 12]\n"
    loaded = load_text(text, "p.yaml")
    assert loaded.diagnostics == []
    assert loaded.data == {"name": "x", "settings": {"ctx": 8192, "tensor_split": [16, 12]}}
    pos = loaded.positions
    assert (pos.keys[("settings", "ctx")].line, pos.keys[("settings", "ctx")].column) == (3, 3)
    assert (pos.values[("settings", "ctx")].line, pos.values[("settings", "ctx")].column) == (3, 8)
    item = pos.values[("settings", "tensor_split", 1)]
    assert (item.line, item.column) == (4, 22)
    # an unknown deeper path falls back to its nearest recorded ancestor
    assert pos.locate(("settings", "tensor_split", 7)).column == 17


def test_duplicate_key_is_reported_at_the_second_key():
    loaded = load_text("a: 1\nb:\n  c: 1\n  c: 2\n", "p.yaml")
    [d] = loaded.diagnostics
    assert d.code == "VR002" and (d.line, d.column) == (4, 3)
    assert "first at line 3" in d.message


def test_syntax_error_has_a_position_and_no_data():
    loaded = load_text("a: [1, 2\nb: 3\n", "p.yaml")
    [d] = loaded.diagnostics
    assert d.code == "VR001" and d.line >= 1 and loaded.data is None


def test_a_character_yaml_does_not_allow_is_named_at_its_line_and_column():
    # PyYAML's ReaderError read `unacceptable character #x0007 ... in "<unicode string>", position 42`,
    # with a newline that the text report printed as a literal \n, at line 1
    loaded = load_text('name: x\ndescription: "a\x07b"\n', "p.yaml")
    [d] = loaded.diagnostics
    assert d.code == "VR001" and (d.line, d.column) == (2, 16) and loaded.data is None
    assert "U+0007" in d.message and "\\x07" in d.hint
    assert "unicode string" not in d.message + d.hint and "#x" not in d.message and "\n" not in d.message
    [d] = load_text("\x00", "p.yaml").diagnostics
    assert (d.line, d.column) == (1, 1) and "U+0000" in d.message


def test_merge_keys_are_refused():
    loaded = load_text("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", "p.yaml")
    assert [d.code for d in loaded.diagnostics] == ["VR003"]
    assert loaded.diagnostics[0].line == 3


def test_scalars_match_safe_load():
    import yaml

    text = "a: on\nb: 0x10\nc: 1.5\nd: ~\ne: '12'\nf: 2024-01-01\n"
    assert load_text(text, "p.yaml").data == yaml.safe_load(text)


def test_hostile_yaml_is_refused_quickly():
    import time

    t = time.perf_counter()
    recursive = load_text("a: &x\n  b: *x\n", "p.yaml")
    assert [d.code for d in recursive.diagnostics] == ["VR003"] and "alias" in recursive.diagnostics[0].message
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
    )
    bomb = load_text(laughs, "p.yaml")
    assert bomb.data is None and [d.code for d in bomb.diagnostics] == ["VR003"]
    deep = load_text("a: " + "[" * 3000 + "]" * 3000 + "\n", "p.yaml")
    assert deep.data is None and deep.diagnostics and deep.diagnostics[0].code in ("VR001", "VR003")
    assert time.perf_counter() - t < 5


def test_flow_nesting_that_would_crash_libyaml_is_refused_before_parsing():
    # 100,000 levels crash libyaml's C composer (the process dies, no exception): run it apart
    code = (
        "from vramc.load.yamlpos import load_text\n"
        "r = load_text('a: ' + '[' * 100000 + ']' * 100000, 'p.yaml')\n"
        "print(r.data, [d.code for d in r.diagnostics])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None ['VR003']"
    # ordinary flow style and brackets inside strings are untouched
    ok = load_text('gpus: [{name: "RTX [4090]", vram: 24GiB}]\n', "p.yaml")
    assert ok.diagnostics == [] and ok.data["gpus"][0]["name"] == "RTX [4090]"
