"""systemd: one service unit per deployment, `vramc-NAME.service`, running the engine's command.

The engine target says what to run (`service(plan, ctx)`: argument lines with the program first,
environment, whether memory is locked); this target wraps it in a unit with a restart policy,
network-online ordering, the plan's CUDA_VISIBLE_DEVICES and hardening that leaves CUDA working.
Ollama has its own unit (ollama.service); its target writes a drop-in instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramc.build.targets.common import Context

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

NAME = "systemd"
FOLDER = "systemd"


def unit_name(plan: Plan) -> str:
    return f"vramc-{plan.dep.name}.service"


def outputs(plan: Plan) -> dict[str, str]:
    # A variant replaces its deployment on the machine, so it installs under the same unit name.
    return {"unit.service.j2": unit_name(plan)}


def data(plan: Plan, ctx: Context) -> dict:
    from vramc.build.targets import ENGINE_TARGET

    svc = ENGINE_TARGET[plan.engine].service(plan, ctx)
    return {"unit": unit_name(plan), **svc}
