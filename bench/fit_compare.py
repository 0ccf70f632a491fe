"""Proof against llama.cpp's own fit: vramc's fit solver vs `llama-fit-params --fit on`.

Loopback `ggml-rpc-server` processes stand in for GPUs; each reports the machine's RAM as its
free memory F_i, so a card of C_i MiB is simulated with `--fit-target F_i - C_i` (negative for a
card larger than the RAM: llama.cpp parses the margin into a wrapped size_t and uses it as int64).
llama.cpp's budget is then C_i MiB plus the sub-MiB part of F_i, and vramc gets the same bytes.
For each case (a sparse GGUF of a real model, a device set, a context):

  (a) vramc's solver with GpuBudget(RPCi, that capacity, no overhead, reserve or tenants),
      margins 0 and llama-fit-params' defaults (1 sequence, not unified, n_batch 2048 and as many
      outputs, n_ubatch 512, flash attention auto, f16 KV): engine llama-cpp-python, ctx fixed,
      gpu_layers and tensor_split auto;
  (b) llama.cpp's choice: `llama-fit-params -c CTX --fit on -fitt T0,T1,.. -lv 4`, its printed
      -c/-ngl/-ts/-ot parsed (the -lv 4 search log is written under --logs);
  (c) vramc's settings loaded by llama-fit-params with `--fit off --fit-print on`: every card's
      model + context + compute ("self" of llama.cpp's memory breakdown, exact bytes rounded down
      to MiB) must be <= C_i;
  (d) dense models: vramc keeps at least as many layers on the GPUs as llama.cpp. MoE models:
      llama.cpp moves expert tensors to the host (-ot) before layers; vramc does that only for
      llama-server (llama-cpp-python has no --override-tensor) and otherwise moves whole layers.
      Layer counts are not comparable, so MoE cases pass on (c) alone and report bytes on the
      GPUs; the solver is also run with its expert offload enabled (the engine check lifted) and
      that choice is checked as in (c).

llama.cpp's own choice is loaded the same way as (c), to show where it overshoots its targets,
and the notes explain every difference from the numbers of both loads and the search log.

    python bench/fit_compare.py            # the default grid (23 cases), about a minute on 2 cores
    python bench/fit_compare.py --full     # every model x device set x context (108 cases)
    python bench/fit_compare.py --only llama8b   # cases whose id contains a string

Writes bench/results/fit_compare.md (with --out, elsewhere; --no-write: print only). Exit status 1
if a case fails.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vramc.dev import oracle  # noqa: E402
from vramc.memory.usage import GpuBudget  # noqa: E402
from vramc.plan.engine_settings import LlamaChoice, to_llama_params  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB

# key: (catalog shape, file type, MoE)
MODELS = {
    "llama8b-q8_0": ("llama-3.1-8b-instruct", "Q8_0", False),
    "llama70b-q4_k_m": ("llama-3.3-70b-instruct", "Q4_K_M", False),
    "qwen32b-q4_k_m": ("qwen2.5-32b-instruct", "Q4_K_M", False),
    "r1qwen14b-q4_k_m": ("deepseek-r1-distill-qwen-14b", "Q4_K_M", False),
    "gemma3-12b-q4_k_m": ("gemma-3-12b-it", "Q4_K_M", False),
    "gemma2-9b-q8_0": ("gemma-2-9b-it", "Q8_0", False),
    "nemotron49b-q8_0": ("llama-3.3-nemotron-super-49b-v1.5", "Q8_0", False),
    "qwen3moe30b-q4_k_m": ("qwen3-30b-a3b", "Q4_K_M", True),
    "mixtral8x7b-q4_k_m": ("mixtral-8x7b-instruct-v0.1", "Q4_K_M", True),
}

# simulated cards, GiB, in launch order
DEVICE_SETS = {
    "16": (16,),
    "8+3": (8, 3),
    "24+24": (24, 24),
    "12+24+24": (12, 24, 24),
}
CONTEXTS = (4096, 8192, 32768)

# the default grid: every model, every device set, partial and full offload
DEFAULT_CASES = [
    ("llama8b-q8_0", "16", 8192),
    ("llama8b-q8_0", "8+3", 8192),
    ("llama8b-q8_0", "8+3", 32768),
    ("llama8b-q8_0", "12+24+24", 32768),
    ("llama70b-q4_k_m", "16", 4096),
    ("llama70b-q4_k_m", "24+24", 8192),
    ("llama70b-q4_k_m", "24+24", 32768),
    ("llama70b-q4_k_m", "12+24+24", 32768),
    ("qwen32b-q4_k_m", "16", 8192),
    ("qwen32b-q4_k_m", "8+3", 4096),
    ("qwen32b-q4_k_m", "24+24", 32768),
    ("r1qwen14b-q4_k_m", "16", 32768),
    ("r1qwen14b-q4_k_m", "8+3", 8192),
    ("gemma3-12b-q4_k_m", "16", 32768),
    ("gemma3-12b-q4_k_m", "8+3", 8192),
    ("nemotron49b-q8_0", "24+24", 8192),
    ("nemotron49b-q8_0", "12+24+24", 8192),
    ("nemotron49b-q8_0", "12+24+24", 32768),
    ("qwen3moe30b-q4_k_m", "16", 8192),
    ("qwen3moe30b-q4_k_m", "8+3", 8192),
    ("qwen3moe30b-q4_k_m", "24+24", 32768),
    ("mixtral8x7b-q4_k_m", "16", 4096),
    ("mixtral8x7b-q4_k_m", "24+24", 8192),
]

_DEVICES_RE = re.compile(r"^\s*(RPC\d+): \S+ \((\d+) MiB, (\d+) MiB free\)", re.M)
_BREAKDOWN_RE = re.compile(
    r"\|\s+- (RPC\d+) \([^)]*\)\s*\|\s*(\d+) = (\d+) \+ \(\s*(\d+) =\s*(\d+) \+\s*(\d+) \+\s*(\d+)\)"
)
_TARGET_RE = re.compile(r"common_params_fit_impl: id=(\d+), target=\s*(-?\d+) MiB")
_FILL_RE = re.compile(
    r"common_params_fit_impl:\s+- (RPC\d+) \([^)]*\):\s+(\d+) layers(?: \(\s*(\d+) overflowing\))?,"
    r"\s+(-?\d+) MiB used,\s+(-?\d+) MiB free"
)


@dataclass(frozen=True)
class Case:
    model: str
    devices: str
    ctx: int

    @property
    def id(self) -> str:
        return f"{self.model}@{self.devices}@{self.ctx}"

    @property
    def caps_mib(self) -> tuple[int, ...]:
        return tuple(g * 1024 for g in DEVICE_SETS[self.devices])

    @property
    def moe(self) -> bool:
        return MODELS[self.model][2]


@dataclass
class DeviceUse:
    """One device as llama.cpp's memory breakdown prints it (MiB, rounded down)."""

    self_mib: int  # model + context + compute, from the exact byte total
    model: int
    context: int
    compute: int


