"""Benchmark: wall time of `vramc.plan.fit.solve` for 80-layer models on three GPUs (12+24+24 GiB).

Models from the synth catalog's `model_meta` (no files): Llama 3.3 70B Q4_K_M and Nemotron Super
49B Q8_0 (deci: per-layer shapes, 31 attention-free layers). Settings are llama-server's defaults
as `vramc fit` resolves them (4 slots, unified KV, n_batch 2048, n_ubatch 512, flash attention
auto, f16 KV), gpu_layers and tensor_split auto, on CUDA GPUs with vramc's default overhead for an
unknown GPU and a 5% margin; the context fixed at 32768 (everything fits), fixed at 131072 (partial
offload: the layer search runs) and auto (the largest context that fits). Each configuration is
solved once (first call), then --runs times; the median is compared with the target of 100 ms.
vramc's estimate cache (vramc.plan.estimate_cache, where present) is off for these figures
(VRAMC_NO_CACHE=1: a deployment vramc has not seen) and timed apart, warm, in a scratch directory.
Configurations over the target are broken down (every full estimate one solve computes, in order)
and profiled with cProfile.

    python bench/fit_speed.py [--runs 21] [--profile-top 25]    (writes bench/results/fit_speed.txt)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vramc.hardware.gpus import UNKNOWN_GPU_OVERHEAD  # noqa: E402
from vramc.load.schema import Settings  # noqa: E402
from vramc.memory.usage import GpuBudget  # noqa: E402
from vramc.plan.engine_settings import LlamaChoice, llama_choice  # noqa: E402

GiB = 1024**3
TARGET_MS = 100.0
CAPS_GIB = (12, 24, 24)
MARGIN = 0.05
MODELS = {
    "llama-3.3-70b Q4_K_M": ("llama-3.3-70b-instruct", "Q4_K_M"),
    "nemotron-super-49b Q8_0": ("llama-3.3-nemotron-super-49b-v1.5", "Q8_0"),
}
CTX = (32768, 131072, "auto")


def meta_of(shape: str, ftype: str):
    from vramc.dev.synth.shapes import CATALOG
    from vramc.dev.synth.writer import model_meta

    return model_meta(CATALOG[shape], ftype)


def gpus() -> list[GpuBudget]:
    return [
        GpuBudget(id=f"CUDA{i}", name=f"{c} GiB", gpu=i, capacity_bytes=c * GiB, overhead_bytes=UNKNOWN_GPU_OVERHEAD)
        for i, c in enumerate(CAPS_GIB)
    ]


def choice(ctx) -> LlamaChoice:
    """llama-server's defaults (vramc.plan.engine_settings.DEFAULTS), the fitted keys auto."""
    return llama_choice("llama-server", Settings(ctx=ctx, gpu_layers="auto", tensor_split="auto"))


def anatomy(meta, gs, ch, margins) -> list[str]:
    """Every full estimate one solve computes, in order, with its share of the time."""
    from vramc.plan import fit

    calls = []
    orig = fit.Solver.estimate

    def traced(self, choice):
        p = self.params(choice)
        t = time.perf_counter()
        est = orig(self, choice)
        calls.append((p.n_ctx, p.n_gpu_layers, p.tensor_split, len(p.overrides), (time.perf_counter() - t) * 1000))
        return est

    fit.Solver.estimate = traced
    try:
        t = time.perf_counter()
        fit.solve(meta, gs, ch, margins)
        total = (time.perf_counter() - t) * 1000
    finally:
        fit.Solver.estimate = orig
    in_est = sum(c[-1] for c in calls)
    seen: dict = {}
    out = [
        f"{len(calls)} full estimates, {len({c[:4] for c in calls})} distinct; {in_est:.1f} of {total:.1f} ms "
        f"({in_est / total:.0%}) in them. In order (n_ctx, gpu_layers, tensor_split, -ot count, ms):"
    ]
    for c in calls:
        ts = ",".join(f"{x:.0f}" for x in c[2]) if c[2] else "-"
        if max(c[2] or (0,)) > 1e6:
            ts = "by limits (compute guess)"
        again = " (again)" if c[:4] in seen else ""
        seen[c[:4]] = True
        out.append(f"  ctx {c[0]:>6} ngl {c[1]:>2} ts {ts:26} ot {c[3]} {c[4]:6.1f} ms{again}")
    return out


