"""Devices on other machines (issue 17): llama.cpp's RPC backend, one rpc-server per entry of a
deployment's `hosts:`.

llama.cpp puts the RPC devices at the front of its device list (src/llama.cpp,
llama_model_load_from_file_impl: "add RPC servers at the front of the list"), in `--rpc` order and,
within one server, in the order of its `--device` list; this machine's GPUs follow. Each device is
named RPC0, RPC1, ... across servers (ggml-rpc.cpp ggml_backend_rpc_add_server), its buffer type
RPC<i>[ADDRESS:PORT] with i its position within its server. An rpc-server serving a GPU allocates
on that GPU with the remote CUDA backend's alignment and padding (the RPC client asks it), and its
process holds the CUDA context there; one serving its CPU allocates in the host's RAM, which is
that device's capacity (what `rpc-server` reports) and is shared by every rpc-server on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramc.memory.usage import GpuBudget

if TYPE_CHECKING:
    from vramc.load.profiles import Deployment, HostSpan


def spans(dep: Deployment) -> list[HostSpan]:
    """The hosts a llama.cpp deployment spans, in --rpc order ([] for none, or another family)."""
    from vramc.engines import ENGINES
    from vramc.load.profiles import host_spans

    body = dep.doc.obj
    if not getattr(body, "hosts", None) or ENGINES[body.engine].family != "llama":
        return []
    return host_spans(body, dep.hardware.obj)


def endpoint(span: HostSpan) -> str:
    """What llama-server's --rpc names: the address the main host reaches the worker by."""
    return f"{span.address}:{span.port}"


def rpc_budgets(dep: Deployment, settings, default_overhead, display_reserve: int) -> list[GpuBudget]:
    """The RPC devices of `dep`, in llama.cpp's order, as budgets (RPC0, RPC1, ...); a GPU's
    overhead and a display's reserve default as the planner's do for this machine's GPUs."""
    hw = dep.hardware.obj
    out: list[GpuBudget] = []
    for span in spans(dep):
        h = span.host
        if not span.gpus:  # the host's CPU backend: its RAM, no CUDA context
            out.append(
                GpuBudget(
                    id=f"RPC{len(out)}",
                    name="CPU",
                    gpu=-1,
                    capacity_bytes=h.host_ram or 0,
                    host=h.name,
                    backend="rpc",
                    endpoint=endpoint(span),
                )
            )
            continue
        for i in span.gpus:
            g = h.gpus[i]
            reserve = g.reserve if g.reserve is not None else (display_reserve if g.display else 0)
            overhead = next(
                (x for x in (g.overhead, h.overhead, hw.overhead) if x is not None),
                None,
            )
            out.append(
                GpuBudget(
                    id=f"RPC{len(out)}",
                    name=g.name,
                    gpu=i,
                    capacity_bytes=g.vram,
                    tenants_bytes=sum(t.vram for t in g.tenants),
                    reserve_bytes=reserve,
                    # the rpc-server process on the worker holds this GPU's CUDA context
                    overhead_bytes=overhead
                    if overhead is not None
                    else default_overhead(dep.doc.obj.engine, g.name, settings),
                    host=h.name,
                    backend="rpc-cuda",
                    endpoint=endpoint(span),
                )
            )
    return out


def buffer_names(gpus: list[GpuBudget]) -> dict[str, str]:
    """Each RPC device's buffer type name (what `-ot` names): RPC<i>[ENDPOINT], i its position
    within its own server."""
    out: dict[str, str] = {}
    within: dict[str, int] = {}
    for g in gpus:
        if g.endpoint is None:
            continue
        i = within.get(g.endpoint, 0)
        within[g.endpoint] = i + 1
        out[g.id] = f"RPC{i}[{g.endpoint}]"
    return out


def rpc_list(gpus) -> str:
    """llama-server's --rpc value: each rpc-server once, in device order."""
    return ",".join(dict.fromkeys(g.endpoint for g in gpus if g.endpoint is not None))


