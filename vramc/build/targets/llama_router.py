"""llama-server's router mode serving several models (`engine: llama-server` with `models:`,
issue 14).

`models.ini` is the `--models-preset` file: one section per model, named by its tag, holding the
llama-server options vramc renders for that model's plan (the llama-server target's arguments,
as `key = value` with the option's long name; a negated flag as `no-NAME = true`), less the
address and alias, which the router sets for each child (tools/server/server-models.cpp
`server_model_meta::update_args`). `launch.sh` starts the router from the project root with
`--models-preset`, `--models-max` and the server's address.

The pinned llama.cpp reads an INI value as the rest of the line up to a `;` or `#` after a space
or tab (common/preset.cpp `parse_ini_from_file`), with no quoting: a value that such a reader
would cut or change is refused.
"""

from __future__ import annotations

import re

from vramc.build.targets import llama_server
from vramc.build.targets.common import Context, TargetError

NAME = "llama-router"
FOLDER = "llama_router"
ROUTER_SET = {"--host", "--port", "--alias"}  # server-models.cpp update_args sets these per child


def _value(value: object) -> str:
    text = str(value)
    if text != text.strip() or not text or re.search(r"[ \t][;#]|^[;#]|[\r\n\0]", text):
        raise TargetError(
            f"{text!r} cannot be an INI value of llama-server's --models-preset: it "
            "reads a value up to ' ;' or ' #' and a line break, without quoting"
        )
    return text


def preset(plan, ctx: Context) -> list[tuple[str, str]]:
    d = llama_server.data(plan, ctx)
    out = []
    for line in d["lines"]:
        if line[0] in ROUTER_SET:
            continue
        key = line[0].lstrip("-")
        out.append((key, "true") if len(line) == 1 else (key, _value(line[1])))
    return out


def data(members, ctx: Context) -> dict:
    from dataclasses import replace

    env = llama_server.data(members[0], ctx)["process_env"]  # the GPUs: the server's, for every child
    models_max = members[0].dep.models_max
    return {
        "models": [{"name": p.dep.tag, "options": preset(p, replace(ctx, plan=p))} for p in members],
        "env": env,
        "binary": llama_server.BINARY,
        "host": ctx.host,
        "port": ctx.port,
        "models_max": 4 if models_max is None else models_max,
    }


def outputs(plan) -> dict[str, str]:  # built through data(members, ctx) by the builder
    return {}
