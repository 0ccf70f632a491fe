"""The fit solver: choose `auto` settings (gpu_layers, tensor_split, ctx) so the plan fits.

Objective, in order (issue 4): nothing over capacity minus margin on any GPU; all layers on GPUs
if possible, else as many as possible (llama.cpp offloads the output layer first); the requested
context, or the largest that fits down to `ctx_min`; then the most even free memory, measured as
the smallest share of each GPU left free.

The search works on exact per-layer costs (weights from the tensor table as the placement code
puts them, KV from the KV model) plus per-device compute buffers read back from the memory model,
and every answer is verified with the full estimate that `plan` shows: what the solver says fits,
the plan says fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vramc.memory.usage import GpuBudget

if TYPE_CHECKING:
    from vramc.plan.engine_settings import LlamaChoice
    from vramc.plan.planner import Plan

CTX_STEP = 256  # llama.cpp pads the context to 256 cells
PARTIAL_BLOCK_SLACK = 64 * 1024 * 1024
DEFAULT_CTX_MIN = 4096  # as llama.cpp's --fit-ctx
CTX_SINGLE_STEPS = 4  # verified single steps below the arithmetic's context before galloping
# per-layer weight costs depend only on the model, the overrides and the GPUs' buffer rules:
# variants of one deployment share them
_WEIGHTS: dict[tuple, tuple[object, tuple[list[int], int]]] = {}  # key -> (meta, costs)


@dataclass
class FitResult:
    choice: LlamaChoice  # with every auto resolved
    fits: bool
    log: list[str] = field(default_factory=list)
    estimates: int = 0  # full estimates computed, for the benchmark
    moved_experts: int = 0  # blocks whose MoE expert tensors were put in host memory
    estimate: object = None  # the verified estimate of `choice` (the plan reuses it)


@dataclass
class _Costs:
    """Bytes each layer costs the GPU that holds it (index n_layer is the output layer)."""

    weights: list[int]
    kv: list[int]
    dup: int  # tensors copied onto every GPU holding a trunk layer (rope_freqs)

    def layer(self, il: int) -> int:
        return self.weights[il] + self.kv[il]


class Solver:
    def __init__(self, meta, gpus: list[GpuBudget], choice, margins: list[int], ctx_min: int | None = None):
        from vramc.memory.llama_hparams import llama_hparams

        self.meta, self.gpus, self.choice = meta, gpus, choice
        self.hp = llama_hparams(meta)
        self.n_train = self.hp.n_ctx_train
        self.limits = [
            g.capacity_bytes - g.reserve_bytes - g.tenants_bytes - g.overhead_bytes - m for g, m in zip(gpus, margins)
        ]
        self.ctx_min = ctx_min or DEFAULT_CTX_MIN
        self.log: list[str] = []
        self.moved_experts = 0  # blocks whose expert tensors the solver put in host memory
        self.n_estimates = 0
        self._seen: dict = {}  # LlamaParams -> estimate, within this solve
        self._layouts: dict = {}  # the same, keyed by estimate_cache.one_way(params)
        self._weights: dict = {}

    # --- the memory model --------------------------------------------------------------------
    def params(self, choice):
        from vramc.plan.engine_settings import to_llama_params

        return to_llama_params(choice, self.meta.n_layer, self.n_train)

    def estimate(self, choice):
        from vramc.plan.estimate_cache import estimate_llama, one_way

        p = self.params(choice)
        if p not in self._seen:  # searches revisit layouts: estimate each one once per solve
            self.n_estimates += 1  # as the search asks (the count is in the log `fit` shows)
            # on one GPU a guess's split and no split are one layout: computed once
            q = one_way(self.gpus, p)
            if q not in self._layouts:
                self._layouts[q] = estimate_llama(self.meta, self.gpus, q)
            self._seen[p] = self._layouts[q]
        return self._seen[p]

    def fits(self, est) -> bool:
        return not est.errors and all(d.total_bytes <= lim for d, lim in zip(est.devices, self.limits))

    def costs(self, choice) -> _Costs:
        from vramc.memory.llama_cparams import resolve_cparams
        from vramc.memory.llama_kv import layer_caches
        from vramc.memory.llama_placement import backend_kind, buffer_rules

        hp = self.hp
        p = self.params(replace(choice, gpu_layers="all", tensor_split=None))
        c = resolve_cparams(p, self.n_train)
        rules = buffer_rules(backend_kind(self.gpus[0]))
        kv = [0] * (hp.n_layer_all + 1)
        if p.offload_kqv:
            for lc in layer_caches(hp, c, [0] * (hp.n_layer_all + 1), True, p.type_k, p.type_v, p.swa_full):
                kv[lc.il] += sum(rules.padded(b) for b in (lc.k_bytes, lc.v_bytes) if b)
        weights, dup = self._layer_weights(p)
        return _Costs(weights, kv, dup)

    def _layer_weights(self, p) -> tuple[list[int], int]:
        from vramc.memory.llama_placement import backend_kind

        key = (id(self.meta), p.overrides, backend_kind(self.gpus[0]))
        if key in _WEIGHTS and _WEIGHTS[key][0] is self.meta:
            self._weights[p.overrides] = _WEIGHTS[key][1]
        if p.overrides not in self._weights:
            from vramc.memory.llama_placement import _table, backend_kind, buffer_rules, place_model

            hp = self.hp
            one = self.gpus[:1]
            pl = place_model(self.meta, one, hp.n_layer, hp.n_layer_all, -1, "layer", None, 0, p.overrides)
            table = _table(self.meta)  # each tensor's role and padded size, as place_model read them
            weights, dup = [0] * (hp.n_layer_all + 1), 0
            for t, (role, il), size in zip(table.tensors, table.roles, table.sizes(buffer_rules(backend_kind(one[0])))):
                held = pl.tensor_dev.get(t.name, [])
                n = held.count(0)
                if not n:
                    continue
                if role == "layer":
                    weights[il] += size * n
                elif role == "dup":
                    dup += size
                else:  # the output layer, and token_embd again when embeddings are tied
                    weights[hp.n_layer_all] += size * n
            self._weights[p.overrides] = (weights, dup)
            _WEIGHTS[key] = (self.meta, self._weights[p.overrides])
        return self._weights[p.overrides]

    # --- placement arithmetic ----------------------------------------------------------------
    def pack(self, costs: _Costs, n_gpu: int, caps: list[float]) -> list[int] | None:
        """Layers per GPU for the last `n_gpu` layers, filled back to front; None if they don't fit."""
        n_all = self.hp.n_layer_all
        layers = list(range(n_all + 1 - n_gpu, n_all + 1))
        counts = [0] * len(self.gpus)
        end = len(layers)
        for g in range(len(self.gpus) - 1, -1, -1):
            used, k, trunk = 0.0, 0, False
            while k < end:
                il = layers[end - 1 - k]
                extra = costs.layer(il)
                if il < n_all and not trunk:
                    extra += costs.dup  # the first trunk layer brings its own rope_freqs copy
                if used + extra > caps[g]:
                    break
                used += extra
                trunk = trunk or il < n_all
                k += 1
            counts[g] = k
            end -= k
        return counts if end == 0 else None

    def balanced(self, costs: _Costs, n_gpu: int, compute: list[int]) -> list[int] | None:
        """The split of `n_gpu` layers that leaves the largest smallest share of each GPU free.

        A host's CPU behind RPC (issue 17) is no GPU: balanced by its share of a RAM many times a
        GPU's, it would take most layers while the GPUs idle. The GPUs hold the layers when they
        can (the CPU servers then hold none: VR308 says so); when they cannot, they hold what
        they can up to their limits and the CPU servers the fewest layers that remain."""
        cpu = [g.backend == "rpc" for g in self.gpus]
        if not any(cpu) or all(cpu):
            return self._balanced(costs, n_gpu, compute, [False] * len(self.gpus))
        on_gpus = self._balanced(costs, n_gpu, compute, cpu)
        if on_gpus is not None:
            return on_gpus
        base = [lim - cmp for lim, cmp in zip(self.limits, compute)]
        best = self.pack(costs, n_gpu, base)
        if best is None:
            return None
        lo, hi = 0.0, 1.0  # the smallest share of the CPU servers' room that still packs
        for _ in range(30):
            mid = (lo + hi) / 2
            got = self.pack(costs, n_gpu, [b * mid if c else b for b, c in zip(base, cpu)])
            if got is None:
                lo = mid
            else:
                hi, best = mid, got
        return best

    def _balanced(self, costs: _Costs, n_gpu: int, compute: list[int], left_out: list[bool]) -> list[int] | None:
        base = [0.0 if out else lim - cmp for lim, cmp, out in zip(self.limits, compute, left_out)]
        best = self.pack(costs, n_gpu, base)
        if best is None:
            return None
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            caps = [b - mid * g.capacity_bytes for b, g in zip(base, self.gpus)]
            got = self.pack(costs, n_gpu, caps)
            if got is None:
                hi = mid
            else:
                lo, best = mid, got
        return best

    def compute_of(self, est) -> list[int]:
        return [d.compute_bytes for d in est.devices]

    # --- the search ----------------------------------------------------------------------------
    def layout(self, choice, n_gpu: int, split_auto: bool, compute: list[int] | None = None):
        """Resolve tensor_split (when auto) for `n_gpu` offloaded layers; verify with the estimate.
        `compute` is a known guess of each GPU's compute buffer (else one estimate finds it)."""
        c = replace(choice, gpu_layers=n_gpu)
        if split_auto and len(self.gpus) == 1:
            c = replace(c, tensor_split=None)
            return c, self.estimate(c)
        if not split_auto:
            est = self.estimate(c)
            return c, est
        costs = self.costs(c)
        if compute is None:
            guess = replace(c, tensor_split=tuple(float(max(x, 1)) for x in self.limits))
            compute = self.compute_of(self.estimate(guess))
        est = None
        for _ in range(4):
            counts = self.balanced(costs, n_gpu, compute)
            if counts is None:
                # nothing packs: larger compute guesses never will; show the closest layout once
                counts = self.pack(costs, n_gpu, [float("inf")] * len(self.gpus)) or [n_gpu] + [0] * (
                    len(self.gpus) - 1
                )
                c = replace(c, tensor_split=tuple(float(x) for x in counts))
                return c, self.estimate(c)
            c = replace(c, tensor_split=tuple(float(x) for x in counts))
            est = self.estimate(c)
            over = [d.total_bytes - lim for d, lim in zip(est.devices, self.limits)]
            if self.fits(est) or all(o <= 0 for o in over):
                break
            # compute buffers differ from the guess (a GPU gained the output layer): adjust, retry
            new = self.compute_of(est)
            if new == compute:
                break
            compute = [max(a, b) for a, b in zip(compute, new)]
        return c, est

    def guess_compute(self, choice) -> list[int] | None:
        """Compute buffers per GPU with every GPU holding layers (what a full split needs)."""
        guess = replace(
            choice, gpu_layers=self.hp.n_layer_all + 1, tensor_split=tuple(float(max(x, 1)) for x in self.limits)
        )
        est = self.estimate(guess)
        return None if est.errors else self.compute_of(est)

    def max_layers(self, choice, split_auto: bool):
        """The most layers (output first) that fit, verified by the estimate the plan shows."""
        total = self.hp.n_layer_all + 1
        compute = self.guess_compute(choice) if split_auto else None
        costs = self.costs(replace(choice, gpu_layers=total)) if compute is not None else None
        caps = [lim - cmp for lim, cmp in zip(self.limits, compute)] if compute is not None else None
        # all layers are verified unless the (conservative) arithmetic rules them out; then the
        # climb below may still reach them
        tried_all = compute is None or self.pack(costs, total, caps) is not None
        if tried_all:
            c, est = self.layout(choice, total, split_auto, compute)
            if self.fits(est):
                return c, est, total
        if split_auto:
            # the largest count that packs, by arithmetic on per-layer costs, then verified
            if compute is not None:
                n = total
                while n > 0 and self.pack(costs, n, caps) is None:
                    n -= 1
                while n > 0:
                    cn, en = self.layout(choice, n, split_auto, compute)
                    if self.fits(en):
                        # the arithmetic is conservative (every GPU charged a full compute
                        # buffer): climb while the verified estimate still fits
                        while n < (total - 1 if tried_all else total):
                            # the layout that fits knows its real compute buffers: start there
                            cu, eu = self.layout(choice, n + 1, split_auto, self.compute_of(en))
                            if not self.fits(eu):
                                break
                            cn, en, n = cu, eu, n + 1
                        return cn, en, n
                    n -= 1
            c0, e0 = self.layout(choice, 0, split_auto)
            return c0, e0, 0
        lo, hi, best = 0, total - 1, None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            cm, em = self.layout(choice, mid, split_auto)
            if self.fits(em):
                lo, best = mid, (cm, em)
            else:
                hi = mid - 1
        if best is None or best[0].gpu_layers != lo:
            cm, em = self.layout(choice, lo, split_auto)
            return cm, em, lo
        return best[0], best[1], lo

    def moe_allowed(self, choice) -> bool:
        """Expert offload needs --override-tensor (llama-server) and no overrides of the user's."""
        return (
            choice.engine == "llama-server"
            and not self.choice.overrides
            and self.hp.n_expert > 0
            and bool(self.expert_blocks())
        )

    def expert_blocks(self) -> list[int]:
        return sorted(
            {
                t.block
                for t in self.meta.tensors
                if t.block is not None and "_exps" in t.name and t.block < self.hp.n_layer
            }
        )

    def moe_offload(self, choice, split_auto: bool):
        """All layers on GPUs, with expert tensors in host memory where the GPUs run out.

        Like llama.cpp's own fit: the layers are split as if everything were on the GPUs (each
        card equally over-full), then each card sends the experts of its own first blocks to the
        host until it fits, so every card ends up full whatever the mix of card sizes. None if
        even all experts on the host don't fit."""
        from vramc.memory.llama_placement import backend_kind, buffer_rules
        from vramc.plan.engine_settings import experts_on_cpu

        blocks = self.expert_blocks()
        total = self.hp.n_layer_all + 1
        n_gpus = len(self.gpus)

        def with_cpu(cpu: set[int]):
            extra = (experts_on_cpu(sorted(cpu)),) if cpu else ()
            return replace(choice, overrides=choice.overrides + extra)

        c_all, e_all = self.layout(with_cpu(set(blocks)), total, split_auto)
        if not self.fits(e_all):
            return None
        rules = buffer_rules(backend_kind(self.gpus[0]))
        experts = {b: 0 for b in blocks}
        for t in self.meta.tensors:
            if t.block in experts and "_exps" in t.name:
                experts[t.block] += rules.padded(rules.alloc_size(t))
        full = self.costs(replace(choice, gpu_layers=total))
        compute = self.compute_of(e_all)
        caps = [lim - cmp for lim, cmp in zip(self.limits, compute)]
        if split_auto and n_gpus > 1:
            lo, hi = 1.0, 1.0
            while self.pack(full, total, [hi * cap for cap in caps]) is None and hi < 1e6:
                hi *= 2
            for _ in range(30):  # the least over-fullness at which the whole model packs
                mid = (lo + hi) / 2
                if self.pack(full, total, [mid * cap for cap in caps]) is None:
                    lo = mid
                else:
                    hi = mid
            counts = self.pack(full, total, [hi * cap for cap in caps])
            split = tuple(float(x) for x in counts)
        else:
            counts = [d.n_layers for d in e_all.devices]
            split = c_all.tensor_split
        cpu: set[int] = set()
        end = total
        for g in range(n_gpus - 1, -1, -1):  # cards hold consecutive layers, the last one the output
            layers = list(range(end - counts[g], end))
            end -= counts[g]
            excess = sum(full.layer(il) for il in layers) + (full.dup if layers else 0) - caps[g]
            for b in layers:
                if excess <= 0:
                    break
                if b in experts:
                    cpu.add(b)
                    excess -= experts[b]
        for _ in range(len(blocks) + 1):
            cand = replace(with_cpu(cpu), gpu_layers=total, tensor_split=split)
            cest = self.estimate(cand)
            if self.fits(cest):
                return self.partial_blocks(cand, cest, cpu, rules) + (len(cpu),)
            # compute buffers moved with the experts: send one more block on each card that is over
            moved = False
            for dev, lim in zip(cest.devices, self.limits):
                left = [b for b in blocks if dev.layers and dev.layers[0] <= b <= dev.layers[1] and b not in cpu]
                if dev.total_bytes > lim and left:
                    cpu.add(left[0])
                    moved = True
            if not moved:
                break
        return c_all, e_all, len(blocks)

    def partial_blocks(self, cand, cest, cpu: set[int], rules):
        """Fill what whole blocks leave free: on each card, keep some expert tensors of its last
        host-side block (ffn_up, ffn_gate or ffn_down) on the card, as llama.cpp's fit does."""
        import re

        from vramc.plan.engine_settings import experts_on_cpu

        parts: dict[int, list] = {}
        for dev, lim in zip(cest.devices, self.limits):
            # a split block adds graph splits; llama.cpp's own dry run then reserves up to ~64 MiB
            # more compute than the launch does: stay that far from the brim
            room = lim - dev.total_bytes - PARTIAL_BLOCK_SLACK
            mine = sorted(b for b in cpu if dev.layers and dev.layers[0] <= b <= dev.layers[1])
            if not mine:
                continue
            b = mine[-1]
            tensors = sorted(
                (t for t in self.meta.tensors if t.block == b and "_exps" in t.name),
                key=lambda t: rules.padded(rules.alloc_size(t)),
            )
            kept = []
            for t in tensors:
                size = rules.padded(rules.alloc_size(t))
                if size <= room and len(kept) < len(tensors) - 1:
                    room -= size
                    kept.append(t)
            if kept:
                parts[b] = [t for t in tensors if t not in kept]
        if not parts:
            return cand, cest
        whole = sorted(cpu - set(parts))
        overrides = ((experts_on_cpu(whole),) if whole else ()) + tuple(
            (rf"blk\.{b}\.{re.escape(t.name.split('.')[2])}", "CPU") for b in sorted(parts) for t in parts[b]
        )
        trial = replace(cand, overrides=self.choice.overrides + overrides)
        test = self.estimate(trial)
        return (trial, test) if self.fits(test) else (cand, cest)

    def ctx_bounds(self, choice) -> tuple[int, int]:
        """The engine's `ctx` values to search: [ctx_min, trained context per KV stream]."""
        hi = self.n_train
        if choice.engine == "llama-server" and not choice.kv_unified:
            hi *= choice.parallel  # -c is the total over all slots, each its own stream
        lo = min(self.ctx_min, hi)
        return lo, hi

    def quick_fits(self, choice, n_gpu: int, split_auto: bool, compute: list[int] | None = None) -> bool:
        """Do `n_gpu` layers fit at this context? With `compute` given (interpolated between
        measured contexts) this is arithmetic only; the answer is verified in full later."""
        c = replace(choice, gpu_layers=n_gpu)
        if not split_auto:
            return self.fits(self.estimate(c))
        if compute is None:
            compute = self.guess_compute(c)
            if compute is None:
                return False
        caps = [lim - cmp for lim, cmp in zip(self.limits, compute)]
        return self.pack(self.costs(c), n_gpu, caps) is not None

    def verify_ctx(self, ch, a: int, lo: int, n_fixed: int, split_auto: bool, attempt, at_lo):
        """The largest verified context at or below `a` steps (the arithmetic's answer).

        The arithmetic interpolates compute buffers, so the full estimate may disagree near the
        top. A few single steps down settle the usual case; beyond them the search gallops down
        and bisects, so its work is bounded by the logarithm of the range searched, never by the
        context length itself (a 10M-token model once took 40,000 steps of 256). `at_lo` is the
        verified answer at `lo` (which fits)."""

        def full(k: int):
            cm, em, nm = attempt(replace(ch, ctx=k * CTX_STEP))
            return (cm, em) if nm == n_fixed and self.fits(em) else None

        def quick(k: int):  # all `n_fixed` layers at this context, verified: no layer search
            cm, em = self.layout(replace(ch, ctx=k * CTX_STEP), n_fixed, split_auto)
            return (cm, em) if self.fits(em) else None

        k, fail = a, None
        for _ in range(CTX_SINGLE_STEPS):
            if k * CTX_STEP <= lo:
                return at_lo
            got = full(k)
            if got is not None:
                return got
            fail, k = k, k - 1
        good, found, step = lo // CTX_STEP, at_lo, 2
        while k * CTX_STEP > lo:  # gallop down to a context that fits
            got = quick(k)
            if got is not None:
                good, found = k, got
                break
            fail, k, step = k, k - step, step * 2
        while fail - good > 1:  # the boundary lies between `good` (fits) and `fail` (does not)
            mid = (good + fail) // 2
            got = quick(mid)
            if got is not None:
                good, found = mid, got
            else:
                fail = mid
        if found is at_lo:
            return at_lo
        return full(good) or found

    def solve(self) -> FitResult:
        ch = self.choice
        layers_auto = ch.gpu_layers == "auto"
        split_auto = ch.tensor_split == "auto"
        single = len(self.gpus) == 1 and not split_auto and ch.split_mode != "none"
        if single:  # one GPU: every split is the same, so the arithmetic search applies
            ch, split_auto = replace(ch, tensor_split="auto"), True
        ctx_auto = ch.ctx == "auto"
        if not self.gpus:
            ch = replace(
                ch, gpu_layers=0 if layers_auto else ch.gpu_layers, tensor_split=None if split_auto else ch.tensor_split
            )
            if ctx_auto:
                ch = replace(ch, ctx=self.ctx_bounds(ch)[1])
            self.log.append("no GPUs: everything runs on the host")
            return FitResult(ch, True, self.log, self.n_estimates)
        total = self.hp.n_layer_all + 1
        fixed_layers = None if layers_auto else (total if ch.gpu_layers == "all" else min(int(ch.gpu_layers), total))

        def attempt(c):
            if fixed_layers is None:
                return self.max_layers(c, split_auto)
            cc, est = self.layout(c, fixed_layers, split_auto)
            return cc, est, fixed_layers

        if ctx_auto:
            lo, hi = self.ctx_bounds(ch)
            want = total if fixed_layers is None else fixed_layers
            # at the top only "do all the wanted layers fit?" matters, not how many would
            c_hi, e_hi = self.layout(replace(ch, ctx=hi), want, split_auto)
            if self.fits(e_hi):
                self.log.append(f"ctx {hi} (the trained context) fits with {want} layers on GPUs")
                ch, est = c_hi, e_hi
            else:
                c_lo, e_lo, n_lo = attempt(replace(ch, ctx=lo))
                if n_lo < want or not self.fits(e_lo):
                    self.log.append(f"even ctx {lo} does not fit {want} layers: ctx {lo}, {n_lo} layers on GPUs")
                    ch, est = c_lo, e_lo
                else:
                    # bisect with compute buffers interpolated between the two ends (they grow
                    # about linearly with the context), then verify the answer in full
                    n_fixed = total if fixed_layers is None else fixed_layers
                    comp_lo = self.guess_compute(replace(ch, ctx=lo)) if split_auto else None
                    comp_hi = self.guess_compute(replace(ch, ctx=hi)) if split_auto else None

                    def compute_at(ctx: int):
                        if comp_lo is None or comp_hi is None:
                            return None
                        f = (ctx - lo) / max(1, hi - lo)
                        return [int(a + (b - a) * f) for a, b in zip(comp_lo, comp_hi)]

                    a, b = lo // CTX_STEP, hi // CTX_STEP
                    while a < b:
                        mid = (a + b + 1) // 2
                        if self.quick_fits(
                            replace(ch, ctx=mid * CTX_STEP), n_fixed, split_auto, compute_at(mid * CTX_STEP)
                        ):
                            a = mid
                        else:
                            b = mid - 1
                    ch, est = self.verify_ctx(ch, a, lo, n_fixed, split_auto, attempt, (c_lo, e_lo))
                    self.log.append(
                        f"largest ctx with {want} layers on GPUs: {ch.ctx} (searched {lo}..{hi} in steps of {CTX_STEP})"
                    )
        else:
            ch, est, n = attempt(ch)
            if layers_auto:
                self.log.append(f"{n} of {total} layers fit on GPUs" + (" (all)" if n == total else ""))
        n_now = ch.gpu_layers if isinstance(ch.gpu_layers, int) else total
        if layers_auto and n_now < total and self.moe_allowed(ch):
            moe = self.moe_offload(ch, split_auto)
            if moe is not None:
                ch, est, k = moe
                self.moved_experts = k
                self.log.append(
                    f"MoE: all {total} layers fit on GPUs with the expert tensors of "
                    f"{k} of {len(self.expert_blocks())} blocks in host memory "
                    "(instead of whole layers on the CPU)"
                )
        if single:
            ch = replace(ch, tensor_split=self.choice.tensor_split)
        elif split_auto and ch.tensor_split is not None:
            self.log.append(
                "tensor_split "
                + ",".join(f"{x:g}" for x in ch.tensor_split)
                + " (layers per GPU, balancing the share of each GPU left free)"
            )
        fits = self.fits(est)
        if not fits:
            self.log.append("no choice of the auto settings fits; the plan shows the closest")
        self.log.append(f"{self.n_estimates} full estimates")
        return FitResult(ch, fits, self.log, self.n_estimates, self.moved_experts, est)


