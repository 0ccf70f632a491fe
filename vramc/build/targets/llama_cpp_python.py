"""The one mapping from a plan to llama-cpp-python's `llama_cpp.Llama` arguments.

Used by the rendered serve script, the `llama_cpp.server` config file and `vramc run`, so the
three cannot drift apart. Every value the plan depends on is passed explicitly: the class's own
defaults (n_gpu_layers 0, n_ctx 512, flash_attn False) differ from every other engine's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

# llama_cpp.LLAMA_SPLIT_MODE_* and ggml_type values (llama_cpp/llama_cpp.py, ggml.h)
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
GGML_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}


def model_path(plan: Plan, absolute: bool = False) -> str:
    """The GGUF path as the profile wrote it (portable artifacts) or resolved (for `run`)."""
    dep = plan.dep
    if absolute and dep.gguf_path is not None:
        return str(Path(dep.gguf_path).resolve())
    return dep.model.obj.gguf or ""


def flash_attn_enabled(plan: Plan) -> bool:
    """llama-cpp-python has no `auto`: pass what llama.cpp would resolve auto to, as planned."""
    resolved = plan.estimate.resolved.get("flash_attn") if plan.estimate else None
    if isinstance(resolved, bool):
        return resolved
    return plan.params.flash_attn == "on"


def load_flags(load_mode: str | None) -> dict:
    """llama-cpp-python's use_mmap/use_mlock for a llama.cpp --load-mode."""
    mode = load_mode or "auto"
    if mode == "none":
        return {"use_mmap": False, "use_mlock": False}
    if mode == "mlock":
        return {"use_mmap": False, "use_mlock": True}
    if mode == "mmap+mlock":
        return {"use_mmap": True, "use_mlock": True}
    return {"use_mmap": True, "use_mlock": False}


def to_llama_kwargs(plan: Plan, absolute_path: bool = False) -> dict:
    """Keyword arguments for `llama_cpp.Llama(**kwargs)` that load the plan exactly."""
    p = plan.params
    n_layers = plan.meta.n_layer + 1
    kwargs = {
        "model_path": model_path(plan, absolute_path),
        "n_gpu_layers": -1 if p.n_gpu_layers < 0 or p.n_gpu_layers >= n_layers else p.n_gpu_layers,
        "split_mode": SPLIT_MODES[p.split_mode],
        "main_gpu": p.main_gpu,
        "tensor_split": [float(x) for x in p.tensor_split] if p.tensor_split else None,
        "n_ctx": p.n_ctx,
        "n_batch": p.n_batch,
        "n_ubatch": p.n_ubatch,
        "flash_attn": flash_attn_enabled(plan),
        "type_k": GGML_TYPE_IDS[p.type_k],
        "type_v": GGML_TYPE_IDS[p.type_v],
        "offload_kqv": p.offload_kqv,
        "swa_full": p.swa_full,
        **load_flags(plan.dep.settings.load_mode),
    }
    if plan.dep.settings.threads:
        kwargs["n_threads"] = plan.dep.settings.threads
    return kwargs


# --- the llama-cpp-python target: serve.py and a `python -m llama_cpp.server` config ------------

NAME = "llama-cpp-python"
FOLDER = "llama_cpp_python"
CONFIG_FILE = "llama-cpp-server.yaml"
# Llama() arguments that llama_cpp.server's ModelSettings has no field for: the server passes
# nothing, so llama.cpp's own default applies there (serve.py passes them).
NOT_IN_SERVER_SETTINGS = ("swa_full",)
# ModelSettings defaults that differ from Llama()'s and that to_llama_kwargs leaves to Llama():
# logits_all=True would keep logits for every token of the context (n_ctx x n_vocab floats).
SERVER_PINNED = {"logits_all": False}


def server_config(plan: Plan, ctx) -> tuple[dict, dict]:
    """(ConfigFileSettings document, the planned arguments it cannot carry)."""
    kwargs = to_llama_kwargs(plan)
    model = {"model": str(kwargs.pop("model_path")), "model_alias": ctx.model_name}
    missing = {k: kwargs.pop(k) for k in NOT_IN_SERVER_SETTINGS if k in kwargs}
    model.update(kwargs)
    model.update(SERVER_PINNED)
    return {"host": ctx.host, "port": ctx.port, "models": [model]}, missing


def service(plan: Plan, ctx) -> dict:
    from vramc.build.render import PathArg
    from vramc.build.targets.common import device_env, path_arg, process_env

    return {
        "lines": [
            ["python3", "-m", "llama_cpp.server"],
            ["--config_file", PathArg(path_arg(f"{ctx.folder}/{CONFIG_FILE}"))],
        ],
        "env": process_env(plan, device_env(plan), ctx),
        "memlock": to_llama_kwargs(plan)["use_mlock"],
    }


def outputs(plan: Plan) -> dict[str, str]:
    return {"serve.py.j2": "serve.py", f"{CONFIG_FILE}.j2": CONFIG_FILE}


def data(plan: Plan, ctx) -> dict:
    from vramc.build.targets.common import device_env, model_file, process_env

    model_file(plan)  # a model without a gguf path cannot be served
    config, missing = server_config(plan, ctx)
    return {
        "kwargs": to_llama_kwargs(plan),
        "config": config,
        "config_file": CONFIG_FILE,
        "not_in_config": [f"{k}={v!r}" for k, v in sorted(missing.items())],
        "env": process_env(plan, device_env(plan), ctx),
    }
