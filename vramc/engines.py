"""Environment variables each engine actually reads, so a made-up one is caught before launch.

Sources: Ollama 0.32.15 (commit b7871fc, unchanged in 0.33.0-rc2) `envconfig/config.go` `AsMap`, on
Linux, with the device-visibility and llama-server pass-through variables it lists; the pinned llama-server
(llama.cpp 0c1e570, common/arg.cpp: every option's `set_env`, plus LLAMA_API_KEY).
"""

from __future__ import annotations

OLLAMA_SOURCE = "Ollama 0.32.15 envconfig/config.go"
OLLAMA_ENV = frozenset({
    "OLLAMA_HOST", "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_MAX_QUEUE",
    "OLLAMA_FLASH_ATTENTION", "OLLAMA_KV_CACHE_TYPE", "OLLAMA_GPU_OVERHEAD", "OLLAMA_SCHED_SPREAD",
    "OLLAMA_CONTEXT_LENGTH", "OLLAMA_KEEP_ALIVE", "OLLAMA_LOAD_TIMEOUT", "OLLAMA_MODELS",
    "OLLAMA_ORIGINS", "OLLAMA_DEBUG", "OLLAMA_NOPRUNE", "OLLAMA_LLM_LIBRARY", "OLLAMA_VULKAN",
    "OLLAMA_IGPU_ENABLE", "OLLAMA_NO_CLOUD", "OLLAMA_REMOTES", "OLLAMA_DEBUG_LOG_REQUESTS",
    "OLLAMA_GO_TEMPLATE", "OLLAMA_MAX_TRANSFER_STREAMS", "OLLAMA_EDITOR", "OLLAMA_NOHISTORY",
    "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL", "HSA_OVERRIDE_GFX_VERSION", "LLAMA_ARG_FIT", "LLAMA_ARG_FIT_TARGET",
    "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
})

# Names people use that Ollama never read, or no longer reads, and what does the job instead.
OLLAMA_MYTHS = {
    "OLLAMA_GPU_LAYERS": "Ollama has no such variable (a maintainer said so in ollama/ollama#9245); "
                        "GPU layers are per model: `gpu_layers` in the profile becomes "
                        "`PARAMETER num_gpu N` in the Modelfile (or options.num_gpu in the API)",
    "OLLAMA_GPU": "Ollama has no such variable; it uses every GPU it finds (limit them with "
                  "CUDA_VISIBLE_DEVICES)",
    "OLLAMA_ORIGIN": "a typo: the variable is OLLAMA_ORIGINS",
    "OLLAMA_NEW_ENGINE": "removed in Ollama 0.30, which always launches llama-server",
    "OLLAMA_NUM_CTX": "Ollama has no such variable: use OLLAMA_CONTEXT_LENGTH, or `ctx` in the "
                      "profile (num_ctx in the Modelfile)",
    "OLLAMA_NUM_GPU": "Ollama has no such variable: `gpu_layers` in the profile becomes num_gpu in "
                      "the Modelfile",
}

# The pinned llama-server reads these besides its LLAMA_ARG_* options; removed options' variables
# are silently ignored, which is worse than an error.
LLAMA_SERVER_EXTRA_ENV = frozenset({
    "LLAMA_API_KEY", "CUDA_VISIBLE_DEVICES", "GGML_CUDA_ENABLE_UNIFIED_MEMORY",
    "GGML_SCHED_MAX_COPIES", "LLAMA_CACHE", "HF_TOKEN",
})
LLAMA_SERVER_REMOVED_ENV = {
    "LLAMA_ARG_NO_MMAP": "removed with --no-mmap: use `load_mode: none` (--load-mode none)",
    "LLAMA_ARG_MLOCK": "removed with --mlock: use `load_mode: mmap+mlock` (--load-mode mmap+mlock)",
    "LLAMA_ARG_MMAP": "removed with --mmap: use `load_mode: mmap`",
    "LLAMA_ARG_DIO": "removed with --direct-io: use `load_mode: dio`",
}
