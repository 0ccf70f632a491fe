"""Hostile and mistaken profile input: every case is a clear diagnostic at the value (file, line,
column, what to do), never an internal error (exit 3) and never a plan of something else than was
written. GPU indices (VR113/VR114), implausible sizes (VR104), non-finite numbers, override
patterns, impossible paths, newline-ended names, and pydantic's and PyYAML's words translated."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from vramc.diagnostics import Severity
from vramc.lint.check import run_check

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "profiles" / "models"
LLAMA8B = "llama-3.1-8b-instruct-q8_0"
NEMOTRON49B = "nemotron-super-49b-v1.5-q8_0"
MISTRAL_AWQ = "mistral-7b-instruct-awq"


@pytest.fixture
def proj(tmp_path):
    """A profiles/ folder with the shipped model profiles and two hardware profiles."""
    prof = tmp_path / "profiles"
    (prof / "hardware").mkdir(parents=True)
    (prof / "models").mkdir()
    for name in (LLAMA8B, NEMOTRON49B, MISTRAL_AWQ):
        (prof / "models" / f"{name}.yaml").write_text((MODELS / f"{name}.yaml").read_text())
    (prof / "hardware" / "two.yaml").write_text(
        "kind: hardware\nname: two\ngpus:\n  - {name: RTX 4090, vram: 24GiB}\n"
        "  - {name: RTX 3090, vram: 24GiB}\nhost_ram: 64GiB\n"
    )
    (prof / "hardware" / "one.yaml").write_text("kind: hardware\nname: one\ngpus:\n  - {name: RTX 4090, vram: 24GiB}\n")
    return prof


def deployment(prof: Path, name: str, body: str, *, hardware="two", model=LLAMA8B, engine="llama-server") -> Path:
    p = prof / f"{name}.yaml"
    p.write_text(f"name: {name}\nhardware: {hardware}\nmodel: {model}\nengine: {engine}\n{body}")
    return p


def findings(path: Path, level=Severity.WARNING):
    result = run_check([path])
    return result, [d for d in result.diagnostics if d.severity >= level]


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "vramc", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "VRAMC_NO_CACHE": "1"},
    )


def at(diags, code):
    return [(d.line, d.column) for d in diags if d.code == code]


# --- 1. GPU indices ------------------------------------------------------------------------------


def test_unknown_gpu_index_is_an_error_at_the_index_not_a_cpu_only_plan(proj):
    p = deployment(proj, "g5", "gpus: [5]\n")
    result, diags = findings(p)
    assert at(diags, "VR113") == [(5, 8)]
    d = diags[0]
    assert "there is no GPU 5" in d.message and "0 (RTX 4090), 1 (RTX 3090)" in d.message
    assert result.plans == []  # not planned on the GPUs that remain (none: CPU-only "FITS")
    proc = cli("plan", str(p))
    assert proc.returncode == 1 and "FITS" not in proc.stdout and "Traceback" not in proc.stderr
    out = proj.parent / "out"
    proc = cli("build", "--out", str(out), str(p))
    assert proc.returncode == 1 and "VR113" in proc.stdout + proc.stderr
    assert not (out / "g5").exists()  # no CUDA_VISIBLE_DEVICES='' written


def test_one_unknown_index_among_good_ones_and_repeats(proj):
    _, diags = findings(deployment(proj, "g02", "gpus: [0, 2]\n"))
    assert at(diags, "VR113") == [(5, 11)]
    _, diags = findings(deployment(proj, "g000", "gpus: [0, 0, 0]\n", hardware="one", model=NEMOTRON49B))
    assert at(diags, "VR113") == [(5, 11), (5, 14)]
    assert all("listed twice" in d.message for d in diags)
    _, diags = findings(deployment(proj, "neg", "gpus: [-1]\n"))
    assert at(diags, "VR113") == [(5, 8)] and "negative" in diags[0].message


def test_index_hint_when_the_number_is_a_gpus_index_field(proj):
    (proj / "hardware" / "idx.yaml").write_text(
        "kind: hardware\ngpus:\n  - {name: A, vram: 24GiB, index: 1}\n  - {name: B, vram: 24GiB, index: 2}\n"
    )
    _, diags = findings(deployment(proj, "byindex", "gpus: [2]\n", hardware="idx"))
    assert at(diags, "VR113") == [(5, 8)]
    assert "`index: 2` is at position 1" in diags[0].hint


def test_good_indices_plan_exactly_those_gpus(proj):
    result, diags = findings(deployment(proj, "g1", "gpus: [1]\nsettings: {ctx: 4096}\n"))
    assert not [d for d in diags if d.severity == Severity.ERROR]
    (plan,) = result.plans
    assert [g.gpu for g in plan.gpus] == [1] and plan.cuda_visible_devices() == "1"


def test_empty_gpus_is_cpu_only_for_llama_cpp_and_an_error_for_vllm(proj):
    result, diags = findings(deployment(proj, "cpu", "gpus: []\nsettings: {ctx: 4096, gpu_layers: 0}\n"))
    (plan,) = result.plans
    assert plan.gpus == [] and plan.cuda_visible_devices() == ""
    assert not [d for d in diags if d.severity == Severity.ERROR]

    p = deployment(proj, "v0", "gpus: []\n", hardware="one", model=MISTRAL_AWQ, engine="vllm")
    _, diags = findings(p)
    assert at(diags, "VR114") == [(5, 7)] and "no GPUs selected" in diags[0].message
    for body in ("gpus: []\n", "gpus: [3]\n"):  # both exited 3 (estimate_vllm needs a GPU)
        p = deployment(proj, "v1", body, hardware="one", model=MISTRAL_AWQ, engine="vllm")
        for cmd in ("check", "plan"):
            proc = cli(cmd, str(p))
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "internal error" not in proc.stderr and (
                "VR114" in proc.stdout + proc.stderr or "VR113" in proc.stdout + proc.stderr
            )


def test_vllm_on_hardware_without_gpus(proj):
    (proj / "hardware" / "none.yaml").write_text("kind: hardware\ngpus: []\nhost_ram: 64GiB\n")
    p = deployment(proj, "v2", "", hardware="none", model=MISTRAL_AWQ, engine="vllm")
    _, diags = findings(p)
    assert at(diags, "VR114") == [(2, 11)]


# --- 2. implausible sizes and the unit table ---------------------------------------------------------


def inline_hw(prof: Path, name: str, vram: str, host_ram: str = "64GiB") -> Path:
    p = prof / f"{name}.yaml"
    p.write_text(
        f"name: {name}\nhardware:\n  gpus:\n    - {{name: RTX 4090, vram: {vram}}}\n"
        f"  host_ram: {host_ram}\nmodel: {LLAMA8B}\nengine: llama-server\n"
    )
    return p


@pytest.mark.parametrize(
    "vram,read,guess",
    [
        ("24", "24 MiB", "24GiB"),
        ("24T", "24 TiB", "24GiB"),
        ("2048 g", "2048 GiB", "2048MiB"),
        ("1536 k", "1536 KiB", "1536MiB"),
        ("512KiB", "512 KiB", None),
        ("0.5", "0.5 MiB", None),
        ("0.5GiB", "0.5 GiB", None),
    ],
)
def test_implausible_vram_warns_at_the_value_with_what_was_meant(proj, vram, read, guess):
    _, diags = findings(inline_hw(proj, "s", vram))
    (d,) = [d for d in diags if d.code == "VR104"]
    assert (d.line, d.column, d.severity) == (4, 30, Severity.WARNING)
    assert f"is read as {read}" in d.message
    if guess:
        assert f"did you mean {guess}?" in d.hint
    elif vram[-1].isdigit():  # a bare number: the unit is what is missing
        assert "with its unit" in d.hint
    else:  # `vram: 0.5GiB` has its unit: telling it to write one was wrong
        assert "with its unit" not in d.hint and "check the value" in d.hint, d.hint
        assert "so little" in d.hint


@pytest.mark.parametrize("layers", ["33", "auto"])
def test_a_card_read_as_24_mib_does_not_fit_instead_of_a_split_error(proj, layers):
    """`vram: 24` leaves no free memory after the CUDA overhead: the verdict is VR300 with the
    figures, not "tensor split proportions sum to zero" (VR320) from the placement."""
    p = inline_hw(proj, "s", "24")
    p.write_text(p.read_text() + f"settings: {{gpu_layers: {layers}}}\n")
    _, diags = findings(p)
    codes = {d.code for d in diags}
    assert "VR320" not in codes and "VR300" in codes, [d.message for d in diags]
    (d,) = [d for d in diags if d.code == "VR300"]
    assert "has 24 MiB available" in d.message


def test_implausible_host_ram_and_plausible_sizes(proj):
    _, diags = findings(inline_hw(proj, "h", "24GiB", host_ram="64"))
    (d,) = [d for d in diags if d.code == "VR104"]
    assert (d.line, d.column) == (5, 13) and "did you mean 64GiB?" in d.hint
    for vram in ("24GiB", "24G", "24 gib", "24576", "1TiB", "3GiB"):
        _, diags = findings(inline_hw(proj, "ok", vram))
        assert at(diags, "VR104") == [], vram
    _, diags = findings(inline_hw(proj, "dec", "24 GB"))  # decimal: VR103 alone
    assert [d.code for d in diags if d.code in ("VR103", "VR104")] == ["VR103"]
    _, diags = findings(inline_hw(proj, "dec2", "24 TB"))  # implausible: one warning, not two
    assert [d.code for d in diags if d.code in ("VR103", "VR104")] == ["VR104"]


@pytest.mark.parametrize(
    "margin,warned",
    [("10", True), ('"10"', True), ("1", True), ("2.5", True), ("100", True)]
    + [("10%", False), ("10MiB", False), ("0.1", False), ("512", False), ("1GiB", False)],
)
def test_a_bare_margin_from_1_to_100_says_it_is_mib(proj, margin, warned):
    """`lint: {margin: 10}` is 10 MiB of each GPU, almost always meant as 10%: a plan that keeps
    10 MiB free read `fits` with no warning. Both spellings of what was meant silence it."""
    p = inline_hw(proj, "m", "24GiB")
    p.write_text(p.read_text() + f"lint: {{margin: {margin}}}\nvariants: {{v: {{margin: {margin}}}}}\n")
    _, diags = findings(p)
    found = [d for d in diags if d.code == "VR104"]
    if not warned:
        assert found == [], [d.message for d in found]
        return
    shown = margin.strip('"')
    assert [(d.line, d.severity) for d in found] == [(8, Severity.WARNING), (9, Severity.WARNING)]
    for d in found:
        assert f"margin {shown} is read as {shown} MiB of each GPU" in d.message, d.message
        assert d.hint == f"write {shown}% for a share of each GPU, or {shown}MiB if you mean MiB"


@pytest.mark.parametrize(
    "text,n_bytes",
    [
        ("24G", 24 << 30),
        ("24g", 24 << 30),
        ("24 GiB", 24 << 30),
        ("24gib", 24 << 30),
        ("24GB", 24 * 10**9),
        ("24 gb", 24 * 10**9),
        ("2T", 2 << 40),
        ("2 TB", 2 * 10**12),
        ("512K", 512 << 10),
        ("512KB", 512000),
        ("100 b", 100),
        ("24576", 24 << 30),
        (24576, 24 << 30),
    ],
)
def test_unit_table(text, n_bytes):
    from vramc.units import parse_size

    assert parse_size(text) == n_bytes


def test_shipped_profiles_raise_none_of_these_codes():
    result = run_check([ROOT / "profiles"])
    mine = {"VR101", "VR104", "VR113", "VR114", "VR000", "VR110"}
    assert [d for d in result.diagnostics if d.code in mine] == []


# --- 3. non-finite and huge numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,value,words",
    [
        ("hardware:\n  gpus: [{name: A, vram: .inf}]\n", ".inf", "finite"),
        ("hardware:\n  gpus: [{name: A, vram: 1.0e+308}]\n", "1.0e+308", "more than 1 PiB"),
        ("hardware:\n  gpus: [{name: A, vram: 24GiB}]\n  host_ram: 1.0e+308\n", "1.0e+308", "more than 1 PiB"),
        ('hardware:\n  gpus: [{name: A, vram: "1e400GiB"}]\n', '"1e400GiB"', "cannot read"),
        ("hardware:\n  gpus: [{name: A, vram: 25769803776}]\n", "25769803776", "write 25769803776B"),
        ("hardware:\n  gpus: [{name: A, vram: .nan}]\n", ".nan", "finite"),
        ("hardware: two\nlint: {margin: .inf}\n", ".inf", "finite"),
        ("hardware: two\nlint: {margin: {fraction: .nan}}\n", ".nan", "finite"),
        ("hardware: two\nlint: {margin: {bytes: -5}}\n", "-5", ">= 0"),
        ("hardware: two\nsettings: {tensor_split: [.inf, 1]}\n", ".inf", "finite"),
        ("hardware: two\nsettings: {tensor_split: [-1, 1]}\n", "-1", ">= 0"),
        ("hardware: two\nvariants: {v: {margin: .inf}}\n", ".inf", "finite"),
        ("hardware: two\nenv: {LLAMA_ARG_X: .inf}\n", ".inf", ""),
    ],
)
def test_non_finite_numbers_are_vr101_at_the_value(proj, body, value, words):
    p = proj / "n.yaml"
    p.write_text(f"name: n\nmodel: {LLAMA8B}\nengine: llama-server\n{body}")
    lines = p.read_text().splitlines()
    where = next((i + 1, line.index(value) + 1) for i, line in enumerate(lines) if value in line)
    _, diags = findings(p)
    assert [(d.code, d.line, d.column) for d in diags if d.severity == Severity.ERROR] == [("VR101", *where)]
    assert words in diags[0].message


def test_lock_and_config_maps_hold_no_nan(proj):
    from vramc.load import schema
    from vramc.load.profiles import validate
    from vramc.load.yamlpos import Positions

    lock = {"architecture": "llama", "vocab_size": 1, "hparams": {"rope": {"base": float("nan")}}}
    obj, diags = validate(schema.GGUFLock, lock, Positions(), "m.yaml")
    assert obj is None and diags[0].code == "VR101" and "finite" in diags[0].message


def test_plan_json_is_strict_json(proj):
    p = deployment(proj, "j", "settings: {ctx: 4096, tensor_split: [1, 1]}\n")
    proc = cli("plan", "--format", "json", str(p))
    assert proc.returncode == 0, proc.stderr

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    doc = json.loads(proc.stdout, parse_constant=refuse)
    assert doc["deployments"][0]["settings"]["tensor_split"] == [1.0, 1.0]
    p = deployment(proj, "jinf", "settings: {tensor_split: [.inf, 1]}\n")
    proc = cli("plan", "--format", "json", str(p))
    assert proc.returncode == 1 and "Infinity" not in proc.stdout and "VR101" in proc.stderr + proc.stdout


def test_cli_never_exits_3_on_hostile_numbers(proj):
    bodies = [
        "lint: {margin: .inf}\n",
        "lint: {margin: {fraction: .nan}}\n",
        "settings: {override_tensor: ['*=CPU']}\n",
        'variants: {"ok\\n": {}}\n',
    ]
    for i, b in enumerate(bodies):
        deployment(proj, f"h{i}", b)
    (proj / "hardware" / "big.yaml").write_text("kind: hardware\ngpus: [{name: A, vram: .inf}]\nhost_ram: 1.0e+308\n")
    for cmd in ("check", "plan", "build"):
        args = [cmd, str(proj)] + (["--out", str(proj.parent / "out")] if cmd == "build" else [])
        proc = cli(*args)
        assert proc.returncode == 1, (cmd, proc.stdout, proc.stderr)
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


# --- 4. override_tensor patterns ---------------------------------------------------------------------


@pytest.mark.parametrize("item", ["*=CPU", "?=CPU", "+x=CPU", "\\=CPU", "blk.(1=CPU"])
def test_override_tensor_that_is_no_regex(proj, item):
    p = deployment(proj, "ot", f"settings:\n  override_tensor:\n    - ok=CPU\n    - '{item}'\n")
    _, diags = findings(p)
    (d,) = [d for d in diags if d.code == "VR101"]
    assert (d.line, d.column) == (8, 7)
    assert "regular expression" in d.message and "`.*`" in d.message


@pytest.mark.parametrize(
    "item, said",
    [
        ("blk", "names no device"),  # llama-server: error while handling argument "-ot": invalid value
        ("a=b=c", "'b=c' is not a buffer type"),  # split at the first '=': unknown buffer type 'b=c'
        ("blk=", "'' is not a buffer type"),
        ("x{99999999999}=CPU", "too large a regular expression"),  # re raised OverflowError: exit 3
    ],
)
def test_override_tensor_read_as_llama_cpp_splits_it(proj, item, said):
    p = deployment(proj, "ot", f"settings:\n  override_tensor:\n    - ok=CPU\n    - '{item}'\n")
    _, diags = findings(p)
    (d,) = [d for d in diags if d.code == "VR101"]
    assert (d.line, d.column) == (8, 7) and said in d.message, d.message
    proc = cli("check", str(p))
    assert proc.returncode == 1 and "internal error" not in proc.stderr, proc.stderr


def test_override_tensor_regex_accepted(proj):
    p = deployment(proj, "ot", "settings:\n  override_tensor: ['blk\\.[0-9]+\\.ffn_.*_exps=CPU']\n")
    _, diags = findings(p)
    assert not [d for d in diags if d.code == "VR101"]


# --- 5. paths that cannot be files -------------------------------------------------------------------


def test_nul_in_a_model_path(proj):
    p = proj / "nul.yaml"
    p.write_text('name: nul\nhardware: two\nmodel:\n  gguf: "models/a\\0b.gguf"\nengine: llama-server\n')
    _, diags = findings(p)
    assert [(d.code, d.line, d.column) for d in diags] == [("VR101", 4, 9)]
    assert "NUL" in diags[0].message
    for cmd in ("check", "plan"):
        assert cli(cmd, str(p)).returncode == 1


def test_names_and_paths_too_long_for_a_file_system(proj):
    long = "x" * 300
    p = deployment(proj, "long", "", model=long)
    _, diags = findings(p)
    assert [(d.code, d.line, d.column) for d in diags] == [("VR101", 3, 8)]
    assert "255" in diags[0].message
    p = proj / "long2.yaml"
    p.write_text(f"name: long2\nhardware: two\nmodel:\n  gguf: models/{long}/a.gguf\nengine: llama-server\n")
    _, diags = findings(p)
    assert [(d.code, d.line, d.column) for d in diags] == [("VR101", 4, 9)]
    assert cli("check", str(proj)).returncode == 1


def test_hardware_profile_that_is_a_symlink_to_itself(proj):
    loop = proj / "hardware" / "loop.yaml"
    loop.symlink_to("loop.yaml")
    p = deployment(proj, "looped", "", hardware="loop")
    _, diags = findings(p)
    assert [(d.code, d.line, d.column) for d in diags] == [("VR000", 2, 11)]
    assert "symbolic link" in diags[0].message
    _, diags = findings(loop)  # named on the command line
    assert [d.code for d in diags] == ["VR000"] and "symbolic link" in diags[0].message
    result = run_check([proj])  # found while walking the folder
    assert {("VR000", Path(d.file).name) for d in result.diagnostics if d.code == "VR000"} == {
        ("VR000", "loop.yaml"),
        ("VR000", "looped.yaml"),
    }
    proc = cli("check", str(proj))
    assert proc.returncode == 1 and "internal error" not in proc.stderr


def _check_as_nobody(paths):
    """run_check in a child process that has given up root: a mode-000 folder denies it for real."""
    run_check(paths)  # import everything while the interpreter's files are still readable
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            res = run_check(paths)
            payload = [(d.code, d.file, d.line, d.column, d.message) for d in res.diagnostics]
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
            payload = f"{type(e).__name__}: {e}"
        os.write(w, pickle.dumps(payload))
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return pickle.loads(b"".join(chunks))


def test_unreadable_models_folder(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="vramc-perm-"))  # under /tmp: a child without root can reach it
    try:
        base.chmod(0o755)
        prof = base / "profiles"
        (prof / "models").mkdir(parents=True)
        (prof / "models" / f"{LLAMA8B}.yaml").write_text((MODELS / f"{LLAMA8B}.yaml").read_text())
        (prof / "hw.yaml").write_text("kind: hardware\nname: hw\ngpus: [{name: A, vram: 24GiB}]\n")
        dep = prof / "d.yaml"
        dep.write_text(f"name: d\nhardware: hw.yaml\nmodel: {LLAMA8B}\nengine: llama-server\n")
        for p in (base, prof, prof / "hw.yaml", dep):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (prof / "models").chmod(0)
        if os.geteuid() == 0:
            if not hasattr(os, "fork"):
                pytest.skip("running as root without fork: cannot drop privileges to meet a mode-000 folder")
            found = _check_as_nobody([prof])
        else:
            found = [(d.code, d.file, d.line, d.column, d.message) for d in run_check([prof]).diagnostics]
        assert not isinstance(found, str), found  # the check raised
        codes = {(c, Path(f).name, line, col) for c, f, line, col, _ in found}
        assert ("VR000", "d.yaml", 3, 8) in codes  # the reference into the folder
        assert ("VR000", "models", 1, 1) in codes  # the folder itself, not silently skipped
        assert all("ermission denied" in m for c, *_, m in found if c == "VR000")
    finally:
        (base / "profiles" / "models").chmod(0o755)
        import shutil

        shutil.rmtree(base)


# --- 6. names that end in a newline ------------------------------------------------------------------


def test_variant_name_with_a_final_newline(proj):
    p = deployment(proj, "v", 'variants:\n  "ok\\n": {settings: {ctx: 4096}}\n')
    _, diags = findings(p)
    assert [(d.code, d.line, d.column) for d in diags] == [("VR101", 6, 3)]
    assert "'ok\\n'" in diags[0].message and "\n" not in diags[0].message


def test_newline_ended_codes_and_names(proj):
    from vramc.cli.analyze import cli_analyze
    from vramc.load.schema import valid_name

    assert valid_name("ok") and not valid_name("ok\n") and not valid_name("")
    _, diags = findings(deployment(proj, "c", 'lint: {ignore: ["VR101\\n"], severity: {"VR302\\n": error}}\n'))
    assert at(diags, "VR101") == [(5, 17), (5, 40)]  # at the code, at the key
    assert cli_analyze(proj / "none.gguf", layers=False, fmt="text", write=proj / "m.yaml", name="ok\n") == 2
    from vramc.build.render import UnsafeValue, check_env_name
    from vramc.lint.registry import CODE_RE

    assert not CODE_RE.match("VR101\n")
    with pytest.raises(UnsafeValue):
        check_env_name("LLAMA_ARG_CTX_SIZE\n")  # else a name line in env files and units
    _, diags = findings(deployment(proj, "e", 'env: {"LLAMA_ARG_CTX_SIZE\\n": 1}\n'))
    assert at(diags, "VR403") == [(5, 31)]  # `check` passed it before: `$` matched before the final newline
    p = proj / "n.yaml"
    p.write_text(f'name: "ok\\n"\nhardware: two\nmodel: {LLAMA8B}\nengine: llama-server\n')
    _, diags = findings(p)
    assert at(diags, "VR101") == [(1, 7)]


# --- 7. messages in vramc's words ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,message",
    [
        ("settings: [ctx, 1]\n", "settings must be a mapping (key: value lines), not a list"),
        ("settings: {ctx: -8192}\n", "settings.ctx must be a whole number >= 0 or auto, got -8192"),
        ("settings: {gpu_layers: al}\n", 'settings.gpu_layers must be a whole number, all or auto, got "al"'),
        ("settings: {split_mode: rows}\n", 'settings.split_mode must be none, layer or row, got "rows"'),
        ("settings: {parallel: 300}\n", "settings.parallel must be a whole number <= 256 or auto, got 300"),
        # a fraction is no whole number even when the value written is one
        (
            "settings: {gpu_memory_utilization: 2}\n",
            "settings.gpu_memory_utilization must be a fraction <= 1 (e.g. 0.9) or auto, got 2",
        ),
        ("settings: {kv_unified: maybe}\n", 'settings.kv_unified must be true/false, got "maybe"'),
        ("settings:\n", "settings must be a mapping (key: value lines), not empty (null)"),
        ("gpus: [one]\n", 'gpus[0] must be a whole number, got "one"'),
    ],
)
def test_pydantic_words_are_translated(proj, body, message):
    _, diags = findings(deployment(proj, "m", body))
    (d,) = [d for d in diags if d.code == "VR101"]
    assert d.message == message
    assert "Input should" not in d.message and "instance of" not in d.message


def test_tab_indentation(proj):
    p = proj / "tab.yaml"
    p.write_text(
        f"name: tab\nhardware: two\nmodel: {LLAMA8B}\nengine: llama-server\nsettings:\n  ctx: 1\n \tparallel: 2\n"
    )
    _, diags = findings(p)
    assert [(d.code, d.line, d.column) for d in diags] == [("VR001", 7, 2)]
    assert "YAML forbids tabs for indentation" in diags[0].message and diags[0].hint == "indent with spaces"


def test_missing_profile_suggests_the_nearest_name(proj):
    _, diags = findings(deployment(proj, "r", "", hardware="tow"))
    assert [(d.code, d.line, d.column) for d in diags] == [("VR110", 2, 11)]
    assert "did you mean 'two'?" in diags[0].hint
    _, diags = findings(deployment(proj, "r2", "", model="llama-3.1-8b-instruct-q8"))
    assert f"did you mean '{LLAMA8B}'?" in diags[0].hint
    _, diags = findings(deployment(proj, "r3", "", hardware="zzzzzz"))
    assert "did you mean" not in diags[0].hint


def test_paths_are_shown_relative_only_below_the_working_directory(tmp_path, monkeypatch):
    from vramc.load.profiles import display_path

    (tmp_path / "here" / "p").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    assert display_path(tmp_path / "here" / "p" / "a.yaml") == "p/a.yaml"
    assert display_path(tmp_path / "elsewhere.yaml") == str(tmp_path / "elsewhere.yaml")


@pytest.mark.parametrize(
    "settings,key",
    [("{ctx: true}", "ctx"), ("{gpu_layers: false}", "gpu_layers"), ("{parallel: true}", "parallel")],
)
def test_a_yaml_boolean_is_no_number(proj, settings, key):
    """pydantic's lax mode read `gpu_layers: false` as 0 layers, in silence: now VR101 at the value."""
    _, diags = findings(deployment(proj, "b", f"settings: {settings}\n"))
    (d,) = [d for d in diags if d.code == "VR101"]
    assert f"settings.{key}" in d.message and "not a boolean" in d.message


