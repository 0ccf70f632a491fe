"""Every quant of a model against the hardware: `vramc plan PROFILE --quants hf://ORG/REPO`, and
`quant: auto` in a model profile with `quants:` (issue 15, `plan_quants`).

Each quant's header is read remotely (model/remote.py, cached), the deployment is planned with that
model in place of its own (the planner's MetaCache handed the header), and the table says whether
it fits, how tight, and how many layers llama.cpp puts on the GPUs, `auto` settings solved as the
plan solves them. The choice line names the largest quant (by weights) that fits with every layer
on the GPUs, or the trade-off: the largest that fits with part of the model on the CPU against the
largest that would fit whole, if any.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from vramc.model.modelmeta import ModelMeta
from vramc.model.remote import _STEM_SPLIT_RE as _SPLIT_RE
from vramc.model.remote import quant_tag  # noqa: F401  (here before; analyze reads it from remote)
from vramc.plan.planner import MetaCache


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


def _row(quant: str, file: str, meta: ModelMeta, p) -> Row:
    est = p.estimate
    layers = meta.hparams.get("block_count", 0) + 1  # the blocks and the output layer
    on_gpu = sum(d.n_layers or 0 for d in est.devices) if est else 0
    return Row(quant, file, meta.total_bytes, p.verdict, on_gpu, layers)


def quant_rows(plan, metas: list[tuple[str, str, ModelMeta]]) -> list[Row]:
    from vramc.plan.planner import plan_deployment

    return [_row(quant, file, meta, plan_deployment(plan.dep, cache=_Given(meta))) for quant, file, meta in metas]


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


def repository_quants(
    ref_text: str, notes: list[str] | None = None
) -> tuple[str, str, list[tuple[str, str, ModelMeta]], int]:
    """Every quant file of hf://ORG/REPO[@REVISION], headers only: (ORG/REPO, the commit, [(quant,
    file, header)], bytes read); `notes` gets what came from the cache offline. RemoteError or
    GGUFError says what went wrong."""
    from vramc.model.remote import (
        Http,
        RemoteError,
        hf_endpoint,
        is_model_file,
        list_repo,
        parse_ref,
        read_remote,
    )

    ref = parse_ref(ref_text)
    if ref.repo is None or ref.file or ref.quant:
        raise RemoteError(f"{ref_text}: --quants takes a repository, hf://ORG/REPO[@REVISION]")
    import os

    http = Http(token=os.environ.get("HF_TOKEN") or None)
    commit, files = list_repo(http, hf_endpoint(), ref.repo, ref.revision, ref_text, notes)
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
    return ref.repo, commit, metas, http.transferred


# --- quant: auto (a model profile's `quants:`) ---------------------------------------------------
@dataclass
class QuantChoice:
    """Which entry of a model's `quants:` the plan is of, and why (`Plan.quant`)."""

    chosen: str  # the quant planned
    gguf: str | None  # its file, as the model profile writes it
    auto: bool  # chosen by vramc (`quant: auto`); False: the profile names it
    outcome: str  # auto: "all-layers", "partial", "none-fits" or "cpu-only"; "fixed" otherwise
    rows: list[Row]  # every entry that could be planned (auto only), in `quants:` order
    message: str = ""
    hint: str = ""
    dep: object = None  # the deployment as loaded (its model with every quant): a joint fit plans another
    beside: str = ""  # the deployments it was chosen beside (`choose_together`), or why alone

    def record(self) -> dict:
        """`plan --format json`'s `quant` (added keys, issue 15)."""
        return {
            "chosen": self.chosen,
            "gguf": self.gguf,
            "auto": self.auto,
            "outcome": self.outcome,
            "candidates": [
                {
                    "quant": r.quant,
                    "gguf": r.file,
                    "weights_bytes": r.weights,
                    "verdict": r.verdict,
                    "gpu_layers": r.gpu_layers,
                    "layers": r.layers,
                }
                for r in self.rows
            ],
        }


def _shown(r: Row) -> str:
    return f"{r.quant} ({r.gpu_layers}/{r.layers} layers on the GPUs)"


