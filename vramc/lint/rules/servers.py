"""Servers that serve several models (`models:`, issue 14): the sets of models they keep loaded at
once (vramc.plan.servers) against the GPUs they share."""

from __future__ import annotations

from vramc.diagnostics import Severity
from vramc.lint.registry import Finding, rule
from vramc.units import fmt_size

_EVICTS = (
    "Ollama does not load a model partly on the CPU to make room: it evicts a resident one "
    "first (server/sched.go `load`, `findRunnerToUnload`), so every switch reloads a model"
)


def _sets(plans):
    """(server members of this combination, the others running beside them) per server."""
    from vramc.plan.servers import by_server

    for members in by_server(plans).values():
        yield members, [p for p in plans if p not in members]


def _set_findings(plans, explicit: bool):
    from vramc.plan.servers import gpu_use, max_resident

    for members, others in _sets(plans):
        k, said = max_resident(members)
        if said != explicit or len(members) < 2:
            continue
        for gpu, (need, have, uses) in sorted(gpu_use(members + others).items()):
            if need <= have or sum(1 for p, _ in uses if p in members) < 2:
                continue
            names = ", ".join(f"{p.dep.tag if p in members else p.dep.label} {fmt_size(b)}" for p, b in uses)
            yield members[0], gpu, need, have, names, k


@rule("VR340", "resident-set-oversubscribed", Severity.WARNING, "group")
def resident_set_oversubscribed(plans):
    """A set of models that the server keeps loaded at once needs more of a GPU than it has.

    A server with `models:` keeps up to `max_loaded_models` of them loaded together, in any
    combination the requests make: vramc plans every such set (with the machine's other
    deployments) and this says which one does not fit. Ollama then evicts a model before it
    loads the next (its pre-load check, or an out-of-memory load retried after evicting all),
    so the server works but swaps: each switch between those models reloads one (a warning).
    llama-swap's groups (`swap: false`, non-exclusive or persistent groups) say which models run
    together, and llama-swap never looks at memory: there the last model to start fails to load
    (an error); so does llama-server's router (`engine: llama-server` with `models:`), which runs
    up to `max_loaded_models` (`--models-max`, default 4) at once.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        settings: {max_loaded_models: 2}
        models:
          - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 32768}}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 32768}}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        settings: {max_loaded_models: 2}
        models:
          - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}}
    """
    for first, gpu, need, have, names, k in _set_findings(plans, explicit=True):
        if first.dep.server_engine == "llama-server":
            yield (
                first,
                Finding(
                    f"llama-server's router loads up to {k} models (--models-max): {names} together on GPU "
                    f"{gpu} need {fmt_size(need)} of {fmt_size(have)} ({fmt_size(need - have)} over); it does "
                    "not look at memory (tools/server/server-models.cpp), so the last of them to start fails "
                    "to load",
                    ("settings", "max_loaded_models"),
                    "lower these models' ctx, or max_loaded_models",
                    severity=Severity.ERROR,
                ),
            )
            continue
        if first.dep.server_engine == "llama-swap":
            yield (
                first,
                Finding(
                    f"llama-swap's groups let {names} run together on GPU {gpu}: {fmt_size(need)} of "
                    f"{fmt_size(have)} ({fmt_size(need - have)} over); llama-swap does not look at memory "
                    "(internal/router/group.go), so the last of them to start fails to load",
                    ("groups",) if first.dep.doc.obj.groups else ("models",),
                    "lower these models' ctx, or put them in one group with swap: true",
                    severity=Severity.ERROR,
                ),
            )
            continue
        yield (
            first,
            Finding(
                f"max_loaded_models {k} keeps {names} loaded together on GPU {gpu}: {fmt_size(need)} of "
                f"{fmt_size(have)} ({fmt_size(need - have)} over); {_EVICTS}",
                ("settings", "max_loaded_models"),
                "lower these models' ctx, or max_loaded_models, until every set fits",
            ),
        )


