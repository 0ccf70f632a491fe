"""The backend scheduler and the graph allocator, replayed on a rebuilt graph.

`schedule` is ggml_backend_sched_split_graph (ggml/src/ggml-backend.cpp): pass 1 puts nodes with
pre-allocated tensors or weights on their buffer's backend (op offload: CUDA takes host-weight ops
with a batch of 32 or more), passes 2-4 spread assignments to neighbours and sources, pass 5 cuts
the graph into splits and creates the copies of inputs from other backends (n_copies of each with
pipeline parallelism), pass 6 copies every graph input. `allocate` is ggml_gallocr_alloc_graph_impl
with ggml_dyn_tallocr (ggml/src/ggml-alloc.c): best-fit free blocks, in-place reuse of a source's
memory, freeing a tensor after its last consumer. The peak of each backend's allocator is the
compute buffer llama.cpp reserves (`sched_reserve: ... compute buffer size`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from operator import attrgetter

from vramc.memory.llama_graph import INPLACE_OPS, INPUT, OUTPUT, VIEW_OPS, Graph, Tensor, view_tensor
from vramc.model.ggml import row_size

HUGE = 1 << 62


@dataclass(frozen=True)
class Backend:
    """One entry of llama_context::backends: a model device, or the CPU (always last)."""

    name: str
    buft: str  # buffer type key: backends only share memory through identical keys
    kind: str  # "cpu" | "rpc" | "cuda"
    alignment: int
    op_offload: bool = False  # ggml_backend_cuda_device_offload_op (op_offload_min_batch_size 32)

    def offloads(self, op: Tensor) -> bool:
        if not self.op_offload:
            return False
        if op.op == "GET_ROWS":
            return False
        if op.op == "MUL_MAT":
            n = op.ne[1]
        elif op.op in ("MUL_MAT_ID", "ROPE"):
            n = op.ne[2]
        else:
            n = op.ne[1] * op.ne[2] * op.ne[3]
        return n >= 32

    def alloc_size(self, t: Tensor) -> int:
        """ggml_backend_buft_get_alloc_size: ggml_nbytes, plus CUDA's extra room."""
        size = t.nbytes
        if self.kind not in ("cuda", "rpc-cuda"):  # RPC asks the remote CUDA for these sizes
            return size
        if t.op == "FLASH_ATTN_EXT":
            # ggml_cuda_flash_attn_ext_get_alloc_size: the MMA/tile kernels of a prompt batch
            # convert a quantised K/V to f16 next to the result
            end = size
            k, v = t.src[1], t.src[2]
            for x in (k, v):
                if x.type not in ("f16", "f32", "bf16"):
                    end = (end + 127) // 128 * 128 + 2 * x.ne[0] * x.ne[1] * x.ne[2] * x.ne[3]
            size = end
        if t.type not in ("f32", "f16", "bf16", "i32", "i64", "i16", "i8") and t.ne[0] % 512:
            size += row_size(t.type, 512 - t.ne[0] % 512)
        return size


@dataclass
class Split:
    backend: int
    i_start: int
    i_end: int = 0
    inputs: list[Tensor] = field(default_factory=list)


class Scheduled:
    """The scheduler's copy of the graph: what the allocator walks, with a backend per tensor."""

    def __init__(self):
        self.nodes: list[Tensor] = []
        self.node_backend: list[int] = []
        self.leafs: list[Tensor] = []
        self.leaf_backend: list[int] = []
        self.splits: list[Split] = []
        self.split_starts: list[int] = []  # where each split (its input copies first) begins in nodes
        self.entry_split: list = []  # pass 5's state at each checkpoint (see schedule)
        self.checkpoint_pos: list[int] = []  # where each checkpoint is in nodes