# `cache_type_k/v: auto`: full precision first, then the 8-bit cache (about half the memory, a
# negligible quality loss); 4-bit costs more quality than it is worth choosing silently.
CACHE_TYPES = ("f16", "q8_0")


def solve(meta, gpus: list[GpuBudget], choice, margins: list[int], ctx_min: int | None = None) -> FitResult:
    auto_k, auto_v = choice.cache_type_k == "auto", choice.cache_type_v == "auto"
    if not (auto_k or auto_v):
        return Solver(meta, gpus, choice, margins, ctx_min).solve()
    best = None
    for t in CACHE_TYPES:
        c = replace(
            choice, cache_type_k=t if auto_k else choice.cache_type_k, cache_type_v=t if auto_v else choice.cache_type_v
        )
        if t != "f16" and auto_v and c.flash_attn == "off":
            break  # a quantized V cache needs flash attention (VR305)
        r = Solver(meta, gpus, c, margins, ctx_min).solve()
        r.log.insert(0, f"cache types K {c.cache_type_k}, V {c.cache_type_v}")
        if best is None or _better(r, best, meta):
            best = r
        if r.fits and _all_layers(r, meta) and (choice.ctx != "auto" or r.choice.ctx >= _ctx_top(choice, meta)):
            break  # nothing to gain from a smaller cache type
    return best


