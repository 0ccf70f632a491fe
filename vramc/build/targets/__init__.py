"""Launch artifacts, one module per target (pre-commit's languages pattern: an explicit registry).

A target module has NAME, FOLDER (its templates' folder under templates/), `outputs(plan)` (template
file in FOLDER -> output path in the deployment's folder) and `data(plan, ctx)` (the plain values
its templates lay out). Engine targets also have `service(plan, ctx)` for the systemd unit.
"""

from __future__ import annotations

from vramc.build.targets import llama_cpp_python, llama_server, llama_swap, ollama, systemd, vllm
from vramc.engines import ENGINES

TARGETS = {m.NAME: m for m in (llama_server, llama_cpp_python, ollama, vllm, systemd, llama_swap)}

# Every target built for a deployment of each engine (its registry entry), and the one that starts it.
ENGINE_TARGETS = {e.name: e.targets for e in ENGINES.values()}
ENGINE_TARGET = {name: TARGETS[targets[0]] for name, targets in ENGINE_TARGETS.items()}
