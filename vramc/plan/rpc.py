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