@rule("VR341", "model-fits-only-alone", Severity.WARNING, "group")
def model_fits_only_alone(plans):
    """A model fits on its own but next to none of the other models its server keeps loaded with it.

    The server is meant to hold several models at once (`max_loaded_models` of 2 or more, or
    Ollama's default of 3 per GPU), and its other models do share the GPU, but loading this one
    needs the GPU to itself: Ollama evicts every other model first, each time.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        settings: {max_loaded_models: 2}
        models:
          - {name: big, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 100000}}
          - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        settings: {max_loaded_models: 2}
        models:
          - {name: big, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 16384}}
          - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 8192}}
    """
    from vramc.plan.servers import gpu_use, max_resident

    for members, others in _sets(plans):
        every = getattr(members[0], "server_members", members)
        if max_resident(every)[0] < 2 or len(every) < 2:
            continue
        for p in members:
            if p.estimate is None or p.verdict not in ("fits", "tight"):
                continue

            def over(*ps, others=others) -> bool:
                return any(need > have for need, have, _ in gpu_use(list(ps) + others).values())  # noqa: B023

            partners = [q for q in every if q is not p and q.estimate is not None]
            # the odd one out: other models do share the card (else VR340/VR342 say it of every set)
            shared = any(not over(a, b) for i, a in enumerate(partners) for b in partners[i + 1 :])
            if partners and shared and all(over(p, q) for q in partners):
                alone = max(d.total_bytes for d in p.estimate.devices) if p.estimate.devices else 0
                then = (
                    "Ollama evicts them all to load it"
                    if p.dep.server_engine == "ollama"
                    else "it fails to load beside any of them"
                )
                yield (
                    p,
                    Finding(
                        f"{p.dep.tag} ({fmt_size(alone)}) fits only alone: next to any other model of "
                        f"server {p.dep.server} a GPU is over, so {then}",
                        ("models", p.dep.member),
                        "lower its ctx (or gpu_layers), or serve it from its own deployment",
                    ),
                )


@rule("VR342", "keep-alive-keeps-swap-set-resident", Severity.WARNING, "group")
def keep_alive_keeps_set_resident(plans):
    """The keep-alive keeps models loaded together that do not fit together and were meant to swap.

    Without `max_loaded_models`, Ollama keeps each model loaded for the keep-alive after its last
    request (`keep_alive`, default 5m; negative: for ever; `server/sched.go` `processPending`)
    and up to 3 models per GPU; models that do not fit together are then only unloaded by the
    pre-load check, which relies on Ollama's rough prediction. Say that they swap:
    `max_loaded_models: 1` (or `keep_alive: 0`, unloaded after each request).

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        settings: {keep_alive: -1}
        models:
          - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 32768}}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 32768}}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        settings: {keep_alive: -1, max_loaded_models: 1}
        models:
          - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 32768}}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, settings: {ctx: 32768}}
    """
    for first, gpu, need, have, names, k in _set_findings(plans, explicit=False):
        ka = first.dep.settings.keep_alive
        if ka is not None and str(ka).strip() in ("0", "0s", "0m", "0h"):
            continue  # unloaded after each request: they swap
        said = "keep_alive 5m (Ollama's default)" if ka is None else f"keep_alive {ka}"
        yield (
            first,
            Finding(
                f"{said} with no max_loaded_models keeps up to {k} models loaded: {names} together on "
                f"GPU {gpu} need {fmt_size(need)} of {fmt_size(have)} ({fmt_size(need - have)} over)",
                ("settings", "keep_alive") if ka is not None else ("settings",),
                "set max_loaded_models: 1 so that they swap (or lower their ctx until they fit together)",
            ),
        )


@rule("VR343", "server-models-invalid", Severity.ERROR, "load")
def _vr343():
    """A server's `models:` list cannot be served as written.

    `models:` (one server, several models) is for `engine: ollama`, `engine: llama-swap` (which
    needs it) and `engine: llama-server` (its router mode, where a tag names an INI section and
    keeps to letters, digits, '.', '_' and '-'), without `model:` or `variants:`; `groups:` and `ttl` are llama-swap's, and
    a group names models of the list, each in one group only; each model needs its own name and tag (Ollama compares tags case-insensitively,
    and a second `ollama create` with the same tag replaces the first), and settings of the whole
    server (Ollama: `parallel`, `cache_type_k/v`, `flash_attn`, `keep_alive`, `max_loaded_models`,
    `host`, `port`, `device_order`; llama-swap: `host`, `port`; the router: those and
    `max_loaded_models`) go in the deployment's own
    `settings:`, not in one model's.

    Bad:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        models:
          - {name: chat, model: llama-3.1-8b-instruct-q8_0, settings: {parallel: 2}}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, tag: chat}

    Good:
        hardware: {gpus: [{name: RTX 4090, vram: 24GiB}]}
        engine: ollama
        settings: {parallel: 2}
        models:
          - {name: chat, model: llama-3.1-8b-instruct-q8_0}
          - {name: coder, model: llama-3.1-8b-instruct-q8_0, tag: coder}
    """
