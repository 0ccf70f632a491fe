"""python -m bench.accuracy [--full] [--real] [--models NAME ...] [--out PATH]  (see __init__.py)"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from bench.accuracy.compare import CaseResult, format_row, markdown, rpc_gpus, run_case, summary_lines, timing_line
from bench.accuracy.grid import MODELS, SAMPLES_PER_MODEL, cases
from vramc.dev.oracle import RpcServers, find_binaries
from vramc.dev.synth import CATALOG, write_sparse_gguf
from vramc.memory.llama import estimate_llama
from vramc.memory.llama_params import LlamaParams
from vramc.model.gguf import read_gguf

MODEL_DIR = Path.home() / ".cache" / "vramc" / "bench-models"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# Real loads move every weight to the RPC servers, so they use small shapes of catalog families
# (8 blocks, narrower) with the real vocabularies; launch-mode estimates (pins kept) are compared.
REAL_SHAPES = {
    "llama-mini": ("llama-3.1-8b-instruct", dict(n_layer=8, n_embd=1024, n_head=16, n_head_kv=4, n_ff=3072)),
    "gemma3-mini": ("gemma-3-12b-it", dict(n_layer=12, n_embd=1024, n_head=8, n_head_kv=4, n_ff=3072)),
}
REAL_CASES = (
    ("llama-mini", "Q8_0", 2, LlamaParams(n_ctx=8192, tensor_split=(3, 5), n_outputs_max=1)),
    (
        "llama-mini",
        "Q4_K_M",
        3,
        LlamaParams(n_ctx=16384, tensor_split=(1, 2, 1), n_seq_max=4, kv_unified=True, n_outputs_max=4),
    ),
    (
        "llama-mini",
        "Q8_0",
        2,
        LlamaParams(n_ctx=8192, offload_kqv=False, tensor_split=(2, 1), flash_attn="off", n_outputs_max=1),
    ),
    (
        "llama-mini",
        "Q8_0",
        2,
        LlamaParams(
            n_ctx=8192,
            tensor_split=(1, 1),
            n_gpu_layers=5,
            type_k="q8_0",
            type_v="q8_0",
            n_ubatch=1024,
            n_outputs_max=1,
        ),
    ),
    ("gemma3-mini", "Q4_K_M", 2, LlamaParams(n_ctx=32768, tensor_split=(1, 1), n_seq_max=2, n_outputs_max=2)),
    ("gemma3-mini", "Q4_K_M", 3, LlamaParams(n_ctx=8192, tensor_split=(1, 1, 1), flash_attn="off", n_outputs_max=1)),
)


def model_path(name: str, ftype: str) -> Path:
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    path = MODEL_DIR / f"{name}-{ftype}.gguf"
    if not path.exists():
        if name in REAL_SHAPES:
            base, changes = REAL_SHAPES[name]
            shape = dataclasses.replace(CATALOG[base], name=name, **changes)
        else:
            shape = CATALOG[name]
        write_sparse_gguf(path, shape, ftype)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__)
    ap.add_argument("--full", action="store_true", help="the whole cross product instead of a sample")
    ap.add_argument(
        "--samples", type=int, default=SAMPLES_PER_MODEL, help="cases sampled per model (default: %(default)s)"
    )
    ap.add_argument("--real", action="store_true", help="also real llama-server loads (launch mode)")
    ap.add_argument("--models", nargs="*", help="only these catalog names")
    ap.add_argument("--out", type=Path, default=RESULTS, help="markdown results (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    args = ap.parse_args(argv)
    bin_dir = find_binaries()
    if bin_dir is None:
        print("oracle binaries not found: run scripts/build-llama.sh or set VRAMC_ORACLE_BIN", file=sys.stderr)
        return 2
    n_layers = {name: CATALOG[name].n_layer for name, _ in MODELS}
    grid = cases(n_layers, full=args.full, models=args.models, samples=args.samples)
    metas: dict[Path, object] = {}
    results: list[CaseResult] = []
    real: list[CaseResult] = []
    with RpcServers(3, bin_dir) as rpc:
        for case in grid:
            path = model_path(case.model, case.ftype)
            meta = metas.setdefault(path, read_gguf(path))
            res = run_case(case.label, meta, path, case.n_devices, case.params, rpc.endpoints, bin_dir)
            results.append(res)
            _print(res, args.quiet)
        if args.real:
            for name, ftype, n_dev, params in REAL_CASES:
                path = model_path(name, ftype)
                label = f"{name} {ftype} dev={n_dev} {_describe(params)}"
                res = run_case(label, read_gguf(path), path, n_dev, params, rpc.endpoints, bin_dir, real=True)
                real.append(res)
                _print(res, args.quiet)
    ok = True
    for title, res in (("dry run", results), ("launch", real)):
        if not res:
            continue
        print(f"\n== {title}: {len(res)} cases, {sum(r.ok for r in res)} within the targets; {timing_line(res)}")
        print("\n".join(summary_lines(res)))
        ok = ok and all(r.ok for r in res)
    speed = speed_lines()
    print("\n== speed\n" + "\n".join(f"  {s}" for s in speed))
    command = (
        "python -m bench.accuracy"
        + (" --full" if args.full else "")
        + (f" --samples {args.samples}" if args.samples != SAMPLES_PER_MODEL and not args.full else "")
        + (" --real" if args.real else "")
    )
    args.out.write_text(markdown(results, real, command, speed))
    print(f"\nwrote {args.out}")
    return 0 if ok else 1


SPEED_CASES = (
    ("full offload, c=8192", LlamaParams(n_ctx=8192, tensor_split=(1, 1, 1))),
    (
        "40 layers offloaded, c=32768, no flash attention",
        LlamaParams(n_ctx=32768, tensor_split=(3, 2, 1), n_gpu_layers=40, flash_attn="off"),
    ),
    (
        "4 slots, q8_0 KV, c=131072",
        LlamaParams(n_ctx=131072, tensor_split=(1, 2, 1), n_seq_max=4, type_k="q8_0", type_v="q8_0"),
    ),
)


def speed_lines() -> list[str]:
    meta = read_gguf(model_path("llama-3.3-70b-instruct", "Q4_K_M"))
    out = []
    for label, params in SPEED_CASES:
        best = float("inf")
        for _ in range(20):
            t = time.perf_counter()
            estimate_llama(meta, rpc_gpus(3), params)
            best = min(best, time.perf_counter() - t)
        out.append(f"{label}: {best * 1000:.1f} ms")
    return out


def _describe(p: LlamaParams) -> str:
    ts = ",".join(f"{x:g}" for x in p.tensor_split) if p.tensor_split else "-"
    ngl = "all" if p.n_gpu_layers < 0 else str(p.n_gpu_layers)
    return (
        f"ts={ts} ngl={ngl} c={p.n_ctx} ub={p.n_ubatch} fa={p.flash_attn} kv={p.type_k} np={p.n_seq_max}"
        + (" kvu" if p.kv_unified else "")
        + ("" if p.offload_kqv else " nkvo")
    )


def _print(res: CaseResult, quiet: bool) -> None:
    if res.error:
        print(f"ERR {res.label}: {res.error}")
        return
    for r in res.rows:
        if not quiet or not r.ok:
            print(format_row(r))


if __name__ == "__main__":
    sys.exit(main())
