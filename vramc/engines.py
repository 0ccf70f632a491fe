"""The engines vramc plans for, one `Engine` each: its defaults, the settings it takes, the
environment it reads, the targets that launch it and whether `vramc run` can load it. The profile
schema (the `engine:` values), the lint rules, the build and `vramc run` take what they need from
here, so adding an engine starts with one entry in ENGINES (docs/architecture.md lists the rest).
Kept free of imports: `vramc check` loads it with the schema.

Environment variables each engine actually reads, so a made-up one is caught before launch.
Sources: Ollama 0.32.15 (commit b7871fc, unchanged in 0.33.0-rc2) `envconfig/config.go` `AsMap`, on
Linux, with the device-visibility and llama-server pass-through variables it lists; the pinned llama-server
(llama.cpp 0c1e570, common/arg.cpp: every option's `set_env`, plus LLAMA_API_KEY).
"""

from __future__ import annotations

from dataclasses import dataclass

OLLAMA_SOURCE = "Ollama 0.32.15 envconfig/config.go"
OLLAMA_ENV = frozenset(
    {
        "OLLAMA_HOST",
        "OLLAMA_NUM_PARALLEL",
        "OLLAMA_MAX_LOADED_MODELS",
        "OLLAMA_MAX_QUEUE",
        "OLLAMA_FLASH_ATTENTION",
        "OLLAMA_KV_CACHE_TYPE",
        "OLLAMA_GPU_OVERHEAD",
        "OLLAMA_SCHED_SPREAD",
        "OLLAMA_CONTEXT_LENGTH",
        "OLLAMA_KEEP_ALIVE",
        "OLLAMA_LOAD_TIMEOUT",
        "OLLAMA_MODELS",
        "OLLAMA_ORIGINS",
        "OLLAMA_DEBUG",
        "OLLAMA_NOPRUNE",
        "OLLAMA_LLM_LIBRARY",
        "OLLAMA_VULKAN",
        "OLLAMA_IGPU_ENABLE",
        "OLLAMA_NO_CLOUD",
        "OLLAMA_REMOTES",
        "OLLAMA_DEBUG_LOG_REQUESTS",
        "OLLAMA_GO_TEMPLATE",
        "OLLAMA_MAX_TRANSFER_STREAMS",
        "OLLAMA_EDITOR",
        "OLLAMA_NOHISTORY",
        "CUDA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "GGML_VK_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "HSA_OVERRIDE_GFX_VERSION",
        "LLAMA_ARG_FIT",
        "LLAMA_ARG_FIT_TARGET",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
    }
)

# Names people use that Ollama never read, or no longer reads, and what does the job instead.
OLLAMA_MYTHS = {
    "OLLAMA_GPU_LAYERS": "Ollama has no such variable (a maintainer said so in ollama/ollama#9245); "
    "GPU layers are per model: `gpu_layers` in the profile becomes "
    "`PARAMETER num_gpu N` in the Modelfile (or options.num_gpu in the API)",
    "OLLAMA_GPU": "Ollama has no such variable; it uses every GPU it finds (limit them with CUDA_VISIBLE_DEVICES)",
    "OLLAMA_ORIGIN": "a typo: the variable is OLLAMA_ORIGINS",
    "OLLAMA_NEW_ENGINE": "removed in Ollama 0.30, which always launches llama-server",
    "OLLAMA_NUM_CTX": "Ollama has no such variable: use OLLAMA_CONTEXT_LENGTH, or `ctx` in the "
    "profile (num_ctx in the Modelfile)",
    "OLLAMA_NUM_GPU": "Ollama has no such variable: `gpu_layers` in the profile becomes num_gpu in the Modelfile",
}

# The pinned llama-server reads these besides its LLAMA_ARG_* options; removed options' variables
# are silently ignored, which is worse than an error.
LLAMA_SERVER_EXTRA_ENV = frozenset(
    {
        "LLAMA_API_KEY",
        "CUDA_VISIBLE_DEVICES",
        "GGML_CUDA_ENABLE_UNIFIED_MEMORY",
        "GGML_SCHED_MAX_COPIES",
        "LLAMA_CACHE",
        "HF_TOKEN",
    }
)
LLAMA_SERVER_REMOVED_ENV = {
    "LLAMA_ARG_NO_MMAP": "removed with --no-mmap: use `load_mode: none` (--load-mode none)",
    "LLAMA_ARG_MLOCK": "removed with --mlock: use `load_mode: mmap+mlock` (--load-mode mmap+mlock)",
    "LLAMA_ARG_MMAP": "removed with --mmap: use `load_mode: mmap`",
    "LLAMA_ARG_DIO": "removed with --direct-io: use `load_mode: dio`",
}


@dataclass(frozen=True)
class EngineDefaults:
    """What a llama.cpp-family engine does with a setting the profile leaves out."""

    ctx: int | str  # int, "auto" (chosen to fit) or "vram-tier" (Ollama's default by VRAM)
    parallel: int
    kv_unified: bool  # when parallel is left to the engine
    batch: int
    ubatch: int
    gpu_layers: int | str  # int, "all" or "auto"
    flash_attn: str
    cache_type: str
    port: int