def schedule(
    g: Graph,
    backends: list[Backend],
    dev_backend: dict[int, int],
    n_copies: int,
    op_offload: bool,
    pins: bool = True,
    checkpoints=(),
) -> Scheduled:
    """`pins`: honour ggml_backend_sched_set_tensor_backend assignments made while building (the
    no_alloc dry run loses them: ggml_backend_sched_reserve_size resets the scheduler first).
    `checkpoints`: nodes, in graph order, at which to record the state of pass 5 (`entry_split`)."""
    cpu = len(backends) - 1
    bufts = [b.buft for b in backends]
    dev_bufts = {d: "host" if d < 0 else f"dev{d}" for d in dev_backend}
    # CUDA's op offload: the first backend that may take a host-weight op (whether it does
    # depends on the op only, ggml_backend_cuda_device_offload_op)
    off_b = next((bb for bb in range(cpu) if backends[bb].op_offload), -1) if op_offload else -1

    def buft_of(t: Tensor):
        v = t.view_src
        owner = t if v is None else v
        d = owner.dev
        if d is not None:
            bt = dev_bufts.get(d)
            return bt if bt is not None else ("host" if d < 0 else f"dev{d}")
        b = t.sb
        if b == -1 and v is not None:
            b = v.sb
        return bufts[b] if b != -1 else None

    def supported(t: Tensor, b: int) -> bool:
        buft = buft_of(t)
        return buft is not None and (buft == bufts[b] or (b == cpu and buft == "host"))

    def from_cur(t: Tensor) -> int:
        d = t.dev
        if d is not None:
            return dev_backend[d]
        v = t.view_src
        if v is not None and v.dev is not None:
            return dev_backend[v.dev]
        if t.flags & INPUT:
            return cpu
        op = t.op
        if op != "ROPE" and op != "FLASH_ATTN_EXT":
            for s in t.src:
                if s is not None and s.weight:
                    b = dev_backend[s.dev]
                    if off_b != -1 and b == cpu and s.dev < 0 and backends[off_b].offloads(t):
                        return off_b
                    return b
        return -1

    # pass 1: pre-allocated tensors and ops on weights (from_cur, inlined for the nodes)
    for t in g.leafs:
        t.sb = from_cur(t)
    nodes = g.nodes
    order = []  # the nodes that are not views
    view_ops = VIEW_OPS
    for t in nodes:
        op = t.op
        if op not in view_ops:
            order.append(t)
        if pins and t.backend >= 0:
            t.sb = t.backend
            continue
        d = t.dev
        if d is not None:
            t.sb = dev_backend[d]
            continue
        v = t.view_src
        if v is not None and v.dev is not None:
            t.sb = dev_backend[v.dev]
            continue
        if t.flags & INPUT:
            t.sb = cpu
            continue
        b = -1
        if op != "ROPE" and op != "FLASH_ATTN_EXT":
            for s in t.src:
                if s is not None and s.weight:
                    b = dev_backend[s.dev]
                    if off_b != -1 and b == cpu and s.dev < 0 and backends[off_b].offloads(t):
                        b = off_b
                    break
        t.sb = b

    # pass 2: expand GPU assignments down and up, then every assignment down and up
    rev = order[::-1]
    for seq, skip_cpu in ((order, True), (rev, True), (order, False), (rev, False)):
        cur = -1
        for n in seq:
            b = n.sb
            if b != -1:
                cur = -1 if (skip_cpu and b == cpu) else b
            elif cur != -1:
                n.sb = cur
    # pass 3: unassigned nodes go where most of their inputs are (all ops are supported)
    for n in order:
        if n.sb == -1:
            best, best_n = -1, -1
            for b in range(len(backends)):
                k = sum(
                    1
                    for s in n.src
                    if s is not None
                    and (s.sb != -1 or (s.view_src is not None and s.view_src.sb != -1))
                    and supported(s, b)
                )
                if k > best_n:
                    best, best_n = b, k
            n.sb = best
    # pass 4: views follow their source, unassigned sources follow their consumer
    for n in nodes:
        if n.view_src is not None and n.sb == -1:
            n.sb = n.view_src.sb
        for s in n.src:
            if s is not None and s.sb == -1:
                s.sb = s.view_src.sb if s.view_src is not None else n.sb
        if n.sb == -1:
            n.sb = 0

    # pass 5: splits and copies of inputs that live on another backend
    out = Scheduled()
    copies: dict[tuple[int, int], list[Tensor]] = {}
    splits: list[Split] = []
    split = None
    marks = iter(checkpoints)
    mark = next(marks, None)
    entry_split = out.entry_split
    mark_index: list[int] = []
    for i, n in enumerate(nodes):
        if n.op in view_ops:
            continue
        if n is mark:
            # what decides how the nodes from here on are split: the current split's backend and
            # whether it has inputs yet (a weight from elsewhere then starts a new split)
            entry_split.append(None if split is None else (split.backend, bool(split.inputs)))
            mark_index.append(i)
            mark = next(marks, None)
        b = n.sb
        if split is None:
            split = Split(b, 0)
            splits.append(split)
        sbk = split.backend
        if b != sbk:
            split.i_end = i
            split = Split(b, i)
            splits.append(split)
        elif split.inputs:
            for s in n.src:
                if s is not None and s.weight and s.sb != sbk and not supported(s, sbk):
                    split.i_end = i
                    split = Split(b, i)
                    splits.append(split)
                    break
        srcs = n.src
        for j in range(len(srcs)):
            s = srcs[j]
            if s is None or s.sb == b or supported(s, b):
                continue
            key = (id(s), b)
            cps = copies.get(key)
            if cps is None:
                cps = []
                name = f"copy of {s.name or s.op.lower()}"
                for _c in range(n_copies):
                    cp = Tensor("NONE", s.type, s.ne, s.nb, name=name, nbytes=s.nbytes)
                    cp.sb = b
                    if n_copies > 1:
                        cp.flags |= INPUT | OUTPUT
                    cps.append(cp)
                copies[key] = cps
                split.inputs.append(s)
            srcs[j] = cps[0]
    if split is not None:
        split.i_end = len(nodes)
    out.splits = splits

    # pass 6 (pipeline parallelism): n_copies of every graph input, the first one the leaf itself
    graph_inputs: list[tuple[Tensor, list[Tensor]]] = []
    if n_copies > 1:
        for leaf in g.leafs:
            if leaf.flags & INPUT:
                leaf.flags |= OUTPUT
                cps = [leaf]
                for _c in range(1, n_copies):
                    cp = Tensor("NONE", leaf.type, leaf.ne, leaf.nb, name=f"copy of {leaf.name}", nbytes=leaf.nbytes)
                    cp.flags |= INPUT | OUTPUT
                    cps.append(cp)
                graph_inputs.append((leaf, cps))

    out_nodes, out_backend = out.nodes, out.node_backend
    split_starts, mark_pos = out.split_starts, out.checkpoint_pos
    mark_index.append(len(nodes))
    m = 0
    for sp in splits:
        split_starts.append(len(out_nodes))
        for inp in sp.inputs:
            dep = view_tensor(inp)  # keeps the source alive until the copy is made
            out_nodes.append(dep)
            out_backend.append(inp.sb)
            out_nodes.append(copies[(id(inp), sp.backend)][0])
            out_backend.append(sp.backend)
        while mark_index[m] < sp.i_end:
            mark_pos.append(len(out_nodes) + mark_index[m] - sp.i_start)
            m += 1
        part = nodes[sp.i_start : sp.i_end]
        out_nodes += part
        out_backend += [n.sb for n in part]
    if n_copies > 1:
        for leaf, cps in graph_inputs:
            for cp in cps:
                out.leafs.append(cp)
                out.leaf_backend.append(leaf.sb)
        for sp in splits:
            for inp in sp.inputs:
                for cp in copies[(id(inp), sp.backend)]:
                    out.leafs.append(cp)
                    out.leaf_backend.append(sp.backend)
    for leaf in g.leafs:
        out.leafs.append(leaf)
        out.leaf_backend.append(leaf.sb)
    return out


