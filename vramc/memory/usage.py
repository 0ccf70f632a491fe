"""The result types every memory model fills in. Plain dataclasses: the planner, the lint rules,
the renderers and `plan --format json` all read these and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class GpuBudget:
    """One GPU as an engine will see it at start, in launch order (after CUDA_VISIBLE_DEVICES)."""

    id: str  # CUDA0, CUDA1, ... in launch order
    name: str
    gpu: int  # index into the hardware profile's gpus list
    capacity_bytes: int  # total VRAM
    tenants_bytes: int = 0  # held by other processes when the engine starts
    reserve_bytes: int = 0  # the user's deliberate reserve (policy; not physically used)
    overhead_bytes: int = 0  # CUDA context + cuBLAS + driver for this engine process
    # another machine's device behind llama.cpp's RPC backend (issue 17): the host's name, and
    # what serves it there: "rpc" (its CPU) or "rpc-cuda" (a GPU); "" is derived from the id
    host: str | None = None
    backend: str = ""
    endpoint: str | None = None  # the rpc-server's ADDRESS:PORT

    @property
    def free_at_start_bytes(self) -> int:
        """What cudaMemGetInfo reports once the engine's own CUDA context exists."""
        return self.capacity_bytes - self.tenants_bytes - self.overhead_bytes


@dataclass
class DeviceUse:
    id: str  # the engine's name for it in launch order: CUDA0, CUDA1, ...
    name: str  # e.g. "RTX 4080"
    gpu: int  # index into the hardware profile's gpus list
    capacity_bytes: int  # total VRAM of the card
    reserve_bytes: int = 0  # deliberately kept free (display, desktop)
    tenants_bytes: int = 0  # held by other processes
    weights_bytes: int = 0
    kv_bytes: int = 0  # KV cache and recurrent state ("context" in llama.cpp's breakdown)
    compute_bytes: int = 0
    overhead_bytes: int = 0  # CUDA context, cuBLAS workspace, driver
    layers: tuple[int, int] | None = None  # first and last layer held; n_layer is the output layer
    n_layers: int = 0  # how many layers (blocks + output) it holds
    output: bool = False  # holds the output layer
    detail: dict = field(default_factory=dict)  # engine-specific figures, for explain/json
    host: str | None = None  # another machine's device (RPC): the host's name; None: this machine
    endpoint: str | None = None  # its rpc-server's ADDRESS:PORT
    backend: str = ""  # "rpc" (the host's CPU) or "rpc-cuda" (its GPU) for an RPC device

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.overhead_bytes

    @property
    def available_bytes(self) -> int:
        """What this deployment may use: capacity minus reserve and other tenants."""
        return self.capacity_bytes - self.reserve_bytes - self.tenants_bytes

    @property
    def free_bytes(self) -> int:
        return self.available_bytes - self.total_bytes


@dataclass
class HostUse:
    weights_bytes: int = 0  # weights kept in host memory (token embeddings, CPU layers)
    kv_bytes: int = 0
    compute_bytes: int = 0
    other_bytes: int = 0  # output buffer, prompt cache, pinned staging
    detail: dict = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.other_bytes


class Refusal(NamedTuple):
    """Why the engine would stop at start: `kind` names the check (llama.cpp's or vLLM's, e.g.
    "llama-split-row", "vllm-start-check"), `message` is the engine's own words. A memory model
    names no lint rule: the plan and lint layers map kinds to rule codes in one table
    (vramc.plan.refusals)."""

    kind: str
    message: str


@dataclass
class MemoryEstimate:
    devices: list[DeviceUse]
    host: HostUse
    notes: list[str] = field(default_factory=list)  # facts the user should know (e.g. FA auto -> on)
    errors: list[Refusal] = field(default_factory=list)  # what the engine would refuse to start with
    resolved: dict = field(default_factory=dict)  # concrete engine settings this estimate used
    # how the compute buffers were sized (llama.cpp engines): "exact" (the architecture's graph is
    # replayed), "approximate" (an unknown architecture with llama's tensors: the llama graph) or
    # "none" (not modelled: compute_bytes are 0 and the plan is short by them)
    compute_model: str | None = None

    def __post_init__(self) -> None:
        # the models append plain (kind, message) pairs; the estimate cache reads back JSON lists
        self.errors = [Refusal(*e) for e in self.errors]
