"""Which device holds each layer and each weight tensor, as `llama_model_base::load_tensors` decides.

Sources (pinned llama.cpp 0c1e570): src/llama.cpp `llama_prepare_model_devices` (split_mode none
keeps main_gpu only), src/llama-model.cpp `load_tensors` (split points, i_gpu_start, the output
layer offloaded first), src/llama-model-loader.cpp `create_tensor` (input/output/repeating
tensors, tensor overrides, duplicated tensors), ggml-alloc.c
`ggml_backend_alloc_ctx_tensors_from_buft_size` (per-tensor alignment padding).
"""

from __future__ import annotations

import operator
import re
import struct
from bisect import bisect_right
from dataclasses import dataclass, field

from vramc.memory.usage import GpuBudget
from vramc.model.ggml import row_size
from vramc.model.modelmeta import ModelMeta, Tensor

HOST = -1  # device index of host memory; GPUs are their index in the launch-order list

# Tensors of the "input layer": always in host memory ("very little benefit to offloading the
# input layer"). Names from LLM_TENSOR_NAMES with LLM_TENSOR_LAYER_INPUT in LLM_TENSOR_INFOS.
_INPUT = frozenset({"token_embd", "position_embd", "token_types", "per_layer_token_embd"})
# Created once per layer with TENSOR_DUPLICATED: one copy per buffer type among the layers.
_PER_LAYER_DUP = frozenset({"rope_freqs", "rope_factors_long", "rope_factors_short"})
# Never created by llama.cpp (GGML_OP_NONE in LLM_TENSOR_INFOS): "model has unused tensor".
_UNUSED = frozenset({"masked_embd_centroids", "masked_embd_ordering"})


def f32(x: float) -> float:
    """Round to IEEE single precision: load_tensors computes the split points in float."""
    return struct.unpack("f", struct.pack("f", x))[0]


@dataclass(frozen=True)
class BufferRules:
    """How a backend's default buffer type sizes tensors (get_alignment / get_alloc_size)."""

    alignment: int
    quant_row_pad: int  # CUDA pads quantised rows to MATRIX_ROW_PADDING (512) elements; 0 = no

    def alloc_size(self, t: Tensor) -> int:
        size = t.nbytes
        if self.quant_row_pad and _is_quantized(t.type) and t.shape and t.shape[0] % self.quant_row_pad:
            size += row_size(t.type, self.quant_row_pad - t.shape[0] % self.quant_row_pad)
        return size

    def padded(self, nbytes: int) -> int:
        a = self.alignment
        return (nbytes + a - 1) // a * a


# ggml-cpu (TENSOR_ALIGNMENT 32) serves host memory and, through ggml-rpc-server, RPC devices.
CPU_RULES = BufferRules(alignment=32, quant_row_pad=0)
# ggml-cuda: ggml_backend_cuda_buffer_type_get_alignment 128, [TAG_ALLOC_SIZE_EXPAND] row padding.
CUDA_RULES = BufferRules(alignment=128, quant_row_pad=512)


def _is_quantized(type_name: str) -> bool:
    return type_name not in ("f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64")


def backend_kind(gpu: GpuBudget) -> str:
    """ "rpc" for ggml-rpc-server devices serving a CPU (the oracle's), "rpc-cuda" for one serving
    a GPU of another machine, "cuda" for everything else."""
    if gpu.backend:
        return gpu.backend
    return "rpc" if gpu.id.upper().startswith("RPC") else "cuda"


def buffer_rules(kind: str) -> BufferRules:
    # an RPC buffer's alignment and a padded tensor's size are the remote backend's
    # (ggml-rpc.cpp get_alignment, ggml_backend_rpc_buffer_type_get_alloc_size)
    return CPU_RULES if kind in ("rpc", "host") else CUDA_RULES


@dataclass
class Placement:
    devices: list[int]  # the model's devices (indices into gpus), after split_mode
    layer_dev: list[int]  # device of layers 0..n_layer_all; the last entry is the output layer
    weights: dict[int, int]  # device -> model buffer bytes (HOST included)
    tensor_dev: dict[str, list[int]] = field(default_factory=dict)  # name -> devices holding it
    splits: list[float] = field(default_factory=list)  # normalised cumulative split points
    i_gpu_start: int = 0
    n_gpu_layers: int = 0  # min(ngl, n_layer_all + 1) if any device, else 0


def model_devices(n_gpus: int, split_mode: str, main_gpu: int) -> list[int]:
    if split_mode == "none":
        if main_gpu < 0 or n_gpus == 0:
            return []
        if main_gpu >= n_gpus:
            raise ValueError(f"invalid value for main_gpu: {main_gpu} (available devices: {n_gpus})")
        return [main_gpu]
    return list(range(n_gpus))


def split_points(devices: list[int], gpus: list[GpuBudget], tensor_split) -> list[float]:
    """Cumulative normalised split points, in float32 like load_tensors."""
    n = len(devices)
    ts = list(tensor_split or ())[:n]
    ts += [0.0] * (n - len(ts))
    if all(x == 0 for x in ts):
        ts = [float(max(gpus[d].free_at_start_bytes, 0)) for d in devices]
        if not any(ts):
            # No device has memory left once overheads and reserves are counted: the load cannot
            # fit wherever the layers go, so split evenly and let the totals say "does not fit"
            # (llama.cpp would divide by zero here; a placement error would hide the real cause).
            ts = [1.0] * n
    splits, total = [], f32(0.0)
    for x in ts:
        total = f32(total + f32(x))
        splits.append(total)
    if total == 0:
        raise ValueError("tensor split proportions sum to zero")
    return [f32(s / total) for s in splits]


