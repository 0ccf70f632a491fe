"""llama.cpp's rpc-server on the other machines a deployment spans (issue 17): per entry of its
`hosts:`, a launch script and a systemd unit in `hosts/HOST/` of the deployment's folder.

The server is started as tools/rpc/rpc-server.cpp reads its arguments: `--host` (the address it
listens on), `--port`, `--device` (the devices it serves, in the plan's order: the GPUs that
CUDA_VISIBLE_DEVICES leaves visible, CUDA0...; `CPU` for a host that serves its CPU, with every
GPU hidden) and `--cache` (tensors cached under $LLAMA_CACHE/rpc). The pinned llama.cpp builds it
as `ggml-rpc-server`. llama-server's `--rpc` lists the servers in the same order
(vramc.build.targets.llama_server); the devices of one server keep the order of its `--device`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.build.render import check_safe

if TYPE_CHECKING:
    from vramc.build.targets.common import Context
    from vramc.load.profiles import HostSpan
    from vramc.plan.planner import Plan

FOLDER = "rpc_server"
BINARY = "ggml-rpc-server"  # tools/rpc/CMakeLists.txt: set(TARGET ggml-rpc-server)


def unit_name(plan: Plan, span: HostSpan) -> str:
    return f"vramc-rpc-{plan.dep.name}-{span.port}.service"


def script_name(span: HostSpan) -> str:
    return f"rpc-server-{span.port}.sh"


def folder(span: HostSpan) -> str:
    return f"hosts/{span.name}"


def visible_devices(span: HostSpan) -> str:
    """CUDA_VISIBLE_DEVICES on the worker: its selected GPUs in order (UUIDs when all have one,
    else the `index` or position), empty for a server of the CPU."""
    gpus = [span.host.gpus[i] for i in span.gpus]
    if gpus and all(g.uuid for g in gpus):
        return ",".join(check_safe(g.uuid) for g in gpus)
    return ",".join(str(g.index if g.index is not None else i) for i, g in zip(span.gpus, gpus))


def server_args(span: HostSpan) -> list[list[str]]:
    """rpc-server's arguments, one option per line."""
    devices = ",".join(f"CUDA{k}" for k in range(len(span.gpus))) if span.gpus else "CPU"
    lines = [["--host", span.bind], ["--port", str(span.port)], ["--device", devices]]
    if span.cache:
        lines.append(["--cache"])
    return lines


def data(plan: Plan, span: HostSpan) -> dict:
    devices = [g for g in plan.gpus if g.endpoint is not None and g.endpoint == f"{span.address}:{span.port}"]
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": visible_devices(span)}
    return {
        "binary": BINARY,
        "lines": server_args(span),
        "env": env,
        "host": span.name,
        "address": span.address,
        "port": span.port,
        "bind": span.bind,
        "endpoint": f"{span.address}:{span.port}",
        "devices": ", ".join(f"{g.id} ({check_safe(g.name)})" for g in devices),  # in comments: no line breaks
        "unit": unit_name(plan, span),
        "script": script_name(span),
        "cache": span.cache,
    }


def files(plan: Plan, ctx: Context, project_dir) -> list:
    """The launch script and the unit of every rpc-server the deployment's plan uses."""
    from vramc.build.render import Rendered, render_template
    from vramc.plan.rpc import spans

    out = []
    for span in spans(plan.dep):
        t = data(plan, span)
        variables = {**ctx.variables(), "t": t}
        out.append(
            Rendered(f"{folder(span)}/{t['script']}", render_template(project_dir, f"{FOLDER}/launch.sh.j2", variables))
        )
        out.append(
            Rendered(
                f"{folder(span)}/{t['unit']}", render_template(project_dir, f"{FOLDER}/unit.service.j2", variables)
            )
        )
    return out
