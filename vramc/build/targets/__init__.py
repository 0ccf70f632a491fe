"""Launch artifacts, one module per target (pre-commit's languages pattern: an explicit registry).

A target module has NAME, FOLDER (its templates' folder under templates/), `outputs(plan)` (template
file in FOLDER -> output path in the deployment's folder) and `data(plan, ctx)` (the plain values
its templates lay out). Engine targets also have `service(plan, ctx)` for the systemd unit.
"""

from __future__ import annotations

from vramc.build.targets import llama_cpp_python, llama_server, ollama, systemd, vllm

TARGETS = {m.NAME: m for m in (llama_server, llama_cpp_python, ollama, vllm, systemd)}

# The target that starts each engine, and every target built for a deployment of that engine.
ENGINE_TARGET = {"llama-server": llama_server, "llama-cpp-python": llama_cpp_python,
                 "ollama": ollama, "vllm": vllm}
ENGINE_TARGETS = {
    "llama-server": ("llama-server", "systemd"),
    "llama-cpp-python": ("llama-cpp-python", "systemd"),
    "ollama": ("ollama",),  # Ollama's own ollama.service gets a drop-in, not a unit of ours
    "vllm": ("vllm", "systemd"),
}
