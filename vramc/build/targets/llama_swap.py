"""llama-swap serving several models (`engine: llama-swap` with `models:`, issue 14).

`config.yaml` for llama-swap (valid against its own config-schema.json, vendored in
vramc/data/llama-swap): each model's `cmd` is the llama-server command vramc renders for that
model's plan (the llama-server target's arguments), on 127.0.0.1 and llama-swap's `${PORT}`
macro, with its environment as `env`; `groups`, `ttl` and `globalTTL` as the profile says.
`launch.sh` starts llama-swap from the project root (where the models' relative paths resolve).

llama-swap replaces `${NAME}` macros anywhere in `cmd` and splits it as a POSIX shell would
(internal/config/commands.go SanitizeCommand, after dropping lines that start with `#`), without
running a shell: each argument is quoted, and a value holding `${` or a line break (which those
steps would change) is refused.
"""

from __future__ import annotations

from vramc.build.targets import llama_server
from vramc.build.targets.common import Context, TargetError

NAME = "llama-swap"
FOLDER = "llama_swap"
BINARY = "llama-swap"
VERSION = "v250"  # the llama-swap whose config-schema.json vramc/data/llama-swap holds


def _quote(value: object) -> str:
    from vramc.build.render import shquote

    text = shquote(value)
    if "${" in text or "\n" in text or "\r" in text:
        raise TargetError(
            f"{str(value)!r} cannot go into llama-swap's cmd: it would read `${{` as a "
            "macro and a line break as the end of a line"
        )
    return text


def model_entry(plan, ctx: Context) -> dict:
    d = llama_server.data(plan, ctx)
    args: list[str] = [_quote(d["binary"])]
    for line in d["lines"]:
        if line[0] == "--port":
            args += ["--port", "${PORT}"]  # llama-swap's macro: a free port from startPort up
        elif line[0] == "--host":
            args += ["--host", "127.0.0.1"]  # only llama-swap talks to it
        else:
            args += [_quote(v) for v in line]
    env = []
    for key, value in d["process_env"].items():
        if "\n" in str(value) or "\0" in str(value):
            raise TargetError(f"env {key} holds a line break, which llama-swap's env list cannot carry")
        env.append(f"{key}={value}")
    entry: dict = {"cmd": " ".join(args)}
    if env:
        entry["env"] = env
    if plan.dep.ttl is not None:
        entry["ttl"] = plan.dep.ttl
    return entry


def config(members, ctx: Context) -> dict:
    """llama-swap's config.yaml as data (the template lays it out as YAML)."""
    import json

    body = members[0].dep.doc.obj
    models = {}
    for p in members:
        from dataclasses import replace

        models[p.dep.tag] = model_entry(p, replace(ctx, plan=p))
    doc: dict = {}
    if body.ttl is not None:
        doc["globalTTL"] = body.ttl
    doc["models"] = models
    if body.groups:
        doc["groups"] = {
            name: {"swap": g.swap, "exclusive": g.exclusive, "persistent": g.persistent, "members": list(g.members)}
            for name, g in body.groups.items()
        }
    json.dumps(doc)  # plain data only
    return doc


def data(members, ctx: Context) -> dict:
    return {"config": config(members, ctx), "binary": BINARY, "version": VERSION, "listen": f"{ctx.host}:{ctx.port}"}


def outputs(plan) -> dict[str, str]:  # built through data(members, ctx) by the builder
    return {}
