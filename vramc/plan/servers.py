"""Servers that serve several models (`models:`, issue 14): which models can be resident at once.

Each model of a server is planned as its own deployment (vramc.load.profiles marks it with
`server`); this module forms the sets of them that the server can hold loaded together, and the
worst of those sets on each GPU.

Ollama (the pinned 0.32.15, server/sched.go): `Scheduler.processPending` loads a model next to
the resident ones while fewer than OLLAMA_MAX_LOADED_MODELS are loaded (unset or 0: 3 per GPU it
sees, `defaultModelsPerGPU`); at the limit it unloads one first (`findRunnerToUnload`: the idle
runners sorted by keep-alive, shortest first, then by model path, `ByDurationAndName`). Below the
limit, `Scheduler.load` predicts the model and, when that exceeds 80% of the free memory, evicts
instead of loading it partly on the CPU; with an explicit partial `num_gpu` it skips that check,
and a load that then fails evicts every other model and retries once (`evictAllAndWait`). So any
`max loaded` of the server's models can be resident at once, and a set that does not fit is not
an out-of-memory crash but a swap on every switch.
"""

from __future__ import annotations

from itertools import combinations

OLLAMA_MODELS_PER_GPU = 3  # server/sched.go defaultModelsPerGPU
# llama-server's router (the pinned llama.cpp, tools/server/server-models.cpp server_lru_sched):
# up to --models-max children (default 4, 0 unlimited); at the limit it stops the least recently
# used idle one; it never looks at memory, so a set that does not fit fails to load
ROUTER_MODELS_MAX = 4
SOURCE = "server/sched.go processPending, findRunnerToUnload, load"
MAX_MODELS = 16  # C(16, 8) = 12870 sets: more models than this are refused at load (VR343)


def by_server(plans) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for p in plans:
        if p.dep.server is not None:
            out.setdefault((p.dep.group, p.dep.server), []).append(p)
    return out


def max_resident(members) -> tuple[int, bool]:
    """How many of the server's models it keeps loaded at once, and whether the profile said so
    (`max_loaded_models`, llama-swap's groups) rather than Ollama's default (3 per GPU it sees)."""
    if members[0].dep.server_engine == "llama-swap":
        return max(len(s) for s in resident_sets(members)), True
    if members[0].dep.server_engine == "llama-server":  # --models-max, 0: unlimited
        k = members[0].dep.models_max
        k = ROUTER_MODELS_MAX if k is None else k
        return (k or len(members)), True
    s = members[0].dep.settings
    if s.max_loaded_models:
        return s.max_loaded_models, True
    return OLLAMA_MODELS_PER_GPU * max(len(members[0].gpus), 1), False


def resident_sets(members) -> list[tuple]:
    """Every largest set of the server's models that can be loaded at once (smaller sets need
    less of every GPU), in the order of `models:`."""
    members = sorted(members, key=lambda p: p.dep.member)
    if members[0].dep.server_engine == "llama-swap":
        return swap_sets(members)
    k, _ = max_resident(members)
    if k >= len(members):
        return [tuple(members)]
    return list(combinations(members, k))


def swap_groups(members) -> list[tuple[str, bool, bool, bool, list]]:
    """llama-swap's groups as it runs them: (name, swap, exclusive, persistent, member plans);
    models in no group go to its "(default)" group, swap and exclusive
    (internal/config/config.go AddDefaultGroupToConfig)."""
    body = members[0].dep.doc.obj
    by_name = {p.dep.name[len(p.dep.server) + 1 :]: p for p in members}
    out, grouped = [], set()
    for name, g in (body.groups or {}).items():
        ps = [by_name[m] for m in g.members if m in by_name]
        grouped |= {id(p) for p in ps}
        out.append((name, g.swap, g.exclusive, g.persistent, ps))
    rest = [p for p in members if id(p) not in grouped]
    if rest:
        out.append(("(default)", True, True, False, rest))
    return out


