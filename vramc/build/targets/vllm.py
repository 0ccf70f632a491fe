"""vLLM: `vllm serve` arguments (one per line), the same as a `--config` YAML, and a launch script.

Every value is the one the vLLM memory model resolved (plan.estimate.resolved), so an `auto`
max_model_len is pinned to the length that was checked to fit, and several instances sharing a GPU
get exactly the --gpu-memory-utilization shares that VR335/VR336 checked. Option names are those
of the pinned vLLM (vramc/data/vllm_options.txt).

Across machines (issue 17, vramc.plan.vllm_nodes) node rank 0 is this machine's folder as always,
and every host gets `hosts/HOST/` with its own launch script and unit (host_files). With the mp
backend each node runs `vllm serve` with `--nnodes N --node-rank R --master-addr HEAD`, the hosts
`--headless` (vllm/entrypoints/cli/serve.py run_headless starts their workers), and each has the
same vllm.args and vllm.yaml but for its rank. With Ray this machine runs `ray start --head`
before `vllm serve --distributed-executor-backend ray`, the hosts `ray start --address=HEAD:6379
--block` and no vllm at all. Every node exports VLLM_HOST_IP (its address), its
CUDA_VISIBLE_DEVICES, and with `network.interface` NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from vramc.build.render import num
from vramc.build.targets.common import Context, TargetError, device_env, path_arg, process_env
from vramc.plan.vllm_nodes import RAY_PORT

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

NAME = "vllm"
FOLDER = "vllm"
BINARY = "vllm"
OPTIONS_FILE = Path(__file__).resolve().parents[2] / "data" / "vllm_options.txt"


@lru_cache(maxsize=1)
def option_names() -> frozenset[str]:
    return frozenset(line.strip() for line in OPTIONS_FILE.read_text().splitlines() if line.startswith("-"))


def model_arg(plan: Plan) -> str:
    m = plan.dep.model.obj
    if m.hf:
        return path_arg(m.hf)  # a Hugging Face id, or a local folder
    if m.gguf:
        return path_arg(m.gguf)
    raise TargetError("the model has neither `hf:` nor `gguf:`, so vLLM has nothing to load")


def options(plan: Plan, ctx: Context, rank: int = 0) -> list[tuple[str, object]]:
    """(long option, typed value) for every setting of node `rank` (0: this machine); True is a
    bare switch."""
    if plan.estimate is None:
        raise TargetError("the deployment has no memory plan, so there are no values to write")
    r = plan.estimate.resolved
    opts: list[tuple[str, object]] = [
        ("--served-model-name", ctx.model_name),
        ("--host", ctx.host),
        ("--port", ctx.port),
        ("--gpu-memory-utilization", r["gpu_memory_utilization"]),
        ("--max-model-len", r["max_model_len"]),
        ("--max-num-seqs", r["max_num_seqs"]),
        ("--max-num-batched-tokens", r["max_num_batched_tokens"]),
        ("--kv-cache-dtype", r["kv_cache_dtype"]),
        ("--block-size", r["block_size"]),
        ("--tensor-parallel-size", r["tensor_parallel_size"]),
        ("--dtype", r["dtype"]),
    ]
    if r.get("pipeline_parallel_size", 1) > 1:  # only then: the files of one-stage deployments stay as they were
        opts.insert(opts.index(("--dtype", r["dtype"])), ("--pipeline-parallel-size", r["pipeline_parallel_size"]))
    if "distributed_executor_backend" in r:  # set in the profile, or across machines
        opts.append(("--distributed-executor-backend", r["distributed_executor_backend"]))
    q = plan.dep.model.obj.quantization
    if q is not None and q.method != "none":
        opts.append(("--quantization", q.method))
    if r.get("kv_cache_memory_bytes"):
        opts.append(("--kv-cache-memory-bytes", r["kv_cache_memory_bytes"]))
    if r["cpu_offload_gb"]:
        opts.append(("--cpu-offload-gb", r["cpu_offload_gb"]))
    if r["enforce_eager"]:
        opts.append(("--enforce-eager", True))
    if plan.dep.settings.api_key_file:
        ctx.warnings.append(
            "vLLM has no --api-key-file: api_key_file is not written; set "
            "VLLM_API_KEY in the service's environment instead"
        )
    opts += node_options(plan, rank)
    unknown = [flag for flag, _ in opts if flag not in option_names()]
    assert not unknown, f"options the pinned vLLM does not have: {unknown}"
    return opts


def head_address(plan: Plan) -> str:
    address = plan.dep.hardware.obj.address
    if not address:
        raise TargetError("the hardware profile has no `address:`, which the other nodes connect to (VR416)")
    return address


def node_options(plan: Plan, rank: int) -> list[tuple[str, object]]:
    """The mp backend's options of node `rank` across machines (ParallelConfig.nnodes, node_rank,
    master_addr, master_port); none on one machine or with Ray (vLLM refuses --nnodes with Ray:
    "nnodes > 1 can only be set when distributed executor backend is mp, uni or external_launcher")."""
    r = plan.estimate.resolved
    if r.get("nnodes", 1) == 1 or r.get("distributed_executor_backend") == "ray":
        return []
    opts: list[tuple[str, object]] = [
        ("--nnodes", r["nnodes"]),
        ("--node-rank", rank),
        ("--master-addr", head_address(plan)),
    ]
    if plan.dep.settings.master_port is not None:
        opts.append(("--master-port", plan.dep.settings.master_port))
    if rank > 0:  # vllm serve starts only this node's workers: no engine core, no API server
        opts.append(("--headless", True))
    return opts


def _text(value: object) -> str:
    return num(value) if isinstance(value, (int, float)) else str(value)


def cli_lines(plan: Plan, ctx: Context, rank: int = 0) -> list[list[str]]:
    lines: list[list[str]] = [[model_arg(plan)]]
    for flag, value in options(plan, ctx, rank):
        if value is True:
            lines.append([flag])
        elif _text(value).startswith("-"):
            lines.append([f"{flag}={_text(value)}"])  # argparse would take `-x` for an option
        else:
            lines.append([flag, _text(value)])
    return lines


def config(plan: Plan, ctx: Context, rank: int = 0) -> dict:
    """The `vllm serve --config` document: long option names without dashes, typed values."""
    return {"model": model_arg(plan), **{flag[2:]: value for flag, value in options(plan, ctx, rank)}}


def ray(plan: Plan) -> bool:
    r = plan.estimate.resolved if plan.estimate else {}
    return r.get("nnodes", 1) > 1 and r.get("distributed_executor_backend") == "ray"


def node_env(plan: Plan, address: str | None) -> dict[str, str]:
    """What every node of a deployment across machines exports besides its GPUs: VLLM_HOST_IP
    (the address the other nodes reach it by: vllm/envs.py, used by get_ip()) and, with the
    hardware profile's `network.interface`, NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME."""
    if plan.estimate is None or plan.estimate.resolved.get("nnodes", 1) == 1:
        return {}
    env = {"VLLM_HOST_IP": address} if address else {}
    net = plan.dep.hardware.obj.network
    if net is not None and net.interface:
        env["NCCL_SOCKET_IFNAME"] = net.interface
        gloo = gloo_interfaces(net.interface)
        if gloo is not None:
            env["GLOO_SOCKET_IFNAME"] = gloo
    return env