def test_booleans_stay_valid_where_a_key_takes_them(proj):
    p = deployment(proj, "b", "settings: {flash_attn: yes, kv_unified: true}\n")
    _, diags = findings(p)
    assert not [d for d in diags if d.code == "VR101"], [d.message for d in diags]


def test_a_deployment_of_a_deployments_file_runs_on_the_files_hardware(proj):
    """A deployment with its own `hardware:` in a `deployments:` file was planned there and read
    `fits` on two H100s while "sharing" CUDA0 with one planned on the file's RTX 4090s: an error,
    and the deployment is planned on the machine the file describes. The same hardware is fine."""
    p = proj / "both.yaml"
    p.write_text(
        "hardware: two\ndeployments:\n"
        "  - name: big\n    hardware: {gpus: [{name: H100, vram: 80GiB}]}\n"
        f"    model: {NEMOTRON49B}\n    engine: llama-server\n    settings: {{ctx: 8192, gpu_layers: all}}\n"
        f"  - name: small\n    hardware: two\n    model: {LLAMA8B}\n    engine: llama-server\n"
        "    settings: {ctx: 8192, gpu_layers: all}\n"
    )
    result, diags = findings(p)
    [d] = [d for d in diags if d.code == "VR101"]
    assert (d.line, d.column) == (4, 15) and "not the file's" in d.message, d.message
    assert "remove it from the deployment" in d.hint
    plans = {pl.dep.label: pl for pl in result.plans}
    assert [x.name for x in plans["big"].estimate.devices] == ["RTX 4090", "RTX 3090"]
    assert plans["big"].verdict == "does-not-fit"  # 49B Q8 on 48 GiB; on the H100 it "fit"
    assert not [d for d in diags if d.code == "VR101" and d.line > 4]  # `hardware: two` is the file's own


@pytest.mark.parametrize(
    "key,meant",
    [
        ("ctx_size", "ctx"),  # llama-server's --ctx-size: spelling alone suggested ctx_min
        ('"--ctx-size"', "ctx"),
        ("num_ctx", "ctx"),
        ("CTX", "ctx"),
        ("ngl", "gpu_layers"),
        ("num_gpu", "gpu_layers"),
        ("ts", "tensor_split"),
        ("type_k", "cache_type_k"),
        ("ctx_mn", "ctx_min"),  # a typo of the setting itself still finds it
    ],
)
def test_an_engines_own_name_for_a_setting_suggests_that_setting(proj, key, meant):
    """`ctx_size: 8192` suggested `ctx_min`, the floor of `ctx: auto`: following it gave a
    deployment whose context vramc then chose up to the trained length, and check passed."""
    p = deployment(proj, "k", f"settings: {{{key}: 8192}}\n")
    [d] = [d for d in findings(p)[1] if d.code == "VR100"]
    assert d.hint == f"did you mean {meant!r}?", (d.message, d.hint)