@dataclass
class Verified:
    devices: list[DeviceUse]
    command: list[str]

    def fits(self, caps: tuple[int, ...]) -> bool:
        return all(d.self_mib <= c for d, c in zip(self.devices, caps))

    def over(self, caps: tuple[int, ...]) -> list[int]:
        return [d.self_mib - c for d, c in zip(self.devices, caps)]

    @property
    def gpu_mib(self) -> int:
        return sum(d.self_mib for d in self.devices)

    @property
    def gpu_model_mib(self) -> int:
        return sum(d.model for d in self.devices)


@dataclass
class LlamaFit:
    args: list[str]  # as printed by llama-fit-params
    ngl: int  # layers on GPUs counting the output layer
    ts: tuple[float, ...] | None
    ot: str | None
    targets: dict[int, int]  # from the log: id -> target MiB
    fill: list[tuple[str, int, int, int, int]]  # (dev, layers, overflowing, used, free) per log line
    accepted: dict[str, tuple[int, int, int]]  # dev -> (layers, MiB used, compute MiB) as measured
    log_path: Path
    seconds: float


@dataclass
class Result:
    case: Case
    n_total: int  # n_layer + 1
    vramc_ngl: int
    vramc_ts: tuple[float, ...] | None
    vramc_fits: bool  # the solver's own verdict
    vramc_est_mib: list[float]  # the solver's estimate (real launch)
    vramc_dry_mib: list[float]  # the same settings, estimated as llama.cpp's no_alloc dry run
    vramc_ms: float
    vramc_check: Verified
    llama: LlamaFit
    llama_check: Verified | None
    free_mib: list[int]
    experts: "ExpertRun | None" = None  # MoE: vramc's expert-offload variant
    notes: list[str] = field(default_factory=list)

    @property
    def caps(self) -> tuple[int, ...]:
        return self.case.caps_mib

    @property
    def fits_ok(self) -> bool:  # (c)
        return self.vramc_check.fits(self.caps)

    @property
    def layers_ok(self) -> bool | None:  # (d); None: not comparable (MoE)
        if self.case.moe:
            return None
        return self.vramc_ngl >= self.llama.ngl

    @property
    def passed(self) -> bool:
        ok = self.fits_ok and self.layers_ok is not False
        if self.experts is not None:
            ok = ok and self.experts.check.fits(self.caps)
        return ok


@dataclass
class ExpertRun:
    """vramc's solver with its MoE expert offload (which it offers for llama-server) enabled."""

    ngl: int
    ts: tuple[float, ...] | None
    moved: int  # blocks whose expert tensors go to the host
    fits: bool
    ms: float
    check: Verified


# --- running llama.cpp ------------------------------------------------------------------------


def model_file(model: str, models_dir: Path) -> Path:
    import hashlib

    from vramc.dev.synth.shapes import CATALOG
    from vramc.dev.synth.writer import write_sparse_gguf

    shape, ftype, _ = MODELS[model]
    # keyed by the tensor table vramc reads, so a change in vramc.dev.synth writes a new file
    table = repr([(t.name, t.type, tuple(t.shape)) for t in model_meta(model).tensors]).encode()
    path = models_dir / f"{shape}-{ftype}-{hashlib.sha256(table).hexdigest()[:10]}.gguf"
    if not path.exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        write_sparse_gguf(tmp, CATALOG[shape], ftype)
        tmp.rename(path)
    return path


def model_meta(model: str):
    from vramc.dev.synth.shapes import CATALOG
    from vramc.dev.synth.writer import model_meta as meta_of

    shape, ftype, _ = MODELS[model]
    return meta_of(CATALOG[shape], ftype)


