"""Ollama: the server's environment (a drop-in for ollama.service, and the same as an env file) and
a Modelfile with the per-model parameters.

Ollama splits the settings in two: the server reads OLLAMA_* variables (only those in
vramc.engines.OLLAMA_ENV exist; the rest are silently ignored, hence VR401), and each model
carries its load parameters (num_ctx, num_gpu, num_batch, ...) in its Modelfile. Since 0.30 Ollama
starts llama-server with them (llm/llama_server.go startLlamaServer):
`-c num_ctx*OLLAMA_NUM_PARALLEL -np OLLAMA_NUM_PARALLEL -b num_batch -ub num_batch -ngl num_gpu`.

Everything Ollama would otherwise decide for itself is written down as the plan assumed it
(vramc.plan.ollama_sched, for the pinned Ollama): num_ctx and num_batch even where they are Ollama's own
defaults, num_gpu (which also stops llama-server's fit), LLAMA_ARG_FIT=off (it applies: Ollama
passes no --fit argument), and OLLAMA_SCHED_SPREAD=1 when the plan uses several GPUs (else Ollama
loads a model that fits one GPU on that GPU alone).
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from vramc.build.targets.common import Context, env_text, model_file
from vramc.engines import OLLAMA_ENV, OLLAMA_SOURCE
from vramc.plan.ollama_sched import PIN

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

NAME = "ollama"
FOLDER = "ollama"
FLASH_ATTENTION = {"on": "1", "off": "0"}  # unset: Ollama passes --flash-attn auto


def server_env(plan: Plan, ctx: Context) -> dict[str, str]:
    p, s = plan.params, plan.dep.settings
    computed = {
        "OLLAMA_HOST": f"{ctx.host}:{ctx.port}",
        "OLLAMA_NUM_PARALLEL": str(p.n_seq_max),
        "OLLAMA_KV_CACHE_TYPE": p.type_k,  # one type for K and V (VR404 checks they agree)
        "CUDA_VISIBLE_DEVICES": plan.cuda_visible_devices(),
        # num_gpu and num_ctx are exact already: llama-server's fit must not shrink anything else
        # (Ollama passes no --fit argument, so this environment variable takes effect)
        "LLAMA_ARG_FIT": "off",
    }
    if len(plan.gpus) > 1:  # server/sched.go selectLlamaServerPlacement: else one GPU if it fits
        computed["OLLAMA_SCHED_SPREAD"] = "1"
    if p.flash_attn in FLASH_ATTENTION:
        computed["OLLAMA_FLASH_ATTENTION"] = FLASH_ATTENTION[p.flash_attn]
    if s.keep_alive is not None:
        computed["OLLAMA_KEEP_ALIVE"] = env_text(s.keep_alive)
    if s.max_loaded_models is not None:
        computed["OLLAMA_MAX_LOADED_MODELS"] = str(s.max_loaded_models)
    env: dict[str, str] = {}
    for key, value in sorted(plan.dep.env.items()):
        if key not in OLLAMA_ENV:
            ctx.warnings.append(f"env {key} not written: Ollama does not read it ({OLLAMA_SOURCE})")
        elif key in computed and computed[key] != env_text(value):
            ctx.warnings.append(f"env {key}={env_text(value)} replaced by {computed[key]} (the plan's setting)")
            ctx.overridden.append((key, env_text(value), computed[key]))
        else:
            env[key] = env_text(value)
    env.update(computed)
    assert set(env) <= OLLAMA_ENV, sorted(set(env) - OLLAMA_ENV)
    return dict(sorted(env.items()))


def model_from(plan: Plan, ctx: Context) -> str:
    """FROM resolves a relative path against the Modelfile's folder (parser.go expandPath); the
    profile's is relative to the project root. `~/` and absolute paths are left to Ollama."""
    path = model_file(plan)
    if path.startswith(("/", "~")):
        return path
    return posixpath.normpath(posixpath.join(ctx.root, path))


def parameters(plan: Plan) -> list[tuple[str, str]]:
    p, s = plan.params, plan.dep.settings
    n_layers = plan.meta.n_layer + 1  # num_gpu counts the output layer, as -ngl does
    ngl = n_layers if p.n_gpu_layers < 0 else min(p.n_gpu_layers, n_layers)
    params = [
        ("num_ctx", str(p.n_ctx // p.n_seq_max)),  # per slot: Ollama multiplies by parallel
        ("num_gpu", str(ngl)),
        ("num_batch", str(p.n_batch)),
    ]
    if s.main_gpu is not None:  # Ollama turns main_gpu into --split-mode none: only when asked
        # the plan keeps that GPU alone (CUDA_VISIBLE_DEVICES), where it is GPU 0
        params.append(("main_gpu", str(p.main_gpu)))
    if s.load_mode == "none":
        params.append(("use_mmap", "false"))
    elif s.load_mode == "mmap":  # only when asked: a set use_mmap stops Ollama turning mmap off
        # itself (server/sched.go disableMmapDefaultReason, disableMmapForHostPressure skip it)
        params.append(("use_mmap", "true"))
    if s.threads:
        params.append(("num_thread", str(s.threads)))
    return params


def outputs(plan: Plan) -> dict[str, str]:
    return {
        "ollama.env.j2": "ollama.env",
        "override.conf.j2": "ollama.service.d/override.conf",
        "Modelfile.j2": "Modelfile",
    }


def data(plan: Plan, ctx: Context) -> dict:
    return {"env": server_env(plan, ctx), "from": model_from(plan, ctx), "parameters": parameters(plan), "ollama": PIN}