def _all_layers(r: FitResult, meta) -> bool:
    n = r.choice.gpu_layers
    return n == "all" or (isinstance(n, int) and n >= meta.n_layer + 1)


def _ctx_top(choice, meta) -> int:
    train = int(meta.hp("context_length", 0) or 0)
    return train * (choice.parallel if choice.engine == "llama-server" and not choice.kv_unified else 1)


def _better(a: FitResult, b: FitResult, meta) -> bool:
    """Fits beats not; then more layers on GPUs; then a longer context."""

    def rank(r):
        n = r.choice.gpu_layers
        layers = meta.n_layer + 1 if n == "all" else (n if isinstance(n, int) else 0)
        return (r.fits, layers, r.choice.ctx if isinstance(r.choice.ctx, int) else 0)

    return rank(a) > rank(b)


def suggestions(meta, gpus: list[GpuBudget], choice, margins: list[int], ctx_min: int | None = None):
    """What would fit when the fixed settings do not: fewer GPU layers, or a smaller context.

    Returns (a step to take first, or ""; [(the settings `vramc fit --relax` would change, the
    values it would choose)]): each answer is exactly the solve that `--relax` runs."""
    from vramc.plan.estimate_cache import solve  # remembered: a deployment that does not fit is checked often

    first = ""
    if choice.split_mode == "row":  # cannot load at all (VR311): the layer split first
        choice, first = replace(choice, split_mode="layer"), "set split_mode: layer"
    ideas = []
    # Ollama has no tensor split to write (VR400): llama-server splits by free memory there
    split = "auto" if choice.split_mode != "none" and choice.engine != "ollama" else choice.tensor_split
    r = solve(meta, gpus, replace(choice, gpu_layers="auto", tensor_split=split), margins, ctx_min)
    if r.fits:
        keys = ("gpu_layers",) + (("tensor_split",) if split == "auto" and len(gpus) > 1 else ())
        ideas.append((keys, {k: getattr(r.choice, k) for k in keys}))
    if choice.ctx != "auto":
        r = solve(meta, gpus, replace(choice, ctx="auto"), margins, ctx_min)
        if r.fits and isinstance(r.choice.ctx, int) and r.choice.ctx < (choice.ctx or 10**9):
            ideas.append((("ctx",), {"ctx": r.choice.ctx}))
    return first, ideas


