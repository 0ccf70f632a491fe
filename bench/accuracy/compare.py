"""One comparison per case, device and component, and the summary against the targets.

Targets (the brief): model weights and KV cache identical to llama.cpp within its 1 MiB
rounding (llama-fit-params prints whole MiB, rounded down); compute buffers within 5 % or
16 MiB, whichever is larger (llama.cpp's debug log gives them to 0.01 MiB).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from vramc.dev.oracle import OracleError, OracleResult, run_fit_print, run_server_load
from vramc.memory.llama import estimate_llama
from vramc.memory.llama_params import LlamaParams
from vramc.memory.usage import GpuBudget, MemoryEstimate

MiB = 1024 * 1024
COMPONENTS = ("weights", "kv", "compute")
RPC_FREE_MIB = 24 * 1024  # what the RPC devices are given; splits are explicit, so it only labels


@dataclass(frozen=True)
class Row:
    case: str
    device: str
    component: str
    ours: int  # bytes
    theirs: int  # bytes
    modelled: bool = True
    rounded: bool = False  # llama.cpp printed whole MiB, rounded down (llama-fit-params)

    @property
    def error_mib(self) -> float:
        ours = self.ours // MiB * MiB if self.rounded else self.ours
        return (ours - self.theirs) / MiB

    @property
    def error_pct(self) -> float:
        return 100.0 * self.error_mib * MiB / self.theirs if self.theirs else 0.0

    @property
    def ok(self) -> bool:
        if not self.modelled:
            return True
        if self.component == "compute":
            return abs(self.ours - self.theirs) <= max(16 * MiB, 0.05 * self.theirs)
        return self.error_mib == 0 if self.rounded else abs(self.error_mib) < 1


@dataclass
class CaseResult:
    label: str
    rows: list[Row] = field(default_factory=list)
    error: str | None = None  # the oracle or vramc failed
    estimate_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.rows)


def rpc_gpus(n: int) -> list[GpuBudget]:
    return [GpuBudget(f"RPC{i}", "rpc", i, RPC_FREE_MIB * MiB) for i in range(n)]


def _rows(label: str, est: MemoryEstimate, oracle: OracleResult, rounded: bool) -> list[Row]:
    modelled = not any(n.startswith("compute buffers are not modelled") for n in est.notes)
    ours = [(d.id, d.weights_bytes, d.kv_bytes, d.compute_bytes) for d in est.devices]
    ours.append(("Host", est.host.weights_bytes, est.host.kv_bytes, est.host.compute_bytes))
    theirs = {d.name: d for d in [*oracle.devices, oracle.host]}
    rows = []
    for name, w, kv, comp in ours:
        o = theirs[name]
        rows += [
            Row(label, name, "weights", w, o.model_bytes, rounded=rounded),
            Row(label, name, "kv", kv, o.context_bytes, rounded=rounded),
            Row(label, name, "compute", comp, oracle.compute_precise.get(name, 0), modelled),
        ]
    return rows


def run_case(
    label: str,
    meta,
    path: Path,
    n_devices: int,
    params: LlamaParams,
    endpoints: list[str],
    bin_dir: Path,
    real: bool = False,
) -> CaseResult:
    """dry_run=True against llama-fit-params; a launch estimate against a real load (`real`)."""
    res = CaseResult(label)
    t = time.perf_counter()
    try:
        est = estimate_llama(meta, rpc_gpus(n_devices), params, dry_run=not real)
    except ValueError as e:
        res.error = f"vramc: {e}"
        return res
    res.estimate_ms = 1000 * (time.perf_counter() - t)
    try:
        if real:
            oracle = run_server_load(path, params, endpoints[:n_devices], bin_dir)
        else:
            oracle = run_fit_print(path, params, endpoints[:n_devices], bin_dir, precise=True)
    except OracleError as e:
        res.error = f"llama.cpp: {e}".splitlines()[0]
        return res
    res.rows = _rows(label, est, oracle, rounded=not real)
    return res


@dataclass(frozen=True)
class Worst:
    component: str
    n: int
    n_ok: int
    worst_mib: Row | None
    worst_pct: Row | None


def summarise(results: list[CaseResult]) -> list[Worst]:
    out = []
    for comp in COMPONENTS:
        rows = [r for res in results for r in res.rows if r.component == comp and r.modelled]
        worst_mib = max(rows, key=lambda r: (abs(r.error_mib), r.case), default=None)
        worst_pct = max((r for r in rows if r.theirs >= MiB), key=lambda r: (abs(r.error_pct), r.case), default=None)
        out.append(Worst(comp, len(rows), sum(r.ok for r in rows), worst_mib, worst_pct))
    return out


def _num(x: float) -> str:
    return "0.00" if round(x, 2) == 0 else f"{x:+.2f}"


def _worst(row: Row | None, value: float, unit: str = "") -> str:
    if row is None:
        return "-"
    text = _num(value) + unit
    return text if round(value, 2) == 0 else f"{text} ({row.case}, {row.device})"


def format_row(r: Row) -> str:
    flag = "ok " if r.ok else ("n/a" if not r.modelled else "BAD")
    return (
        f"{flag} {r.case} | {r.device:<5} {r.component:<8} vramc {r.ours / MiB:10.2f}  "
        f"llama.cpp {r.theirs / MiB:10.2f}  err {r.error_mib:+8.2f} MiB ({r.error_pct:+6.2f}%)"
    )


def timing_line(results: list[CaseResult]) -> str:
    ms = [r.estimate_ms for r in results if r.estimate_ms]
    if not ms:
        return "estimate time: n/a"
    return f"estimate time per case: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms"


def summary_lines(results: list[CaseResult]) -> list[str]:
    out = []
    for w in summarise(results):
        out.append(
            f"  {w.component:<8} {w.n_ok}/{w.n} within target; worst "
            f"{_worst(w.worst_mib, w.worst_mib.error_mib if w.worst_mib else 0, ' MiB')}; "
            f"{_worst(w.worst_pct, w.worst_pct.error_pct if w.worst_pct else 0, ' %')}"
        )
    return out


def markdown(results: list[CaseResult], real: list[CaseResult], command: str, speed: list[str]) -> str:
    lines = [
        "# Accuracy of the llama.cpp memory model",
        "",
        f"Generated by `{command}` (bench/accuracy): vramc's estimate against llama.cpp's own "
        "figures for the same sparse GGUF, on RPC devices (see vramc/dev/oracle.py). Dry-run cases "
        "compare `estimate_llama(..., dry_run=True)` with `llama-fit-params --fit-print on` "
        "(weights and KV in whole MiB rounded down, compute to 0.01 MiB from its log); launch "
        "cases compare the default estimate with a real `llama-server` load.",
        "",
        "Targets: weights and KV identical within llama.cpp's 1 MiB rounding; compute within "
        "5 % or 16 MiB, whichever is larger.",
        "",
    ]
    for title, res in (("Dry run (llama-fit-params)", results), ("Launch (real llama-server load)", real)):
        if not res:
            continue
        lines += [
            f"## {title}",
            "",
            f"{len(res)} cases, {sum(r.ok for r in res)} within the targets; " + timing_line(res) + ".",
            "",
            "| component | comparisons | within target | worst error (MiB) | worst error (%) |",
            "|---|---:|---:|---|---|",
        ]
        for w in summarise(res):
            wm = _worst(w.worst_mib, w.worst_mib.error_mib if w.worst_mib else 0)
            wp = _worst(w.worst_pct, w.worst_pct.error_pct if w.worst_pct else 0)
            lines.append(f"| {w.component} | {w.n} | {w.n_ok} | {wm} | {wp} |")
        failed = [r for r in res if r.error]
        if failed:
            lines += ["", "Cases that did not run:", ""] + [f"- {r.label}: {r.error}" for r in failed]
        lines += [
            "",
            "| case | weights err (MiB) | KV err (MiB) | compute err (MiB) | compute err (%) | ok |",
            "|---|---:|---:|---:|---:|:-:|",
        ]
        for r in res:
            if r.error:
                continue

            def worst(comp: str, pct: bool = False) -> str:
                rows = [x for x in r.rows if x.component == comp]  # noqa: B023  # called in this iteration
                if not all(x.modelled for x in rows):
                    return "n/a"
                x = max(rows, key=lambda x: abs(x.error_pct if pct else x.error_mib))
                return _num(x.error_pct if pct else x.error_mib)

            lines.append(
                f"| {r.label} | {worst('weights')} | {worst('kv')} | {worst('compute')} | "
                f"{worst('compute', True)} | {'yes' if r.ok else 'NO'} |"
            )
        lines.append("")
    if speed:
        lines += (
            [
                "## Speed",
                "",
                "`estimate_llama` for Llama-3.3-70B (80 layers) on 3 devices, best of 20 runs (pure Python, one core):",
                "",
            ]
            + [f"- {s}" for s in speed]
            + [""]
        )
    return "\n".join(lines)