class _Talloc:
    """ggml_dyn_tallocr with one chunk (every buffer type here has no maximum size)."""

    __slots__ = ("alignment", "blocks", "max_size")

    def __init__(self, alignment: int):
        self.alignment = alignment
        self.blocks = [[0, HUGE]]  # [offset, size], sorted by offset; the last one is open-ended
        self.max_size = 0

    def alloc(self, size: int) -> int:
        a = self.alignment
        size = (size + a - 1) // a * a
        blocks = self.blocks
        best, best_size = -1, HUGE * 2
        for i in range(len(blocks) - 1):
            bs = blocks[i][1]
            if size <= bs <= best_size:
                best, best_size = i, bs
        if best == -1:
            best = len(blocks) - 1
        blk = blocks[best]
        off = blk[0]
        blk[0] += size
        blk[1] -= size
        if blk[1] == 0:
            del blocks[best]
        if off + size > self.max_size:
            self.max_size = off + size
        return off

    def free(self, off: int, size: int) -> None:
        a = self.alignment
        size = (size + a - 1) // a * a
        blocks = self.blocks
        for i, blk in enumerate(blocks):
            if blk[0] + blk[1] == off:
                blk[1] += size
                if i + 1 < len(blocks) and blk[0] + blk[1] == blocks[i + 1][0]:
                    blk[1] += blocks[i + 1][1]
                    del blocks[i + 1]
                return
            if off + size == blk[0]:
                blk[0] = off
                blk[1] += size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == blk[0]:
                    blocks[i - 1][1] += blk[1]
                    del blocks[i]
                return
        k = 0
        while k < len(blocks) and blocks[k][0] < off:
            k += 1
        blocks.insert(k, [off, size])


