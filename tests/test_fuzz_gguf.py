"""A seeded fuzz over GGUF headers: synthetic models of every modelled architecture (vramc.dev.synth,
shrunk to a few layers) with hostile values re-encoded (zero, huge, negative, NaN, wrong types,
lists, text, missing keys and tensors, other architectures) or with bytes flipped, overwritten
and cut. `analyze` and `check` must answer each in a bounded time and memory, with diagnostics and
never an exception (exit 3).

The cases run in a child process with an address-space limit and a per-case alarm, so a hang or a
runaway allocation fails this test instead of the machine.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import struct
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cli_support import assert_exits_0_or_1  # noqa: E402
from gguf_craft import (  # noqa: E402
    ARR,
    BOOL,
    F32,
    F64,
    I32,
    STR,
    U8,
    U32,
    U64,
    encode,
)

SEED = 20261206
CASES = 1200
CASE_SECONDS = 10  # one case's bound; the slowest takes well under a second
MEMORY_LIMIT = 4 << 30  # address space of the child; a header must never need more
RSS_LIMIT_MIB = 1024  # peak resident memory the child may reach over all cases
SHAPES = (
    "mistral-7b-instruct-v0.3",
    "gemma-3-12b-it",
    "mixtral-8x7b-instruct-v0.1",
    "qwen3-30b-a3b",
    "nvidia-nemotron-nano-9b-v2",
    "granite-4.0-h-small",
    "deepseek-v2-lite-chat",
    "llama-3.3-nemotron-super-49b-v1.5",
    "phi-3-mini-4k-instruct",
    "glm-4.5-air",
)
N_LAYER, N_VOCAB = 4, 512
ARCHS = (
    "llama",
    "qwen2",
    "gemma3",
    "qwen3moe",
    "deepseek2",
    "mamba2",
    "nemotron_h",
    "granitehybrid",
    "deci",
    "rwkv6",
    "jamba",
    "qwen3next",
    "gpt-oss",
    "unknownarch",
)
KEYS = (
    "block_count",
    "context_length",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.dimension_count",
    "expert_count",
    "expert_used_count",
    "expert_group_count",
    "nextn_predict_layers",
    "ssm.conv_kernel",
    "ssm.inner_size",
    "ssm.state_size",
    "ssm.time_step_rank",
    "ssm.group_count",
    "attention.kv_lora_rank",
    "attention.key_length_mla",
    "full_attention_interval",
    "wkv.head_size",
    "vocab_size",
)
VALUES = [
    (U32, 0),
    (U32, 1),
    (U32, 3),
    (U32, 2**32 - 1),
    (I32, -1),
    (U64, 2**63),
    (F32, math.nan),
    (F32, math.inf),
    (F64, 1e308),
    (F32, 0.5),
    (STR, "x"),
    (STR, b"\xff\xfe"),
    (BOOL, True),
    (ARR, (U32, [0])),
    (ARR, (I32, [1] * N_LAYER)),
    (ARR, (I32, [0] * N_LAYER)),
    (ARR, (STR, ["a", "b"])),
    (ARR, (U8, [])),
    (ARR, (I32, [2**31 - 1] * N_LAYER)),
]
EDGES = [
    (U32, 2),
    (U32, 8),
    (U32, 64),
    (U32, 128),
    (U32, 1 << 20),
    (U32, 131072),
    (U32, 4096),
    (ARR, (I32, [0, 4, 4, 0])),
    (ARR, (I32, [4, 0, 4, 0])),
    (ARR, (BOOL, [True, False, True, False])),
    (F32, 1e-6),
    (U32, 6),
]  # unusual but valid: these reach the memory model
SETTINGS = [
    "{ctx: 512}",
    "{ctx: auto, gpu_layers: auto}",
    "{ctx: 4096, cache_type_k: q8_0, flash_attn: on}",
    "{ctx: 256, cache_type_k: q4_0, cache_type_v: q4_0, flash_attn: auto, gpu_layers: 1}",
    "{ctx: 0, parallel: 2}",
]
ENGINES = ["llama-server", "ollama", "llama-cpp-python"]


# --- the synthetic models ---------------------------------------------------------------------
def _type_of(v) -> tuple[int, object]:
    """The GGUF type vramc.dev.synth's writer would give a metadata value (gguf-py's choice)."""
    if isinstance(v, bool):
        return BOOL, v
    if isinstance(v, int):
        return U32, v
    if isinstance(v, float):
        return F32, v
    if isinstance(v, str):
        return STR, v
    items = list(v)
    etype = _type_of(items[0])[0] if items else U32
    return ARR, (I32 if etype == U32 else etype, items)


def base_models() -> list[tuple[list, list]]:
    """(keys, tensors) of each shape in SHAPES and the tiny llama, cut to N_LAYER layers."""
    from vramc.dev.synth import CATALOG
    from vramc.dev.synth.arches import arch_metadata
    from vramc.dev.synth.quant import FTYPE_ID, tensor_types
    from vramc.dev.synth.writer import TINY_SHAPE

    out = []
    for shape in [TINY_SHAPE] + [CATALOG[n] for n in SHAPES]:
        n = min(N_LAYER, shape.n_layer)
        cut = {
            f.name: getattr(shape, f.name)[:n]
            for f in dataclasses.fields(shape)
            if isinstance(getattr(shape, f.name), tuple) and len(getattr(shape, f.name)) == shape.n_layer
        }
        shape = dataclasses.replace(shape, n_layer=n, n_vocab=N_VOCAB, **cut)
        kv = [
            ("general.architecture", STR, shape.arch),
            ("general.name", STR, shape.name),
            ("general.file_type", U32, FTYPE_ID["Q4_K_M"]),
        ]
        kv += [(f"{shape.arch}.{k}", *_type_of(v)) for k, v in arch_metadata(shape).items()]
        kv += [
            ("tokenizer.ggml.model", STR, "gpt2"),
            ("tokenizer.ggml.tokens", ARR, (STR, [f"t{i}" for i in range(N_VOCAB)])),
        ]
        out.append((kv, [(t.name, t.type, t.shape) for t in tensor_types(shape, "Q4_K_M")]))
    return out


# --- mutations --------------------------------------------------------------------------------
def mutate_values(rng: random.Random, kv: list, tensors: list) -> tuple[list, list]:
    kv, tensors = list(kv), list(tensors)
    arch = kv[0][2]
    for _ in range(rng.randint(1, 3)):
        what = rng.random()
        if what < 0.45:  # a hyper-parameter set to a hostile value, or an unusual valid one
            key = f"{arch}.{rng.choice(KEYS)}"
            kv = [x for x in kv if x[0] != key] + [(key, *rng.choice(EDGES if rng.random() < 0.6 else VALUES))]
        elif what < 0.55:  # a key dropped
            i = rng.randrange(len(kv))
            kv.pop(i)
        elif what < 0.65:  # another architecture, its keys renamed or left under the old name
            name = rng.choice(ARCHS + ("", b"ll\xffama", "a" * 300))
            rename = isinstance(name, str) and rng.random() < 0.7
            kv = [("general.architecture", STR, name)] + [
                ((name + k[len(arch) :] if rename and k.startswith(arch + ".") else k), t, v)
                for k, t, v in kv
                if k != "general.architecture"
            ]
            arch = name if rename else arch
        elif what < 0.75 and tensors:  # tensors dropped
            for _ in range(rng.randint(1, 3)):
                if tensors:
                    tensors.pop(rng.randrange(len(tensors)))
        elif what < 0.85 and tensors:  # a tensor's shape or type changed
            i = rng.randrange(len(tensors))
            name, type_, shape = tensors[i]
            shape = rng.choice(
                [(0,) + shape[1:], shape + (1,) * (4 - len(shape)), (256, 2**40), tuple(reversed(shape)), (256,)]
            )
            tensors[i] = (name, rng.choice([type_, "f32", "q8_0", "iq2_xxs", "f16"]), shape)
        elif what < 0.92:  # a tensor of a block past block_count
            tensors.append((f"blk.{rng.choice([N_LAYER, 511, 10**9])}.attn_q.weight", "f32", (64, 64)))
        else:  # no tokens, or too many
            tokens = rng.choice([[], [f"t{i}" for i in range(5000)]])
            kv = [x for x in kv if x[0] != "tokenizer.ggml.tokens"] + [("tokenizer.ggml.tokens", ARR, (STR, tokens))]
    return kv, tensors


def _valid_shapes(tensors: list) -> list:
    """The encoder sizes the data region; shapes ggml cannot size are left to the byte mutations."""
    from vramc.model.ggml import tensor_nbytes

    out = []
    for name, type_, shape in tensors:
        try:
            if tensor_nbytes(type_, shape) < 2**36:  # the file is sparse, but not unbounded
                out.append((name, type_, shape))
        except (ZeroDivisionError, KeyError, IndexError):
            pass
    return out


def mutate_bytes(rng: random.Random, header: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        what = rng.random()
        at = rng.randrange(4, len(header))
        if what < 0.35:
            header[at] ^= 1 << rng.randrange(8)
        elif what < 0.55:  # a count, length or dimension made huge
            header[at : at + 8] = struct.pack("<Q", rng.choice([2**63 - 1, 2**64 - 1, 2**32, 10**12]))
        elif what < 0.7:  # a float made NaN or infinite, or a type id wrong
            header[at : at + 4] = struct.pack("<f", rng.choice([math.nan, math.inf, -math.inf]))
        elif what < 0.8:
            header[at : at + 4] = struct.pack("<I", rng.choice([13, 99, 2**31, 9]))
        elif what < 0.9:  # a string made invalid UTF-8
            header[at] = 0xFF
        else:
            del header[at:]
            break
    return header


def cases(seed: int = SEED, n: int = CASES) -> list[tuple[str, bytes, int, str, str]]:
    """(what was done, header bytes, data bytes, engine, settings) for n cases."""
    rng = random.Random(seed)
    bases = base_models()
    out = []
    for i in range(n):
        b = rng.randrange(len(bases))
        kv, tensors = bases[b]
        if rng.random() < 0.6:
            kv, tensors = mutate_values(rng, kv, tensors)
            header, data = encode(kv, _valid_shapes(tensors))
            what = f"case {i}: base {b}, values"
        else:
            header, data = encode(kv, tensors)
            header = bytes(mutate_bytes(rng, bytearray(header)))
            what = f"case {i}: base {b}, bytes"
        out.append((what, header, data, rng.choice(ENGINES), rng.choice(SETTINGS)))
    return out


def write_case(folder: Path, i: int, header: bytes, data: int, engine: str, settings: str) -> Path:
    gguf = folder / f"m{i}.gguf"
    with open(gguf, "wb") as f:
        f.write(header)
        f.truncate(-(-len(header) // 32) * 32 + data)  # the data region is a hole
    profile = folder / f"d{i}.yaml"
    profile.write_text(
        f"name: d{i}\nhardware: {{gpus: [{{name: RTX 4090, vram: 24GiB}}, "
        f"{{name: RTX 3060, vram: 12GiB}}]}}\nmodel: {{gguf: {gguf.name}}}\n"
        f"engine: {engine}\nsettings: {settings}\n"
    )
    return profile


# --- the child: every case in process, timed ----------------------------------------------------
class _Timeout(Exception):
    pass


def run_cases(folder: Path, whats: list[str]) -> dict:
    """Run analyze and check on every case in `folder`; a summary of what went wrong."""
    import resource
    import signal
    import traceback

    from vramc.cli.analyze import cli_analyze
    from vramc.lint.check import run_check

    def alarm(*_):
        raise _Timeout()

    signal.signal(signal.SIGALRM, alarm)
    failures, slowest, planned = [], (0.0, ""), 0
    for i, what in enumerate(whats):
        gguf, profile = folder / f"m{i}.gguf", folder / f"d{i}.yaml"
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                rc = cli_analyze(gguf, layers=True, fmt="text", write=None, name=None)
                rc_json = cli_analyze(gguf, layers=False, fmt="json", write=None, name=None)
            if rc not in (0, 1) or rc_json != rc:
                failures.append(f"{what}: analyze returned {rc}/{rc_json}")
            result = run_check([profile])
            bad = [d for d in result.diagnostics if not d.file or d.line < 1]
            if bad:
                failures.append(f"{what}: diagnostics without a place: {bad[:2]}")
            if not result.diagnostics and not result.plans:
                failures.append(f"{what}: neither a plan nor a diagnostic")
            planned += any(p.estimate is not None for p in result.plans)
        except _Timeout:
            failures.append(f"{what}: still running after {CASE_SECONDS} s")
        except BaseException:
            failures.append(f"{what}: {traceback.format_exc(limit=-6)}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = time.perf_counter() - start
        slowest = max(slowest, (took, what))
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"failures": failures, "slowest": slowest, "rss_mib": rss_mib, "planned": planned}


def child_main(folder: str) -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):  # a platform without the limit: the RSS check below still holds
        pass
    os.environ["VRAMC_NO_CACHE"] = "1"
    os.chdir(folder)
    whats = json.loads((Path(folder) / "cases.json").read_text())
    print(json.dumps(run_cases(Path(folder), whats)))


# --- the tests --------------------------------------------------------------------------------
def test_the_fuzz_is_seeded():
    a, b = cases(n=12), cases(n=12)
    assert a == b
    assert len({h for _, h, _, _, _ in a}) == 12


def test_hostile_gguf_headers_never_crash_hang_or_balloon(tmp_path):
    made = cases()
    for i, (_, header, data, engine, settings) in enumerate(made):
        write_case(tmp_path, i, header, data, engine, settings)
    (tmp_path / "cases.json").write_text(json.dumps([w for w, _, _, _, _ in made]))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=CASES * CASE_SECONDS,
        cwd=tmp_path,
    )
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["failures"] == [], "\n".join(summary["failures"][:5])
    assert summary["rss_mib"] < RSS_LIMIT_MIB, summary
    assert summary["slowest"][0] < CASE_SECONDS / 2, summary["slowest"]
    assert summary["planned"] >= CASES // 8, summary  # the mutations reach the memory model too
    print(
        f"{CASES} cases ({summary['planned']} planned) in {took:.1f} s, slowest {summary['slowest']}, "
        f"peak RSS {summary['rss_mib']:.0f} MiB"
    )


def test_a_sample_through_the_cli_never_exits_3(tmp_path):
    """The same cases as a user runs them: `vramc check` and `vramc analyze` in a process."""
    for i, (what, header, data, engine, settings) in enumerate(cases(seed=SEED + 1, n=6)):
        profile = write_case(tmp_path, i, header, data, engine, settings)
        for args in (["check", profile.name], ["analyze", f"m{i}.gguf"]):
            assert_exits_0_or_1(args, tmp_path, what)


if __name__ == "__main__":
    child_main(sys.argv[1])
