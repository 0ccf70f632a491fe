"""vLLM: `vllm serve` arguments (one per line), the same as a `--config` YAML, and a launch script.

Every value is the one the vLLM memory model resolved (plan.estimate.resolved), so an `auto`
max_model_len is pinned to the length that was checked to fit, and several instances sharing a GPU
get exactly the --gpu-memory-utilization shares that VR335/VR336 checked. Option names are those
of the pinned vLLM (vramc/data/vllm_options.txt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functools import lru_cache
from pathlib import Path

from vramc.build.render import num
from vramc.build.targets.common import Context, TargetError, device_env, path_arg, process_env

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


def options(plan: Plan, ctx: Context) -> list[tuple[str, object]]:
    """(long option, typed value) for every setting; True is a bare switch."""
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
    unknown = [flag for flag, _ in opts if flag not in option_names()]
    assert not unknown, f"options the pinned vLLM does not have: {unknown}"
    return opts


def _text(value: object) -> str:
    return num(value) if isinstance(value, (int, float)) else str(value)


def cli_lines(plan: Plan, ctx: Context) -> list[list[str]]:
    lines: list[list[str]] = [[model_arg(plan)]]
    for flag, value in options(plan, ctx):
        if value is True:
            lines.append([flag])
        elif _text(value).startswith("-"):
            lines.append([f"{flag}={_text(value)}"])  # argparse would take `-x` for an option
        else:
            lines.append([flag, _text(value)])
    return lines


def config(plan: Plan, ctx: Context) -> dict:
    """The `vllm serve --config` document: long option names without dashes, typed values."""
    return {"model": model_arg(plan), **{flag[2:]: value for flag, value in options(plan, ctx)}}


def service(plan: Plan, ctx: Context) -> dict:
    return {
        "lines": [[BINARY, "serve"]] + cli_lines(plan, ctx),
        "env": process_env(plan, device_env(plan), ctx),
        "memlock": False,
    }


def outputs(plan: Plan) -> dict[str, str]:
    return {"vllm.args.j2": "vllm.args", "vllm.yaml.j2": "vllm.yaml", "launch.sh.j2": "launch.sh"}


def data(plan: Plan, ctx: Context) -> dict:
    lines = cli_lines(plan, ctx)
    return {
        "binary": BINARY,
        "lines": lines,
        "args": [a for line in lines for a in line],
        "config": config(plan, ctx),
        "process_env": process_env(plan, device_env(plan), ctx),
    }