def decide(rows: list[Row]) -> tuple[Row, str, str, str]:
    """(the row to plan, outcome, message, hint): the largest quant (by weights) that fits with
    every layer on the GPUs; else the largest that fits with part of the model on the CPU, the
    trade-off against the quant that keeps the most layers there; else the smallest."""
    n = len(rows)
    ok = [r for r in rows if r.verdict in ("fits", "tight")]
    whole = [r for r in ok if r.gpu_layers >= r.layers]
    if whole:
        best = max(whole, key=lambda r: (r.weights, r.quant))
        msg = (
            f"quant: auto chose {best.quant} ({best.file}), the largest of the {n} quants that fits "
            f"with all {best.layers} layers on the GPUs"
        )
        partial = sorted((r for r in ok if r.weights > best.weights), key=lambda r: -r.weights)
        if partial:
            msg += "; larger ones fit only with layers on the CPU (slower): " + ", ".join(map(_shown, partial))
        over = sorted((r for r in rows if r not in ok and r.weights > best.weights), key=lambda r: -r.weights)
        if over:
            msg += "; " + ", ".join(r.quant for r in over) + (" does" if len(over) == 1 else " do") + " not fit"
        hint = f"`quant: {partial[0].quant}` takes the larger one with part of it on the CPU" if partial else ""
        return best, "all-layers", msg, hint
    if ok:
        best = max(ok, key=lambda r: (r.weights, r.quant))
        most = max(ok, key=lambda r: (r.gpu_layers / max(r.layers, 1), r.weights, r.quant))
        msg = (
            f"no quant fits with all layers on the GPUs: quant: auto chose {best.quant} ({best.file}), the largest "
            f"that fits, with {best.gpu_layers}/{best.layers} layers on the GPUs (the rest run on the CPU, slower)"
        )
        if most is not best:
            msg += f"; the trade-off: {_shown(most)}, a smaller quant with more of it on the GPUs"
        hint = (
            f"`quant: {most.quant}` for the most layers on the GPUs; or a smaller context or more GPU memory "
            "for all of them"
        )
        return best, "partial", msg, hint
    best = min(rows, key=lambda r: (r.weights, r.quant))
    msg = f"none of the {n} quants fits on these GPUs: quant: auto planned the smallest, {best.quant} ({best.file})"
    return best, "none-fits", msg, "a smaller context, fewer parallel slots or more GPU memory"


def plan_quants(dep, cache):
    """Plan a deployment whose model has `quants:` (or `quant: auto`): each entry is planned as a
    model of its own, with the deployment's settings, margin and `auto` settings solved as for any
    model; a fixed `quant:` plans its entry, `quant: auto` the one `decide` picks. The plan is of
    the chosen entry (its `dep.model` is that entry, so build and run use its file) and says which
    in `plan.quant`."""
    from dataclasses import replace

    from vramc.load import quantset
    from vramc.load.profiles import project_root
    from vramc.plan.planner import Plan, gpu_budgets, plan_deployment

    model = dep.model
    bad = quantset.problems(model)
    if bad:  # said where the model is; nothing to plan
        plan = Plan(dep=dep, engine=dep.doc.obj.engine, gpus=gpu_budgets(dep))
        plan.margins = [dep.margin.of(g.capacity_bytes) for g in plan.gpus]
        plan.diagnostics.extend(bad)
        return plan
    key = id(model.obj)
    if key not in cache.quants or cache.quants[key][0] is not model.obj:
        cache.quants[key] = (model.obj, quantset.candidates(model, project_root(model.path)))
    cands = cache.quants[key][1]

    def planned(c):
        return plan_deployment(replace(dep, model=c.doc, gguf_path=c.gguf_path, quant_files=()), cache)

    if not quantset.is_auto(model.obj):
        c = next(c for c in cands if c.quant.upper() == model.obj.quant.upper())  # problems() checked it
        p = planned(c)
        p.quant = QuantChoice(c.quant, c.doc.obj.gguf, False, "fixed", [])
        return p
    plans = [(c, planned(c)) for c in cands]
    rows, by_row = [], {}
    for c, p in plans:
        if p.meta is not None and p.estimate is not None:
            r = _row(c.quant, c.doc.obj.gguf or "(lock only)", p.meta, p)
            rows.append(r)
            by_row[id(r)] = p
    # what is wrong with an entry (its file, its lock) is said whichever entry is chosen
    said = [d for _, p in plans for d in p.diagnostics if d.code.startswith("VR20")]
    if not rows:
        first = plans[0][1]
        first.diagnostics = said + [d for d in first.diagnostics if not d.code.startswith("VR20")]
        return first
    if plans[0][1].gpus:
        best, outcome, message, hint = decide(rows)
    else:  # no GPU (`gpus: []`): every layer runs on the CPU whichever quant; the largest that fits
        ok = [r for r in rows if r.verdict in ("fits", "tight")] or rows
        best = max(ok, key=lambda r: (r.weights, r.quant))
        outcome, hint = "cpu-only", ""
        message = f"quant: auto chose {best.quant} ({best.file}), the largest of the {len(rows)} quants (no GPU: all on the CPU)"
    chosen = by_row[id(best)]
    chosen.diagnostics = said + [d for d in chosen.diagnostics if not d.code.startswith("VR20")]
    chosen.quant = QuantChoice(best.quant, chosen.dep.model.obj.gguf, True, outcome, rows, message, hint, dep)
    return chosen