def describe(t: Tensor) -> str:
    ne = t.ne
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:  # trailing ones dropped, ne[0] always shown
        n -= 1
    shape = ", ".join(map(str, ne[:n]))
    what = t.name if t.op == "NONE" and t.name else t.op.lower()
    return f"{what} [{shape}] {t.type}"


@dataclass
class AllocState:
    """Every allocator's state before a node: how many allocations came before, each buffer's
    free blocks, and the tensors each buffer holds, with the consumers and views each has left
    (their `offset` and `pos` say where they are and how many allocations came before theirs;
    graph outputs allocated before the nodes, the same in every state, are left out). Nothing
    else the allocator keeps decides where it puts the following tensors."""

    pos: int
    blocks: list[tuple]
    live: list[list[Tensor]]
    left: list[list[tuple[int, int]]]  # (consumers, views) left, as live


@dataclass
class Allocation:
    sizes: list[int]  # peak bytes of each backend's compute buffer
    peak: list[list[tuple[str, int]]]  # per backend: the largest (groups of) tensors at the peak
    # the allocator's state when it reached each checkpoint (see allocate)
    states: list[AllocState] = field(default_factory=list)


def allocate(s: Scheduled, backends: list[Backend], n_peak: int = 4, checkpoints=()) -> Allocation:
    """One reserve pass of the graph allocator over the scheduled graph; `checkpoints`: positions
    in `s.nodes`, in order, before which to record the allocators' states."""
    tallocs = [_Talloc(b.alignment) for b in backends]
    # what occupies each buffer now, in allocation order (the peak detail groups in this order)
    live: list[dict[Tensor, None]] = [{} for _ in backends]
    at_peak: list[list[Tensor] | None] = [None] * len(backends)  # live when each buffer last grew
    # graph outputs allocated before the nodes (pipeline parallelism's copies of inputs), held to
    # the end: kept apart from `live`, before it (their allocation order)
    fixed: list[list[Tensor]] = [[] for _ in backends]
    sizer = [b.alloc_size if b.kind in ("cuda", "rpc-cuda") else None for b in backends]  # None: ggml_nbytes
    inplace_ops = INPLACE_OPS

    tick = count().__next__  # numbers the allocations (and the states recorded), in order
    left = attrgetter("n_children", "n_views")

    def allocate_node(t: Tensor, buffer: int) -> None:
        # callers checked: not pre-allocated (dev), not already allocated (own), not a view
        t.own = True
        t.pos = tick()
        if t.op in inplace_ops:
            for p in t.src:
                if p is None or not p.own:
                    continue  # external, or a view (views are never owned)
                if p.flags & OUTPUT or (p.view_src is not None and p.view_src.flags & OUTPUT):
                    continue
                if not (t.type == p.type and t.ne == p.ne and t.nb == p.nb):
                    continue
                if p.n_children == 1 and p.n_views == 0:
                    t.buffer, t.offset = p.buffer, p.offset
                    p.own = False
                    del live[p.buffer][p]
                    live[t.buffer][t] = None
                    return  # same layout: no extra space to give back
        t.buffer = buffer
        ta = tallocs[buffer]
        before = ta.max_size
        f = sizer[buffer]
        t.offset = ta.alloc(t.nbytes if f is None else f(t))
        lv = live[buffer]
        lv[t] = None
        if ta.max_size > before:
            at_peak[buffer] = fixed[buffer] + list(lv)

    for t, b in zip(s.leafs, s.leaf_backend):
        if t.dev is None and not t.own and t.view_src is None:
            allocate_node(t, b)
    nodes, node_backend = s.nodes, s.node_backend
    for t, b in zip(nodes, node_backend):
        v = t.view_src
        if v is not None and t.op != "NONE":
            v.n_views += 1
        if t.flags & INPUT and t.dev is None and not t.own and v is None:
            allocate_node(t, b)
        for p in t.src:
            if p is None:
                continue
            p.n_children += 1
            if p.flags & INPUT and p.dev is None and not p.own and p.view_src is None:
                allocate_node(p, b)
    for lv, fx in zip(live, fixed):
        if checkpoints and lv and all(x.flags & OUTPUT for x in lv):
            fx += lv  # the states recorded leave them out: they are the same in all
            lv.clear()
    states: list[AllocState] = []
    start = 0
    n_nodes = len(nodes)
    for end in (*checkpoints, n_nodes):  # the nodes up to the next checkpoint
        for t, b in zip(nodes[start:end], node_backend[start:end]):
            srcs = t.src
            for p in srcs:
                if p is not None and p.dev is None and not p.own and p.view_src is None:
                    allocate_node(p, b)
            if t.dev is None and not t.own and t.view_src is None:
                allocate_node(t, b)
            for p in srcs:
                if p is None:
                    continue
                n = p.n_children - 1
                p.n_children = n
                if n or p.n_views:
                    continue
                v = p.view_src
                if v is not None:
                    v.n_views -= 1
                    if v.n_views or v.n_children or not v.own:
                        continue
                    p = v
                elif not p.own:
                    continue
                # free p (ggml_gallocr_free_node): graph outputs stay
                if p.flags & OUTPUT:
                    continue
                buffer = p.buffer
                f = sizer[buffer]
                tallocs[buffer].free(p.offset, p.nbytes if f is None else f(p))
                del live[buffer][p]
                p.own = False
        if end < n_nodes:
            states.append(
                AllocState(
                    tick(),
                    [tuple(map(tuple, ta.blocks)) for ta in tallocs],
                    [list(lv) for lv in live],
                    [list(map(left, lv)) for lv in live],
                )
            )
        start = end

    peak: list[list[tuple[str, int]]] = []
    for held in at_peak:
        groups: dict[str, list[int]] = {}
        for x in held or ():
            groups.setdefault(describe(x), []).append(x.nbytes)
        top = sorted(groups.items(), key=lambda kv: sum(kv[1]), reverse=True)[:n_peak]
        peak.append([(f"{len(n)} x {d}" if len(n) > 1 else d, sum(n)) for d, n in top])
    return Allocation([ta.max_size for ta in tallocs], peak, states)
