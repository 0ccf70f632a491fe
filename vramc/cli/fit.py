"""`vramc fit PROFILE`: show what the solver chose and why, and optionally write it back."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vramc.cli.common import (
    EXIT_FAILED,
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    is_selected,
    say_diagnostics,
    selection_problem,
)
from vramc.diagnostics import Severity

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

AUTO_KEYS = (
    "ctx",
    "gpu_layers",
    "tensor_split",
    "cache_type_k",
    "cache_type_v",
    "override_tensor",
    # vLLM's (vramc.plan.vllm_fit)
    "gpu_memory_utilization",
    "max_model_len",
    "max_num_seqs",
    "tensor_parallel_size",
    "pipeline_parallel_size",  # chosen with tensor_parallel_size across machines (issue 17)
    "kv_cache_dtype",
)


def chosen(plan: Plan) -> dict:
    c = plan.choice
    out = {}
    for k in plan.auto:
        if k == "override_tensor":
            out[k] = [f"{pattern}={target}" for pattern, target in c.overrides]
            continue
        v = getattr(c, k)
        out[k] = [float(x) for x in v] if isinstance(v, tuple) else v
    return out


def _settings_path(plan: Plan) -> tuple:
    dep = plan.dep
    if dep.variant:
        return dep.doc.prefix + ("variants", dep.variant, "settings")
    if dep.member is not None:  # one model of a server (issue 14): its own settings
        return dep.doc.prefix + ("models", dep.member, "settings")
    return dep.doc.prefix + ("settings",)


# `--write` marks every value it writes; `--refit` solves the marked ones again (`check` reads
# them as the fixed values they are)
MARKER = "vramc fit: auto"
RELAXABLE = ("ctx", "gpu_layers", "tensor_split", "cache_type_k", "cache_type_v")
RELAXABLE_VLLM = ("gpu_memory_utilization", "max_model_len", "max_num_seqs", "tensor_parallel_size", "kv_cache_dtype")


def edit_choices(plans, cleared=None) -> list:
    """Each plan's chosen values put into its profile's text, in memory: [(Editor, values set,
    [(path, key) set without a marker])]. `cleared` (plan -> keys) names settings `--refit`
    freed that the solver left unchosen (expert overrides it no longer needs): written empty."""
    from vramc.load.yamledit import Editor

    cleared = cleared or {}
    base_values: dict[tuple, dict] = {}
    for p in plans:
        if p.dep.variant is None:
            base_values[(p.dep.doc.file, p.dep.name)] = chosen(p)
    by_file: dict[Path, list] = {}
    display: dict[Path, str] = {}
    for p in plans:
        values = chosen(p)
        for k in cleared.get(id(p), ()):
            values.setdefault(k, 1 if k == "pipeline_parallel_size" else [])
        if p.dep.variant is not None:
            # a variant that inherits `auto` keeps the base's answer unless its own differs
            base = base_values.get((p.dep.doc.file, p.dep.name), {})
            values = {k: v for k, v in values.items() if base.get(k) != v or _variant_sets(p, k)}
            # the base's pipeline_parallel_size came with its TP: auto (it was unset, not `auto`);
            # a variant that fixes its TP keeps its own (one stage) instead of inheriting it
            pp = "pipeline_parallel_size"
            if pp in base and pp not in p.auto and not _variant_sets(p, pp):
                values[pp] = getattr(p.choice, pp, None) or 1
        if values:
            by_file.setdefault(p.dep.doc.path, []).append((_settings_path(p), values))
            display[p.dep.doc.path] = p.dep.doc.file
    editors = []
    for path, edits in by_file.items():
        editor = Editor.open(path, display[path])
        n, unmarked = 0, []
        for mapping_path, values in edits:  # mapping_path: ("deployments", 1, "settings") and the like
            for k in AUTO_KEYS:
                if k in values:
                    if not editor.set(mapping_path, k, values[k], comment=MARKER):
                        unmarked.append((mapping_path, k))
                    n += 1
        editors.append((editor, n, unmarked))
    return editors


def write_choices(plans) -> dict[str, int]:
    """Put each plan's chosen values into its profile; returns edits per file.

    Every file is edited and checked in memory before any is written, through vramc.load.yamledit:
    EditRefused (an edit that cannot be made safely) or OSError (a file that cannot be read or
    replaced) leave every file as it was, except files already saved when the OSError came.
    """
    counts = {}
    for editor, n, _ in edit_choices(plans):
        editor.save()
        counts[editor.file] = n
    return counts


def _variant_sets(plan: Plan, key: str) -> bool:
    v = plan.dep.doc.obj.variants.get(plan.dep.variant)
    return v is not None and key in v.settings.model_fields_set


def parse_relax(text: str | None) -> tuple[str, ...] | str:
    """`--relax gpu_layers,ctx` -> the keys, or the reason it is refused."""
    if text is None:
        return ()
    keys = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    bad = [k for k in keys if k not in RELAXABLE + RELAXABLE_VLLM]
    if bad or not keys:
        return (
            f"--relax takes one or more of {', '.join(RELAXABLE)} (llama.cpp engines), "
            f"{', '.join(RELAXABLE_VLLM)} (vLLM) (comma-separated), not "
            f"{', '.join(repr(k) for k in bad) or repr(text)}"
        )
    return keys


class _Freed:
    """The fixed settings `--relax` and `--refit` hand to the solver, per deployment."""

    def __init__(self, relax: tuple, refit: bool, selected):
        self.relax, self.refit, self.selected = relax, refit, selected
        self.marks: dict[Path, list] = {}
        self.keys: dict[tuple, set] = {}  # (file, name, variant) -> settings made `auto`

    def marked(self, dep) -> set:
        from vramc.load.yamledit import Editor, EditRefused

        path = dep.doc.path
        if path not in self.marks:
            try:
                self.marks[path] = Editor.open(path, dep.doc.file).marked(MARKER)
            except (EditRefused, OSError, ValueError):
                self.marks[path] = []
        base_path = dep.doc.prefix + ("settings",)
        if dep.member is not None:  # a server's model: its own settings (issue 14)
            base_path = dep.doc.prefix + ("models", dep.member, "settings")
        keys = {k for p, k in self.marks[path] if p == base_path}
        if dep.variant:
            v = dep.doc.obj.variants.get(dep.variant)
            own = v.settings.model_fields_set if v is not None else set()
            var_path = dep.doc.prefix + ("variants", dep.variant, "settings")
            keys = {k for p, k in self.marks[path] if p == var_path} | (keys - own)
        return keys & set(RELAXABLE + RELAXABLE_VLLM + ("override_tensor", "pipeline_parallel_size"))

    def __call__(self, dep) -> None:
        if not self.selected(dep):
            return
        own = (
            RELAXABLE_VLLM + ("pipeline_parallel_size",)
            if dep.doc.obj.engine == "vllm"
            else RELAXABLE + ("override_tensor",)
        )
        keys = (set(self.relax) | (self.marked(dep) if self.refit else set())) & set(own)
        if not keys:
            return
        update = {k: "auto" for k in keys if k in RELAXABLE + RELAXABLE_VLLM}
        if "override_tensor" in keys:  # the solver places experts itself only without overrides
            update["override_tensor"] = None
            update.setdefault("gpu_layers", "auto")
        if "pipeline_parallel_size" in keys:  # the solver chooses it only with tensor_parallel_size: auto
            if update.get("tensor_parallel_size", dep.settings.tensor_parallel_size) == "auto":
                update["pipeline_parallel_size"] = None
            else:
                keys = keys - {"pipeline_parallel_size"}
        dep.settings = dep.settings.model_copy(update=update)
        self.keys[(dep.doc.file, dep.name, dep.variant)] = keys


def cli_fit(
    profile: Path, *, deployment: str | None, write: bool, fmt: str, relax: str | None = None, refit: bool = False
) -> int:
    from vramc.lint.check import run_check
    from vramc.lint.runner import raised_while_loading
    from vramc.plan.view import plan_record, plan_text

    if fmt not in ("text", "json"):
        print("vramc fit: --format must be text or json", file=sys.stderr)
        return EXIT_USAGE
    problem = selection_problem(deployment)
    if problem:
        print(f"vramc fit: {problem}", file=sys.stderr)
        return EXIT_USAGE
    relax_keys = parse_relax(relax)
    if isinstance(relax_keys, str):
        print(f"vramc fit: {relax_keys}", file=sys.stderr)
        return EXIT_USAGE

    def selected(dep) -> bool:
        return is_selected(dep, deployment)

    freed = _Freed(relax_keys, refit, selected)
    result = run_check([profile], adjust=freed)
    plans = [p for p in result.plans if selected(p.dep)]
    if deployment is not None and not plans:
        print(f'vramc fit: no deployment named "{deployment}" in {profile}', file=sys.stderr)
        return EXIT_USAGE
    blocking = [d for d in result.diagnostics if d.severity == Severity.ERROR and raised_while_loading(d.code)]
    say_diagnostics(blocking)
    if not plans:
        if not blocking:  # a hardware or model profile (or a folder with no deployment): exit 1 said nothing
            print(
                f"vramc fit: no deployment in {profile}: vramc fit takes a deployment profile (a file with "
                "`engine:`, or `deployments:`), not a hardware or model profile",
                file=sys.stderr,
            )
        return EXIT_FAILED
    if refit and not freed.keys:
        print(
            f"vramc fit: no value in {profile} carries the `# {MARKER}` marker of `vramc fit --write`; "
            "nothing to re-fit beyond its `auto` settings",
            file=sys.stderr,
        )
    labels = {p.dep.label for p in plans}
    # what `check` says against these deployments beyond their own plans (they run with others)
    together = [
        d
        for d in result.diagnostics
        if d.severity == Severity.ERROR
        and not raised_while_loading(d.code)
        and d.deployment in labels
        and d.code in _GROUP_CODES
    ]
    ideas = {id(p): _ideas(p) for p in plans}
    if fmt == "json":
        doc = {
            "version": 1,
            "deployments": [
                {
                    "name": p.dep.name,
                    "variant": p.dep.variant,
                    "chosen": chosen(p),
                    "fits": p.verdict in ("fits", "tight"),
                    "search": p.search,
                    "hint": p.fit_hint,
                    "relax": [
                        {"keys": list(keys), "values": {k: _json_value(v) for k, v in values.items()}, "command": cmd}
                        for keys, values, cmd in ideas[id(p)][1]
                    ],
                    "plan": plan_record(p),
                }
                for p in plans
            ],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        for p in plans:
            sys.stdout.write(_fit_text(p, ideas[id(p)]) + plan_text(p) + "\n")
    say_diagnostics(together)
    ok = all(p.verdict in ("fits", "tight") for p in plans) and not together
    if write:
        code = _write(profile, plans, freed, together)
        if code:
            return code
    return EXIT_OK if ok else EXIT_FINDINGS


_GROUP_CODES = ("VR312", "VR335", "VR336", "VR340", "VR341", "VR342")


def _write(profile: Path, plans, freed, said=()) -> int:
    """Write the choices, but only if `vramc check` accepts the profile with them in it."""
    from vramc.lint.check import run_check
    from vramc.load.yamledit import EditRefused

    cleared = {}
    for p in plans:
        keys = freed.keys.get((p.dep.doc.file, p.dep.name, p.dep.variant), set())
        if "override_tensor" in keys and "override_tensor" not in p.auto:
            cleared[id(p)] = ("override_tensor",)
        if "pipeline_parallel_size" in keys and "pipeline_parallel_size" not in p.auto:
            cleared[id(p)] = ("pipeline_parallel_size",)  # freed, and vLLM's one stage kept
    try:
        editors = edit_choices(plans, cleared)
    except EditRefused as e:
        print(f"vramc fit: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"{e.filename or profile}: cannot read: {e.strerror or e}; nothing was written", file=sys.stderr)
        return EXIT_FAILED
    texts = {ed.path: ed.text for ed, _, _ in editors if ed.changed}
    after = run_check([profile], texts=texts) if texts else None
    rejected = [d for d in after.diagnostics if d.severity == Severity.ERROR] if after else []
    if rejected:
        say_diagnostics(d for d in rejected if d not in said)
        print(
            f"vramc fit: nothing was written: `vramc check` would reject {profile} with these settings (above)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    counts = {}
    try:
        for editor, n, _ in editors:
            editor.save()
            counts[editor.file] = n
    except EditRefused as e:
        print(f"vramc fit: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"{e.filename or profile}: cannot write: {e.strerror or e}; the file was left as it was", file=sys.stderr)
        return EXIT_FAILED
    for file, n in sorted(counts.items()):
        print(f"wrote {n} setting{'s' if n != 1 else ''} into {file}", file=sys.stderr)
    for editor, _, unmarked in editors:
        for path, key in unmarked:
            where = ".".join(str(x) for x in path + (key,))
            print(
                f"note: {editor.file}: {where} sits in a flow mapping ({{...}}), where no comment can "
                f"mark it: `vramc fit --refit` leaves it as written (write that mapping in block style "
                "to re-fit it)",
                file=sys.stderr,
            )
    return EXIT_OK


def _ideas(plan: Plan) -> tuple[str, list]:
    """What would fit when this plan does not: (a step first, [(keys, values, command)])."""
    from vramc.plan.fit import relax_command, suggestions
    from vramc.plan.planner import fit_target

    if plan.verdict != "does-not-fit" or plan.meta is None or plan.choice is None or not plan.gpus:
        return "", []
    try:
        first, found = suggestions(plan.meta, plan.gpus, plan.choice, plan.margins, plan.dep.settings.ctx_min)
    except ValueError:
        return "", []
    return first, [(keys, values, relax_command(keys, fit_target(plan.dep))) for keys, values in found]


def _json_value(v):
    return [float(x) for x in v] if isinstance(v, tuple) else v


def _fit_text(plan: Plan, ideas=("", [])) -> str:
    from vramc.plan.fit import show_value

    lines = [f"== {plan.dep.label}"]
    values = chosen(plan)
    if values:
        shown = ", ".join(f"{k}: {_show(v)}" for k, v in values.items())
        lines.append(f"chosen: {shown}")
        lines.extend(f"  search: {s}" for s in plan.search)
    elif plan.engine == "vllm":
        lines.append("vLLM sizes its own KV cache; the plan below is what it will allocate")
    else:
        lines.append("nothing to choose: ctx, gpu_layers and tensor_split are all fixed")
    first, found = ideas
    if first:
        lines.append(f"  {first} first (row split cannot load); then:")
    for keys, would, cmd in found:
        now = getattr(plan.choice, keys[0])
        rest = "".join(f" with {k} {show_value(would[k])}" for k in keys[1:])
        lines.append(f"  {keys[0]} {show_value(now)} does not fit; {show_value(would[keys[0]])}{rest} would: `{cmd}`")
    if plan.verdict == "does-not-fit" and not found and plan.fit_hint:
        lines.append(f"  these settings do not fit; {plan.fit_hint}")
    elif plan.verdict == "does-not-fit" and plan.engine == "vllm":
        from vramc.plan.planner import fit_target

        free = [k for k in ("gpu_memory_utilization", "max_model_len") if k not in plan.auto]
        if free:
            lines.append(
                "  vLLM would not start with these settings; vramc can choose them: "
                f"`vramc fit --relax {','.join(free)} {fit_target(plan.dep)}`"
            )
        else:
            lines.append(
                "  nothing vramc can choose starts vLLM on these GPUs (search above): free "
                "memory that other processes hold, add GPUs (tensor_parallel_size: auto), "
                "or use a smaller or more quantized model"
            )
    return "\n".join(lines) + "\n"


def _show(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) + "]"
    return str(v)