def relax_command(keys, profile: str | None) -> str:
    return f"vramc fit --relax {','.join(keys)} {profile or 'PROFILE'}"


def show_value(v) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


def suggest(
    meta, gpus: list[GpuBudget], choice, margins: list[int], ctx_min: int | None = None, profile: str | None = None
) -> str:
    """`suggestions` in words, each with the command that writes it (`profile`: its argument)."""
    first, ideas = suggestions(meta, gpus, choice, margins, ctx_min)
    if not ideas:
        return "nothing fits on these GPUs at this context; use a smaller quantisation or more GPUs"
    said = " or ".join(
        " with ".join(f"{k} {show_value(v)}" for k, v in values.items())
        + f" would fit (`{relax_command(keys, profile)}`)"
        for keys, values in ideas
    )
    return f"{first}; then {said}" if first else said


def _explicit_auto(plan) -> bool:
    """A model of an Ollama server (issue 14) is fitted with the others only where its profile
    says `auto`: left unset, Ollama decides, and next to resident models it evicts them rather
    than load a model partly on the CPU (server/sched.go `load`), so the solo answer stands."""
    s = plan.dep.settings
    return plan.dep.server is not None and any(getattr(s, k) == "auto" for k in s.model_fields_set)


def fit_together(combo, refit) -> None:
    """Fit the `auto` settings of deployments that run at the same time (a plan.Combination) so
    that together they leave each shared GPU its margin (the largest of theirs) free.

    The members' own answers stand when they fit together. Otherwise each shared GPU's memory,
    less its margin, what the fixed members use and every member's CUDA overhead, is shared out
    among the members whose settings are `auto`: each first gets what it needs at its floor (all
    layers at the context it asks for, or at `ctx_min` when the context is `auto`), in proportion
    to that need when the floors do not fit together; the rest goes to the members whose context
    is `auto` (they can use it), and what a fixed-context member leaves of its share is handed on
    to them once. Each is then solved again within its share (`refit`), so the members fit
    together by construction; one that cannot fit its share is reported by VR312."""
    from vramc.units import fmt_size

    members = [p for p in combo.members if p.estimate is not None]
    uses: dict[tuple, list] = {}
    for p in members:
        for i, d in enumerate(p.estimate.devices):
            uses.setdefault(_gpu_key(d), []).append((p, i))
    shared = {g: u for g, u in uses.items() if len(u) > 1}
    adj = [
        p
        for p in combo.adjustable()
        if p.estimate is not None
        and p.auto
        and p.meta is not None
        and p.requested is not None
        and (p.engine in ("llama-server", "llama-cpp-python") or _explicit_auto(p))
        and any(_gpu_key(d) in shared for d in p.estimate.devices)
    ]
    if not adj:
        return
    margin = {g: max(p.margins[i] for p, i in u) for g, u in shared.items()}
    avail = {g: min(p.estimate.devices[i].available_bytes for p, i in u) for g, u in shared.items()}

    def total(g: tuple) -> int:
        return sum(p.estimate.devices[i].total_bytes for p, i in shared[g])

    if all(total(g) <= avail[g] - margin[g] for g in shared):
        return
    ids = {id(p) for p in adj}
    pool = {}
    for g, u in shared.items():
        fixed = sum(p.estimate.devices[i].total_bytes for p, i in u if id(p) not in ids)
        overhead = sum(p.estimate.devices[i].overhead_bytes for p, i in u if id(p) in ids)
        pool[g] = max(0, avail[g] - margin[g] - fixed - overhead)
    need = {id(p): _floor_need(p) for p in adj}
    elastic = {id(p) for p in adj if p.requested.ctx == "auto"}
    share: dict[tuple[int, tuple], int] = {}  # (plan id, (host, gpu)) -> bytes for weights, KV, compute

    def split(g: tuple, who: list, amount: int, weight) -> None:
        w = [weight(p) for p in who]
        for p, x in zip(who, w):
            share[(id(p), g)] = share.get((id(p), g), 0) + (amount * x // sum(w) if sum(w) else amount // len(who))

    for g, u in shared.items():
        here = [p for p, i in u if id(p) in ids]
        if not here:
            continue
        floors = {id(p): need[id(p)].get(g, 0) for p in here}
        if sum(floors.values()) >= pool[g]:
            split(g, here, pool[g], lambda p: floors[id(p)])  # noqa: B023  # split() calls it at once
            continue
        for p in here:
            share[(id(p), g)] = floors[id(p)]
        growing = [p for p in here if id(p) in elastic] or here
        split(g, growing, pool[g] - sum(floors.values()), lambda p: floors[id(p)] or 1)  # noqa: B023

    def solve_within(p) -> None:
        keep = list(p.margins)
        notes = []
        for i, (d, b) in enumerate(zip(p.estimate.devices, p.gpus)):
            if _gpu_key(d) in shared:
                s = share[(id(p), _gpu_key(d))]
                keep[i] = b.capacity_bytes - b.reserve_bytes - b.tenants_bytes - b.overhead_bytes - s
                others = ", ".join(q.dep.label for q, _ in shared[_gpu_key(d)] if q is not p)
                notes.append(f"{d.id} is shared with {others}: fitted within {fmt_size(s)} of it")
        refit(p, keep, "run together (" + combo.label + "): " + "; ".join(notes))

    for p in adj:
        solve_within(p)
    # a fixed context leaves part of its share unused: the members that can grow take it, once
    handed = False
    for g, u in shared.items():
        here = [p for p, i in u if id(p) in ids]
        growing = [p for p in here if id(p) in elastic]
        if not growing or len(growing) == len(here):
            continue
        spare = 0
        for p, i in u:
            if id(p) in ids and id(p) not in elastic:
                d = p.estimate.devices[i]
                spare += max(0, share[(id(p), g)] - (d.total_bytes - d.overhead_bytes))
                share[(id(p), g)] = d.total_bytes - d.overhead_bytes
        if spare > 0:
            split(g, growing, spare, lambda p: need[id(p)].get(g, 0) or 1)  # noqa: B023
            handed = True
    if handed:
        for p in adj:
            if id(p) in elastic:
                solve_within(p)


def _floor_need(plan: Plan) -> dict[tuple, int]:
    """Bytes (weights, KV, compute, extra models) each GPU of `plan` needs with its requested
    settings, the context at its floor when it is `auto`: what the plan asks of a shared GPU
    before a longer context."""
    from vramc.plan.estimate_cache import solve as remembered_solve
    from vramc.plan.planner import extra_model_bytes

    c = plan.requested
    if c.ctx == "auto":
        top = _ctx_top(c, plan.meta)
        low = plan.dep.settings.ctx_min or DEFAULT_CTX_MIN
        c = replace(c, ctx=min(low, top) if top > 0 else low)
    extra = extra_model_bytes(plan.dep.model.obj)
    margins = [m + extra if i == 0 else m for i, m in enumerate(plan.margins)]
    try:
        r = remembered_solve(plan.meta, plan.gpus, c, margins, plan.dep.settings.ctx_min)
    except ValueError:
        return {}
    return {_gpu_key(d): d.total_bytes + (extra if i == 0 else 0) for i, d in enumerate(r.estimate.devices)}


def _gpu_key(d) -> tuple:
    """One physical device: a GPU of this machine, or of another host behind RPC (issue 17)."""
    return (d.host, d.gpu)
