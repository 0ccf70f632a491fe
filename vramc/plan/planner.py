"""Plan a deployment: its GPUs as the engine will see them, the model's metadata, the engine's
settings with every default and `auto` resolved, and the per-device memory estimate.

The `Plan` is the one input of the lint rules, the renderers and `vramc run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vramc.diagnostics import Diagnostic
from vramc.engines import ENGINES
from vramc.lint.codes import diagnostic
from vramc.load.profiles import display_path
from vramc.memory.usage import GpuBudget, MemoryEstimate
from vramc.units import MiB, fmt_size

if TYPE_CHECKING:
    from vramc.load.profiles import Deployment
    from vramc.memory.llama_params import LlamaParams
    from vramc.model.modelmeta import ModelMeta
    from vramc.plan.engine_settings import LlamaChoice

DISPLAY_RESERVE = 512 * MiB  # a desktop's compositor and browser on a display GPU
# vLLM's process holds its CUDA context, cuBLAS and (with tensor parallelism) NCCL buffers outside
# its budget: 0.61 GiB at TP=1 and 1.54 GiB at TP=2 on an H100 (llm-d logs, docs/vllm-model.md).
VLLM_MIN_OVERHEAD = 625 * MiB
VLLM_NCCL_OVERHEAD = 950 * MiB


def default_overhead(engine: str, gpu_name: str, settings) -> int:
    """Per-GPU memory the engine process holds beyond its buffers: CUDA context, cuBLAS workspace,
    the CUDA memory pool, driver allocations ("unaccounted" in llama.cpp's memory breakdown).
    From the GPU's SM count when vramc knows the model; docs/cuda-overhead.md has the data."""
    from vramc.hardware.gpus import default_overhead as llama_overhead

    base = llama_overhead(gpu_name)
    if ENGINES[engine].family != "vllm":
        return base
    tp = settings.tensor_parallel_size
    tp = tp if isinstance(tp, int) else 1
    world = tp * (settings.pipeline_parallel_size or 1)  # pipeline stages hold NCCL communicators too
    return max(base, VLLM_MIN_OVERHEAD) + (VLLM_NCCL_OVERHEAD if world > 1 else 0)


@dataclass
class Plan:
    dep: Deployment
    engine: str
    gpus: list[GpuBudget]
    meta: ModelMeta | None = None  # llama.cpp family
    choice: LlamaChoice | None = None  # with autos resolved
    params: LlamaParams | None = None
    estimate: MemoryEstimate | None = None
    margins: list[int] = field(default_factory=list)  # bytes to keep free per device
    diagnostics: list[Diagnostic] = field(default_factory=list)
    search: list[str] = field(default_factory=list)  # what the fit solver tried
    auto: tuple[str, ...] = ()  # settings the solver chose
    fit_hint: str = ""  # when fixed settings do not fit: what would (from the solver)
    requested: LlamaChoice | None = None  # the engine choice before the solver: a joint fit solves it again
    # settings the engine itself decides (Ollama's scheduler), by setting: ollama_sched.EngineChoice
    engine_choices: dict = field(default_factory=dict)
    quant: object = None  # a model of several quants (`quants:`, issue 15): quants.QuantChoice

    @property
    def name(self) -> str:
        return self.dep.label

    def cuda_visible_devices(self) -> str:
        """CUDA_VISIBLE_DEVICES in launch order: UUIDs when every GPU has one (stable across
        reboots and driver updates), else the physical indices (profile `index`, or position)."""
        gpus = self.dep.hardware.obj.gpus
        local = [g for g in self.gpus if g.host is None]  # RPC devices are other machines' (issue 17)
        chosen = [gpus[g.gpu] for g in local]
        if chosen and all(g.uuid for g in chosen):
            return ",".join(g.uuid for g in chosen)
        return ",".join(str(gpus[g.gpu].index if gpus[g.gpu].index is not None else g.gpu) for g in local)

    def device_verdict(self, i: int) -> str:
        d = self.estimate.devices[i]
        if d.free_bytes < 0:
            return "does-not-fit"
        if d.free_bytes < self.margins[i]:
            return "tight"
        if self.kv_short():
            return "tight"
        return "fits"

    def kv_short(self) -> bool:
        """vLLM: the KV cache holds fewer than max_num_seqs requests at max_model_len, so a full
        batch of long requests is preempted (get_max_concurrency_for_kv_cache_config)."""
        if ENGINES[self.engine].family != "vllm" or not self.estimate or not self.estimate.devices:
            return False
        d = self.estimate.devices[0].detail
        per = d.get("blocks_per_request")
        return bool(per) and d["kv_blocks"] < per * self.estimate.resolved["max_num_seqs"]

    @property
    def verdict(self) -> str:
        if self.estimate is None:
            return "unknown"
        if self.estimate.errors:
            return "does-not-fit"
        order = {"fits": 0, "tight": 1, "does-not-fit": 2}
        worst = "fits"
        for i in range(len(self.estimate.devices)):
            v = self.device_verdict(i)
            if order[v] > order[worst]:
                worst = v
        return worst


def gpu_budgets(dep, settings=None) -> list[GpuBudget]:
    """The deployment's GPUs in launch order (CUDA_VISIBLE_DEVICES), as the engine will see them
    (with `settings` in place of the deployment's: vLLM's overhead depends on its TP size)."""
    settings = settings or dep.settings
    hw = dep.hardware.obj
    chosen = list(range(len(hw.gpus))) if dep.doc.obj.gpus is None else list(dep.doc.obj.gpus)
    # the loader refuses unknown, negative and repeated indices (VR113) instead of planning on the
    # GPUs that remain; dropping them here would plan other devices than the engine will see
    if any(not 0 <= i < len(hw.gpus) for i in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"gpus {chosen} do not name distinct GPUs of {len(hw.gpus)} (VR113 was not checked)")
    order = settings.device_order or hw.device_order
    if order == "free_desc":
        chosen.sort(key=lambda i: (-(_free(hw.gpus[i])), i))
    elif order == "total_desc":
        chosen.sort(key=lambda i: (-hw.gpus[i].vram, i))
    else:
        chosen.sort(key=lambda i: (hw.gpus[i].index if hw.gpus[i].index is not None else i, i))
    engine = dep.doc.obj.engine
    out = []
    for launch, i in enumerate(chosen):
        g = hw.gpus[i]
        reserve = g.reserve if g.reserve is not None else (DISPLAY_RESERVE if g.display else 0)
        out.append(
            GpuBudget(
                id=f"CUDA{launch}",
                name=g.name,
                gpu=i,
                capacity_bytes=g.vram,
                tenants_bytes=sum(t.vram for t in g.tenants),
                reserve_bytes=reserve,
                overhead_bytes=g.overhead
                if g.overhead is not None
                else (hw.overhead if hw.overhead is not None else default_overhead(engine, g.name, settings)),
            )
        )
    if getattr(dep.doc.obj, "hosts", None) and ENGINES[engine].family == "llama":
        from vramc.plan.rpc import rpc_budgets

        # llama.cpp puts RPC devices first
        return rpc_budgets(dep, settings, default_overhead, DISPLAY_RESERVE) + out
    if getattr(dep.doc.obj, "hosts", None) and ENGINES[engine].family == "vllm":
        from vramc.plan.vllm_nodes import node_budgets

        # node ranks 1..N after this machine (issue 17)
        return out + node_budgets(dep, lambda name: default_overhead(engine, name, settings), DISPLAY_RESERVE)
    return out


def _free(g) -> int:
    return g.free if g.free is not None else g.vram - sum(t.vram for t in g.tenants)


class MetaCache:
    """Reads each GGUF header once per run, however many deployments and variants use it."""

    def __init__(self) -> None:
        self._cache: dict = {}
        self.quants: dict = {}  # id(model obj) -> (model obj, its `quants:` as candidates)

    def get(self, dep) -> tuple[object, list[Diagnostic]]:
        model = dep.model
        key = (str(dep.gguf_path), id(model.obj))
        if key not in self._cache:
            self._cache[key] = _load_meta(dep)
        return self._cache[key]


def _load_meta(dep) -> tuple[object, list[Diagnostic]]:
    from vramc.model.modelmeta import ModelMeta

    m = dep.model
    lock = m.obj.lock
    where = m.positions.locate(("gguf",)) or m.positions.locate(())
    diags: list[Diagnostic] = []
    path: Path | None = dep.gguf_path
    unreadable = False
    from vramc.load.profiles import probe

    # what is there but no regular file (a FIFO, /dev/zero, a folder) is read_gguf's to refuse;
    # where nothing is (gguf.present's answer, without importing the reader) the lock is used
    if path is not None and probe(path)[0] != "missing":
        from vramc.model.gguf import GGUFError, read_gguf
        from vramc.model.modelmeta import MetaError, validate_meta

        try:
            meta = read_gguf(path)
            validate_meta(meta)
        except (GGUFError, MetaError) as e:
            what = "cannot read GGUF" if isinstance(e, GGUFError) else "cannot plan with the header of"
            diags.append(
                diagnostic(
                    "VR201",
                    f"{what} {display_path(path)}: {e}",
                    m.file,
                    where,
                    m.prefix + ("gguf",),
                    "check the file, or remove `gguf` to use the lock",
                )
            )
            meta, unreadable = None, True
        if meta is not None and lock is not None and lock.file is not None:
            reason = _lock_mismatch(meta, lock)
            if reason:
                diags.append(
                    diagnostic(
                        "VR202",
                        f"the GGUF file no longer matches its lock ({reason})",
                        m.file,
                        m.positions.locate(("lock",)) or where,
                        m.prefix + ("lock",),
                        f"re-lock it: vramc analyze {display_path(path)} --write {m.file}",
                    )
                )
        if meta is not None:
            return meta, diags
    if lock is not None:
        try:
            return ModelMeta.from_lock(lock), diags
        except (ValueError, KeyError) as e:
            at = ("lock",) + getattr(e, "path", ())  # MetaError says where in the lock
            diags.append(
                diagnostic(
                    "VR203",
                    f"the locked metadata is inconsistent: {e}",
                    m.file,
                    m.positions.locate(at) or m.positions.locate(("lock",)),
                    m.prefix + at,
                    "regenerate it with `vramc analyze MODEL.gguf --write`",
                )
            )
            return None, diags
    if unreadable:
        return None, diags
    if m.obj.config is not None and m.obj.quant:
        return _meta_from_config(m, diags)
    if path is not None:
        diags.append(
            diagnostic(
                "VR200",
                f"model file {display_path(path)} not found and the model has no lock",
                m.file,
                where,
                m.prefix + ("gguf",),
                "run `vramc analyze MODEL.gguf --write profiles/models/NAME.yaml` where the file exists, "
                "and refer to that model profile",
            )
        )
    else:
        diags.append(
            diagnostic(
                "VR200",
                "the model has neither a gguf path nor locked metadata",
                m.file,
                m.positions.locate(()),
                m.prefix,
                "add `gguf:` or a lock written by `vramc analyze`",
            )
        )
    return None, diags


def _meta_from_config(m, diags: list[Diagnostic]) -> tuple[object, list[Diagnostic]]:
    """No file, no lock: the GGUF that `config:` converts and quantizes to `quant:` (VR206)."""
    from vramc.dev.synth.from_config import ConfigError, meta_from_config
    from vramc.model.modelmeta import MetaError, validate_meta

    cfg = m.obj.config.model_dump(exclude_none=True)
    arch = cfg.pop("architecture", None)
    if arch:
        cfg["architectures"] = [arch]
    try:
        meta = meta_from_config(cfg, m.obj.quant, name=m.obj.name or "model")
        validate_meta(meta)
    except (ConfigError, MetaError) as e:
        at = ("quant",) if "quant" in str(e) else ("config",)
        diags.append(
            diagnostic(
                "VR206",
                f"cannot derive the GGUF from config: {e}",
                m.file,
                m.positions.locate(at) or m.positions.locate(()),
                m.prefix + at,
                "lock it from the whole config.json (vramc lock --config config.json --quant Q4_K_M "
                "--write PROFILE) or from a GGUF (vramc analyze hf://ORG/REPO:QUANT --write PROFILE)",
            )
        )
        return None, diags
    return meta, diags


def _missing_tensor(dep, meta, e) -> Diagnostic:
    m = dep.model
    if getattr(meta, "origin", None) == "lock":
        return diagnostic(
            "VR203",
            f"the locked metadata is inconsistent: {e}",
            m.file,
            m.positions.locate(("lock", "tensors")) or m.positions.locate(("lock",)),
            m.prefix + ("lock", "tensors"),
            "regenerate it with `vramc analyze MODEL.gguf --write`",
        )
    return diagnostic(
        "VR201",
        f"cannot use GGUF {display_path(dep.gguf_path)}: {e}",
        m.file,
        m.positions.locate(("gguf",)) or m.positions.locate(()),
        m.prefix + ("gguf",),
        "the file is incomplete or of another architecture: convert it again",
    )


def _lock_mismatch(meta: ModelMeta, lock) -> str | None:
    from vramc.model.modelmeta import lock_mismatch

    f = lock.file
    what = lock_mismatch(meta.file_size, meta.header_sha256, f)
    if what == "size":
        return f"size {meta.file_size} != locked {f.size}"
    return "header hash differs" if what == "header" else None


def plan_deployment(dep, cache: MetaCache | None = None) -> Plan:
    engine = dep.doc.obj.engine
    if ENGINES[engine].family != "vllm" and (dep.model.obj.quants is not None or dep.model.obj.quant == "auto"):
        from vramc.plan.quants import plan_quants  # a model of several quants: each planned, one chosen

        return plan_quants(dep, cache or MetaCache())
    plan = Plan(dep=dep, engine=engine, gpus=gpu_budgets(dep))
    plan.margins = [dep.margin.of(g.capacity_bytes) for g in plan.gpus]
    if ENGINES[engine].family == "vllm":  # the memory model that plans it
        _plan_vllm(plan)
    else:
        _plan_llama(plan, cache or MetaCache())
    return plan


def _plan_llama(plan: Plan, cache: MetaCache) -> None:
    from vramc.plan import engine_settings as engines

    dep = plan.dep
    meta, diags = cache.get(dep)
    plan.diagnostics.extend(diags)
    plan.meta = meta
    if meta is None:
        return
    if any(g.backend == "rpc" for g in plan.gpus):  # a CPU served over RPC (issue 17)
        from vramc.plan.rpc import unknown_ram

        unsized = unknown_ram(plan)
        if unsized:
            plan.diagnostics.extend(unsized)
            return
    total_vram = sum(g.capacity_bytes for g in plan.gpus)
    choice = engines.llama_choice(plan.engine, dep.settings, total_vram)
    if plan.engine == "ollama":  # what Ollama's scheduler decides before it starts llama-server
        from vramc.plan import ollama_sched

        choice = ollama_sched.before_solve(plan, meta, choice)
    from vramc.memory.llama_archs import MissingTensor

    try:
        _resolve_and_estimate(plan, meta, choice)
    except MissingTensor as e:  # the model's fault, not the settings': said where the model is
        plan.diagnostics.append(_missing_tensor(dep, meta, e))
        plan.estimate = None
        return
    except ValueError as e:  # settings llama.cpp refuses at load (its own error, in its words)
        plan.diagnostics.append(
            diagnostic(
                "VR320",
                f"these settings cannot be loaded: {e}",
                dep.doc.file,
                dep.doc.positions.locate(("settings",)),
                dep.doc.prefix + ("settings",),
                "change the setting the engine's message names; `vramc explain VR320` lists the cases",
            )
        )
        plan.estimate = None
        return
    if plan.engine == "ollama":
        ollama_sched.after_solve(plan, meta)
    if plan.verdict == "does-not-fit" and plan.gpus:
        from vramc.plan.fit import suggest

        try:
            plan.fit_hint = suggest(meta, plan.gpus, plan.choice, plan.margins, dep.settings.ctx_min, fit_target(dep))
        except ValueError:
            plan.fit_hint = ""


def _resolve_and_estimate(plan: Plan, meta, choice, keep_free: list[int] | None = None) -> None:
    """Solve `choice`'s `auto` settings so that `keep_free` (default: the margins) stays free on
    each GPU, and estimate the answer."""
    from vramc.plan import engine_settings as engines

    dep = plan.dep
    plan.requested = choice
    autos = tuple(
        k for k in ("ctx", "gpu_layers", "tensor_split", "cache_type_k", "cache_type_v") if getattr(choice, k) == "auto"
    )
    est = None
    if autos:
        from vramc.plan.estimate_cache import solve

        # a projector or draft model loads onto the first GPU after the model (so it does not
        # change the split by free memory): the solver keeps room for it there
        extra = extra_model_bytes(dep.model.obj)
        margins = [m + extra if i == 0 else m for i, m in enumerate(plan.margins if keep_free is None else keep_free)]
        result = solve(meta, plan.gpus, choice, margins, dep.settings.ctx_min)
        if plan.engine == "ollama":  # Ollama's automatic batch follows the context the solver chose
            from dataclasses import replace

            from vramc.plan import ollama_sched

            batch = ollama_sched.rebatch(plan, meta, result.choice)
            if batch is not None:
                result = solve(
                    meta, plan.gpus, replace(choice, batch=batch, ubatch=batch), margins, dep.settings.ctx_min
                )
        plan.search = result.log
        plan.auto = autos + (("override_tensor",) if result.moved_experts else ())
        choice, est = result.choice, result.estimate
    plan.choice = choice
    n_ctx_train = int(meta.hp("context_length", 0) or 0)
    plan.params = engines.to_llama_params(choice, meta.n_layer, n_ctx_train)
    if est is None:  # the solver's answer was verified with this very estimate: reuse it
        from vramc.plan.estimate_cache import estimate_llama

        est = estimate_llama(meta, plan.gpus, plan.params)
    add_overhead(est, plan.gpus)
    add_extra_models(est, dep.model.obj)
    plan.estimate = est


def extra_model_bytes(model) -> int:
    return sum(size or 0 for path, size in ((model.mmproj, model.mmproj_size), (model.draft, model.draft_size)) if path)


def add_extra_models(est: MemoryEstimate, model) -> None:
    """A multimodal projector and a draft model load onto the first GPU next to the model
    (llama.cpp's own fit leaves both out: ggml-org/llama.cpp#18111, #25408). Their weights are
    counted; their compute buffers and the draft's KV cache are not modelled."""
    if not est.devices:
        return
    d = est.devices[0]
    for what, path, size in (
        ("mmproj", model.mmproj, model.mmproj_size),
        ("draft model", model.draft, model.draft_size),
    ):
        if path and size:
            d.weights_bytes += size
            est.notes.append(
                f"{what} {path}: {fmt_size(size)} of weights counted on {d.id}; "
                "its compute buffers (and a draft's KV cache) are not, so keep a margin"
            )


def add_overhead(est: MemoryEstimate, gpus: list[GpuBudget]) -> None:
    # Every visible GPU gets a CUDA context, even one that ends up holding no layers.
    for d, g in zip(est.devices, gpus):
        d.overhead_bytes = g.overhead_bytes
    # the memory model's caveat that it leaves this overhead out is answered here
    est.notes = [n for n in est.notes if not n.startswith("CUDA: the CUDA context")]


def _plan_vllm(plan: Plan) -> None:
    from vramc.memory.vllm import estimate_vllm

    dep = plan.dep
    model = dep.model.obj
    if model.config is None:
        plan.diagnostics.append(
            diagnostic(
                "VR200",
                "a vLLM deployment needs the model's `config` (from config.json)",
                dep.model.file,
                dep.model.positions.locate(()),
                dep.model.prefix,
                "add `hf:` and `config:` to the model profile",
            )
        )
        return
    from vramc.plan import vllm_fit
    from vramc.plan.vllm_nodes import host_names, layer_partition

    plan.requested = dep.settings
    if not vllm_fit.asked(dep.settings):
        plan.estimate = estimate_vllm(
            model, plan.gpus, dep.settings, layer_partition=layer_partition(dep), hosts=host_names(dep)
        )
        plan.choice = dep.settings
        _keep_ranks(plan)
    else:
        solve_vllm(plan)
    add_overhead(plan.estimate, plan.gpus)


def _keep_ranks(plan: Plan) -> None:
    """Across machines (issue 17) a vLLM plan's GPUs are those its ranks run on, in rank order,
    so that devices, margins and each node's CUDA_VISIBLE_DEVICES line up."""
    if not any(g.host is not None for g in plan.gpus) or plan.estimate is None:
        return
    used = {(d.host, d.id) for d in plan.estimate.devices}
    plan.gpus = [g for g in plan.gpus if (g.host, g.id) in used]
    plan.margins = [plan.dep.margin.of(g.capacity_bytes) for g in plan.gpus]


def solve_vllm(plan: Plan, util: float | None = None) -> None:
    """Resolve a vLLM deployment's `auto` settings (vramc.plan.vllm_fit); `util` is a share a
    joint fit of co-located deployments decided for its `gpu_memory_utilization: auto`."""
    from vramc.plan import vllm_fit

    dep = plan.dep
    result = vllm_fit.solve(
        dep,
        plan.margins,
        # pp: a pipeline_parallel_size the solver chose (across machines): NCCL's share follows the world size
        lambda tp, pp=None: gpu_budgets(
            dep,
            dep.settings.model_copy(
                update={"tensor_parallel_size": tp} | ({"pipeline_parallel_size": pp} if pp else {})
            ),
        ),
        util=util,
    )
    plan.gpus, plan.estimate, plan.choice = result.gpus, result.estimate, result.settings
    plan.auto, plan.search = result.auto, result.log
    _keep_ranks(plan)


def plan_all(deployments) -> list[Plan]:
    """Plan every deployment; those that run at the same time on one machine (a `deployments:`
    file, in each combination of its variants) have their `auto` settings fitted together."""
    cache = MetaCache()
    plans = [plan_deployment(d, cache) for d in deployments]
    combos = combinations(plans)
    for combo in combos:  # vLLM shares of GPUs they share: decided before the llama.cpp ones fit
        _share_vllm(combo)
    if combos:
        # `quant: auto` beside the deployments it runs with (issue 15); plan.quants imports the
        # remote header reader (http.client, email: ~20 ms), which no other check needs
        if any(p.quant is not None and p.quant.auto for combo in combos for p in combo.members):
            from vramc.plan.quants import choose_together

            choose_together(combos, cache)
        from vramc.plan.fit import fit_together

        smaller = _keep_smaller()
        for combo in combos:  # a group's base combination first: its variants run with its answers
            # a server's models are in several resident sets: each keeps its smallest answer, so
            # that every set fits (issue 14)
            fit_together(combo, smaller if any(p.dep.server for p in combo.members) else refit)
    return plans


def _share_vllm(combo) -> None:
    """`gpu_memory_utilization: auto` of vLLM deployments that share GPUs (vllm_fit.joint_shares)."""
    from vramc.plan import vllm_fit

    members = [p for p in combo.members if p.estimate is not None and ENGINES[p.engine].family == "vllm"]
    if len(members) < 2:
        return
    adjustable = {id(p) for p in combo.adjustable()}
    shares = vllm_fit.joint_shares(
        members, lambda p, gpu: next(m for g, m in zip(p.gpus, p.margins) if g.gpu == gpu), adjustable
    )
    for p in members:
        if id(p) in shares:
            solve_vllm(p, util=shares[id(p)])
            p.search = [
                f"gpu_memory_utilization {shares[id(p)]:g}: the share left on the GPUs it "
                f"shares with {', '.join(q.dep.label for q in members if q is not p)}"
            ] + p.search
            add_overhead(p.estimate, p.gpus)


@dataclass
class Combination:
    """Deployments that run at the same time on one machine.

    A `deployments:` file is one machine. Its base combination runs every deployment's base
    settings; each variant name V of any of its deployments is one more combination, in which
    the deployments that have V run it and the others run their base alongside."""

    group: str
    variant: str | None  # None: the base combination
    members: list[Plan]

    @property
    def label(self) -> str:
        return ", ".join(p.dep.label for p in self.members)

    def adjustable(self) -> list[Plan]:
        """The members whose `auto` settings this combination decides: every member in the base
        combination; in a variant's, the members running the variant (the others run their base
        settings, decided with the base combination)."""
        return [p for p in self.members if p.dep.variant == self.variant]


def combinations(plans: list[Plan]) -> list[Combination]:
    groups: dict[str, list[Plan]] = {}
    for p in plans:
        groups.setdefault(p.dep.group, []).append(p)
    out = []
    for group, ps in groups.items():
        # a server's models (issue 14) run together only as one of its resident sets at a time
        servers: dict[str, list[Plan]] = {}
        for p in ps:
            if p.dep.server is not None:
                servers.setdefault(p.dep.server, []).append(p)
        bases = [p for p in ps if p.dep.variant is None and p.dep.server is None]
        sets: list[list[Plan]] = [[]]
        if servers:
            from itertools import product

            from vramc.plan.servers import resident_sets

            for m in servers.values():
                for p in m:
                    p.server_members = m  # the rules need every model of the server, not one set
            sets = [[p for s in combo for p in s] for combo in product(*(resident_sets(m) for m in servers.values()))]
        for extra in sets:
            if len(bases) + len(extra) < 2:  # one deployment: its variants are alternatives
                continue
            out.append(Combination(group, None, bases + extra))
            for v in sorted({p.dep.variant for p in ps if p.dep.variant is not None}):
                members = [next((q for q in ps if q.dep.doc is b.dep.doc and q.dep.variant == v), b) for b in bases]
                out.append(Combination(group, v, members + extra))
    return out


def fit_target(dep) -> str:
    """What `vramc fit` is given to fit this deployment (and only it): `[-d NAME] FILE`."""
    import shlex

    one = not dep.variant and not dep.doc.prefix  # the file holds this deployment alone
    return ("" if one else f"-d {shlex.quote(dep.label)} ") + shlex.quote(dep.doc.file)


def _keep_smaller():
    """`refit` for a model fitted in several resident sets: an answer that needs more of the GPUs
    than the one an earlier set gave it is dropped, so the final answer fits in every set."""
    fitted: set[int] = set()

    def need(plan: Plan) -> int:
        return sum(d.total_bytes for d in plan.estimate.devices) if plan.estimate else 0

    def smaller(plan: Plan, keep_free: list[int], note: str) -> None:
        before = (plan.choice, plan.params, plan.estimate, plan.search, plan.auto, dict(plan.engine_choices))
        had = need(plan)
        refit(plan, keep_free, note)
        if id(plan) in fitted and need(plan) > had:
            (plan.choice, plan.params, plan.estimate, plan.search, plan.auto, choices) = before
            plan.engine_choices.clear()
            plan.engine_choices.update(choices)
        fitted.add(id(plan))

    return smaller


def refit(plan: Plan, keep_free: list[int], note: str) -> None:
    """Solve `plan`'s `auto` settings again within what the deployments it runs with leave it:
    `keep_free` bytes per GPU (its margin, plus the others' share where a GPU is shared)."""
    solo = (plan.choice, plan.params, plan.estimate, plan.search, plan.auto)
    try:
        _resolve_and_estimate(plan, plan.meta, plan.requested, keep_free)
    except ValueError:  # nothing can be placed in that share: the group rules say so (VR312)
        plan.choice, plan.params, plan.estimate, plan.search, plan.auto = solo
        return
    plan.search = [note] + plan.search
    if plan.engine == "ollama":  # a server's model (issue 14): Ollama's decisions on the new answer
        from vramc.plan import ollama_sched

        ollama_sched.after_solve(plan, plan.meta)