def gloo_interfaces(interface: str) -> str | None:
    """GLOO_SOCKET_IFNAME for a `network.interface` written for NCCL_SOCKET_IFNAME: Gloo takes
    exact interface names, comma-separated (torch ProcessGroupGloo: one device per name), so
    NCCL's `=` (exact match) is dropped and NCCL's `^` (exclude these) has no Gloo form: None."""
    if interface.startswith("^"):
        return None
    return interface.removeprefix("=")


def ray_start(plan: Plan, host: str | None) -> list[str]:
    """`ray start`'s arguments on a node: the head here (its GCS on RAY_PORT), a worker joining it
    there and staying in the foreground (--block), each offering the GPUs its ranks use."""
    gpus = sum(1 for g in plan.gpus if g.host == host)
    if host is None:
        args = ["start", "--head", f"--port={RAY_PORT}", f"--node-ip-address={head_address(plan)}"]
    else:
        address = next(h.address for h in plan.dep.hardware.obj.hosts if h.name == host)
        args = ["start", f"--address={head_address(plan)}:{RAY_PORT}", f"--node-ip-address={address}", "--block"]
    return args + [f"--num-gpus={gpus}"]


def service(plan: Plan, ctx: Context) -> dict:
    out = {
        "lines": [[BINARY, "serve"]] + cli_lines(plan, ctx),
        "env": process_env(plan, {**device_env(plan), **node_env(plan, plan.dep.hardware.obj.address)}, ctx),
        "memlock": False,
    }
    if ray(plan):
        # the Ray head runs beside vllm serve, which connects to it: started by the main process,
        # as launch.sh does (systemd.service: processes forked off by ExecStartPre= are killed
        # before ExecStart= runs, which would take the head's daemons with them)
        from vramc.build.render import shquote

        head = " ".join(shquote(a) for a in ["ray", *ray_start(plan, None)])
        out["lines"] = [["sh", "-c", f'{head} && exec "$0" "$@"']] + out["lines"]
        out["post"] = [["ray", "stop"]]
    return out


