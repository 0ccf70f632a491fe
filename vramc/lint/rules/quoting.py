"""Render rules (VR40x): values that cannot be written into launch artifacts safely.

`vramc build` quotes every value for the file it goes into (vramc.build.render); these rules catch, at
`check` time, the values for which no quoting exists, so a profile never reaches a build that
would have to refuse it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: `$` also matches before a final newline


def _control(text: str, spaces: bool = False) -> str | None:
    """What unsafe character `text` holds and where (vramc.build.render.unsafe_char), or None."""
    from vramc.build.render import describe_char, unsafe_char

    found = unsafe_char(text, spaces)
    if found is None:
        return None
    i, ch = found
    return f"{describe_char(ch)} at character {i + 1}"


def _values(plan: Plan):
    """(what, value, finding target, path) for every profile value that reaches an artifact."""
    dep = plan.dep
    s = dep.settings
    m = dep.model.obj
    for key in ("host", "alias", "api_key_file", "keep_alive"):
        value = getattr(s, key)
        if isinstance(value, str):
            yield key, value, "deployment", ("settings", key)
    for i, spec in enumerate(s.override_tensor or []):
        yield "override_tensor", spec, "deployment", ("settings", "override_tensor", i)
    for key in ("gguf", "hf"):
        if getattr(m, key):
            yield f"model {key}", getattr(m, key), "model", (key,)
    for key, value in dep.env.items():
        yield f"env {key}", str(value), "deployment", ("env", key)
    for i, g in enumerate(dep.hardware.obj.gpus):
        if g.uuid:
            yield "GPU uuid", g.uuid, "hardware", ("gpus", i, "uuid")
    # the GPUs an rpc-server serves: their names go into its script's and unit's comments, their
    # uuids into its CUDA_VISIBLE_DEVICES (vramc.build.targets.rpc_server)
    from vramc.plan.rpc import spans

    hosts = [h.name for h in dep.hardware.obj.hosts]
    for span in spans(dep):
        j = hosts.index(span.name)
        for i in span.gpus:
            g = span.host.gpus[i]
            yield "GPU name", g.name, "hardware", ("hosts", j, "gpus", i, "name")
            if g.uuid:
                yield "GPU uuid", g.uuid, "hardware", ("hosts", j, "gpus", i, "uuid")
    # a vLLM node's GPU uuids go into its CUDA_VISIBLE_DEVICES (vramc.plan.vllm_nodes.visible_devices)
    from vramc.plan import vllm_nodes

    for span in vllm_nodes.spans(dep):
        j = hosts.index(span.name)
        for i in span.gpus:
            g = span.host.gpus[i]
            if g.uuid:
                yield "GPU uuid", g.uuid, "hardware", ("hosts", j, "gpus", i, "uuid")


@rule("VR403", "unsafe-value", Severity.ERROR)
def unsafe_value(plan: Plan):
    """A value that cannot be written into a launch script, unit or env file safely.

    `vramc build` quotes paths and names for the shell, for systemd and for env files, so spaces,
    quotes, `$()`, backticks and `%` are all fine. Some values have no safe form at all: a newline
    (or another control character) would end the line of a unit or env file; YAML also breaks
    lines at U+0085, U+2028 and U+2029, so such a value (or profile file name, which every
    artifact's header names) would add keys to a YAML config; bidi overrides, zero-width and other
    invisible characters make a file say something else than it shows. Any character that is not
    printable is refused (Unicode categories Cc, Cf, Zl, Zp, Co, Cs, Cn), in values, in the
    profile's file name and in variant names; for Ollama, a model path may not hold a space other
    than U+0020 either (Ollama's Modelfile parser drops them, and would open another file).
    An environment variable name must be a name, a comma inside an `override_tensor` pattern
    would split it in two (llama-server takes a comma-separated list), and a GPU uuid with a comma
    would add a device to CUDA_VISIBLE_DEVICES. Engine-specific: an Ollama Modelfile cannot quote
    `\"\"\"`, and vLLM's config file hands values to its parser as separate arguments, where a
    leading `-` reads as an option.

    Bad:
        model: {gguf: "models/qwen.gguf\\nExecStartPre=/bin/sh -c id"}
        env: {"LLAMA ARG": "1"}

    Good:
        model: {gguf: "models/my model's (v2) $weights.gguf"}
        env: {LLAMA_ARG_THREADS: 8}
    """
    f = plan.dep.doc.path.as_posix()
    if plan.dep.project_root is not None:  # what the artifacts' headers name
        f = Path(os.path.relpath(plan.dep.doc.path, plan.dep.project_root)).as_posix()
    if (what := _control(f)) is not None:
        yield Finding(
            f"the profile's file name {f!r} contains {what}, and every artifact names its profile",
            ("name",),
            "rename the file",
        )
    if plan.dep.variant is not None and (what := _control(plan.dep.variant)) is not None:
        yield Finding(
            f"variant name {plan.dep.variant!r} contains {what}", ("variants", plan.dep.variant), "rename the variant"
        )
    for what, value, target, path in _values(plan):
        spaces = plan.engine == "ollama" and what == "model gguf"  # Modelfile FROM
        if (bad := _control(value, spaces)) is not None:
            yield Finding(
                f"{what} {value!r} contains {bad}: no quoting can carry it into every "
                "artifact (units, env files, YAML, Modelfile)",
                path,
                "remove it",
                target,
            )
        elif what.startswith("env ") and not _ENV_NAME.match(what[4:]):
            yield Finding(
                f"{what[4:]!r} is not an environment variable name (letters, digits, _)", path, "rename it", target
            )
        elif what == "override_tensor" and "," in value.rpartition("=")[0]:
            yield Finding(
                f"override_tensor {value!r}: llama-server splits the list at commas, "
                "which would cut this pattern in two",
                path,
                "write the pattern without a comma (use [] or |)",
                target,
            )
        elif what == "GPU uuid" and "," in value:
            yield Finding(
                f"GPU uuid {value!r} contains a comma, which would add a device to CUDA_VISIBLE_DEVICES",
                path,
                "copy the uuid from `vramc detect`",
                target,
            )
        elif plan.engine == "ollama" and what == "model gguf" and '"""' in value:
            yield Finding(
                f'model path {value!r} contains """, which a Modelfile cannot quote', path, "rename the file", target
            )
        elif plan.engine == "vllm" and what in ("host", "alias") and value.startswith("-"):
            yield Finding(
                f"{what} {value!r} starts with '-': vLLM's --config loader passes it "
                "as an argument of its own, which its parser reads as an option",
                path,
                "choose a value that does not start with '-'",
                target,
            )


@rule("VR405", "port-conflict", Severity.ERROR, "group")
def port_conflict(plans):
    """Deployments that run on one machine ask for the same port.

    Every deployment of a `deployments:` file runs at the same time on the file's hardware; only
    one process can listen on a port. `vramc build` gives deployments without a `port` distinct
    ones (the engine's default, or the next free one); two explicit equal ports are an error.
    The same holds for the rpc-servers the deployments start on other machines (`hosts:`): each
    deployment's build writes its own rpc-server unit, and two on one host and port cannot both
    listen (an rpc-server also serves one llama-server at a time). vLLM across machines listens
    here too: the mp backend's rendezvous on `master_port` (default 29501), Ray's head on 6379;
    two such deployments need distinct `master_port`s, and only one can start the Ray head.

    Bad:
        deployments:
          - {name: chat, engine: vllm, settings: {port: 8000, gpu_memory_utilization: 0.45}}
          - {name: coder, engine: vllm, settings: {port: 8000, gpu_memory_utilization: 0.45}}

    Good:
        deployments:
          - {name: chat, engine: vllm, settings: {port: 8000, gpu_memory_utilization: 0.45}}
          - {name: coder, engine: vllm, settings: {port: 8001, gpu_memory_utilization: 0.45}}
    """
    by_port: dict[int, list] = {}
    servers: set = set()
    for plan in plans:
        if plan.dep.server is not None:  # a server's models (issue 14) share its one port
            if plan.dep.server in servers:
                continue
            servers.add(plan.dep.server)
        if plan.dep.settings.port is not None:
            by_port.setdefault(plan.dep.settings.port, []).append(plan)
    for port, same in sorted(by_port.items()):
        if len(same) < 2:
            continue
        names = ", ".join(p.dep.label for p in same)
        for plan in same:
            yield (
                plan,
                Finding(
                    f"port {port} is used by {names} on the same machine",
                    ("settings", "port"),
                    "give each deployment its own port",
                ),
            )
    from vramc.plan.rpc import spans

    by_endpoint: dict[tuple[str, int], list] = {}
    for plan in plans:
        for span in spans(plan.dep):  # one deployment's own clashes are VR119
            by_endpoint.setdefault((span.address, span.port), []).append((plan, span))
    for (address, port), users in sorted(by_endpoint.items()):
        if len(users) < 2:
            continue
        names = ", ".join(p.dep.label for p, _ in users)
        for plan, span in users:
            raw = plan.dep.doc.raw.get("hosts", []) if isinstance(plan.dep.doc.raw, dict) else []
            entry = raw[span.position] if span.position < len(raw) else None
            where = ("hosts", span.position) + (("port",) if isinstance(entry, dict) and "port" in entry else ())
            yield (
                plan,
                Finding(
                    f"the rpc-server on host {span.name} ({address}) port {port} is started by {names}, "
                    "which run together: only one can listen there",
                    where,
                    f"give the rpc-servers on {span.name} distinct ports (e.g. port: {port + 1} in the hosts: entry "
                    "of all but one of them)",
                ),
            )
    # vLLM across machines (issue 17): this machine is node rank 0 of each, and listens for the
    # other nodes: the mp backend's TCPStore on --master-port, or the Ray head's GCS
    from vramc.plan.vllm_nodes import MASTER_PORT, RAY_PORT

    by_head: dict[tuple[str, int], list] = {}
    for plan in plans:
        r = plan.estimate.resolved if plan.estimate is not None else {}
        if r.get("nnodes", 1) > 1:
            ray = r.get("distributed_executor_backend") == "ray"
            port = RAY_PORT if ray else plan.dep.settings.master_port or MASTER_PORT
            by_head.setdefault(("ray" if ray else "mp", port), []).append(plan)
    for (backend, port), same in sorted(by_head.items()):
        if len(same) < 2:
            continue
        names = ", ".join(p.dep.label for p in same)
        for plan in same:
            if backend == "ray":
                msg = f"{names} each start a Ray head on this machine's port {port}: the second cannot"
                hint = "run one of them with distributed_executor_backend: mp (and its own master_port)"
            else:
                msg = f"{names} each listen on this machine's port {port} for their other nodes (vLLM's --master-port)"
                hint = f"give each its own master_port (e.g. master_port: {port + 1})"
            set_here = "master_port" in plan.dep.settings.model_fields_set
            where = ("settings", "master_port") if backend == "mp" and set_here else ("hosts",)
            yield plan, Finding(msg, where, hint)