def swap_sets(members) -> list[tuple]:
    """llama-swap's largest resident sets (internal/router/group.go `groupSwapper.EvictionFor`,
    llama-swap v250). Within a group, `swap: true` runs one member at a time,
    `swap: false` all of them. Loading a member of an `exclusive` group unloads every other group
    but the `persistent` ones; a non-exclusive group unloads nothing. So the non-exclusive and
    the persistent groups can all be loaded together, and with them at most one exclusive,
    non-persistent group (loading a second unloads the first)."""
    from itertools import product

    groups = swap_groups(members)
    always = [g for g in groups if not g[2] or g[3]]
    one_of = [g for g in groups if g[2] and not g[3]]
    out: list[tuple] = []
    for extra in [None] if not one_of else one_of:
        chosen = always + ([extra] if extra is not None else [])
        picks = [[(p,) for p in ps] if swap else [tuple(ps)] for _, swap, _, _, ps in chosen if ps]
        for combo in product(*picks):
            s = tuple(sorted((p for part in combo for p in part), key=lambda p: p.dep.member))
            if s and s not in out:
                out.append(s)
    # a set inside another is never the worst
    ids = [{id(p) for p in s} for s in out]
    return [s for s, a in zip(out, ids) if not any(a < b for b in ids)]


def gpu_use(plans) -> dict[int, tuple[int, int, list]]:
    """Per GPU: the bytes the plans need together, the bytes available, and (plan, bytes) each."""
    out: dict[int, tuple[int, int, list]] = {}
    for p in plans:
        if p.estimate is None:
            continue
        for d in p.estimate.devices:
            need, have, uses = out.get(d.gpu, (0, d.available_bytes, []))
            out[d.gpu] = (need + d.total_bytes, have, uses + [(p, d.total_bytes)])
    return out


def worst_sets(members, others=()) -> dict[int, tuple[tuple, int, int]]:
    """Per GPU: the resident set (with the machine's other deployments) that needs the most of it."""
    worst: dict[int, tuple[tuple, int, int]] = {}
    for s in resident_sets(members):
        for gpu, (need, have, _) in gpu_use(list(s) + list(others)).items():
            if gpu not in worst or need > worst[gpu][1]:
                worst[gpu] = (s, need, have)
    return dict(sorted(worst.items()))


def describe(members, others=()) -> list[str]:
    """The plan's lines for a server: per GPU its worst resident set, and which model goes where."""
    from vramc.units import GiB

    k, said = max_resident(members)
    n = len(members)
    server, engine = members[0].dep.server, members[0].dep.server_engine
    if engine == "llama-swap":
        why = "its groups: swap, exclusive, persistent; internal/router/group.go groupSwapper.EvictionFor"
    elif engine == "llama-server":
        why = "--models-max; the router stops the least recently used idle model: server-models.cpp"
    else:
        why = ("max_loaded_models" if said else f"Ollama's default, {OLLAMA_MODELS_PER_GPU} per GPU") + f"; {SOURCE}"
    lines = [f"server {server} ({engine}): {n} models, up to {min(k, n)} resident at once ({why})"]
    for gpu, (s, need, have) in worst_sets(members, others).items():
        names = ", ".join(p.dep.tag if p.dep.server else p.dep.label for p in s)
        verdict = (
            "fits"
            if need <= have
            else f"OVER by {(need - have) / GiB:.2f} GiB"
            + (": Ollama evicts" if engine == "ollama" else ": the last model to load fails")
        )
        lines.append(
            f"  GPU {gpu}: worst resident set {{{names}}}: {need / GiB:.2f} of {have / GiB:.2f} GiB, {verdict}"
        )
        for p in sorted(s, key=lambda p: (p.dep.member is None, p.dep.member or 0)):
            for d in p.estimate.devices if p.estimate else ():
                if d.gpu == gpu:
                    lines.append(
                        f"    {p.dep.label}: {d.total_bytes / GiB:.2f} GiB (layers {d.layers[0]}-{d.layers[1]})"
                        if d.layers
                        else f"    {p.dep.label}: {d.total_bytes / GiB:.2f} GiB"
                    )
    return lines
