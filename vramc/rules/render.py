"""Render rules (VR40x): values that cannot be written into launch artifacts safely.

`vramc build` quotes every value for the file it goes into (vramc.render); these rules catch, at
`check` time, the values for which no quoting exists, so a profile never reaches a build that
would have to refuse it.
"""

from __future__ import annotations

import re

from vramc.diagnostics import Severity
from vramc.lint import Finding, rule

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: `$` also matches before a final newline


def _control(text: str) -> str | None:
    m = _CONTROL.search(text)
    if m is None:
        return None
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}
    return names.get(m.group(), f"the control character {m.group()!r}")


def _values(plan):
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


@rule("VR403", "unsafe-value", Severity.ERROR)
def unsafe_value(plan):
    """A value that cannot be written into a launch script, unit or env file safely.

    `vramc build` quotes paths and names for the shell, for systemd and for env files, so spaces,
    quotes, `$()`, backticks and `%` are all fine. Some values have no safe form at all: a newline
    (or another control character) would end the line of a unit or env file, an environment
    variable name must be a name, a comma inside an `override_tensor` pattern would split it in
    two (llama-server takes a comma-separated list), and a GPU uuid with a comma would add a
    device to CUDA_VISIBLE_DEVICES. Engine-specific: an Ollama Modelfile cannot quote `\"\"\"`,
    and vLLM's config file hands values to its parser as separate arguments, where a leading `-`
    reads as an option.

    Bad:
        model: {gguf: "models/qwen.gguf\\nExecStartPre=/bin/sh -c id"}
        env: {"LLAMA ARG": "1"}

    Good:
        model: {gguf: "models/my model's (v2) $weights.gguf"}
        env: {LLAMA_ARG_THREADS: 8}
    """
    f = plan.dep.doc.path.as_posix()
    if (what := _control(f)) is not None:
        yield Finding(f"the profile's file name contains {what}, and artifacts name their profile",
                      ("name",), "rename the file")
    for what, value, target, path in _values(plan):
        if (bad := _control(value)) is not None:
            yield Finding(f"{what} {value!r} contains {bad}: no quoting can carry it into a unit "
                          "or env file", path, "remove it", target)
        elif what.startswith("env ") and not _ENV_NAME.match(what[4:]):
            yield Finding(f"{what[4:]!r} is not an environment variable name (letters, digits, _)",
                          path, "rename it", target)
        elif what == "override_tensor" and "," in value.rpartition("=")[0]:
            yield Finding(f"override_tensor {value!r}: llama-server splits the list at commas, "
                          "which would cut this pattern in two", path,
                          "write the pattern without a comma (use [] or |)", target)
        elif what == "GPU uuid" and "," in value:
            yield Finding(f"GPU uuid {value!r} contains a comma, which would add a device to "
                          "CUDA_VISIBLE_DEVICES", path, "copy the uuid from `vramc detect`", target)
        elif plan.engine == "ollama" and what == "model gguf" and '"""' in value:
            yield Finding(f'model path {value!r} contains """, which a Modelfile cannot quote', path,
                          "rename the file", target)
        elif plan.engine == "vllm" and what in ("host", "alias") and value.startswith("-"):
            yield Finding(f"{what} {value!r} starts with '-': vLLM's --config loader passes it "
                          "as an argument of its own, which its parser reads as an option", path,
                          "choose a value that does not start with '-'", target)


@rule("VR405", "port-conflict", Severity.ERROR, "group")
def port_conflict(plans):
    """Deployments that run on one machine ask for the same port.

    Every deployment of a `deployments:` file runs at the same time on the file's hardware; only
    one process can listen on a port. `vramc build` gives deployments without a `port` distinct
    ones (the engine's default, or the next free one); two explicit equal ports are an error.

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
    for plan in plans:
        if plan.dep.settings.port is not None:
            by_port.setdefault(plan.dep.settings.port, []).append(plan)
    for port, same in sorted(by_port.items()):
        if len(same) < 2:
            continue
        names = ", ".join(p.dep.label for p in same)
        for plan in same:
            yield plan, Finding(f"port {port} is used by {names} on the same machine",
                                ("settings", "port"), "give each deployment its own port")
