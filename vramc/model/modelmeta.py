"""What vramc knows about a model: architecture, hyper-parameters and the tensor table.

It comes from a GGUF header (vramc.model.gguf) or from the lock in a model profile, and both round-trip
through `to_lock` / `from_lock`. The lock lists tensors compactly: a key `blk.{0-31}.attn_q.weight`
stands for the same type and shape in blocks 0..31.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from vramc.model.ggml import TYPE_BY_NAME, tensor_nbytes

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
    origin: str = field(default="gguf", compare=False)  # "lock" when built from a model profile's lock

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
            lock["file"] = {"size": self.file_size, "header_sha256": self.header_sha256 or "", "splits": self.splits}
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
        """Build from a validated `schema.GGUFLock`; MetaError (a ValueError) names what is
        implausible and where in the lock it is."""
        f = lock.file
        meta = cls(
            architecture=lock.architecture,
            hparams=dict(lock.hparams),
            vocab_size=lock.vocab_size,
            tensors=expand_tensors(lock.tensors),
            name=lock.name,
            file_type=lock.file_type,
            file_size=f.size if f else None,
            header_sha256=f.header_sha256 if f else None,
            splits=f.splits if f else 1,
            origin="lock",
        )
        validate_meta(meta)
        return meta


# The limits llama.cpp itself enforces (LLAMA_MAX_LAYERS, LLAMA_MAX_EXPERTS) or that no model
# comes near; a lock is hand-editable YAML and a GGUF header can say anything, and a block_count of
# a billion must be an error, not a billion-entry list.
MAX_LAYERS = 512
MAX_EXPERTS = 512
MAX_DIM = 1 << 24
_U32_MAX = 2**32 - 1
_ARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

# Hyper-parameters the memory model reads as whole numbers: True where a per-layer array is allowed.
_INT_KEYS = {
    "block_count": False,
    "context_length": False,
    "embedding_length": False,
    "vocab_size": False,
    "feed_forward_length": True,
    "attention.head_count": True,
    "attention.head_count_kv": True,
    "attention.key_length": False,
    "attention.value_length": False,
    "attention.key_length_swa": False,
    "attention.value_length_swa": False,
    "attention.key_length_mla": False,
    "attention.value_length_mla": False,
    "attention.kv_lora_rank": False,
    "attention.sliding_window": False,
    "attention.shared_kv_layers": False,
    "rope.dimension_count": False,
    "expert_count": False,
    "expert_used_count": True,
    "expert_group_count": False,
    "expert_group_used_count": False,
    "expert_gating_func": False,
    "nextn_predict_layers": False,
    "full_attention_interval": False,
    "wkv.head_size": False,
    "token_shift_count": False,
    "shortconv.l_cache": False,
    "ssm.conv_kernel": False,
    "ssm.inner_size": False,
    "ssm.state_size": False,
    "ssm.time_step_rank": False,
    "ssm.group_count": False,
}
_U32_KEYS = ("context_length", "attention.sliding_window")  # token counts: llama.cpp's u32
# Other keys the memory model reads as numbers; the pattern may also be a per-layer list of flags.
_LIST_OR_NUMBER = ("attention.sliding_window_pattern",)
_NUMBER_KEYS = ("expert_weights_scale", *_LIST_OR_NUMBER)
# Architectures whose graph runs llama.cpp's Mamba-2 mixer (build_mamba2_layer), which divides the
# inner size by the SSM heads and the groups.
_MAMBA2_ARCHS = frozenset({"mamba2", "granitehybrid", "nemotron_h", "nemotron_h_moe", "falcon-h1"})
_SSM_KEYS = ("ssm.conv_kernel", "ssm.inner_size", "ssm.state_size", "ssm.time_step_rank", "ssm.group_count")


class MetaError(ValueError):
    """Model metadata that llama.cpp would refuse or that cannot be planned with.

    `path` is where the value sits in a lock (`("hparams", "embedding_length")`, `("tensors",)`),
    so a lock's diagnostic can point at it; a GGUF's diagnostic points at the file.
    """

    def __init__(self, message: str, path: tuple = ()) -> None:
        super().__init__(message)
        self.path = path


def lock_mismatch(file_size: int | None, header_sha256: str | None, locked) -> str | None:
    """Which fingerprint of a model profile's lock (`lock.file`: size and header sha256) a model
    file no longer matches: "size", "header" (only when both hashes are known), or None. `vramc check`
    (VR202) and `vramc analyze` word the answer each their own way."""
    if file_size != locked.size:
        return "size"
    if locked.header_sha256 and header_sha256 and header_sha256 != locked.header_sha256:
        return "header"
    return None


def validate_meta(meta: ModelMeta) -> None:
    """Raise MetaError unless `meta` can be planned: the one check for a lock and a GGUF header.

    Types and ranges first (a lock is YAML, a header any bytes), then what llama.cpp derives from
    them (llama_model_base::load_hparams): at least one block, attention layers with a head size,
    a Mamba-2 mixer with its state sizes, experts within LLAMA_MAX_EXPERTS.
    """
    arch = meta.architecture
    if not isinstance(arch, str) or not _ARCH_RE.match(arch):
        why = "is not valid UTF-8" if isinstance(arch, str) and "\ufffd" in arch else "is not an architecture name"
        raise MetaError(f"general.architecture {str(arch)[:80]!r} {why}", ("architecture",))
    hp = meta.hparams
    if not isinstance(hp, dict):
        raise MetaError("hparams must be a mapping of hyper-parameters", ("hparams",))
    n = hp.get("block_count")
    if type(n) is not int or not 0 < n <= MAX_LAYERS:
        where = "is missing" if "block_count" not in hp else f"is {_show(n)}"
        raise MetaError(
            f"block_count {where}: it must be a whole number from 1 to {MAX_LAYERS}",
            ("hparams", "block_count") if "block_count" in hp else ("hparams",),
        )
    if type(meta.vocab_size) is not int or not 0 <= meta.vocab_size <= MAX_DIM:
        raise MetaError(
            f"vocab_size {_show(meta.vocab_size)} is implausible (a whole number up to {MAX_DIM})", ("vocab_size",)
        )
    for key, v in hp.items():
        _check_value(str(key), v, n)
    if "embedding_length" not in hp:
        raise MetaError("embedding_length is missing: llama.cpp needs the model's width", ("hparams",))
    if hp["embedding_length"] < 1:
        raise MetaError("embedding_length is 0: it must be at least 1", ("hparams", "embedding_length"))
    if not meta.tensors:
        raise MetaError("the model has no tensors", ("tensors",))
    _check_derived(meta)


def _show(v: Any) -> str:
    from vramc.diagnostics import show_value

    return show_value(v)


def _check_value(key: str, v: Any, n_layer: int) -> None:
    path = ("hparams", key)
    if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, (list, dict)) for x in v)):
        raise MetaError(
            f"{key} is {_show(v)}: a hyper-parameter is a number, a string, a boolean or a list of numbers", path
        )
    if isinstance(v, list):
        if len(v) > MAX_LAYERS:
            raise MetaError(f"{key} has {len(v)} values, more than {MAX_LAYERS} layers", path)
        if not all(isinstance(x, (int, float)) for x in v):
            raise MetaError(f"{key} is {_show(v)}: a per-layer value is a list of numbers", path)
    values = v if isinstance(v, list) else [v]
    for x in values:
        if isinstance(x, float) and not math.isfinite(x):
            raise MetaError(f"{key} is {x}, not a finite number", path)
        if isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) > MAX_DIM * 1024 and key not in _U32_KEYS:
            raise MetaError(f"{key} = {_show(x)} is implausible", path)
    if key in _NUMBER_KEYS and not isinstance(v, (int, float)) and not (key in _LIST_OR_NUMBER and isinstance(v, list)):
        raise MetaError(f"{key} is {_show(v)}: it must be a number", path)
    per_layer = _INT_KEYS.get(key)
    if per_layer is None:
        return
    bound = _U32_MAX if key in _U32_KEYS else MAX_DIM
    if isinstance(v, list):
        if not per_layer:
            raise MetaError(f"{key} is {_show(v)}: llama.cpp reads one whole number here, not a list", path)
        if len(v) < n_layer:
            raise MetaError(f"{key} has {len(v)} values for {n_layer} layers", path)
    for x in values:
        if type(x) is not int or not 0 <= x <= bound:
            raise MetaError(
                f"{key} is {_show(v)}: it must be a whole number from 0 to {bound:,}"
                + (", or one per layer" if per_layer else ""),
                path,
            )


def _check_derived(meta: ModelMeta) -> None:
    from vramc.memory.llama_hparams import RECURRENT_ARCHS, llama_hparams

    hp = meta.hparams
    n_layer = hp["block_count"]
    nextn = hp.get("nextn_predict_layers", 0)
    if nextn >= n_layer:
        raise MetaError(
            f"nextn_predict_layers ({nextn}) must be fewer than block_count ({n_layer})",
            ("hparams", "nextn_predict_layers"),
        )
    if hp.get("full_attention_interval", 1) < 1:
        raise MetaError("full_attention_interval is 0: it must be at least 1", ("hparams", "full_attention_interval"))
    n_expert, used = hp.get("expert_count", 0), hp.get("expert_used_count", 0)
    used = max(used) if isinstance(used, list) else used
    if n_expert > MAX_EXPERTS:
        raise MetaError(f"expert_count {n_expert} is more than llama.cpp's {MAX_EXPERTS}", ("hparams", "expert_count"))
    if used > n_expert or (n_expert and not used):
        raise MetaError(
            f"expert_used_count {used} must be from 1 to expert_count ({n_expert})",
            ("hparams", "expert_used_count" if "expert_used_count" in hp else "expert_count"),
        )
    groups, groups_used = hp.get("expert_group_count", 0), hp.get("expert_group_used_count", 0)
    if groups > 1 and (n_expert % groups or not 0 < groups_used <= groups):
        raise MetaError(
            f"expert_group_count {groups} must divide expert_count ({n_expert}) and "
            f"expert_group_used_count ({groups_used}) be from 1 to it",
            ("hparams", "expert_group_count"),
        )
    h = llama_hparams(meta)
    recurrent = meta.architecture in RECURRENT_ARCHS or any(h.is_recr)
    if not recurrent and max(h.n_head, default=0) == 0:
        raise MetaError(
            f"attention.head_count is 0 (or missing): a {meta.architecture} model needs attention heads",
            ("hparams", "attention.head_count") if "attention.head_count" in hp else ("hparams",),
        )
    for il in range(h.n_layer_all):
        if not (h.has_kv(il) and h.n_head_kv[il] > 0):
            continue
        for kind, size in (("key", h.head_k[il]), ("value", h.head_v[il])):
            if size < 1:
                key = next(
                    (
                        k
                        for k in (f"attention.{kind}_length_swa" if h.is_swa[il] else "", f"attention.{kind}_length")
                        if k in hp
                    ),
                    "embedding_length",
                )
                raise MetaError(
                    f"layer {il} has attention heads of {kind} length 0 ({key} is "
                    f"{hp.get(key)}): a head needs at least one element",
                    ("hparams", key),
                )
    if meta.architecture in _MAMBA2_ARCHS and any(h.is_recr):
        values = {k: hp.get(k, 0) for k in _SSM_KEYS}
        missing = [k for k, x in values.items() if x < 1]
        if missing:
            raise MetaError(
                f"{', '.join(missing)} must be at least 1: the Mamba-2 layers of a {meta.architecture} model need them",
                ("hparams", missing[0]) if missing[0] in hp else ("hparams",),
            )
        inner = values["ssm.inner_size"]
        for k in ("ssm.time_step_rank", "ssm.group_count"):
            if inner % values[k]:
                raise MetaError(f"{k} ({values[k]}) must divide ssm.inner_size ({inner})", ("hparams", k))


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
    """Inverse of compress_tensors; raises MetaError with the offending key."""
    out: list[Tensor] = []
    for key, value in table.items():
        path = ("tensors", key)
        if not isinstance(value, list) or len(value) < 2 or not isinstance(value[0], str):
            raise MetaError(f"tensor {key!r}: expected [type, dim0, dim1, ...]", path)
        type_ = value[0].lower()
        if type_ not in TYPE_BY_NAME:
            raise MetaError(f"tensor {key!r}: unknown ggml type {value[0]!r}", path)
        shape = value[1:]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise MetaError(f"tensor {key!r}: dimensions must be non-negative integers", path)
        if len(shape) > 4 or math.prod(shape) > 2**63 - 1:
            raise MetaError(f"tensor {key!r}: ggml allows 4 dimensions of at most 2^63-1 elements in all", path)
        m = _RANGE_KEY_RE.match(key)
        try:
            names = [f"blk.{b}.{m.group(2)}" for b in _expand_range(m.group(1))] if m else [key]
        except ValueError as e:
            raise MetaError(f"tensor {key!r}: {e}", path) from None
        # the blocks of a range share type and shape: sized once (a lock has thousands of tensors)
        try:
            first = make_tensor(names[0], type_, shape)
        except (ZeroDivisionError, ValueError) as e:
            raise MetaError(f"tensor {key!r}: bad shape ({e})", path) from None
        out.append(first)
        out.extend(Tensor(name, type_, first.shape, first.nbytes) for name in names[1:])
    return out