def _run(cmd: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, LLAMA_ARG_LOG_COLORS="off")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise oracle.OracleError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{tail}")
    return proc


def free_mib(bin_dir: Path, endpoints: list[str]) -> list[int]:
    """Free memory each RPC device reports now (llama-fit-params --list-devices)."""
    out = _run([str(bin_dir / "llama-fit-params"), "--rpc", ",".join(endpoints), "--list-devices"])
    found = {m.group(1): int(m.group(3)) for m in _DEVICES_RE.finditer(out.stdout + out.stderr)}
    return [found[f"RPC{i}"] for i in range(len(endpoints))]


def parse_breakdown(log: str, n: int) -> list[DeviceUse]:
    """The last memory breakdown in `log`: RPC devices the model does not use read zero."""
    rows: dict[str, DeviceUse] = {}
    for m in _BREAKDOWN_RE.finditer(log):
        rows[m.group(1)] = DeviceUse(*map(int, m.group(4, 5, 6, 7)))
    return [rows.get(f"RPC{i}", DeviceUse(0, 0, 0, 0)) for i in range(n)]


def fit_print(bin_dir: Path, model: Path, endpoints: list[str], args: list[str]) -> Verified:
    """Load `args` (which must hold --fit off) in the dry run; per-device use from the breakdown."""
    cmd = [
        str(bin_dir / "llama-fit-params"),
        "-m",
        str(model),
        "--rpc",
        ",".join(endpoints),
        *args,
        "--fit-print",
        "on",
        "-lv",
        "4",
    ]
    proc = _run(cmd)
    devices = parse_breakdown(proc.stderr, len(endpoints))
    # cross-check with the stdout lines (model/context/compute rounded down separately)
    printed, _host = oracle.parse_fit_print(proc.stdout, len(endpoints))
    for d, p in zip(devices, printed):
        if (d.model, d.context, d.compute) != (p.model_bytes // MiB, p.context_bytes // MiB, p.compute_bytes // MiB):
            raise oracle.OracleError(f"breakdown and --fit-print disagree: {d} vs {p}")
    return Verified(devices, cmd)


def parse_fit_args(
    stdout: str, n_total: int, n_dev: int
) -> tuple[list[str], int, tuple[float, ...] | None, str | None]:
    args = shlex.split(stdout.strip())
    ngl, ts, ot = None, None, None
    for flag, value in zip(args, args[1:]):
        if flag == "-ngl":
            ngl = int(value)
        elif flag == "-ts":
            ts = tuple(float(x) for x in value.split(","))
        elif flag == "-ot":
            ot = value
    if ngl is None:
        raise oracle.OracleError(f"no -ngl in llama-fit-params output: {stdout!r}")
    if ngl < 0 or ngl > n_total:
        ngl = n_total
    if ts is not None and len(ts) != n_dev:
        raise oracle.OracleError(f"-ts has {len(ts)} values for {n_dev} devices: {stdout!r}")
    return args, ngl, ts, ot


def llama_fit(
    bin_dir: Path, model: Path, endpoints: list[str], caps: tuple[int, ...], ctx: int, n_total: int, log_path: Path
) -> tuple[LlamaFit, list[int]]:
    """llama.cpp's own fit with targets that leave each device C_i MiB to use."""
    for _attempt in range(3):
        free = free_mib(bin_dir, endpoints)
        margins = [f - c for f, c in zip(free, caps)]
        cmd = [
            str(bin_dir / "llama-fit-params"),
            "-m",
            str(model),
            "--rpc",
            ",".join(endpoints),
            "-c",
            str(ctx),
            "--fit",
            "on",
            "-fitt",
            ",".join(map(str, margins)),
            "-lv",
            "4",
        ]
        t = time.perf_counter()
        proc = _run(cmd)
        seconds = time.perf_counter() - t
        targets = {int(m.group(1)): int(m.group(2)) for m in _TARGET_RE.finditer(proc.stderr)}
        # a target below C_i - 1 means the free memory drifted between reading it and the run
        if all(targets.get(i, c) >= c - 1 and targets.get(i, c) <= c + 1 for i, c in enumerate(caps)):
            break
    else:
        raise oracle.OracleError(f"free memory keeps drifting: targets {targets} vs capacities {caps}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"# {shlex.join(cmd)}\n# stdout: {proc.stdout.strip()}\n" + proc.stderr)
    args, ngl, ts, ot = parse_fit_args(proc.stdout, n_total, len(endpoints))
    fill = [
        (m.group(1), int(m.group(2)), int(m.group(3) or 0), int(m.group(4)), int(m.group(5)))
        for m in _FILL_RE.finditer(proc.stderr)
    ]
    return LlamaFit(args, ngl, ts, ot, targets, fill, accepted_probes(proc.stderr, fill), log_path, seconds), free


_PROBE_RE = re.compile(
    r"common_params_fit_impl: id=(\d+), n_layer=\s*(\d+), n_part=\s*(\d+), "
    r"overflow_type=\d+, mem=\s*(-?\d+) MiB"
)


def accepted_probes(log: str, fill) -> dict[str, tuple[int, int, int]]:
    """For each card's final fill line, the probe it was accepted from: (layers, MiB, compute MiB)."""
    probes = []  # (breakdown rows, {id: (n_layer, mem)})
    rows: dict[str, DeviceUse] = {}
    cur: dict[int, tuple[int, int]] = {}
    for line in log.splitlines():
        m = _BREAKDOWN_RE.search(line)
        if m:
            if cur:
                probes.append((rows, cur))
                rows, cur = {}, {}
            rows[m.group(1)] = DeviceUse(*map(int, m.group(4, 5, 6, 7)))
            continue
        m = _PROBE_RE.search(line)
        if m:
            cur[int(m.group(1))] = (int(m.group(2)), int(m.group(4)))
    if cur:
        probes.append((rows, cur))
    out = {}
    for dev, layers, _over, used, _free in fill:
        i = int(dev[3:])
        for prow, pmem in reversed(probes):
            if pmem.get(i) == (layers, used) and dev in prow:
                out[dev] = (layers, used, prow[dev].compute)
                break
    return out


# --- vramc ------------------------------------------------------------------------------------


def choice_for(ctx: int) -> LlamaChoice:
    """llama-fit-params' defaults, with gpu_layers and tensor_split left to the solver."""
    return LlamaChoice(
        engine="llama-cpp-python",  # n_outputs_max stays n_batch, as in llama-fit-params
        ctx=ctx,
        parallel=1,
        kv_unified=False,
        batch=2048,
        ubatch=512,
        gpu_layers="auto",
        split_mode="layer",
        tensor_split="auto",
        main_gpu=0,
        flash_attn="auto",
        cache_type_k="f16",
        cache_type_v="f16",
        kv_offload=True,
        swa_full=False,
        overrides=(),
    )


def gpus_for(caps_bytes: list[int]) -> list[GpuBudget]:
    return [
        GpuBudget(id=f"RPC{i}", name=f"sim-{round(c / GiB)}GiB", gpu=i, capacity_bytes=c)
        for i, c in enumerate(caps_bytes)
    ]


def host_ram_bytes() -> int:
    """What every loopback RPC device reports as free and total: ggml's CPU device on Linux
    returns sysconf(_SC_PHYS_PAGES) * page size for both (ggml-cpu.cpp), to the byte."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def exact_caps(caps_mib: tuple[int, ...], free: list[int]) -> list[int]:
    """The budget llama.cpp's fit gets from `-fitt F - C`: free bytes minus whole MiB, i.e. C MiB
    plus the sub-MiB part of the reported free memory. vramc gets the same bytes."""
    ram = host_ram_bytes()
    if any(f != ram // MiB for f in free):
        return [c * MiB for c in caps_mib]  # not the local RAM: whole MiB only
    return [c * MiB + ram % MiB for c in caps_mib]


def _expert_solver():
    from vramc.plan.fit import Solver

    class ExpertSolver(Solver):
        """vramc.plan.fit offers expert offload only to llama-server (llama-cpp-python has no
        --override-tensor); llama-fit-params reserves n_batch outputs as llama-cpp-python does, so
        the comparison keeps that engine and lifts the engine check, nothing else."""

        def moe_allowed(self, choice) -> bool:
            return not self.choice.overrides and self.hp.n_expert > 0 and bool(self.expert_blocks())

    return ExpertSolver


def vramc_solve(meta, caps_bytes: list[int], ctx: int, experts: bool = False):
    from vramc.memory.llama import estimate_llama
    from vramc.plan.fit import Solver

    gpus = gpus_for(caps_bytes)
    cls = _expert_solver() if experts else Solver
    t = time.perf_counter()
    r = cls(meta, gpus, choice_for(ctx), [0] * len(gpus)).solve()
    ms = (time.perf_counter() - t) * 1000
    p = to_llama_params(r.choice, meta.n_layer, _n_train(meta))
    real = estimate_llama(meta, gpus, p)
    dry = estimate_llama(meta, gpus, p, dry_run=True)
    return r, p, real, dry, ms


def _n_train(meta) -> int:
    from vramc.memory.llama_hparams import llama_hparams

    return llama_hparams(meta).n_ctx_train


# --- one case ---------------------------------------------------------------------------------


def run_case(case: Case, bin_dir: Path, all_endpoints: list[str], models_dir: Path, logs: Path) -> Result:
    from vramc.memory.llama_hparams import llama_hparams

    caps = case.caps_mib
    endpoints = all_endpoints[: len(caps)]
    path = model_file(case.model, models_dir)
    meta = model_meta(case.model)
    n_total = llama_hparams(meta).n_layer_all + 1

    free = free_mib(bin_dir, endpoints)
    r, params, real, dry, ms = vramc_solve(meta, exact_caps(caps, free), case.ctx)
    ngl = params.gpu_layers_for(n_total - 1)
    v_args = oracle.fit_print_args(params, oracle.rpc_buffer_names(endpoints))
    v_check = fit_print(bin_dir, path, endpoints, v_args)

    lf, free = llama_fit(
        bin_dir, path, endpoints, caps, case.ctx, n_total, logs / f"{case.id.replace('+', '_').replace('@', '__')}.log"
    )
    l_args = [a for a in lf.args]
    l_check = fit_print(bin_dir, path, endpoints, l_args + ["--fit", "off"])
    res = Result(
        case,
        n_total,
        ngl,
        params.tensor_split,
        r.fits,
        [d.total_bytes / MiB for d in real.devices],
        [d.total_bytes / MiB for d in dry.devices],
        ms,
        v_check,
        lf,
        l_check,
        free,
    )
    if case.moe:
        re_, pe, _real, _dry, mse = vramc_solve(meta, exact_caps(caps, free), case.ctx, experts=True)
        e_check = fit_print(bin_dir, path, endpoints, oracle.fit_print_args(pe, oracle.rpc_buffer_names(endpoints)))
        res.experts = ExpertRun(
            pe.gpu_layers_for(n_total - 1), pe.tensor_split, getattr(re_, "moved_experts", 0), re_.fits, mse, e_check
        )
    res.notes = explain(res)
    return res


def _free_share(v: Verified, caps) -> float:
    """The smallest share of a card left free (what vramc's split maximises)."""
    return min((c - d.self_mib) / c for d, c in zip(v.devices, caps))


def same_placement(r: Result) -> bool:
    """Both choices load to the same per-device model/context/compute."""
    if r.vramc_ngl != r.llama.ngl or r.llama.ot or r.llama_check is None:
        return False
    return all(
        (a.model, a.context, a.compute) == (b.model, b.context, b.compute)
        for a, b in zip(r.vramc_check.devices, r.llama_check.devices)
    )


def explain(r: Result) -> list[str]:
    """Why the two choices differ, from the numbers of both loads and llama.cpp's search log."""
    notes = []
    caps = r.caps
    lf = r.llama
    if not r.vramc_fits:
        notes.append("vramc's solver found no setting that fits (it returns the closest)")
    over_v = r.vramc_check.over(caps)
    if not r.fits_ok:
        worst = max(range(len(caps)), key=lambda i: over_v[i])
        est_over = r.vramc_est_mib[worst] - caps[worst]
        dry_over = r.vramc_dry_mib[worst] - caps[worst]
        notes.append(
            f"vramc's settings overshoot RPC{worst} by {over_v[worst]} MiB in llama.cpp's dry run; vramc's "
            f"estimate of a real launch is {est_over:+.1f} MiB against the capacity, of the dry run "
            f"{dry_over:+.1f} MiB"
        )
    if r.llama_check and not r.llama_check.fits(caps):
        parts = []
        for i, o in enumerate(r.llama_check.over(caps)):
            if o <= 0:
                continue
            d = r.llama_check.devices[i]
            acc = lf.accepted.get(f"RPC{i}")
            if acc:
                parts.append(
                    f"RPC{i} +{o} MiB (accepted at {acc[1]} MiB with compute {acc[2]} MiB while the "
                    f"cards in front of it held no layers; loaded with the final split: "
                    f"{d.self_mib} MiB, compute {d.compute} MiB)"
                )
            else:
                parts.append(f"RPC{i} +{o} MiB")
        notes.append("llama.cpp's own choice overshoots its target when loaded: " + "; ".join(parts))
    x = r.experts
    if r.case.moe and (lf.ot or r.vramc_ngl < r.n_total or (x is not None and x.moved)):
        n_exps, n_part = _ot_counts(lf.ot)
        lc = r.llama_check
        text = (
            f"MoE: llama.cpp keeps {lf.ngl}/{r.n_total} layers on GPUs with the expert tensors of "
            f"{n_exps} blocks on the host and {n_part} block(s) split (part of the FFN on the host or on "
            f"the next card); vramc without expert offload (llama-cpp-python has no -ot) moves whole "
            f"layers: {r.vramc_ngl}/{r.n_total}, {r.vramc_check.gpu_mib} MiB on GPUs"
        )
        if x is not None:
            text += (
                f"; vramc with its expert offload: {x.ngl}/{r.n_total} layers, experts of {x.moved} "
                f"blocks on the host, {x.check.gpu_mib} MiB on GPUs (weights {x.check.gpu_model_mib})"
            )
        text += f"; llama.cpp: {lc.gpu_mib} MiB on GPUs (weights {lc.gpu_model_mib})"
        if x is not None and lf.ot and x.moved > n_exps:
            text += (
                ". llama.cpp keeps more on the GPUs because it moves less than whole blocks: after the "
                "whole-expert blocks it fills each card with part of one more block "
                "(ffn_gate/up or ffn_down kept on the card, the rest to the host or the next card)"
            )
        notes.append(text)
        return notes
    if r.vramc_ngl > lf.ngl:
        spare = [c - d.self_mib for d, c in zip(r.llama_check.devices, caps)] if r.llama_check else []
        notes.append(
            f"vramc keeps {r.vramc_ngl - lf.ngl} more layer(s) on GPUs; llama.cpp's choice leaves "
            f"{'/'.join(map(str, spare))} MiB unused per card"
        )
    elif r.vramc_ngl < lf.ngl:
        notes.append(f"llama.cpp keeps {lf.ngl - r.vramc_ngl} more layer(s) on GPUs than vramc")
    elif len(caps) > 1 and not same_placement(r):
        fv, fl = _free_share(r.vramc_check, caps), _free_share(r.llama_check, caps)
        if lf.ts is None:
            how = (
                "llama.cpp's projection of its defaults (all layers, split by reported free memory, "
                "i.e. evenly over the RPC devices) met every target, so it changed nothing"
            )
        else:
            how = "llama.cpp fills the last card first up to its target, then the card before it"
        notes.append(
            f"same layer count, different split: {how}; vramc splits to leave the largest "
            f"smallest share of each card free: {fv:.1%} vs llama.cpp's {fl:.1%}"
        )
    return notes


# --- report -----------------------------------------------------------------------------------


def _fmt_ts(ts) -> str:
    return "-" if ts is None else ",".join(f"{x:g}" for x in ts)


def _fmt_use(v: Verified, caps) -> str:
    return " ".join(f"{d.self_mib}/{c}" for d, c in zip(v.devices, caps))


def _ot_counts(ot: str | None) -> tuple[int, int]:
    """llama.cpp's -ot: (blocks whose experts all go to the host, blocks split part-way)."""
    if not ot:
        return 0, 0
    parts = ot.split(",blk")
    n_exps = sum("exps=CPU" in p for p in parts)
    return n_exps, len(parts) - n_exps


def _ot_summary(ot: str | None) -> str:
    if not ot:
        return "-"
    n_exps, n_part = _ot_counts(ot)
    return f"{n_exps} exps→CPU" + (f", {n_part} partial" if n_part else "")


def _vramc_cell(r: "Result") -> str:
    cell = f"{r.vramc_ngl}/{r.n_total} / {_fmt_ts(r.vramc_ts)}"
    if r.experts is not None:
        x = r.experts
        cell += f"; with expert offload: {x.ngl}/{r.n_total} / {_fmt_ts(x.ts)} / {x.moved} exps→CPU"
    return cell


def _vramc_use(r: "Result") -> str:
    use = _fmt_use(r.vramc_check, r.caps)
    if r.experts is not None:
        use += f"; {_fmt_use(r.experts.check, r.caps)}"
    return use


def table(results: list[Result]) -> list[str]:
    rows = [
        "| case | model | devices GiB | ctx | vramc ngl / ts | llama.cpp ngl / ts / -ot | "
        "vramc verified MiB (used/cap) | llama.cpp verified MiB | vramc est. - oracle MiB | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        c = r.case
        diff = max((abs(e - d.self_mib) for e, d in zip(r.vramc_dry_mib, r.vramc_check.devices)), default=0)
        verdict = "pass" if r.passed else "FAIL"
        if r.case.moe:
            verdict += " (MoE: fit only)"
        rows.append(
            f"| {i} | {c.model} | {c.devices} | {c.ctx} | {_vramc_cell(r)} | "
            f"{r.llama.ngl}/{r.n_total} / {_fmt_ts(r.llama.ts)} / {_ot_summary(r.llama.ot)} | "
            f"{_vramc_use(r)} | {_fmt_use(r.llama_check, r.caps)} | "
            f"{diff:.0f} | {verdict} |"
        )
    return rows


def summary(results: list[Result]) -> list[str]:
    dense = [r for r in results if not r.case.moe]
    moe = [r for r in results if r.case.moe]
    lines = [
        f"- cases: {len(results)} ({len(dense)} dense, {len(moe)} MoE); passed: {sum(r.passed for r in results)}",
        f"- (c) vramc's settings fit in llama.cpp's dry run: {sum(r.fits_ok for r in results)}/{len(results)}",
        f"- (d) dense, vramc layers >= llama.cpp layers: {sum(bool(r.layers_ok) for r in dense)}/{len(dense)} "
        f"(more: {sum(r.vramc_ngl > r.llama.ngl for r in dense)}, equal: "
        f"{sum(r.vramc_ngl == r.llama.ngl for r in dense)}, fewer: {sum(r.vramc_ngl < r.llama.ngl for r in dense)})",
        f"- same placement as llama.cpp (same ngl, same per-device model/context/compute): "
        f"{sum(same_placement(r) for r in results)}/{len(results)}",
        f"- llama.cpp's own choice overshoots a target when loaded: "
        f"{sum(1 for r in results if r.llama_check and not r.llama_check.fits(r.caps))}/{len(results)}",
    ]
    if moe:
        more = sum(r.vramc_check.gpu_mib >= r.llama_check.gpu_mib for r in moe)
        lines.append(
            f"- MoE, vramc moving whole layers (its only choice for llama-cpp-python): at least as many "
            f"bytes on GPUs as llama.cpp in {more}/{len(moe)}; all layers on GPUs in "
            f"{sum(r.vramc_ngl == r.n_total for r in moe)}/{len(moe)}, llama.cpp in "
            f"{sum(r.llama.ngl == r.n_total for r in moe)}/{len(moe)}"
        )
        xs = [r for r in moe if r.experts is not None]
        if xs:
            fit_x = sum(r.experts.check.fits(r.caps) for r in xs)
            gap = [r.llama_check.gpu_mib - r.experts.check.gpu_mib for r in xs]
            lines.append(
                f"- MoE, vramc with its expert offload: fits in llama.cpp's dry run {fit_x}/{len(xs)}; all layers "
                f"on GPUs {sum(r.experts.ngl == r.n_total for r in xs)}/{len(xs)}; bytes on GPUs >= llama.cpp's "
                f"in {sum(g <= 0 for g in gap)}/{len(xs)}, short by at most {max(gap)} MiB "
                f"(llama.cpp also splits single blocks part-way)"
            )
    worst = max(
        (abs(e - d.self_mib) for r in results for e, d in zip(r.vramc_dry_mib, r.vramc_check.devices)), default=0
    )
    lines.append(f"- vramc's dry-run estimate vs llama.cpp's breakdown, worst device: {worst:.1f} MiB")
    gap = max((d - e for r in results for e, d in zip(r.vramc_est_mib, r.vramc_dry_mib)), default=0)
    lines.append(
        f"- the solver plans a real launch; llama.cpp's dry run reserves up to {gap:.0f} MiB more "
        "compute on a card (vramc's two estimates of its own choices; the dry run loses the "
        "scheduler's layer pins), so (c) is the stricter check"
    )
    ms = [r.vramc_ms for r in results]
    ls = [r.llama.seconds for r in results]
    lines.append(
        f"- time per case: vramc solve median {statistics.median(ms):.1f} ms (max {max(ms):.1f}); "
        f"llama-fit-params --fit on median {statistics.median(ls):.2f} s (max {max(ls):.2f})"
    )
    return lines


def differences(results: list[Result]) -> list[str]:
    """The mechanisms behind every difference, with the cases each one explains."""

    def ids(rs):
        return ", ".join(str(results.index(r) + 1) for r in rs) or "none"

    dense = [r for r in results if not r.case.moe]
    split = [r for r in results if r.vramc_ngl == r.llama.ngl and not r.llama.ot and not same_placement(r)]
    filled = [r for r in split if r.llama.ts is not None]
    default = [r for r in split if r.llama.ts is None]
    over = [r for r in results if r.llama_check and not r.llama_check.fits(r.caps)]
    moe = [r for r in results if r.case.moe and (r.llama.ot or r.vramc_ngl < r.n_total)]
    fewer = [r for r in dense if r.vramc_ngl < r.llama.ngl]
    more = [r for r in dense if r.vramc_ngl > r.llama.ngl]
    out = [
        f"1. **Layer counts.** vramc keeps fewer layers on the GPUs than llama.cpp in: {ids(fewer)}; more in: "
        f"{ids(more)}. Both search the same quantity (whole layers, the output layer first) against the "
        "same memory model, so on dense models the counts agree.",
        f"2. **The split, when llama.cpp fills back to front** (cases {ids(filled)}). llama.cpp gives the last "
        "card the output layer and as many layers as reach its target, then the card before it, and the "
        "first card takes what is left, so the last cards end up nearly full. vramc picks, among the "
        "splits of the same layer count, the one that leaves the largest smallest share of each card free "
        "(issue 4's last objective); e.g. on 12+24+24 GiB the 12 GiB card holds a few layers with "
        "llama.cpp and its share with vramc.",
        f"3. **The split, when llama.cpp changed nothing** (cases {ids(default)}). Its projection of the "
        "defaults (every layer offloaded, split by the free memory each device reports) met every target, "
        "so it prints no -ts. On real cards that split follows each card's free memory; the RPC devices "
        "all report the machine's RAM, so here it is even. vramc always states a split.",
        f"4. **llama.cpp's own choice overshoots its target** (cases {ids(over)}). Its search measures "
        "each card while the cards in front of it hold no layers. When they get theirs, the compute "
        "buffers of the cards already filled grow: the graph is split over more devices, and once every "
        "layer is offloaded llama.cpp turns on pipeline parallelism (4 copies of the graph inputs). The "
        "search never measures the final layout as a whole; the -lv 4 logs show each card's accepted "
        "probe and the notes below quote it. vramc verifies every answer with one estimate of the whole "
        f"layout: its answers stayed within every card in {sum(r.fits_ok for r in results)}/{len(results)} "
        "cases.",
        f"5. **MoE** (cases {ids(moe)}). llama.cpp keeps every layer's attention and dense tensors on the "
        "GPUs and moves expert tensors to the host (`-ot ...exps=CPU`), plus one block per card split "
        "part-way (ffn_down, or gate/up, to the host or the next card). vramc offers expert offload only to "
        "llama-server (llama-cpp-python has no --override-tensor), so with llama-fit-params' settings it "
        "moves whole layers, which keeps fewer bytes on the GPUs and runs attention of those layers on the "
        "CPU. The comparison also runs vramc's expert offload (engine check lifted): like llama.cpp it "
        "splits the layers as if everything were on the GPUs, sends the experts of each card's first "
        "blocks to the host until the card fits, and keeps part of one more block (ffn_up, ffn_gate or "
        "ffn_down) on a card that has room for it, 64 MiB short of the brim (llama.cpp's dry run "
        "reserves that much more compute around a split block than a launch does). What remains is "
        "granularity: llama.cpp also moves single expert tensors to the next card rather than to the "
        "host, "
        "which vramc does not." + _moe_gap(results),
    ]
    return out


def _moe_gap(results: list[Result]) -> str:
    xs = [r for r in results if r.experts is not None and r.llama.ot]
    if not xs:
        return ""
    worst = max(xs, key=lambda r: r.llama_check.gpu_mib - r.experts.check.gpu_mib)
    gap = worst.llama_check.gpu_mib - worst.experts.check.gpu_mib
    if gap <= 0:
        return " Here vramc's expert offload kept at least as many bytes on the GPUs in every case."
    free = [c - d.self_mib for d, c in zip(worst.experts.check.devices, worst.caps)]
    return (
        f" Largest shortfall here: case {results.index(worst) + 1} ({worst.case.id}), {gap} MiB less on "
        f"the GPUs than llama.cpp, with {'/'.join(map(str, free))} MiB left free per card."
    )


def report(results: list[Result], command: str, elapsed: float) -> str:
    frac = host_ram_bytes() % MiB / MiB
    out = [
        "# vramc fit vs llama.cpp's own fit (`llama-fit-params --fit on`)",
        "",
        f"Command: `{command}` ({elapsed:.0f} s on {os.cpu_count()} cores; `--full` runs every model x "
        "device set x context). Oracle: llama-fit-params and ggml-rpc-server built from llama-cpp-python "
        f"{oracle.ORACLE_VERSION} (llama.cpp 0c1e570); devices are loopback RPC servers, each card of C "
        "MiB simulated with `--fit-target F-C`, F the memory the device reports (the machine's RAM: "
        "ggml's CPU device reports sysconf pages as both free and total). llama.cpp's budget is then "
        f"F - (F - C) MiB = C MiB + {frac:.2f} MiB (the sub-MiB part of F); vramc gets the same bytes. "
        "Margins 0, no CUDA overhead (the dry run has none). Both use llama-fit-params' defaults: 1 "
        "sequence, n_batch 2048 (and as many outputs), n_ubatch 512, flash attention auto, f16 KV; "
        "vramc's engine is llama-cpp-python, gpu_layers and tensor_split auto, ctx fixed.",
        "",
        "Columns: ngl counts the output layer (of n_layer + 1); ts is -ts (layers per card); -ot "
        "summarises llama.cpp's overrides (blocks whose expert tensors go to the host, blocks split "
        "part-way). Verified MiB: llama.cpp's memory breakdown (`self` = model + context + compute, "
        "exact bytes rounded down) when it loads each choice with `--fit off --fit-print on`, against "
        "the card's capacity. `vramc est. - oracle`: the largest per-card difference between vramc's "
        "estimate of that dry run (estimate_llama dry_run=True) and the breakdown. A case passes when "
        "vramc's settings fit every card in the dry run and, for dense models, vramc keeps at least as "
        "many layers on the GPUs as llama.cpp. The -lv 4 logs of llama.cpp's search are written to "
        "--logs (not kept in the repository).",
        "",
        "## Summary",
        "",
        *summary(results),
        "",
        "## What the differences come from",
        "",
        *differences(results),
        "",
        "## Cases",
        "",
        *table(results),
        "",
        "## Notes per case",
        "",
    ]
    for i, r in enumerate(results, 1):
        if r.notes:
            out.append(f"- {i}. {r.case.id}: " + "; ".join(r.notes))
    return "\n".join(out) + "\n"


def print_case(i: int, r: Result) -> None:
    c = r.case
    print(
        f"[{i}] {c.id}: vramc ngl {_vramc_cell(r)} "
        f"({r.vramc_ms:.0f} ms) | llama.cpp ngl {r.llama.ngl} ts {_fmt_ts(r.llama.ts)} ot {_ot_summary(r.llama.ot)} "
        f"({r.llama.seconds:.1f} s) | vramc use {_vramc_use(r)} | llama use "
        f"{_fmt_use(r.llama_check, r.caps)} | {'pass' if r.passed else 'FAIL'}",
        flush=True,
    )
    for n in r.notes:
        print(f"      {n}", flush=True)


def cases_for(full: bool, only: list[str]) -> list[Case]:
    if full:
        cases = [Case(m, d, c) for m, d, c in itertools.product(MODELS, DEVICE_SETS, CONTEXTS)]
    else:
        cases = [Case(*c) for c in DEFAULT_CASES]
    if only:
        cases = [c for c in cases if any(o in c.id for o in only)]
    return cases


def run_all(cases: list[Case], bin_dir: Path, models_dir: Path, logs: Path, verbose: bool = True) -> list[Result]:
    n_dev = max(len(c.caps_mib) for c in cases)
    results = []
    with oracle.RpcServers(n_dev, bin_dir) as rpc:
        for i, case in enumerate(cases, 1):
            r = run_case(case, bin_dir, rpc.endpoints, models_dir, logs)
            results.append(r)
            if verbose:
                print_case(i, r)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="every model x device set x context")
    ap.add_argument("--only", action="append", default=[], help="cases whose id contains this (repeatable)")
    ap.add_argument(
        "--models-dir",
        type=Path,
        default=Path.home() / ".cache" / "vramc" / "fit-compare",
        help="where the sparse GGUFs are written (a few MB each)",
    )
    ap.add_argument(
        "--logs",
        type=Path,
        default=Path("/tmp/vramc-fit-compare/logs"),
        help="llama.cpp's -lv 4 fit logs, one per case",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fit_compare.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    bin_dir = oracle.find_binaries()
    if bin_dir is None:
        print(
            f"oracle binaries not found (VRAMC_ORACLE_BIN or {oracle.DEFAULT_BIN}); "
            "build them with scripts/build-llama.sh",
            file=sys.stderr,
        )
        return 2
    cases = cases_for(args.full, args.only)
    t = time.perf_counter()
    results = run_all(cases, bin_dir, args.models_dir, args.logs)
    elapsed = time.perf_counter() - t
    command = (
        "python bench/fit_compare.py" + (" --full" if args.full else "") + "".join(f" --only {o}" for o in args.only)
    )
    text = report(results, command, elapsed)
    print()
    print("\n".join(summary(results)))
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
