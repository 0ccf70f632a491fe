"""Just enough of ggml to rebuild llama.cpp's compute graphs without computing anything.

A tensor carries what the scheduler and the graph allocator look at: type, shape, strides (for
views and in-place reuse), op, sources, view source, flags and, for weights and KV cache, the
device whose buffer already holds it. Shapes, strides and result types follow ggml/src/ggml.c of
the pinned llama.cpp; `Graph.expand` is `ggml_build_forward_expand` (post-order DFS over sources
in order), which fixes the node order the allocator walks.

Speed: an estimate builds a few thousand tensors, so the constructors below take the shortest
path (shapes, strides and sizes of contiguous tensors come from a table keyed by type and shape)
and every source list is a fresh list the scheduler may rewrite.
"""

from __future__ import annotations

from itertools import count

from vramc.model.ggml import GGML_TYPES

INPUT, OUTPUT = 1, 2  # GGML_TENSOR_FLAG_INPUT / _OUTPUT

# ggml_op_can_inplace (ggml-alloc.c): ops whose result may take over a source's memory
INPLACE_OPS = frozenset(
    {
        "FILL",
        "SCALE",
        "DIAG_MASK_ZERO",
        "DIAG_MASK_INF",
        "ADD",
        "ADD_ID",
        "ADD1",
        "SUB",
        "MUL",
        "DIV",
        "SQR",
        "SQRT",
        "LOG",
        "UNARY",
        "ROPE",
        "ROPE_BACK",
        "SILU_BACK",
        "RMS_NORM",
        "RMS_NORM_BACK",
        "CLAMP",
        "SOFT_MAX",
        "SOFT_MAX_BACK",
    }
)
VIEW_OPS = frozenset({"VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"})  # ggml_is_view_op


_TYPE_INFO = {name: (blck, size) for name, blck, size in GGML_TYPES.values()}


class Tensor:
    __slots__ = (
        "op",
        "src",
        "type",
        "ne",
        "nb",
        "view_src",
        "view_offs",
        "flags",
        "name",
        "dev",
        "weight",
        "nbytes",
        "backend",
        "sb",
        "n_children",
        "n_views",
        "buffer",
        "offset",
        "own",
        "mark",
        "pos",
    )

    def __init__(self, op, type_, ne, nb, src=None, view_src=None, view_offs=0, name="", nbytes=-1):
        self.op = op
        self.type = type_
        self.ne = ne
        self.nb = nb
        self.src = [] if src is None else src  # owned by this tensor: the scheduler rewrites it
        self.view_src = view_src
        self.view_offs = view_offs
        self.flags = 0
        self.name = name
        self.dev = None  # device whose buffer holds this tensor (weights, KV), None: not allocated
        self.weight = False  # held by a GGML_BACKEND_BUFFER_USAGE_WEIGHTS buffer
        self.backend = -1  # backend pinned by ggml_backend_sched_set_tensor_backend
        self.nbytes = _nbytes(type_, ne, nb) if nbytes < 0 else nbytes
        # scratch of one scheduling and allocation pass (a graph is built for a single estimate)
        self.sb = -1  # backend the scheduler assigned
        self.n_children = self.n_views = 0
        self.buffer = -1
        self.offset = 0
        self.own = False  # allocated by the graph allocator and not yet freed
        self.mark = 0  # the last graph whose expand visited this tensor
        # self.pos: set by the allocator, the position in the scheduled graph where it allocated
        # this tensor (-1: before the nodes); read only for allocated tensors

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.name or self.op}{list(self.ne)}:{self.type}"


def _nbytes(type_: str, ne, nb) -> int:
    """ggml_nbytes: the span of a (possibly strided) tensor."""
    ne0, ne1, ne2, ne3 = ne
    if ne0 <= 0 or ne1 <= 0 or ne2 <= 0 or ne3 <= 0:
        return 0
    blck, size = _TYPE_INFO[type_]
    rest = (ne1 - 1) * nb[1] + (ne2 - 1) * nb[2] + (ne3 - 1) * nb[3]
    if blck == 1:
        return size + (ne0 - 1) * nb[0] + rest
    return ne0 * nb[0] // blck + rest