def order_line(devices) -> str:
    """The plan text's line on device order: which rpc-server each RPC device is."""
    parts = [f"{d.id}={d.host} {d.endpoint} ({'CPU' if d.backend == 'rpc' else 'CUDA'})" for d in devices if d.host]
    local = [d.id for d in devices if d.host is None]
    return (
        f"  order: --rpc {rpc_list(devices)}: {', '.join(parts)}"
        + (f", then this machine's {', '.join(local)}" if local else "")
        + "; tensor_split follows it"
    )


def unknown_ram(plan) -> list:
    """VR361: a host whose CPU serves the deployment has no host_ram, its device's capacity."""
    from vramc.lint.codes import diagnostic

    dep = plan.dep
    hw = dep.hardware.obj
    out = []
    for span in spans(dep):
        if span.gpus or span.host.host_ram:
            continue
        j = [h.name for h in hw.hosts].index(span.name)
        zero = span.host.host_ram is not None  # `host_ram: 0`: written, but no room
        where = ("hosts", j, "host_ram") if zero else ("hosts", j)
        out.append(
            diagnostic(
                "VR361",
                f"host {span.name} serves its CPU to {dep.label} but its host_ram is "
                f"{'0' if zero else 'not given'}: its rpc-server allocates its share there",
                dep.hardware.file,
                dep.hardware.positions.locate(where),
                dep.hardware.prefix + where,
                "add host_ram to the host (e.g. host_ram: 64GiB)",
            )
        )
    return out


# What an rpc-server holds in its host's RAM while llama-server loads and runs. The server reads
# each SET_TENSOR message whole into a std::vector before copying it to its backend
# (ggml-rpc.cpp rpc_serve_client -> recv_msg, rpc_server::set_tensor), and llama.cpp's loader
# sends every tensor whole to an RPC device (llama_model_loader::load_all_data: the RPC device has
# no host buffer, so no chunked async upload). With `-c` a tensor over 10 MiB comes from the cache
# file instead (rpc_server::set_tensor_hash reads the file into a vector of the same size): the
# same peak, the file itself in the page cache. A CPU backend's buffers are host RAM too.
MiB = 1 << 20
# the pinned CPU build's ggml-rpc-server before its buffers: 5.3 MiB VmHWM idle, 5.9 MiB serving
# a device with 0.1 MiB of buffers (tests/test_rpc_worker_ram.py), rounded up for other libcs
CPU_SERVER_BASE = 8 * MiB
# a CUDA build's process before its buffers: the CUDA runtime's and driver's host memory; not
# measured here (no CUDA rpc-server): gguf-parser's host footprint for a CUDA platform
# (--platform-footprint default 150 MiB RAM)
CUDA_SERVER_BASE = 150 * MiB


@dataclass(frozen=True)
class ServerRam:
    """One rpc-server's peak resident memory on its host."""

    endpoint: str
    devices: tuple[str, ...]  # its RPC devices (RPC0, ...)
    backend: str  # "rpc" (CPU) or "rpc-cuda"
    base_bytes: int
    message_bytes: int  # the largest message it reads whole: a tensor, a batch's activations or mask
    buffers_bytes: int  # a CPU backend's weights, KV and compute; 0 for a GPU

    @property
    def total_bytes(self) -> int:
        return self.base_bytes + self.message_bytes + self.buffers_bytes


@dataclass(frozen=True)
class WorkerRam:
    """A host's rpc-servers of one deployment and the RAM they need together."""

    host: str
    host_ram: int | None
    servers: tuple[ServerRam, ...]

    @property
    def total_bytes(self) -> int:
        return sum(s.total_bytes for s in self.servers)


def _largest_tensors(plan) -> dict[int, int]:
    """Device index -> bytes of the largest weight tensor llama.cpp loads into it (as placed by
    the estimate: llama_placement.place_model with the plan's settings)."""
    from vramc.memory.llama_hparams import llama_hparams
    from vramc.memory.llama_placement import place_model

    p, meta = plan.params, plan.meta
    hp = llama_hparams(meta)
    split_mode = "layer" if p.split_mode == "row" else p.split_mode  # estimate_llama does the same
    try:
        pl = place_model(
            meta,
            plan.gpus,
            hp.n_layer,
            hp.n_layer_all,
            p.n_gpu_layers,
            split_mode,
            p.tensor_split,
            p.main_gpu,
            p.overrides,
        )
    except ValueError:  # an override naming no device: the estimate reports it
        return {}
    out: dict[int, int] = {}
    for t in meta.tensors:
        for dev in pl.tensor_dev.get(t.name, ()):
            out[dev] = max(out.get(dev, 0), t.nbytes)
    return out


