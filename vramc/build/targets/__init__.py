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


def overridden_env(plan) -> list[tuple[str, str, str]]:
    """(key, the profile's value, the plan's) for each `env:` variable the build would replace
    with the value the plan was checked with: the engine target's own environment code, run
    without writing anything, so that `check` and `build` cannot disagree."""
    from vramc.build.targets.common import Context, TargetError, port_of

    if not plan.dep.env:
        return []
    if ENGINES[plan.engine].family == "llama" and plan.params is None:  # not planned: nothing to build from
        return []
    ctx = Context(plan=plan, port=port_of(plan, {}), profile="", command="", root=".", folder=".")
    try:
        ENGINE_TARGET[plan.engine].data(plan, ctx)
    except TargetError:  # not buildable as it is (no model file): the build says why
        return []
    return list({key: (key, mine, planned) for key, mine, planned in ctx.overridden}.values())
