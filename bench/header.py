"""Benchmark: read the header of a Llama-3.1-8B-shaped GGUF with gguf-py and with vramc.

    .venv/bin/python bench/header.py [--model PATH] [--runs N] [--out bench/results/header.txt]

Without --model it writes a sparse Q8_0 GGUF of the real shape (292 tensors, 128,256 tokens,
280,147 merges, a chat template) into a temporary directory: the header is real, the 8 GB data
region is a hole. (vramc.dev.synth's sparse files carry a 4-merge stand-in vocabulary; the header
cost is in the strings, so this one has Llama 3's counts and string lengths.) Both readers run
in this process after their imports; the report gives the median and the first call of each,
and the cost of each import in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpus, package_version  # noqa: E402  # bench/machine.py (run as a script: bench/ is on sys.path)

from vramc.model.ggml import TYPE_BY_NAME, tensor_nbytes  # noqa: E402
from vramc.model.gguf import read_gguf, read_header  # noqa: E402

N_LAYER, N_EMBD, N_FF, N_HEAD, N_HEAD_KV = 32, 4096, 14336, 32, 8
N_VOCAB, N_SPECIAL, N_MERGES = 128256, 256, 280147


def _vocabulary(rng: random.Random) -> tuple[list[str], list[str]]:
    """Byte-level BPE-like strings with Llama 3's length profile (most 2-10 bytes, a long tail)."""
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    tokens = []
    for i in range(N_VOCAB - N_SPECIAL):
        n = 64 + i % 97 if i % 997 == 0 else rng.choice((1, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11, 14))
        space = "Ġ" if rng.random() < 0.6 else ""  # GPT-2 byte-level BPE spells a space Ġ (2 bytes)
        tokens.append(space + "".join(rng.choices(letters, k=n)))
    tokens += [f"<|reserved_special_token_{i}|>" for i in range(N_SPECIAL)]
    common = tokens[:50000]
    merges = [f"{rng.choice(common)[:6]} {rng.choice(common)[:6]}" for _ in range(N_MERGES)]
    return tokens, merges


def write_model(path: Path) -> None:
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    tokens, merges = _vocabulary(random.Random(0))
    w = GGUFWriter(path, "llama")
    w.add_type("model")
    w.add_name("Meta Llama 3.1 8B Instruct")
    w.add_size_label("8B")
    w.add_tags(["facebook", "meta", "pytorch", "llama", "llama-3", "text-generation"])
    w.add_languages(["en", "de", "fr", "it", "pt", "hi", "es", "th"])
    w.add_block_count(N_LAYER)
    w.add_context_length(131072)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(7)
    w.add_vocab_size(N_VOCAB)
    w.add_rope_dimension_count(128)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types([1] * (N_VOCAB - N_SPECIAL) + [3] * N_SPECIAL)
    w.add_token_merges(merges)
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128009)
    w.add_chat_template("{{- bos_token }}\n" * 300)  # real templates are about 5 KB
    w.add_quantizationpackage_version(2)

    tensors = [("token_embd.weight", "q8_0", (N_EMBD, N_VOCAB)), ("rope_freqs.weight", "f32", (64,))]
    for i in range(N_LAYER):
        tensors += [
            (f"blk.{i}.{name}", t, shape)
            for name, t, shape in (
                ("attn_norm.weight", "f32", (N_EMBD,)),
                ("ffn_down.weight", "q8_0", (N_FF, N_EMBD)),
                ("ffn_gate.weight", "q8_0", (N_EMBD, N_FF)),
                ("ffn_up.weight", "q8_0", (N_EMBD, N_FF)),
                ("ffn_norm.weight", "f32", (N_EMBD,)),
                ("attn_k.weight", "q8_0", (N_EMBD, 1024)),
                ("attn_output.weight", "q8_0", (N_EMBD, N_EMBD)),
                ("attn_q.weight", "q8_0", (N_EMBD, N_EMBD)),
                ("attn_v.weight", "q8_0", (N_EMBD, 1024)),
            )
        ]
    tensors += [("output_norm.weight", "f32", (N_EMBD,)), ("output.weight", "q8_0", (N_EMBD, N_VOCAB))]
    for name, type_, shape in tensors:
        w.add_tensor_info(
            name,
            list(reversed(shape)),
            np.dtype(np.float32),
            tensor_nbytes(type_, shape),
            raw_dtype=GGMLQuantizationType(TYPE_BY_NAME[type_]),
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    data_offset = w.ggml_pad(w.fout[0].tell(), w.data_alignment)
    w.close()
    data = sum(w.ggml_pad(tensor_nbytes(t, s), w.data_alignment) for _, t, s in tensors)
    with open(path, "r+b") as f:
        f.truncate(data_offset + data)  # the data region becomes a hole


def _time(fn, runs: int) -> tuple[float, float]:
    """(first call, median of the following `runs`), in ms."""
    times = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times[0], statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a GGUF to read instead of the generated one")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of gguf-py (vramc runs 10x more)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "header.txt")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or Path(tmp) / "llama-3.1-8b-shaped-Q8_0.gguf"
        if not args.model:
            write_model(path)
        import gguf  # after the model is written: neither reader's import is timed

        # vramc's first call is its first in this process: it compiles the string-skipping pattern
        first_vramc, vramc_ms = _time(lambda: read_gguf(path), args.runs * 10)
        first_gguf, gguf_ms = _time(lambda: gguf.GGUFReader(path), args.runs)
        header, meta = read_header(path), read_gguf(path)
    imports = {m: _import_ms(m) for m in ("vramc.model.gguf", "gguf")}

    model = args.model or "generated sparse Llama-3.1-8B-shaped Q8_0 GGUF"
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/header.py", *sys.argv[1:]])
    lines = [
        f"GGUF header read: vramc.model.gguf.read_gguf vs gguf.GGUFReader (gguf-py {package_version('gguf')})",
        f"command:  {command}",
        f"model:    {model}",
        f"          {len(meta.tensors)} tensors, {_count(header, 'tokens'):,} tokens, "
        f"{_count(header, 'merges'):,} merges, header {header.data_offset / 2**20:.1f} MiB, "
        f"file {meta.file_size / 2**30:.2f} GiB",
        f"machine:  {platform.machine()}, {cpus()} CPUs, Python {platform.python_version()}"
        + (" (no .pyc cache: imports compile)" if sys.dont_write_bytecode else ""),
        "",
        f"gguf.GGUFReader(path)       median {gguf_ms:9.1f} ms over {args.runs} runs (first {first_gguf:.1f} ms)",
        f"vramc.model.gguf.read_gguf(path)  median {vramc_ms:9.1f} ms over {args.runs * 10} runs "
        f"(first {first_vramc:.1f} ms)",
        f"ratio                       {gguf_ms / vramc_ms:,.0f}x faster",
        "",
        "import, in a fresh interpreter (median of 5):",
        *(f"  import {m:<10} {ms:6.1f} ms" for m, ms in imports.items()),
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text, end="")


def _count(header, array: str) -> int:
    value = header.kv.get(f"tokenizer.ggml.{array}")
    return len(value) if isinstance(value, list) else getattr(value, "count", 0)


def _import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout)
        * 1000
        for _ in range(5)
    ]
    return statistics.median(runs)


if __name__ == "__main__":
    main()