def assign_layers(
    n_layer_all: int, n_gpu_layers: int, devices: list[int], splits: list[float]
) -> tuple[list[int], int, int]:
    """Device of each layer 0..n_layer_all (the output layer last), i_gpu_start, active layers."""
    ngl = n_gpu_layers if n_gpu_layers >= 0 else n_layer_all + 1
    i_gpu_start = max(n_layer_all + 1 - ngl, 0)
    act = 0 if not devices else min(ngl, n_layer_all + 1)
    out = []
    for il in range(n_layer_all + 1):
        if il < i_gpu_start or il - i_gpu_start >= act:
            out.append(HOST)
        else:
            k = bisect_right(splits, f32(f32(il - i_gpu_start) / act))
            out.append(devices[min(k, len(devices) - 1)])
    return out, i_gpu_start, act


def _tensor_role(name: str, arch: str) -> tuple[str, int]:
    """("layer", il) | ("input", -1) | ("output", -1) | ("dup", -1) | ("unused", -1)."""
    if name.startswith("blk."):
        return "layer", int(name.split(".", 2)[1])
    base = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias", ".scale")) else name
    if base in _INPUT:
        return "input", -1
    if base in _PER_LAYER_DUP:
        return "dup", -1
    if base in _UNUSED:
        return "unused", -1
    if base == "token_embd_norm" and arch not in ("lfm2", "lfm2moe"):
        return "layer", 0  # LLM_TENSOR_TOKEN_EMBD_NORM: "do the norms on the first layer"
    return "output", -1


def _override_target(name: str, overrides, device_ids: dict[str, int]) -> int | None:
    for pattern, target in overrides:
        if re.search(pattern, name):
            if target.upper() == "CPU":
                return HOST
            if target not in device_ids:
                raise ValueError(f"unknown buffer type {target!r} in tensor override {pattern!r}")
            return device_ids[target]
    return None


class _Table:
    """Each tensor's role and its padded size under each buffer type, read once per model: the fit
    solver and `vramc check` place one model many times. Checked against the model on every use."""

    def __init__(self, meta: ModelMeta):
        self.meta = meta
        self.tensors = tuple(meta.tensors)
        self.roles = [_tensor_role(t.name, meta.architecture) for t in self.tensors]
        self.has_output = any(t.name == "output.weight" for t in self.tensors)
        self._sizes: dict[BufferRules, list[int]] = {}

    def holds(self, meta: ModelMeta) -> bool:
        ts = meta.tensors
        return (
            self.meta is meta
            and self.meta.architecture == meta.architecture
            and len(ts) == len(self.tensors)
            and all(map(operator.is_, ts, self.tensors))
        )

    def sizes(self, r: BufferRules) -> list[int]:
        s = self._sizes.get(r)
        if s is None:
            s = self._sizes[r] = [r.padded(r.alloc_size(t)) for t in self.tensors]
        return s


_TABLES: dict[int, _Table] = {}


def _table(meta: ModelMeta) -> _Table:
    t = _TABLES.get(id(meta))
    if t is None or not t.holds(meta):
        if len(_TABLES) >= 16:
            del _TABLES[next(iter(_TABLES))]
        t = _TABLES[id(meta)] = _Table(meta)
    return t


def place_model(
    meta: ModelMeta,
    gpus: list[GpuBudget],
    n_layer: int,
    n_layer_all: int,
    n_gpu_layers: int,
    split_mode: str,
    tensor_split,
    main_gpu: int,
    overrides=(),
) -> Placement:
    devices = model_devices(len(gpus), split_mode, main_gpu)
    splits = split_points(devices, gpus, tensor_split) if devices else []
    layer_dev, i_gpu_start, act = assign_layers(n_layer_all, n_gpu_layers, devices, splits)
    out_dev = layer_dev[n_layer_all]
    device_ids = {g.id: i for i, g in enumerate(gpus)}
    rules = {d: buffer_rules(backend_kind(gpus[d])) for d in devices}
    rules[HOST] = buffer_rules("host")

    weights: dict[int, int] = {HOST: 0, **{d: 0 for d in devices}}
    tensor_dev: dict[str, list[int]] = {}
    table = _table(meta)
    sizes = {d: table.sizes(r) for d, r in rules.items()}

    def put(i: int, t: Tensor, dev: int) -> None:
        s = sizes[dev] if dev in sizes else table.sizes(buffer_rules(backend_kind(gpus[dev])))
        weights[dev] = weights.get(dev, 0) + s[i]
        tensor_dev.setdefault(t.name, []).append(dev)

    has_output = table.has_output
    for i, (t, (role, il)) in enumerate(zip(table.tensors, table.roles)):
        if role == "unused" or (role == "layer" and il >= n_layer):
            continue  # MTP/NextN blocks are TENSOR_SKIP unless a draft context loads them
        ov = _override_target(t.name, overrides, device_ids) if overrides else None
        if role == "dup":
            # one copy per buffer type that holds a trunk layer (TENSOR_DUPLICATED for i != 0)
            for dev in dict.fromkeys(ov if ov is not None else layer_dev[k] for k in range(n_layer)):
                put(i, t, dev)
            continue
        if ov is not None:
            dev = ov
        elif role == "layer":
            dev = layer_dev[il]
        elif role == "input":
            dev = HOST
        else:
            dev = out_dev
        put(i, t, dev)
        if role == "input" and t.name == "token_embd.weight" and not has_output and out_dev != HOST:
            # tied embeddings: the output layer loads token_embd again (TENSOR_DUPLICATED) into
            # the output device's buffer type
            put(i, t, out_dev)

    return Placement(
        devices=devices,
        layer_dev=layer_dev,
        weights=weights,
        tensor_dev=tensor_dev,
        splits=splits,
        i_gpu_start=i_gpu_start,
        n_gpu_layers=act,
    )