@dataclass(frozen=True)
class Engine:
    name: str  # the profile's `engine:` value
    family: str  # the memory model that plans it: "llama" (vramc.memory.llama) or "vllm" (vramc.memory.vllm)
    defaults: EngineDefaults | None  # llama family; vLLM's are in vramc.memory.vllm (EngineArgs)
    settings: frozenset[str]  # the `settings:` keys it takes (VR400 reports the others)
    targets: tuple[str, ...]  # the build targets made for it (vramc.build.targets); the first starts it
    article: str  # how a message names one of its deployments: "a llama-server"
    run_refusal: str | None  # why `vramc run` cannot load it in-process; None: it can
    # why a deployment of it cannot span several machines (`hosts:`, VR118); None: it can
    hosts_refusal: str | None = None


_COMMON = frozenset({"host", "port", "device_order", "alias"})
_LLAMA = _COMMON | {
    "ctx",
    "batch",
    "ubatch",
    "gpu_layers",
    "split_mode",
    "tensor_split",
    "main_gpu",
    "flash_attn",
    "cache_type_k",
    "cache_type_v",
    "kv_offload",
    "swa_full",
    "load_mode",
    "threads",
}

ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "llama-server",
            "llama",
            # -c 0 (trained context) and -ngl auto, both shrunk by --fit (on by default);
            # -np -1 means 4 slots sharing one unified KV cache (tools/server/server.cpp).
            EngineDefaults("auto", 4, True, 2048, 512, "auto", "auto", "f16", 8080),
            _LLAMA | {"parallel", "kv_unified", "override_tensor", "cpu_moe", "n_cpu_moe", "api_key_file"},
            ("llama-server", "systemd"),
            "a llama-server",
            "its slots (parallel), logits reservation and HTTP API differ from llama_cpp.Llama's, "
            "so the plan would not describe what runs",
        ),
        Engine(
            "llama-cpp-python",
            "llama",
            # llama_cpp.Llama(): n_ctx 512, n_batch 512, n_gpu_layers 0 (CPU only!), flash_attn False.
            EngineDefaults(512, 1, False, 512, 512, 0, "off", "f16", 8000),
            _LLAMA | {"api_key_file"},
            ("llama-cpp-python", "systemd"),
            "a llama-cpp-python",
            None,
            # llama_cpp.Llama (0.3.36) takes no rpc_servers: the RPC devices cannot be reached
            "llama-cpp-python 0.3.36's Llama() takes no RPC servers (it has no rpc_servers parameter)",
        ),
        Engine(
            "ollama",
            "llama",
            # Ollama: num_ctx from OLLAMA_CONTEXT_LENGTH (0: by VRAM), OLLAMA_NUM_PARALLEL 1,
            # num_gpu -1 = llama-server's fit, num_batch 512 (api.DefaultOptions; unset, the scheduler
            # replaces it: ollama_sched.automatic_generation_batch), flash attention auto.
            EngineDefaults("vram-tier", 1, False, 512, 512, "auto", "auto", "f16", 11434),
            _COMMON
            | {
                "ctx",
                "parallel",
                "batch",
                "gpu_layers",
                "main_gpu",
                "flash_attn",
                "cache_type_k",
                "cache_type_v",
                "load_mode",
                "threads",
                "keep_alive",
                "max_loaded_models",
            },
            ("ollama",),  # Ollama's own ollama.service gets a drop-in, not a unit of ours
            "an Ollama",
            "Ollama starts llama-server with its own slots and context (num_ctx x num_parallel), "
            "which llama_cpp.Llama cannot reproduce",
            "Ollama's scheduler places models on the GPUs of its own machine only (it starts llama-server without --rpc)",
        ),
        Engine(
            "vllm",
            "vllm",
            None,
            _COMMON
            | {
                "gpu_memory_utilization",
                "max_model_len",
                "max_num_seqs",
                "max_num_batched_tokens",
                "kv_cache_dtype",
                "tensor_parallel_size",
                "pipeline_parallel_size",
                "distributed_executor_backend",
                "master_port",
                "cpu_offload_gb",
                "enforce_eager",
                "block_size",
                "dtype",
                "api_key_file",
                "kv_cache_memory_bytes",
            },
            ("vllm", "systemd"),
            "a vLLM",
            "vLLM is a different engine (PyTorch, safetensors), not llama.cpp",
        ),
        Engine(
            # llama-swap (issue 14) starts llama-server commands on demand, one per model of its
            # `models:`; each model is planned as the llama-server it starts. Its own port: --listen.
            "llama-swap",
            "llama",
            EngineDefaults("auto", 4, True, 2048, 512, "auto", "auto", "f16", 8080),
            _LLAMA | {"parallel", "kv_unified", "override_tensor", "cpu_moe", "n_cpu_moe", "api_key_file"},
            ("llama-swap",),
            "a llama-swap",
            "llama-swap runs llama-server processes, not llama_cpp.Llama",
            "llama-swap starts one llama-server per model on demand; vramc plans each on this machine only",
        ),
    )
}