def timed(solve, meta, gs, ch, margins, runs: int):
    """(first call ms, [ms of each further call], last result)."""
    t = time.perf_counter()
    r = solve(meta, gs, ch, margins)
    first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = solve(meta, gs, ch, margins)
        times.append((time.perf_counter() - t) * 1000)
    return first, times, r


def has_estimate_cache() -> bool:
    import importlib.util

    return importlib.util.find_spec("vramc.plan.estimate_cache") is not None


def main() -> int:
    import tempfile

    from vramc.plan.fit import solve

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fit_speed.txt")
    args = ap.parse_args()

    # the solver's own cost: no estimate cache (a deployment vramc has not seen); the cache, where
    # vramc has one, is timed apart in a scratch directory so no earlier run's entries are read
    os.environ["VRAMC_CACHE"] = tempfile.mkdtemp(prefix="vramc-fit-speed-")
    cache = has_estimate_cache()
    gs = gpus()
    margins = [int(MARGIN * g.capacity_bytes) for g in gs]
    lines = [
        f"# python bench/fit_speed.py --runs {args.runs}",
        f"python {platform.python_version()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} "
        f"at start (a shared machine: min and ms per estimate are the steadier figures); GPUs "
        f"{'+'.join(map(str, CAPS_GIB))} GiB (CUDA, overhead {UNKNOWN_GPU_OVERHEAD >> 20} MiB each, margin "
        f"{MARGIN:.0%}); llama-server defaults; target: median < {TARGET_MS:.0f} ms without the estimate cache",
        "first: the first solve of the configuration in this process; median/min/max: the next "
        f"{args.runs}; estimates: full memory estimates one solve computes"
        + ("; cached: median with vramc's estimate cache warm (vramc.plan.estimate_cache)" if cache else ""),
        "",
        f"{'model':26} {'ctx':>7} | {'first ms':>8} {'median ms':>10} {'min':>7} {'max':>7} | "
        f"{'estimates':>9} {'ms/est':>6} |{' cached ms |' if cache else ''} result",
        "-" * 128,
    ]
    slow = []
    for label, (shape, ftype) in MODELS.items():
        meta = meta_of(shape, ftype)
        for ctx in CTX:
            ch = choice(ctx)
            os.environ["VRAMC_NO_CACHE"] = "1"
            first, times, r = timed(solve, meta, gs, ch, margins, args.runs)
            cached = ""
            if cache:
                del os.environ["VRAMC_NO_CACHE"]
                _f, ctimes, _r = timed(solve, meta, gs, ch, margins, args.runs)
                cached = f" {statistics.median(ctimes):9.1f} |"
                os.environ["VRAMC_NO_CACHE"] = "1"
            med = statistics.median(times)
            c = r.choice
            ts = (
                ",".join(f"{x:g}" for x in c.tensor_split) if isinstance(c.tensor_split, tuple) else str(c.tensor_split)
            )
            res = f"ngl {c.gpu_layers} ts {ts} ctx {c.ctx}{'' if r.fits else ' (does not fit)'}"
            ok = med < TARGET_MS
            lines.append(
                f"{label:26} {str(ctx):>7} | {first:8.1f} {med:10.1f} {min(times):7.1f} {max(times):7.1f} | "
                f"{r.estimates:9d} {med / max(1, r.estimates):6.1f} |{cached} {'ok ' if ok else 'SLOW'} {res}"
            )
            print(lines[-1], flush=True)
            if not ok:
                slow.append((label, meta, ch))
    all_ok = not slow
    lines += [
        "",
        f"target median < {TARGET_MS:.0f} ms: {'met' if all_ok else 'NOT met'} in every configuration"
        if all_ok
        else f"target median < {TARGET_MS:.0f} ms: NOT met in {len(slow)} configuration(s)",
    ]
    for label, meta, ch in slow:
        lines += ["", f"## where the time goes: {label}, ctx {ch.ctx}", *anatomy(meta, gs, ch, margins)]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            solve(meta, gs, ch, margins)
        prof.disable()
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key).print_stats(args.profile_top)
            body = buf.getvalue()
            body = body[body.find("   ncalls") :] if "   ncalls" in body else body
            lines += ["", f"## cProfile, 5 solves of {label} ctx {ch.ctx}, sorted by {key}", body.rstrip()]
    text = "\n".join(lines) + "\n"
    print("\n".join(lines[-1:]) if all_ok else text[text.find("\ntarget") :])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
