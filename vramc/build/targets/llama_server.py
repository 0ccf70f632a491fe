"""llama-server: the argument list (one argument per line), a launch script, and the same settings
as an LLAMA_ARG_* environment file.

Every flag is spelled as the pinned llama-server accepts it (vramc/data/llama_server_options.txt,
extracted from its --help): `--load-mode` instead of the removed --no-mmap/--mlock, `-fa` with a
value, `-ngl all`, always an explicit `--port`, and `--fit off` because vramc has already chosen
every value and llama-server's fit would otherwise shrink the unset ones on its own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from vramc.build.render import PathArg, num
from vramc.build.targets.common import Context, device_env, model_file, process_env
from vramc.plan.rpc import buffer_names as rpc_buffer_names
from vramc.plan.rpc import rpc_list

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

NAME = "llama-server"
FOLDER = "llama_server"
BINARY = "llama-server"
OPTIONS_FILE = Path(__file__).resolve().parents[2] / "data" / "llama_server_options.txt"


@lru_cache(maxsize=1)
def option_table() -> dict[str, str | None]:
    """Every spelling the pinned binary accepts -> the environment variable of its option."""
    table: dict[str, str | None] = {}
    for line in OPTIONS_FILE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        words = line.split()
        env = next((w[4:] for w in words if w.startswith("env=")), None)
        for w in words:
            if not w.startswith("env="):
                table[w] = env
    return table


def _gpu_layers(plan: Plan) -> str:
    n_layers = plan.meta.n_layer + 1  # blocks + output layer
    ngl = plan.params.n_gpu_layers
    return "all" if ngl < 0 or ngl >= n_layers else str(ngl)


def options(plan: Plan) -> list[tuple[str, object]]:
    """(long flag, value) in command-line order; a bool value is a negatable switch."""
    p, s = plan.params, plan.dep.settings
    opts: list[tuple[str, object]] = [
        ("--model", PathArg(model_file(plan))),
        ("--ctx-size", str(p.n_ctx)),
        ("--parallel", str(p.n_seq_max)),
        ("--kv-unified", p.kv_unified),
        ("--batch-size", str(p.n_batch)),
        ("--ubatch-size", str(p.n_ubatch)),
        ("--gpu-layers", _gpu_layers(plan)),
        ("--split-mode", p.split_mode),
    ]
    if p.tensor_split:
        opts.append(("--tensor-split", ",".join(num(float(x)) for x in p.tensor_split)))
    rpc = rpc_list(plan.gpus)
    if rpc:  # the other machines' rpc-servers, whose devices come first (issue 17)
        opts.append(("--rpc", rpc))
    opts += [
        ("--main-gpu", str(p.main_gpu)),
        ("--flash-attn", p.flash_attn),  # as planned: `auto` lays out the V cache unlike `on`
        ("--cache-type-k", p.type_k),
        ("--cache-type-v", p.type_v),
        ("--kv-offload", p.offload_kqv),
        ("--load-mode", s.load_mode or "auto"),
    ]
    if p.swa_full:
        opts.append(("--swa-full", True))
    if p.overrides:
        # an RPC device's buffer type is RPC<i>[ADDRESS:PORT] (i: its place in its server), not its id
        names = rpc_buffer_names(plan.gpus)
        opts.append(("--override-tensor", ",".join(f"{pat}={names.get(buft, buft)}" for pat, buft in p.overrides)))
    if s.n_cpu_moe:
        opts.append(("--n-cpu-moe", str(s.n_cpu_moe)))
    if s.threads:
        opts.append(("--threads", str(s.threads)))
    if s.api_key_file:
        opts.append(("--api-key-file", PathArg(s.api_key_file)))
    opts.append(("--fit", "off"))
    return opts


def _negated(flag: str) -> str:
    return "--no-" + flag[2:]


def cli_lines(opts: list[tuple[str, object]], ctx: Context) -> list[list[str]]:
    """The arguments, one option (flag and value) per line of a script or unit."""
    served = [("--alias", ctx.model_name), ("--host", ctx.host), ("--port", str(ctx.port))]
    lines: list[list[str]] = []
    for flag, value in opts[:1] + served + opts[1:]:
        if isinstance(value, bool):
            lines.append([flag if value else _negated(flag)])
        else:
            lines.append([flag, value])
    unknown = [line[0] for line in lines if line[0] not in option_table()]
    assert not unknown, f"flags the pinned llama-server does not accept: {unknown}"
    return lines


def env_vars(opts: list[tuple[str, object]], ctx: Context) -> dict[str, str]:
    table = option_table()
    env: dict[str, str] = {}
    served = [("--alias", ctx.model_name), ("--host", ctx.host), ("--port", str(ctx.port))]
    for flag, value in opts + served:
        name = table[flag]
        assert name, f"{flag} has no environment variable in the pinned llama-server"
        # llama.cpp reads true/1/on/enabled and false/0/off/disabled for switches (common/arg.cpp).
        env[name] = ("true" if value else "false") if isinstance(value, bool) else value
    return env


def service(plan: Plan, ctx: Context) -> dict:
    """What the systemd unit runs: argument lines (the binary first), environment, mlock."""
    d = data(plan, ctx)
    return {"lines": [[d["binary"]]] + d["lines"], "env": d["process_env"], "memlock": d["memlock"]}


def outputs(plan: Plan) -> dict[str, str]:
    return {
        "llama-server.args.j2": "llama-server.args",
        "llama-server.env.j2": "llama-server.env",
        "launch.sh.j2": "launch.sh",
    }


def data(plan: Plan, ctx: Context) -> dict:
    opts = options(plan)
    args_env = env_vars(opts, ctx)
    env = process_env(plan, {**device_env(plan), **args_env}, ctx)
    lines = cli_lines(opts, ctx)
    return {
        "binary": BINARY,
        "lines": lines,
        "args": [a for line in lines for a in line],
        "env": env,
        # what the launch script exports besides its arguments (which would override these anyway)
        "process_env": {k: v for k, v in env.items() if k not in args_env},
        "memlock": (plan.dep.settings.load_mode or "auto") in ("mlock", "mmap+mlock"),
    }
