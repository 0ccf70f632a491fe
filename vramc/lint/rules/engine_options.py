"""Engine rules (VR40x): settings and environment variables each engine does or does not take."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.engines import (
    ENGINES,
    LLAMA_SERVER_EXTRA_ENV,
    LLAMA_SERVER_REMOVED_ENV,
    OLLAMA_ENV,
    OLLAMA_MYTHS,
    OLLAMA_SOURCE,
)
from vramc.lint.registry import Finding, rule

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

ENGINE_SETTINGS = {e.name: e.settings for e in ENGINES.values()}
_WHY = {
    ("ollama", "tensor_split"): "Ollama has no way to pass a tensor split: llama-server splits the layers "
    "by the GPUs' free memory",
    ("ollama", "split_mode"): "Ollama sets the split mode itself (main_gpu implies split mode none)",
    ("ollama", "ubatch"): "Ollama passes -b num_batch -ub num_batch (llm/llama_server.go appendBatchArgs), "
    "so the micro-batch is always `batch`",
    ("ollama", "kv_unified"): "Ollama starts llama-server with an explicit -np, so the KV cache is never unified",
    ("llama-cpp-python", "parallel"): "llama_cpp.Llama serves one sequence at a time",
    ("llama-cpp-python", "kv_unified"): "llama_cpp.Llama has no unified KV option",
}


# Load modes an engine has no option for. Ollama's one load option is use_mmap (llm/llama_server.go
# appendLoadModeArgs: --load-mode none for use_mmap false, dio chosen by Ollama itself for an
# integrated GPU); llama_cpp.Llama has use_mmap and use_mlock, no direct I/O.
_NO_MLOCK = "Ollama has no mlock option (its only load option is use_mmap: load_mode none or auto)"
UNWRITABLE_LOAD_MODES = {
    ("ollama", "mlock"): _NO_MLOCK,
    ("ollama", "mmap+mlock"): _NO_MLOCK,
    ("ollama", "dio"): "Ollama chooses direct I/O itself, for an integrated GPU on Linux (llm/llama_server.go "
    "appendLoadModeArgs); a model option cannot ask for it",
    ("llama-cpp-python", "dio"): "llama_cpp.Llama has use_mmap and use_mlock, no direct I/O (it was loaded with mmap)",
}


@rule("VR400", "setting-ignored", Severity.WARNING)
def setting_ignored(plan: Plan):
    """A setting the engine does not have, so it would be silently ignored.

    Settings are shared by all engines in the profile format, but each engine takes only some of
    them (vLLM has no `gpu_layers`, Ollama cannot pass a `tensor_split`).

    Bad:
        engine: ollama
        settings: {tensor_split: [3, 1]}

    Good:
        engine: llama-server
        settings: {tensor_split: [3, 1]}
    """
    allowed = ENGINE_SETTINGS[plan.engine]
    for key in sorted(plan.dep.settings.model_fields_set):
        if key in allowed:
            continue
        if plan.engine == "llama-cpp-python" and key == "parallel" and plan.dep.settings.parallel in (1, "auto"):
            continue
        if key == "ctx_min" and plan.engine != "vllm":  # vramc's own: the floor of `ctx: auto`
            if "ctx" in plan.auto or plan.dep.settings.ctx == "auto":
                continue
            ctx = plan.dep.settings.ctx
            yield Finding(
                "ctx_min does nothing here: it is the smallest context `ctx: auto` may choose, and ctx is "
                + (f"{ctx}" if ctx is not None else f"left to {plan.engine}'s default"),
                ("settings", key),
                "remove it, or set ctx: auto",
            )
            continue
        why = _WHY.get((plan.engine, key), f"{plan.engine} has no such setting")
        yield Finding(
            f"{key} does nothing for {plan.engine}: {why}",
            ("settings", key),
            "remove it, or choose an engine that has it",
        )
    mode = plan.dep.settings.load_mode
    why = UNWRITABLE_LOAD_MODES.get((plan.engine, mode))
    if why is not None:
        # a value the engine has no option for: nothing was written, and the model loaded with mmap
        yield Finding(
            f"load_mode {mode} does nothing for {plan.engine}: {why}",
            ("settings", "load_mode"),
            "use a load_mode it has, or choose an engine that has this one",
        )


@rule("VR401", "unknown-env", Severity.ERROR)
def unknown_env(plan: Plan):
    """An environment variable the engine does not read (a made-up or misspelt name).

    The seeds' `OLLAMA_GPU_LAYERS=40` is the classic: Ollama never had it, so the setting did
    nothing and the "stable" config was the crashing one. GPU layers are per model in Ollama
    (`num_gpu` in the Modelfile), which vramc writes from `gpu_layers`. Another engine's variables
    do nothing either: `OLLAMA_*` outside Ollama, llama-server's `LLAMA_ARG_*` for
    llama-cpp-python (llama_cpp.Llama reads no options from the environment) or vLLM.

    Bad:
        engine: ollama
        env: {OLLAMA_GPU_LAYERS: 40}

    Good:
        engine: ollama
        settings: {gpu_layers: all}   # written as PARAMETER num_gpu in the Modelfile
    """
    env = plan.dep.env
    for key in sorted(env):
        if plan.engine != "ollama" and key.startswith("OLLAMA_"):
            yield Finding(
                f"{key} is read by Ollama, not by {plan.engine}",
                ("env", key),
                "remove it; set what it means under settings:",
            )
        elif plan.engine in ("llama-cpp-python", "vllm") and key.startswith("LLAMA_ARG_"):
            yield Finding(
                f"{key} is read by llama-server's options (common/arg.cpp), not by {plan.engine}",
                ("env", key),
                "remove it; set what it means under settings:",
            )
        elif plan.engine == "ollama":
            if key in OLLAMA_MYTHS:
                yield Finding(
                    f"{key} is not an Ollama variable: {OLLAMA_MYTHS[key]}",
                    ("env", key),
                    "remove it and use the profile setting named above",
                )
            elif key.startswith("OLLAMA_") and key not in OLLAMA_ENV:
                yield Finding(
                    f"{key} is not read by Ollama ({OLLAMA_SOURCE})",
                    ("env", key),
                    "check the name against `ollama serve --help`",
                )
        elif plan.engine == "llama-server":
            if key in LLAMA_SERVER_REMOVED_ENV:
                yield Finding(
                    f"{key} is no longer read by llama-server: {LLAMA_SERVER_REMOVED_ENV[key]}",
                    ("env", key),
                    "remove it and use the setting named above",
                )
            elif key.startswith("LLAMA_ARG_") and key not in _llama_server_env():
                import difflib

                near = difflib.get_close_matches(key, sorted(_llama_server_env()), n=1, cutoff=0.8)
                yield Finding(
                    f"{key} is not read by the pinned llama-server (no option of its --help names it)",
                    ("env", key),
                    f"did you mean {near[0]}?"
                    if near
                    else "check the name against `llama-server --help` (the env: of each option)",
                )
            elif key.startswith("LLAMA_") and not key.startswith("LLAMA_ARG_") and key not in LLAMA_SERVER_EXTRA_ENV:
                yield Finding(
                    f"{key} is not read by llama-server",
                    ("env", key),
                    "llama-server reads LLAMA_ARG_* options and LLAMA_API_KEY",
                )


# The profile setting that decides each variable the build computes (what to write instead).
_GPUS = "the hardware profile's `gpus:` (and the deployment's `gpus:` to use some of them)"
ENV_SETTING = {
    "CUDA_VISIBLE_DEVICES": _GPUS,
    "CUDA_DEVICE_ORDER": "nothing: vramc numbers GPUs as nvidia-smi does (PCI bus order)",
    "OLLAMA_HOST": "settings.host and settings.port",
    "OLLAMA_NUM_PARALLEL": "settings.parallel",
    "OLLAMA_KV_CACHE_TYPE": "settings.cache_type_k and settings.cache_type_v",
    "OLLAMA_FLASH_ATTENTION": "settings.flash_attn",
    "OLLAMA_KEEP_ALIVE": "settings.keep_alive",
    "OLLAMA_MAX_LOADED_MODELS": "settings.max_loaded_models",
    "OLLAMA_SCHED_SPREAD": _GPUS,
    "LLAMA_ARG_FIT": "nothing: vramc fits the model itself (`vramc fit`), llama-server's fit must stay off",
    "LLAMA_ARG_CTX_SIZE": "settings.ctx",
    "LLAMA_ARG_N_PARALLEL": "settings.parallel",
    "LLAMA_ARG_BATCH": "settings.batch",
    "LLAMA_ARG_UBATCH": "settings.ubatch",
    "LLAMA_ARG_N_GPU_LAYERS": "settings.gpu_layers",
    "LLAMA_ARG_SPLIT_MODE": "settings.split_mode",
    "LLAMA_ARG_TENSOR_SPLIT": "settings.tensor_split",
    "LLAMA_ARG_MAIN_GPU": "settings.main_gpu",
    "LLAMA_ARG_FLASH_ATTN": "settings.flash_attn",
    "LLAMA_ARG_CACHE_TYPE_K": "settings.cache_type_k",
    "LLAMA_ARG_CACHE_TYPE_V": "settings.cache_type_v",
    "LLAMA_ARG_N_CPU_MOE": "settings.n_cpu_moe",
    "LLAMA_ARG_THREADS": "settings.threads",
    "LLAMA_ARG_HOST": "settings.host",
    "LLAMA_ARG_PORT": "settings.port",
    "LLAMA_ARG_ALIAS": "settings.alias",
    "LLAMA_ARG_MODEL": "the model profile",
}


@rule("VR105", "env-overridden", Severity.WARNING)
def env_overridden(plan: Plan):
    """An `env:` variable that the build replaces with the plan's own value.

    vramc checks a deployment with the values of its settings and writes them into the launch
    artifacts, also as environment variables (llama-server's LLAMA_ARG_*, Ollama's OLLAMA_*,
    CUDA_VISIBLE_DEVICES). A different value under `env:` would contradict the plan, so the build
    replaces it, and the value written in the profile does nothing. Set the setting instead.

    Bad:
        engine: ollama
        settings: {parallel: 1}
        env: {OLLAMA_NUM_PARALLEL: 4}

    Good:
        engine: ollama
        settings: {parallel: 4}
    """
    if not plan.dep.env:  # most deployments: no need to render (and import) the build targets
        return
    from vramc.build.targets import overridden_env

    for key, mine, planned in overridden_env(plan):
        instead = ENV_SETTING.get(key, "the profile's settings (vramc computes it from the plan)")
        yield Finding(
            f"env {key}={mine} is replaced by {planned} when built (the value the plan was checked with)",
            ("env", key),
            f"remove {key} from env: and set {instead}"
            if not instead.startswith("nothing")
            else f"remove {key} from env: it needs {instead}",
        )


def _llama_server_env() -> frozenset[str]:
    """The LLAMA_ARG_* variables the pinned llama-server reads (each option's env= in its --help)."""
    from vramc.build.targets.llama_server import option_table

    return frozenset(e for e in option_table().values() if e)


@rule("VR404", "ollama-kv-types", Severity.ERROR)
def ollama_kv_types(plan: Plan):
    """Ollama applies one KV cache type to both K and V; different types cannot be expressed.

    `OLLAMA_KV_CACHE_TYPE` is global and sets `-ctk` and `-ctv` together.

    Bad:
        engine: ollama
        settings: {cache_type_k: q8_0, cache_type_v: f16}

    Good:
        engine: ollama
        settings: {cache_type_k: q8_0, cache_type_v: q8_0}
    """
    s = plan.dep.settings
    if plan.engine == "ollama" and (s.cache_type_k or "f16") != (s.cache_type_v or "f16"):
        yield Finding(
            f"cache_type_k {s.cache_type_k or 'f16'} and cache_type_v {s.cache_type_v or 'f16'} "
            "differ, but OLLAMA_KV_CACHE_TYPE sets both",
            ("settings", "cache_type_v"),
            "use the same type for both",
        )
