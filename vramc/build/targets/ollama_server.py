"""Ollama serving several models from one server (`models:`, issue 14).

One server: its environment (`ollama.env` and the drop-in `ollama.service.d/override.conf`, from
the `ollama` target, since OLLAMA_* variables belong to the server); one Modelfile per model
(`NAME.Modelfile`, the `ollama` target's parameters for that model's plan) and `create-models.sh`,
which creates each model's tag with `ollama create TAG -f NAME.Modelfile`.
"""

from __future__ import annotations

from vramc.build.targets import ollama
from vramc.build.targets.common import Context
from vramc.plan.ollama_sched import PIN

NAME = "ollama-server"
FOLDER = "ollama_server"


def modelfile(plan) -> str:
    return f"{_member_name(plan)}.Modelfile"


def _member_name(plan) -> str:
    # the model's `name` in `models:` (the deployment's name is SERVER.NAME)
    return plan.dep.name[len(plan.dep.server) + 1 :]


def server_env(members, ctx: Context) -> dict[str, str]:
    """The server's environment, from its first model's plan: every setting in it is the server's
    (the loader refuses one set per model, VR343); the number of sequences is the largest any
    model gets, since Ollama forces 1 on some (embedding models) whatever the server says."""
    env = ollama.server_env(members[0], ctx)
    s = members[0].dep.settings
    env["OLLAMA_NUM_PARALLEL"] = (
        str(s.parallel) if isinstance(s.parallel, int) else str(max(p.params.n_seq_max for p in members))
    )
    return env


def model_data(plan, ctx: Context) -> dict:
    return {
        "from": ollama.model_from(plan, ctx),
        "parameters": ollama.parameters(plan),
        "tag": plan.dep.tag,
        "file": modelfile(plan),
        "ollama": PIN,
    }


def outputs(members) -> dict[str, str]:
    return {"create-models.sh.j2": "create-models.sh"}


def data(members, ctx: Context) -> dict:
    return {"models": [{"tag": p.dep.tag, "file": modelfile(p)} for p in members], "ollama": PIN}