def outputs(plan: Plan) -> dict[str, str]:
    return {"vllm.args.j2": "vllm.args", "vllm.yaml.j2": "vllm.yaml", "launch.sh.j2": "launch.sh"}


def data(plan: Plan, ctx: Context) -> dict:
    lines = cli_lines(plan, ctx)
    out = {
        "binary": BINARY,
        "lines": lines,
        "args": [a for line in lines for a in line],
        "config": config(plan, ctx),
        "process_env": process_env(plan, {**device_env(plan), **node_env(plan, plan.dep.hardware.obj.address)}, ctx),
    }
    if ray(plan):
        out["ray_start"] = ray_start(plan, None)
    if plan.estimate is not None and plan.estimate.resolved.get("nnodes", 1) > 1:
        out["nodes"] = nodes_summary(plan)
    return out


def nodes_summary(plan: Plan) -> list[str]:
    """One line per node for the scripts' comments: its rank, machine and the ranks it runs."""
    from vramc.plan.vllm_nodes import spans

    names = [None] + [s.name for s in spans(plan.dep)]
    out = []
    for rank, host in enumerate(names):
        devs = [d for d in plan.estimate.devices if d.host == host]
        ranks = ", ".join(str(d.detail.get("rank")) for d in devs)
        stages = sorted({d.detail.get("pp_rank") for d in devs})
        where = host or "this machine"
        out.append(
            f"node {rank}: {where}, {len(devs)} GPU{'s' if len(devs) != 1 else ''} (ranks {ranks}; "
            f"pipeline stage{'s' if len(stages) != 1 else ''} {', '.join(map(str, stages))})"
        )
    return out


def host_files(plan: Plan, ctx: Context, project_dir) -> list:
    """`hosts/HOST/` of a deployment across machines: each node's launch script and unit, and
    with the mp backend its vllm.args and vllm.yaml (node rank R, --headless)."""
    import posixpath
    from dataclasses import replace

    from vramc.build.render import Rendered, render_template
    from vramc.build.targets import systemd
    from vramc.plan.vllm_nodes import spans, visible_devices

    if plan.estimate is None or plan.estimate.resolved.get("nnodes", 1) == 1:
        return []
    out = []
    for rank, span in enumerate(spans(plan.dep), start=1):
        sub = f"hosts/{span.name}"
        hctx = replace(ctx, root=posixpath.normpath(posixpath.join("../..", ctx.root)), folder=f"{ctx.folder}/{sub}")
        env = {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": visible_devices(plan.dep, span.name, plan.gpus),
            **node_env(plan, span.address),
        }
        env = process_env(plan, env, hctx)
        t: dict = {
            "binary": BINARY,
            "host": span.name,
            "address": span.address,
            "rank": rank,
            "nodes": nodes_summary(plan),
        }
        if ray(plan):
            t.update({"ray_start": ray_start(plan, span.name), "process_env": env})
            unit_lines = [["ray", *ray_start(plan, span.name)]]
            templates = [("vllm/_ray-worker.sh.j2", "launch.sh")]
        else:
            lines = cli_lines(plan, hctx, rank)
            t.update(
                {
                    "lines": lines,
                    "args": [a for line in lines for a in line],
                    "config": config(plan, hctx, rank),
                    "process_env": env,
                }
            )
            unit_lines = [[BINARY, "serve"]] + lines
            templates = [
                ("vllm/vllm.args.j2", "vllm.args"),
                ("vllm/vllm.yaml.j2", "vllm.yaml"),
                ("vllm/launch.sh.j2", "launch.sh"),
            ]
        variables = {**hctx.variables(), "t": t}
        for template, name in templates:
            out.append(Rendered(f"{sub}/{name}", render_template(project_dir, template, variables)))
        unit = {"unit": systemd.unit_name(plan), "lines": unit_lines, "env": env, "memlock": False}
        out.append(
            Rendered(
                f"{sub}/{systemd.unit_name(plan)}",
                render_template(project_dir, f"{systemd.FOLDER}/unit.service.j2", {**hctx.variables(), "t": unit}),
            )
        )
    return out
