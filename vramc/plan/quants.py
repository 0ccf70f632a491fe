"""`vramc plan PROFILE --quants hf://ORG/REPO`: every quant of a GGUF repository against the hardware.

Each quant's header is read remotely (model/remote.py, cached), the deployment is planned with that
model in place of its own (the planner's MetaCache handed the header), and the table says whether
it fits, how tight, and how many layers llama.cpp puts on the GPUs, `auto` settings solved as the
plan solves them. The choice line names the largest quant (by weights) that fits with every layer
on the GPUs, or the trade-off: the largest that fits with part of the model on the CPU against the
largest that would fit whole, if any.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from vramc.model.modelmeta import ModelMeta
from vramc.plan.planner import MetaCache

_TAG_RE = re.compile(r"[-.]([A-Za-z0-9_]+)$")  # llama.cpp get_gguf_split_info's tag
_SPLIT_RE = re.compile(r"^(.+)-(\d{5})-of-(\d{5})$")


def quant_tag(path: str) -> str:
    """The quant a file name ends with, upper case, as llama.cpp reads it (common/download.cpp)."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".gguf")
    m = _SPLIT_RE.match(stem)
    stem = m[1] if m else stem
    m = _TAG_RE.search(stem)
    return m[1].upper() if m else stem


@dataclass
class Row:
    quant: str
    file: str
    weights: int
    verdict: str
    gpu_layers: int
    layers: int


class _Given(MetaCache):
    """A planner MetaCache that answers with one header, whatever the deployment's model says."""

    def __init__(self, meta: ModelMeta) -> None:
        super().__init__()
        self.meta = meta

    def get(self, dep):
        return self.meta, []


def quant_rows(plan, metas: list[tuple[str, str, ModelMeta]]) -> list[Row]:
    from vramc.plan.planner import plan_deployment

    rows = []
    for quant, file, meta in metas:
        p = plan_deployment(plan.dep, cache=_Given(meta))
        est = p.estimate
        layers = meta.hparams.get("block_count", 0) + 1  # the blocks and the output layer
        on_gpu = sum(d.n_layers or 0 for d in est.devices) if est else 0
        rows.append(Row(quant, file, meta.total_bytes, p.verdict, on_gpu, layers))
    return rows


def choose(rows: list[Row]) -> str:
    fits = [r for r in rows if r.verdict in ("fits", "tight")]
    whole = [r for r in fits if r.gpu_layers >= r.layers]
    if whole:
        best = max(whole, key=lambda r: r.weights)
        return f"choice: {best.quant} ({best.file}), the largest quant that fits with all layers on the GPUs"
    if not fits:
        return "choice: none fits; a smaller context or more GPU memory is needed"
    best = max(fits, key=lambda r: r.weights)
    return (
        f"choice: no quant fits with all layers on the GPUs; {best.quant} fits with "
        f"{best.gpu_layers}/{best.layers} layers there (the rest runs on the CPU, slower)"
    )


def render(name: str, rows: list[Row]) -> str:
    lines = [
        f"{name}: quants",
        f"  {'quant':<10} {'weights':>10}  {'verdict':<13} {'layers on GPU':>13}  file",
    ]
    for r in sorted(rows, key=lambda r: -r.weights):
        lines.append(
            f"  {r.quant:<10} {r.weights / 2**30:>6.2f} GiB  {r.verdict:<13} "
            f"{f'{r.gpu_layers}/{r.layers}':>13}  {r.file}"
        )
    lines.append("  " + choose(rows))
    return "\n".join(lines) + "\n"


def cli_quants(plans, ref_text: str) -> int:
    from vramc.engines import ENGINES
    from vramc.model.gguf import GGUFError
    from vramc.model.remote import (
        Http,
        RemoteError,
        hf_endpoint,
        is_model_file,
        list_repo,
        parse_ref,
        read_remote,
    )

    try:
        ref = parse_ref(ref_text)
        if ref.repo is None or ref.file or ref.quant:
            raise RemoteError(f"{ref_text}: --quants takes a repository, hf://ORG/REPO[@REVISION]")
        import os

        http = Http(token=os.environ.get("HF_TOKEN") or None)
        commit, files = list_repo(http, hf_endpoint(), ref.repo, ref.revision, ref_text)
        firsts = [
            f
            for f in files
            if is_model_file(f) and not (_SPLIT_RE.match(f.removesuffix(".gguf")) and "-00001-of-" not in f)
        ]
        if not firsts:
            raise RemoteError(f"{ref_text}: no GGUF model files in {ref.repo}")
        metas = []
        for f in sorted(firsts):
            got = read_remote(f"hf://{ref.repo}@{commit}/{f}", http=http)
            metas.append((quant_tag(f), f, got.meta))
    except (RemoteError, GGUFError) as e:
        sys.stderr.write(f"vramc plan: {e}\n")
        return 1
    llama = [p for p in plans if ENGINES[p.engine].family != "vllm"]
    if not llama:
        sys.stderr.write("vramc plan: --quants plans GGUF deployments (llama.cpp engines); none was given\n")
        return 2
    sys.stderr.write(
        f"{ref.repo}@{commit[:12]}: {len(metas)} quant files, {http.transferred:,} bytes of headers read\n"
    )
    for p in llama:
        sys.stdout.write(render(p.dep.name, quant_rows(p, metas)))
    return 0
