"""Hostile model inputs: GGUF headers and locks that llama.cpp would refuse, paths that are no
regular files, and the check and estimate caches fed stale or corrupt entries. Each must give a
diagnostic at the right place (or a miss in a cache), never a hang, a traceback or exit 3."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import llama_tensors
from gguf_craft import ARR, F32, F64, STR, U32, llama_kv, write
from vramc.lint.check import run_check
from vramc.load.profiles import display_path
from vramc.memory.llama_archs import _rot_size
from vramc.model.modelmeta import MetaError, validate_meta

ROOT = Path(__file__).resolve().parent.parent
LLAMA8B = ROOT / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml"


def vramc(args: list[str], cwd: Path, cache: Path | None = None, timeout: float = 60):
    """The CLI in a subprocess, so a hang is a timeout and not a stuck test run."""
    env = {k: v for k, v in os.environ.items() if k not in ("VRAMC_NO_CACHE", "VRAMC_CACHE")}
    if cache is None:
        env["VRAMC_NO_CACHE"] = "1"
    else:
        env["VRAMC_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "vramc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def deployment(folder: Path, gguf: str, settings: str = "{ctx: 512}") -> Path:
    p = folder / "profiles" / "d.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        f"name: d\nhardware: {{gpus: [{{name: RTX 4090, vram: 24GiB}}]}}\n"
        f"model: {{gguf: {json.dumps(gguf)}}}\nengine: llama-server\nsettings: {settings}\n"
    )
    return p


def found(diags, code: str):
    return [d for d in diags if d.code == code]


# --- 1. the rotation size of a zero head terminated -----------------------------------------
def test_rot_size_terminates_for_every_head():
    assert [_rot_size(h) for h in (0, 1, 64, 96, 128, 192, 256, 576)] == [64, 64, 64, 64, 128, 64, 256, 64]


# --- 3. headers analyze describes but planning must refuse ----------------------------------
MAMBA2_TENSORS = [
    ("token_embd.weight", "f32", (64, 260)),
    ("output_norm.weight", "f32", (64,)),
    ("blk.0.ssm_in.weight", "f32", (64, 128)),
    ("blk.1.ssm_in.weight", "f32", (64, 128)),
]
BAD_HEADERS = {  # name: (keys, tensors, what the diagnostic says)
    "no-tensors": (llama_kv(), [], "the model has no tensors"),
    "no-block-count": (llama_kv(block_count=None), llama_tensors(), "block_count is missing"),
    "no-embedding-length": (llama_kv(embedding_length=None), llama_tensors(), "embedding_length is missing"),
    "context-inf": (llama_kv(context_length=(F32, math.inf)), llama_tensors(), "context_length is inf"),
    "context-1e308": (llama_kv(context_length=(F64, 1e308)), llama_tensors(), "context_length is 1e+308"),
    "context-nan": (llama_kv(context_length=(F64, math.nan)), llama_tensors(), "context_length is nan"),
    "head-count-0": (
        llama_kv(**{"attention.head_count": (U32, 0), "attention.head_count_kv": (U32, 0)}),
        llama_tensors(),
        "attention.head_count is 0",
    ),
    "embedding-length-0": (llama_kv(embedding_length=(U32, 0)), llama_tensors(), "embedding_length is 0"),
    "embedding-length-1": (llama_kv(embedding_length=(U32, 1)), llama_tensors(), "key length 0"),
    "key-length-0": (llama_kv(**{"attention.key_length": (U32, 0)}), llama_tensors(), "attention.key_length is 0"),
    "head-count-text": (
        llama_kv(**{"attention.head_count": (STR, "four")}),
        llama_tensors(),
        'attention.head_count is "four"',
    ),
    "head-count-list-short": (
        llama_kv(**{"attention.head_count": (ARR, (U32, [4]))}),
        llama_tensors(),
        "attention.head_count has 1 values for 2 layers",
    ),
    "mamba2-without-ssm": (llama_kv(arch="mamba2"), MAMBA2_TENSORS, "ssm.conv_kernel"),
    "non-utf8-architecture": (
        [("general.architecture", STR, b"ll\xffama")] + llama_kv()[1:],
        llama_tensors(),
        "is not valid UTF-8",
    ),
    "missing-tensor": (
        llama_kv(),
        [t for t in llama_tensors() if t[0] != "blk.1.ffn_down.weight"],
        "missing tensor 'blk.1.ffn_down.weight'",
    ),
}


@pytest.mark.parametrize(
    "settings", ["{ctx: 512}", "{ctx: auto, gpu_layers: auto, cache_type_k: q8_0, flash_attn: on}"]
)
@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_header_is_vr201_at_the_gguf_key(tmp_path, case, settings):
    kv, tensors, words = BAD_HEADERS[case]
    write(tmp_path / "m.gguf", kv, tensors)
    p = deployment(tmp_path, str(tmp_path / "m.gguf"), settings)
    result = run_check([p])  # the hangs ran forever here, the crashes raised
    [d] = found(result.diagnostics, "VR201")
    assert words in d.message, d.message
    assert (d.file, d.line, d.column) == (display_path(p), 3, 15)  # the `gguf:` value


@pytest.mark.parametrize("case", ["head-count-0", "non-utf8-architecture", "no-tensors"])
def test_analyze_describes_a_bad_header_and_says_why_check_refuses_it(tmp_path, case):
    kv, tensors, words = BAD_HEADERS[case]
    path = write(tmp_path / "m.gguf", kv, tensors)
    r = vramc(["analyze", str(path), "--format", "json"], tmp_path, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tensor_count"] == len(tensors)
    assert "warning: vramc cannot plan with this model (VR201): " in r.stderr and words in r.stderr


def test_bad_header_with_a_q8_0_cache_exits_promptly(tmp_path):
    """The reported hang, end to end: key_length 0 and a quantised K cache."""
    write(tmp_path / "m.gguf", BAD_HEADERS["key-length-0"][0], llama_tensors())
    deployment(tmp_path, "m.gguf", "{ctx: 512, cache_type_k: q8_0}")
    r = vramc(["check", "profiles/"], tmp_path, cache=tmp_path / "cache", timeout=60)
    assert r.returncode == 1 and "VR201" in r.stdout and "Traceback" not in r.stderr


def test_the_catalog_passes_validation():
    from vramc.dev.synth import CATALOG, model_meta

    for shape in CATALOG.values():
        validate_meta(model_meta(shape, "Q4_K_M"))  # raises on a false alarm


# --- 3. locks ---------------------------------------------------------------------------------
LOCK = """\
    name: d
    hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
    engine: llama-server
    settings: {ctx: 512, cache_type_k: q8_0}
    model:
      lock:
        architecture: llama
        hparams:
          block_count: 2
          embedding_length: 64
          attention.head_count: 4
          HPARAM
        vocab_size: 260
        tensors:
          TENSORS
    """


def lock_profile(tmp_path: Path, hparam: str, drop: str | None = None) -> Path:
    from vramc.model.modelmeta import compress_tensors, make_tensor

    tensors = [make_tensor(n, t, s) for n, t, s in llama_tensors() if n != drop]
    rows = "\n".join(f"{k}: {json.dumps(v)}" for k, v in compress_tensors(tensors).items())
    text = textwrap.dedent(LOCK).replace("HPARAM", hparam)
    text = text.replace("TENSORS", textwrap.indent(rows, " " * 6).lstrip())
    p = tmp_path / "d.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("hparam", "words"),
    [
        ("attention.key_length: 0", "attention.key_length is 0"),
        ("attention.head_count_kv: [2, 2, [1]]", "a hyper-parameter is a number, a string"),
        ("attention.head_count_kv: {a: 1}", "a hyper-parameter is a number, a string"),
        ("feed_forward_length: [128]", "feed_forward_length has 1 values for 2 layers"),
        ("rope.dimension_count: [16, 16]", "llama.cpp reads one whole number here"),
        ("expert_weights_scale: fast", 'expert_weights_scale is "fast": it must be a number'),
    ],
)
def test_lock_hparam_is_vr203_at_the_value(tmp_path, hparam, words):
    p = lock_profile(tmp_path, hparam)
    [d] = found(run_check([p]).diagnostics, "VR203")
    assert words in d.message, d.message
    assert d.line == 12 and d.column > len(hparam.split(":")[0])  # at the value, not at `lock:`


def test_lock_missing_a_tensor_is_vr203_at_its_tensors(tmp_path):
    p = lock_profile(tmp_path, "context_length: 4096", drop="blk.1.attn_k.weight")
    [d] = found(run_check([p]).diagnostics, "VR203")
    assert "missing tensor 'blk.1.attn_k.weight'" in d.message
    assert (d.line, d.path) == (15, ("model", "lock", "tensors"))  # the first tensor row


def test_meta_error_names_where_in_the_lock():
    from vramc.model.modelmeta import ModelMeta, expand_tensors

    meta = ModelMeta(
        "llama",
        {"block_count": 2, "embedding_length": 64, "attention.head_count": 0},
        260,
        expand_tensors({"token_embd.weight": ["f32", 64, 260]}),
    )
    with pytest.raises(MetaError) as e:
        validate_meta(meta)
    assert e.value.path == ("hparams", "attention.head_count")
    with pytest.raises(MetaError) as e:
        expand_tensors({"blk.{0-9999}.x.weight": ["f32", 64]})
    assert e.value.path == ("tensors", "blk.{0-9999}.x.weight")


# --- 2. paths that are no regular files -------------------------------------------------------
def test_dev_zero_as_gguf_is_refused_without_reading_it(tmp_path):
    deployment(tmp_path, "/dev/zero")
    # with the check cache on: its stamps once read any small-looking file whole
    r = vramc(["check", "profiles/"], tmp_path, cache=tmp_path / "cache", timeout=60)
    assert r.returncode == 1, r.stderr
    assert "VR201" in r.stdout and "not a regular file" in r.stdout
    again = vramc(["check", "profiles/"], tmp_path, cache=tmp_path / "cache", timeout=60)
    assert again.stdout == r.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_as_gguf_does_not_hang_check_or_analyze(tmp_path):
    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    deployment(tmp_path, "m.gguf")
    r = vramc(["check", "profiles/"], tmp_path, cache=tmp_path / "cache", timeout=60)
    assert r.returncode == 1 and "VR201" in r.stdout and "not a regular file" in r.stdout
    r = vramc(["analyze", "m.gguf"], tmp_path, timeout=30)
    assert (
        r.returncode == 1
        and r.stderr == "m.gguf: not a regular file (a device or a pipe): give the path of the .gguf file\n"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_read_header_never_opens_a_fifo_for_blocking(tmp_path):
    from vramc.model.gguf import GGUFError, read_header

    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    done = threading.Event()

    def read():
        with pytest.raises(GGUFError, match="not a regular file"):
            read_header(fifo)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(10), "read_header blocked on a FIFO"


def _sparse(path: Path, header: bytes, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(size)  # a hole: the length a corrupt field claims is "there"
    return path


def test_a_huge_tensor_name_length_is_refused_before_it_is_read(tmp_path):
    """A corrupt name length inside an 8 GiB (sparse) file: once 30 s and gigabytes copied."""
    import struct

    from vramc.model.gguf import GGUFError, read_gguf

    header, _ = __import__("gguf_craft").encode(llama_kv(), [])
    header = header[:8] + struct.pack("<Q", 1) + header[16:]  # one tensor
    header += struct.pack("<Q", 6 << 30) + b"blk.0"  # ... whose name claims 6 GiB
    path = _sparse(tmp_path / "m.gguf", header, 8 << 30)
    start = time.perf_counter()
    with pytest.raises(GGUFError, match="name of tensor 0 is 6442450944 bytes; llama.cpp allows at most 63"):
        read_gguf(path)
    assert time.perf_counter() - start < 1


def test_a_huge_string_value_is_stepped_over_not_copied(tmp_path):
    from vramc.model.gguf import SkippedString, read_header

    kv = llama_kv() + [("tokenizer.chat_template", STR, b"")]
    header, _ = __import__("gguf_craft").encode(kv, [])
    header = header[:-8] + (32 << 20).to_bytes(8, "little")  # the template claims 32 MiB
    path = _sparse(tmp_path / "m.gguf", header, len(header) + (32 << 20))
    h = read_header(path)
    assert h.kv["tokenizer.chat_template"] == SkippedString(32 << 20)
    assert h.kv["llama.block_count"] == 2


def test_a_header_past_its_bound_is_refused(tmp_path):
    from vramc.model.gguf import MAX_HEADER, GGUFError, read_gguf

    kv = llama_kv() + [("x.pad", STR, b"")]
    header, _ = __import__("gguf_craft").encode(kv, [])
    header = header[:-8] + MAX_HEADER.to_bytes(8, "little")
    path = _sparse(tmp_path / "m.gguf", header, len(header) + MAX_HEADER + 64)
    start = time.perf_counter()
    with pytest.raises(GGUFError, match="runs past 268435456 bytes"):
        read_gguf(path)
    assert time.perf_counter() - start < 1


# --- 5. the check cache notices what changes the answer --------------------------------------
def small_card_project(tmp_path: Path) -> tuple[Path, Path]:
    project = tmp_path / "p"
    (project / "profiles" / "hardware").mkdir(parents=True)
    (project / "profiles" / "models").mkdir()
    shutil.copy(LLAMA8B, project / "profiles" / "models" / "llama8b.yaml")
    (project / "cards").mkdir()
    (project / "cards" / "big.yaml").write_text("gpus: [{name: RTX 4090, vram: 24GiB}]\n")
    (project / "cards" / "small.yaml").write_text("gpus: [{name: GTX 1650, vram: 4GiB}]\n")
    os.symlink("../../cards/big.yaml", project / "profiles" / "hardware" / "gpu.yaml")
    (project / "profiles" / "team").mkdir()
    (project / "profiles" / "team" / "d.yaml").write_text(
        "name: d\nhardware: gpu\nmodel: llama8b\nengine: llama-server\nsettings: {ctx: 8192, gpu_layers: all}\n"
    )
    return project, tmp_path / "cache"


def test_retargeted_hardware_symlink_is_not_answered_from_the_cache(tmp_path):
    project, cache = small_card_project(tmp_path)
    first = vramc(["check", "profiles/"], project, cache)
    assert first.returncode == 0, first.stdout + first.stderr
    link = project / "profiles" / "hardware" / "gpu.yaml"
    link.unlink()
    os.symlink("../../cards/small.yaml", link)
    fresh = vramc(["check", "profiles/"], project)
    cached = vramc(["check", "profiles/"], project, cache)
    assert fresh.returncode == 1 and "VR300" in fresh.stdout
    assert (cached.returncode, cached.stdout) == (fresh.returncode, fresh.stdout)


def test_a_shadowing_models_folder_is_not_answered_from_the_cache(tmp_path):
    project, cache = small_card_project(tmp_path)
    assert vramc(["check", "profiles/"], project, cache).returncode == 0
    (project / "profiles" / "team" / "models").mkdir()  # now names resolve in profiles/team/
    fresh = vramc(["check", "profiles/"], project)
    cached = vramc(["check", "profiles/"], project, cache)
    assert "VR110" in fresh.stdout
    assert (cached.returncode, cached.stdout) == (fresh.returncode, fresh.stdout)


# --- 6. corrupt cache entries are misses ------------------------------------------------------
def corrupt(entry: Path, how: str) -> None:
    text = entry.read_text()
    if how == "directory":
        entry.unlink()
        entry.mkdir()
        return
    if how == "truncated":
        entry.write_text(text[: len(text) // 2])
    elif how == "not-json":
        entry.write_text("{not json")
    elif how == "binary":
        entry.write_bytes(b"\xff\xfe\x00" * 100)
    elif how == "fifo":
        entry.unlink()
        os.mkfifo(entry)
    else:  # valid JSON of the wrong types, with or without a correct digest
        head, _, body = text.partition('"entry": ')
        d = json.loads(body[:-1])
        how(d)
        body = json.dumps(d)
        if how.__name__.endswith("keep_digest"):  # past the digest: the decoder's checks
            import hashlib

            head = '{"sha256": "' + hashlib.sha256(body.encode()).hexdigest() + '", '
        entry.write_text(head + '"entry": ' + body + "}")


def _check_message_keep_digest(d):
    for r in d["diagnostics"]:
        r["message"] = 5


def _check_span_keep_digest(d):
    for r in d["diagnostics"]:
        r["span"] = "abcd"


def _check_depends(d):
    d["depends"] = [5]


def _check_severity_keep_digest(d):
    for r in d["diagnostics"]:
        r["severity"] = "error"


CHECK_CORRUPTIONS = [
    "truncated",
    "not-json",
    "binary",
    "directory",
    "fifo",
    _check_message_keep_digest,
    _check_span_keep_digest,
    _check_depends,
    _check_severity_keep_digest,
]


@pytest.mark.parametrize("how", CHECK_CORRUPTIONS, ids=lambda h: h if isinstance(h, str) else h.__name__)
def test_a_corrupt_check_entry_is_a_miss_and_is_replaced(tmp_path, how):
    project, cache = small_card_project(tmp_path)
    (project / "profiles" / "team" / "d.yaml").write_text(
        "name: d\nhardware: gpu\nmodel: nowhere\nengine: llama-server\n"
    )  # a finding to cache
    first = vramc(["check", "profiles/"], project, cache)
    assert "VR110" in first.stdout
    entries = sorted((cache / "checks").glob("*.json"))
    assert entries
    for e in entries:
        corrupt(e, how)
    again = vramc(["check", "profiles/"], project, cache, timeout=60)
    assert (again.returncode, again.stdout) == (first.returncode, first.stdout), again.stderr
    for e in entries:  # written again, whole
        assert e.is_file() and json.loads(e.read_text())["entry"]["diagnostics"] is not None


def _estimate_notes_keep_digest(d):
    if "notes" in d:
        d["notes"] = 5


def _estimate_devices_keep_digest(d):
    if "devices" in d:
        d["devices"] = [5]


def _estimate_resolved(d):
    if "resolved" in d:
        d["resolved"] = {"n_ctx": [1]}


def _estimate_choice_keep_digest(d):
    if "choice" in d:
        d["choice"]["ctx"] = [8192]


ESTIMATE_CORRUPTIONS = [
    "truncated",
    "not-json",
    "directory",
    _estimate_notes_keep_digest,
    _estimate_devices_keep_digest,
    _estimate_resolved,
    _estimate_choice_keep_digest,
]


@pytest.mark.parametrize("how", ESTIMATE_CORRUPTIONS, ids=lambda h: h if isinstance(h, str) else h.__name__)
def test_a_corrupt_estimate_entry_is_a_miss_and_is_replaced(tmp_path, how):
    project, cache = small_card_project(tmp_path)
    (project / "profiles" / "team" / "d.yaml").write_text(
        "name: d\nhardware: gpu\nmodel: llama8b\nengine: llama-server\nsettings: {ctx: auto, gpu_layers: auto}\n"
    )
    fresh = vramc(["plan", "--format", "json", "profiles/"], project)
    first = vramc(["plan", "--format", "json", "profiles/"], project, cache)
    assert first.stdout == fresh.stdout
    entries = sorted((cache / "estimates").rglob("*.json"))
    assert len(entries) >= 2  # the solver's result and the estimates
    for e in entries:
        corrupt(e, how)
    healed = vramc(["plan", "--format", "json", "profiles/"], project, cache)
    assert healed.returncode == 0, healed.stderr
    assert healed.stdout == fresh.stdout
    assert all(e.is_file() and json.loads(e.read_text()) for e in entries)


def test_a_symlinked_cache_entry_is_replaced_not_written_through(tmp_path):
    from vramc import cache as vc

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    entry = tmp_path / "c" / "e.json"
    entry.parent.mkdir()
    os.symlink(victim, entry)
    assert vc.read_entry(entry) is None
    vc.write_entry(entry, '{"a": 1}')
    assert victim.read_text() == "keep me"
    assert not entry.is_symlink() and vc.read_entry(entry) == '{"a": 1}'


# --- 7. discovery -----------------------------------------------------------------------------
def test_dangling_looping_and_special_profiles_are_reported_and_the_rest_checked(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "d.yaml").write_text(
        "name: d\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nmodel: nowhere\nengine: llama-server\n"
    )
    os.symlink("gone.yaml", profiles / "dangling.yaml")
    os.symlink("loop.yaml", profiles / "loop.yaml")
    if hasattr(os, "mkfifo"):
        os.mkfifo(profiles / "fifo.yaml")
    r = vramc(["check", "profiles/"], tmp_path, timeout=60)
    lines = r.stdout.splitlines()
    assert r.returncode == 1, r.stderr
    assert (
        "profiles/dangling.yaml:1:1: VR000 error: a symbolic link to gone.yaml, which does not "
        "exist; fix or remove the link" in lines
    )
    assert any(x.startswith("profiles/loop.yaml:1:1: VR000 error: ") and "leads back to itself" in x for x in lines)
    loop = next(x for x in lines if x.startswith("profiles/loop.yaml:"))
    assert "fix the link" in loop and "chmod" not in loop  # chmod cannot cure a loop
    if hasattr(os, "mkfifo"):
        assert any(x.startswith("profiles/fifo.yaml:1:1: VR000 error: not a regular file") for x in lines)
    assert any(x.startswith("profiles/d.yaml:3:8: VR110 error:") for x in lines)  # still checked


def test_a_device_given_to_check_is_named_as_such_and_counted(tmp_path):
    """`vramc check /dev/zero` said "rename it so that it does not end in .yaml" (it does not) and
    "1 error in 0 files"; a FIFO named like a profile in a folder keeps the rename hint."""
    r = vramc(["check", "/dev/zero"], tmp_path, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stdout == (
        "/dev/zero:1:1: VR000 error: not a regular file (a pipe, a device or a socket); give a profile "
        "(a regular .yaml file) or a folder of them, e.g. vramc check profiles/\n"
    )
    assert r.stderr.strip().splitlines()[-1] == "1 error in 1 file"
    if hasattr(os, "mkfifo"):
        (tmp_path / "profiles").mkdir()
        os.mkfifo(tmp_path / "profiles" / "fifo.yaml")
        r = vramc(["check", "profiles/"], tmp_path, timeout=60)
        assert "rename it so that it does not end in .yaml" in r.stdout, r.stdout
        assert r.stderr.strip().splitlines()[-1] == "1 error in 1 file"


def test_a_missing_file_given_to_check_is_counted(tmp_path):
    """`vramc check typo.yaml` reported the path and then "1 error in 0 files"."""
    r = vramc(["check", "typo.yaml"], tmp_path, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stdout == "typo.yaml:1:1: VR000 error: no such file or directory; check the path\n"
    assert r.stderr.strip().splitlines()[-1] == "1 error in 1 file"
    os.symlink("nowhere.yaml", tmp_path / "dangling.yaml")
    r = vramc(["check", "typo.yaml", "dangling.yaml", "typo.yaml"], tmp_path, timeout=60)
    assert "dangling.yaml:1:1: VR000 error: a symbolic link to nowhere.yaml" in r.stdout, r.stdout
    assert r.stderr.strip().splitlines()[-1] == "2 errors in 2 files"
    r = vramc(["check", "--format", "json", "typo.yaml"], tmp_path, timeout=60)
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["summary"] == {"error": 1, "warning": 0, "info": 0}


def test_a_reference_to_a_looping_link_gets_the_loops_hint(tmp_path):
    (tmp_path / "profiles" / "models").mkdir(parents=True)
    os.symlink("m.yaml", tmp_path / "profiles" / "models" / "m.yaml")
    (tmp_path / "profiles" / "d.yaml").write_text(
        "name: d\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nmodel: m\nengine: llama-server\n"
    )
    r = vramc(["check", "profiles/d.yaml"], tmp_path, timeout=60)
    line = next(x for x in r.stdout.splitlines() if "VR000" in x)
    assert "leads back to itself" in line and "fix the link" in line and "chmod" not in line, line


def test_each_unreadable_cause_gets_its_own_hint():
    from vramc.load.profiles import unreadable_hint

    assert "chmod" in unreadable_hint("Permission denied") and "owner" in unreadable_hint("Permission denied")
    assert "chmod" not in unreadable_hint(
        "Too many levels of symbolic links (a symbolic link that leads back to itself)"
    )
    assert unreadable_hint("File name too long") == "shorten the path"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 folder: permissions deny nothing")
def test_an_unreadable_folder_is_reported(tmp_path):
    profiles = tmp_path / "profiles"
    (profiles / "locked").mkdir(parents=True)
    (profiles / "locked" / "x.yaml").write_text("name: x\n")
    os.chmod(profiles / "locked", 0)
    try:
        r = vramc(["check", "profiles/"], tmp_path, timeout=60)
    finally:
        os.chmod(profiles / "locked", 0o755)
    assert r.returncode == 1 and "VR000" in r.stdout and "profiles/locked" in r.stdout


def test_an_estimate_key_is_never_inherited_by_a_model_at_a_reused_address():
    """Keys were remembered by id(meta): a model freed and another allocated at its address got
    the first one's key, and with it the first one's cached estimates."""
    from vramc.model.modelmeta import ModelMeta, expand_tensors
    from vramc.plan import estimate_cache

    def model(n_layer: int) -> ModelMeta:
        return ModelMeta(
            "llama",
            {"block_count": n_layer, "embedding_length": 64},
            10,
            expand_tensors({"token_embd.weight": ["f32", 64, 10]}),
        )

    keys: dict[int, set] = {}
    for i in range(500):
        n = 1 + i % 5
        keys.setdefault(n, set()).add(estimate_cache._meta_key(model(n)))  # freed at once
    assert all(len(k) == 1 for k in keys.values()) and len(set().union(*keys.values())) == 5


def test_a_folder_that_cannot_be_listed_is_reported_even_as_root(tmp_path):
    """Permissions deny root nothing, a path over PATH_MAX denies everyone: the folder that cannot
    be listed is VR000, not silently skipped with its profiles unchecked."""
    (tmp_path / "profiles").mkdir()
    fd = os.open(tmp_path / "profiles", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(22):  # 22 x 201 bytes: past Linux's 4096
            os.mkdir("d" * 200, dir_fd=fd)
            deeper = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        f = os.open("x.yaml", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(f, b"name: x\n")
        os.close(f)
    finally:
        os.close(fd)
    r = vramc(["check", "profiles/"], tmp_path, timeout=60)
    assert r.returncode == 1, r.stderr
    [line] = r.stdout.splitlines()
    assert line.startswith("profiles/ddd") and line.endswith(
        ":1:1: VR000 error: cannot read: cannot list the folder: File name too long; shorten the path"
    )


def test_a_dangling_gguf_link_uses_the_lock_and_a_looping_one_is_vr201(tmp_path):
    """A model linked in from a disk not mounted here is absent (the lock answers), as a missing
    file is; a link that loops is there but unreadable."""
    model = tmp_path / "profiles" / "models" / "m.yaml"
    model.parent.mkdir(parents=True)
    text = LLAMA8B.read_text()
    model.write_text(text.replace(text[text.index("gguf:") :].split("\n")[0], "gguf: models/m.gguf"))
    (tmp_path / "models").mkdir()
    os.symlink("/nonexistent/disk/m.gguf", tmp_path / "models" / "m.gguf")
    p = tmp_path / "profiles" / "d.yaml"
    p.write_text(
        "name: d\nhardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}\nmodel: m\n"
        "engine: llama-server\nsettings: {ctx: 512}\n"
    )
    diags = run_check([p]).diagnostics
    assert not found(diags, "VR201") and not found(diags, "VR200"), diags
    (tmp_path / "models" / "m.gguf").unlink()
    os.symlink("m.gguf", tmp_path / "models" / "m.gguf")
    [d] = found(run_check([p]).diagnostics, "VR201")
    assert "Too many levels of symbolic links" in d.message