def _contiguous_nb(type_: str, ne) -> tuple[int, int, int, int]:
    blck, size = _TYPE_INFO[type_]
    nb0 = size
    nb1 = size * (ne[0] // blck)
    nb2 = nb1 * ne[1]
    return (nb0, nb1, nb2, nb2 * ne[2])


def is_contiguous(t: Tensor) -> bool:
    return t.nb == _contiguous_nb(t.type, t.ne)


def _ne4(ne) -> tuple[int, int, int, int]:
    ne = tuple(ne)
    return ne if len(ne) == 4 else ne + (1,) * (4 - len(ne))


# (type, shape as given) -> (ne, nb, nbytes) of the contiguous tensor; shapes repeat across
# layers and estimates, so this stays small (cleared if it ever grows large)
_LAYOUTS: dict = {}


def _layout(type_: str, ne: tuple) -> tuple:
    key = (type_, ne)
    r = _LAYOUTS.get(key)
    if r is None:
        ne4 = _ne4(ne)
        nb = _contiguous_nb(type_, ne4)
        r = (ne4, nb, _nbytes(type_, ne4, nb))
        if len(_LAYOUTS) > 100_000:
            _LAYOUTS.clear()
        _LAYOUTS[key] = r
    return r


def new_tensor(type_: str, ne, op: str = "NONE", src=None, name: str = "") -> Tensor:
    """A contiguous tensor; `src` becomes the tensor's own source list (pass a fresh list)."""
    ne4, nb, nbytes = _layout(type_, tuple(ne))
    return Tensor(op, type_, ne4, nb, src, None, 0, name, nbytes)


def _new(type_: str, ne: tuple, op: str, src: list) -> Tensor:
    """new_tensor for the builders below: `ne` a tuple, `src` a fresh list."""
    r = _LAYOUTS.get((type_, ne))
    if r is None:
        r = _layout(type_, ne)
    return Tensor(op, type_, r[0], r[1], src, None, 0, "", r[2])


def dup(a: Tensor, op: str, src=None, type_: str | None = None) -> Tensor:
    """A new contiguous tensor shaped like `a` (ggml_dup_tensor), the result of `op`."""
    if type_ is None or type_ == a.type:
        # same type and shape: same strides and size as a contiguous `a`
        r = _LAYOUTS.get((a.type, a.ne))
        if r is None:
            r = _layout(a.type, a.ne)
        return Tensor(op, a.type, a.ne, r[1], [a] if src is None else src, None, 0, "", r[2])
    return _new(type_, a.ne, op, [a] if src is None else src)


def weight(type_: str, ne, dev: int, name: str = "") -> Tensor:
    t = new_tensor(type_, ne, name=name)
    t.dev = dev
    t.weight = True
    return t


def input_tensor(type_: str, ne, name: str) -> Tensor:
    t = new_tensor(type_, ne, name=name)
    t.flags |= INPUT
    return t


def _view(a: Tensor, op: str, ne, nb, offset: int = 0, src=None) -> Tensor:
    base = a.view_src
    if base is None:
        base, offs = a, offset
    else:
        offs = offset + a.view_offs
    nb = tuple(nb)
    ne = tuple(ne)
    if len(ne) != 4:
        ne = _ne4(ne)
    return Tensor(op, a.type, ne, nb, [a] if src is None else src, base, offs)


def view(a: Tensor, ne, nb_rest=(), offset: int = 0) -> Tensor:
    """ggml_view_{1,2,3,4}d: ne and nb[1:] given, nb[0] = the type size."""
    _, size = _TYPE_INFO[a.type]
    ne = _ne4(ne)
    nb = [size, *nb_rest]
    while len(nb) < 4:
        nb.append(nb[-1] * ne[len(nb) - 1])
    return _view(a, "VIEW", ne, nb, offset)


def view_tensor(a: Tensor) -> Tensor:
    """ggml_view_tensor: a view that keeps op NONE (so ggml-alloc does not count it as a view)."""
    return _view(a, "NONE", a.ne, a.nb)


def reshape(a: Tensor, *ne) -> Tensor:
    ne4, nb, _ = _layout(a.type, ne)
    return _view(a, "RESHAPE", ne4, nb)


def permute(a: Tensor, ax0: int, ax1: int, ax2: int, ax3: int) -> Tensor:
    ne, nb = [0] * 4, [0] * 4
    ane, anb = a.ne, a.nb
    ne[ax0], nb[ax0] = ane[0], anb[0]
    ne[ax1], nb[ax1] = ane[1], anb[1]
    ne[ax2], nb[ax2] = ane[2], anb[2]
    ne[ax3], nb[ax3] = ane[3], anb[3]
    return _view(a, "PERMUTE", ne, nb)


def transpose(a: Tensor) -> Tensor:
    return permute(a, 1, 0, 2, 3)


def mul_mat(a: Tensor, b: Tensor) -> Tensor:
    bne = b.ne
    return _new("f32", (a.ne[1], bne[1], bne[2], bne[3]), "MUL_MAT", [a, b])


def mul_mat_id(as_: Tensor, b: Tensor, ids: Tensor) -> Tensor:
    return _new("f32", (as_.ne[1], ids.ne[0], b.ne[2], 1), "MUL_MAT_ID", [as_, b, ids])


def binary(op: str, a: Tensor, b: Tensor) -> Tensor:  # ADD, MUL, SUB, DIV
    return dup(a, op, [a, b])


def unary(a: Tensor, op: str = "UNARY") -> Tensor:  # silu, gelu, tanh, ... and SCALE, CLAMP, SQR
    return dup(a, op)


def rms_norm(a: Tensor) -> Tensor:
    return dup(a, "RMS_NORM")


def norm(a: Tensor) -> Tensor:
    return dup(a, "NORM")


def rope(a: Tensor, pos: Tensor, freqs: Tensor | None = None) -> Tensor:
    return dup(a, "ROPE", [a, pos] if freqs is None else [a, pos, freqs])


def soft_max(a: Tensor, mask: Tensor | None = None, sinks: Tensor | None = None) -> Tensor:
    return dup(a, "SOFT_MAX", [a, mask, sinks] if sinks is not None else [a] + ([mask] if mask is not None else []))


def glu_split(a: Tensor, b: Tensor) -> Tensor:  # swiglu / geglu with separate gate and up
    return _new(a.type, a.ne, "GLU", [a, b])


def glu(a: Tensor) -> Tensor:  # swiglu on a fused [2*n_ff] tensor
    return _new(a.type, (a.ne[0] // 2, *a.ne[1:]), "GLU", [a])


def get_rows(a: Tensor, b: Tensor) -> Tensor:
    type_ = "i32" if a.type == "i32" else "f32"
    return _new(type_, (a.ne[0], b.ne[0], b.ne[1], b.ne[2]), "GET_ROWS", [a, b])


def set_rows(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    t = view_tensor(a)
    t.op = "SET_ROWS"
    t.src = [b, c, a]
    return t


def cont(a: Tensor, *ne) -> Tensor:
    return _new(a.type, ne if ne else a.ne, "CONT", [a])


def flash_attn_ext(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, sinks: Tensor | None = None) -> Tensor:
    src = [q, k, v, mask] if sinks is None else [q, k, v, mask, sinks]
    return _new("f32", (v.ne[0], q.ne[2], q.ne[1], q.ne[3]), "FLASH_ATTN_EXT", src)


def concat(a: Tensor, b: Tensor, dim: int) -> Tensor:
    ne = list(a.ne)
    ne[dim] += b.ne[dim]
    return _new(a.type, tuple(ne), "CONCAT", [a, b])


def argsort_top_k(a: Tensor, k: int) -> Tensor:
    s = _new("i32", a.ne, "ARGSORT", [a])
    return _view(s, "VIEW", (k, *s.ne[1:]), s.nb)


def sum_rows(a: Tensor) -> Tensor:
    return _new(a.type, (1, *a.ne[1:]), "SUM_ROWS", [a])


_graph_ids = count(1)


class Graph:
    """A ggml_cgraph under construction: leafs (op NONE) and nodes in post-order."""

    def __init__(self):
        self.nodes: list[Tensor] = []
        self.leafs: list[Tensor] = []
        self.entry: dict[int, Tensor] = {}  # layer -> its first node (set by the graph builders)
        self.flash: dict[int, Tensor] = {}  # layer -> its FLASH_ATTN_EXT node (the fused nodes)
        self._mark = next(_graph_ids)  # tensors visited by this graph's expand carry it

    def expand(self, t: Tensor) -> None:
        """ggml_build_forward_expand: visit sources first, in order, each tensor once.

        The post-order of ggml_visit_parents_graph, with an explicit stack: a graph without
        intermediate expands (attention-free layers) can be deeper than Python's recursion."""
        mark = self._mark
        if t.mark == mark:
            return
        t.mark = mark
        nodes, leafs = self.nodes, self.leafs
        stack = [(t, iter(t.src))]
        push, pop = stack.append, stack.pop
        while stack:
            cur, srcs = stack[-1]
            for s in srcs:
                if s is not None and s.mark != mark:
                    s.mark = mark
                    if s.src:
                        push((s, iter(s.src)))
                        break
                    # no sources: visited at once, and the scan of cur's sources goes on
                    if s.op == "NONE":
                        leafs.append(s)
                    else:
                        nodes.append(s)
            else:
                pop()
                if cur.op == "NONE":
                    leafs.append(cur)
                else:
                    nodes.append(cur)