def worker_ram(plan) -> list[WorkerRam]:
    """Per host of a llama.cpp RPC plan, in --rpc order: each rpc-server's peak RAM, modelled as
    its process base + the largest message it reads + (a CPU backend) its buffers. Messages: the
    largest weight tensor placed on it, and per batch the hidden state (f32, n_embd x n_ubatch)
    and the KQ mask (n_ctx x n_ubatch, f16 with flash attention, else f32) the scheduler copies
    to it."""
    est = plan.estimate
    if est is None or plan.meta is None or plan.params is None or not any(d.host for d in est.devices):
        return []
    from vramc.memory.llama_hparams import llama_hparams

    hp = llama_hparams(plan.meta)
    r = est.resolved
    n_ubatch, n_ctx = r.get("n_ubatch", 0), r.get("n_ctx", 0)
    batch = max(4 * hp.n_embd * n_ubatch, (2 if r.get("flash_attn") else 4) * n_ctx * n_ubatch)
    largest = _largest_tensors(plan)
    by_endpoint: dict[str, list[int]] = {}
    for i, d in enumerate(est.devices):
        if d.endpoint is not None:
            by_endpoint.setdefault(d.endpoint, []).append(i)
    hosts: dict[str, list[ServerRam]] = {}
    ram: dict[str, int | None] = {}
    for span in spans(plan.dep):
        ram[span.name] = span.host.host_ram
    for ep, idx in by_endpoint.items():
        devs = [est.devices[i] for i in idx]
        cpu = devs[0].backend == "rpc"
        blocks = any(d.n_layers - d.output for d in devs)  # attention layers: the mask comes too
        tensor = max((largest.get(i, 0) for i in idx), default=0)
        hosts.setdefault(devs[0].host or "", []).append(
            ServerRam(
                endpoint=ep,
                devices=tuple(d.id for d in devs),
                backend=devs[0].backend,
                base_bytes=CPU_SERVER_BASE if cpu else CUDA_SERVER_BASE,
                message_bytes=max(
                    tensor, batch if blocks else 4 * hp.n_embd * n_ubatch if any(d.n_layers for d in devs) else 0
                ),
                buffers_bytes=sum(d.weights_bytes + d.kv_bytes + d.compute_bytes for d in devs) if cpu else 0,
            )
        )
    return [WorkerRam(h, ram.get(h), tuple(s)) for h, s in hosts.items()]


def worker_ram_line(plan) -> str | None:
    """The plan text's line on the workers' RAM."""
    workers = worker_ram(plan)
    if not workers:
        return None

    def one(w: WorkerRam) -> str:
        parts = " + ".join(
            f":{s.endpoint.rsplit(':', 1)[1]} {_mib(s.base_bytes)} base + {_mib(s.message_bytes)} message"
            + (f" + {_mib(s.buffers_bytes)} buffers" if s.backend == "rpc" else "")
            for s in w.servers
        )
        of = f" of {_mib(w.host_ram)}" if w.host_ram else ""
        return f"{w.host} {_mib(w.total_bytes)}{of} ({parts})"

    return "  worker RAM (MiB, peak): " + ", ".join(one(w) for w in workers)


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f}"


def worker_ram_record(plan) -> list[dict]:
    """`plan --format json`'s `rpc_hosts` (RPC plans only)."""
    return [
        {
            "host": w.host,
            "ram_bytes": w.total_bytes,
            "host_ram": w.host_ram,
            "servers": [
                {
                    "endpoint": s.endpoint,
                    "devices": list(s.devices),
                    "base_bytes": s.base_bytes,
                    "message_bytes": s.message_bytes,
                    "buffers_bytes": s.buffers_bytes,
                    "total_bytes": s.total_bytes,
                }
                for s in w.servers
            ],
        }
        for w in worker_ram(plan)
    ]