def choose_together(combos, cache) -> None:
    """`quant: auto` of a deployment that runs with others on one machine (a `deployments:` file):
    each entry of its `quants:` is planned again in what the others leave of the GPUs it shares with
    them (their plans at their smallest settings: a member whose settings are `auto` at the floor
    the joint fit gives it first, `plan.fit.fit_together`; the larger margin), and `decide` picks
    among those answers, so the quant is the largest that fits with all layers beside them (in each
    combination it runs in). The joint fit then shares the GPUs as for any model. A server's model
    (`models:`) keeps the quant it was planned with alone, and says so: a server loads and evicts
    its models by its own rules (plan/servers.py), which this choice does not replay."""
    from dataclasses import replace

    from vramc.engines import ENGINES
    from vramc.plan.fit import _explicit_auto, _floor_need, _gpu_key
    from vramc.plan.planner import Plan, _plan_llama, gpu_budgets, plan_deployment

    taken: dict[int, dict[tuple, int]] = {}  # id(plan) -> (host, gpu) -> bytes the others use
    margin: dict[int, dict[tuple, int]] = {}
    names: dict[int, list[str]] = {}
    autos: dict[int, list[str]] = {}  # id(plan) -> "NAME (QUANT)" of the other quant: auto ones
    chosen: dict[int, object] = {}
    for combo in combos:
        members = [p for p in combo.members if p.estimate is not None]
        adjustable = {id(p) for p in combo.adjustable()}
        for p in combo.adjustable():
            q = p.quant
            if q is None or not q.auto or not q.rows or q.dep is None or ENGINES[p.engine].family == "vllm":
                continue
            mine = {_gpu_key(d) for d in (p.estimate.devices if p.estimate else ())} | {(g.host, g.gpu) for g in p.gpus}
            use: dict[tuple, int] = {}
            for o in members:
                if o is p:
                    continue
                floor = (
                    _floor_need(o)
                    if id(o) in adjustable
                    and o.auto
                    and o.meta is not None
                    and o.requested is not None
                    and (o.engine in ("llama-server", "llama-cpp-python") or _explicit_auto(o))
                    else None
                )
                for i, d in enumerate(o.estimate.devices):
                    key = _gpu_key(d)
                    if key not in mine:
                        continue
                    need = d.total_bytes if floor is None or key not in floor else floor[key] + d.overhead_bytes
                    use[key] = use.get(key, 0) + need
                    margin.setdefault(id(p), {})[key] = max(margin.get(id(p), {}).get(key, 0), o.margins[i])
                    if o.dep.label not in names.setdefault(id(p), []):
                        names[id(p)].append(o.dep.label)
                        if o.quant is not None and o.quant.auto and o.quant.chosen:
                            autos.setdefault(id(p), []).append(f"{o.dep.label} ({o.quant.chosen} alone)")
            for key, n in use.items():  # in every combination it runs in: the most the others take
                taken.setdefault(id(p), {})[key] = max(taken.get(id(p), {}).get(key, 0), n)
            chosen[id(p)] = p
    for pid, p in chosen.items():
        q = p.quant
        who = ", ".join(names.get(pid, []))
        if not taken.get(pid) or q.beside:
            continue
        if p.dep.server is not None:
            q.beside = f"chosen alone: {who} may be loaded beside it (a server's models keep their own quant)"
            q.message += f"; {q.beside}"
            continue
        orig = q.dep
        cands = cache.quants[id(orig.model.obj)][1]
        rows, by_quant = [], {}
        for c in cands:
            d = replace(orig, model=c.doc, gguf_path=c.gguf_path, quant_files=())
            gpus = gpu_budgets(d)
            bp = Plan(
                dep=d,
                engine=d.doc.obj.engine,
                gpus=[replace(g, tenants_bytes=g.tenants_bytes + taken[pid].get((g.host, g.gpu), 0)) for g in gpus],
            )
            bp.margins = [max(d.margin.of(g.capacity_bytes), margin.get(pid, {}).get((g.host, g.gpu), 0)) for g in gpus]
            _plan_llama(bp, cache)
            if bp.meta is not None and bp.estimate is not None:
                rows.append(_row(c.quant, c.doc.obj.gguf or "(lock only)", bp.meta, bp))
                by_quant[c.quant] = c
        if not rows:
            continue
        best, outcome, message, hint = decide(rows)
        alone = q.chosen
        if best.quant != alone:
            c = by_quant[best.quant]
            new = plan_deployment(replace(orig, model=c.doc, gguf_path=c.gguf_path, quant_files=()), cache)
            said = [x for x in p.diagnostics if x.code.startswith("VR20")]
            for f in fields(new):
                setattr(p, f.name, getattr(new, f.name))
            p.diagnostics = said + [x for x in new.diagnostics if not x.code.startswith("VR20")]
        beside = f"chosen beside {who} (run together on these GPUs)"
        beside += f"; alone it would be {alone}" if best.quant != alone else ""
        if autos.get(pid):  # each is chosen beside the others' quants alone, not all of them jointly
            beside += (
                f"; {', '.join(autos[pid])} also quant: auto, counted here at the quant chosen alone:"
                " the quants are chosen one by one, not jointly"
            )
        p.quant = QuantChoice(
            best.quant, p.dep.model.obj.gguf, True, outcome, rows, f"{message}; {beside}", hint, orig, beside
        )


def render_choice(plan) -> str:
    """The table of every quant under `plan`'s text (`vramc plan` of a `quant: auto` model)."""
    q = plan.quant
    if q is None or not q.rows:
        return ""
    lines = render("", q.rows).splitlines()[1:-1]  # the header and a row per quant
    return "\n".join(["  quant: auto, every quant of the model on these GPUs:"] + lines + [f"  {q.message}"]) + "\n"
