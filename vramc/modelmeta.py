"""What vramc knows about a model: architecture, hyper-parameters and the tensor table.

It comes from a GGUF header (vramc.gguf) or from the lock in a model profile, and both round-trip
through `to_lock` / `from_lock`. The lock lists tensors compactly: a key `blk.{0-31}.attn_q.weight`
stands for the same type and shape in blocks 0..31.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vramc.ggml import TYPE_BY_NAME, tensor_nbytes

_BLK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_RANGE_KEY_RE = re.compile(r"^blk\.\{([0-9,\- ]+)\}\.(.+)$")


@dataclass(frozen=True)
class Tensor:
    name: str
    type: str  # ggml type name, lower case: "q8_0"
    shape: tuple[int, ...]  # ggml order: ne[0] is the row length
    nbytes: int

    @property
    def block(self) -> int | None:
        m = _BLK_RE.match(self.name)
        return int(m.group(1)) if m else None


def make_tensor(name: str, type_: str, shape) -> Tensor:
    shape = tuple(int(d) for d in shape)
    return Tensor(name, type_, shape, tensor_nbytes(type_, shape))


@dataclass
class ModelMeta:
    architecture: str
    hparams: dict[str, Any]  # GGUF keys with the "<arch>." prefix removed
    vocab_size: int
    tensors: list[Tensor]
    name: str | None = None
    file_type: str | None = None
    file_size: int | None = None
    header_sha256: str | None = None
    splits: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # other header keys worth showing

    # --- hyper-parameters -------------------------------------------------------------------
    def hp(self, key: str, default: Any = None) -> Any:
        return self.hparams.get(key, default)

    @property
    def n_layer(self) -> int:
        return int(self.hparams["block_count"])

    def per_layer(self, key: str, default: int = 0) -> list[int]:
        """A hyper-parameter that GGUF stores as a scalar or a per-layer array, per layer."""
        v = self.hparams.get(key, default)
        if isinstance(v, list):
            if len(v) != self.n_layer:
                raise ValueError(f"{key} has {len(v)} values for {self.n_layer} layers")
            return [int(x) for x in v]
        return [int(v)] * self.n_layer

    # --- tensors -----------------------------------------------------------------------------
    def tensor(self, name: str) -> Tensor | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def block_bytes(self) -> list[int]:
        out = [0] * self.n_layer
        for t in self.tensors:
            b = t.block
            if b is not None and b < self.n_layer:
                out[b] += t.nbytes
        return out

    # --- lock --------------------------------------------------------------------------------
    def to_lock(self) -> dict:
        lock: dict[str, Any] = {}
        if self.file_size is not None:
            lock["file"] = {"size": self.file_size, "header_sha256": self.header_sha256 or "",
                            "splits": self.splits}
        lock["architecture"] = self.architecture
        if self.name:
            lock["name"] = self.name
        if self.file_type:
            lock["file_type"] = self.file_type
        lock["hparams"] = dict(sorted(self.hparams.items()))
        lock["vocab_size"] = self.vocab_size
        lock["tensors"] = compress_tensors(self.tensors)
        return lock

    @classmethod
    def from_lock(cls, lock) -> "ModelMeta":
        """Build from a validated `schema.GGUFLock` (ValueError names what is implausible)."""
        _check_plausible(lock.hparams, lock.vocab_size)
        f = lock.file
        return cls(
            architecture=lock.architecture,
            hparams=dict(lock.hparams),
            vocab_size=lock.vocab_size,
            tensors=expand_tensors(lock.tensors),
            name=lock.name,
            file_type=lock.file_type,
            file_size=f.size if f else None,
            header_sha256=f.header_sha256 if f else None,
            splits=f.splits if f else 1,
        )


# The limits llama.cpp itself enforces (LLAMA_MAX_LAYERS) or that no model comes near; a lock is
# hand-editable YAML, and a block_count of a billion must be an error, not a billion-entry list.
MAX_LAYERS = 512
MAX_DIM = 1 << 24


def _check_plausible(hparams: dict, vocab_size: int) -> None:
    n = hparams.get("block_count")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_LAYERS:
        raise ValueError(f"block_count must be an integer from 1 to {MAX_LAYERS}, not {n!r}")
    if vocab_size > MAX_DIM:
        raise ValueError(f"vocab_size {vocab_size} is implausible (more than {MAX_DIM})")
    for key, v in hparams.items():
        values = v if isinstance(v, list) else [v]
        if isinstance(v, list) and len(v) > MAX_LAYERS:
            raise ValueError(f"{key} has {len(v)} values, more than {MAX_LAYERS} layers")
        for x in values:
            if isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) > MAX_DIM * 1024:
                raise ValueError(f"{key} = {x} is implausible")


def block_ranges(blocks: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5": how locks and reports write sets of blocks."""
    parts, start, prev = [], blocks[0], blocks[0]
    for b in blocks[1:] + [None]:
        if b is not None and b == prev + 1:
            prev = b
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if b is not None:
            start = prev = b
    return ",".join(parts)


def compress_tensors(tensors: list[Tensor]) -> dict[str, list]:
    """{name: [type, *shape]} with identical per-block tensors folded into block ranges.

    Order: non-block tensors as in the file, then block tensors by first block and suffix, so the
    lock reads like the file and a re-quantised block shows up as a small diff.
    """
    singles: dict[str, list] = {}
    groups: dict[tuple, list[int]] = {}
    order: list[tuple] = []
    for t in tensors:
        m = _BLK_RE.match(t.name)
        if not m:
            singles[t.name] = [t.type, *t.shape]
            continue
        key = (m.group(2), t.type, t.shape)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(m.group(1)))
    out = dict(singles)
    rows = []
    for key in order:
        blocks = sorted(groups[key])
        suffix, type_, shape = key
        rows.append((blocks[0], suffix, f"blk.{{{block_ranges(blocks)}}}.{suffix}", [type_, *shape]))
    for _, _, name, value in sorted(rows, key=lambda r: (r[0], r[1])):
        out[name] = value
    return out


def _expand_range(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            a, b = int(a), int(b)
            if b < a or b >= MAX_LAYERS * 2:
                raise ValueError(f"bad block range {part!r}")
            out.extend(range(a, b + 1))
        else:
            out.append(int(part))
    return out


def expand_tensors(table: dict[str, list]) -> list[Tensor]:
    """Inverse of compress_tensors; raises ValueError with the offending key."""
    out: list[Tensor] = []
    for key, value in table.items():
        if not isinstance(value, list) or len(value) < 2 or not isinstance(value[0], str):
            raise ValueError(f"tensor {key!r}: expected [type, dim0, dim1, ...]")
        type_ = value[0].lower()
        if type_ not in TYPE_BY_NAME:
            raise ValueError(f"tensor {key!r}: unknown ggml type {value[0]!r}")
        shape = value[1:]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"tensor {key!r}: dimensions must be non-negative integers")
        m = _RANGE_KEY_RE.match(key)
        names = [f"blk.{b}.{m.group(2)}" for b in _expand_range(m.group(1))] if m else [key]
        for name in names:
            try:
                out.append(make_tensor(name, type_, shape))
            except ZeroDivisionError:  # pragma: no cover
                raise ValueError(f"tensor {key!r}: bad shape") from None
    return out
