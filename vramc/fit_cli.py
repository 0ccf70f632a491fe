"""`vramc fit PROFILE`: show what the solver chose and why, and optionally write it back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vramc.diagnostics import Severity

AUTO_KEYS = ("ctx", "gpu_layers", "tensor_split", "cache_type_k", "cache_type_v", "override_tensor")


def chosen(plan) -> dict:
    c = plan.choice
    out = {}
    for k in plan.auto:
        if k == "override_tensor":
            out[k] = [f"{pattern}={target}" for pattern, target in c.overrides]
            continue
        v = getattr(c, k)
        out[k] = [float(x) for x in v] if isinstance(v, tuple) else v
    return out


def _settings_path(plan) -> tuple:
    dep = plan.dep
    if dep.variant:
        return dep.doc.prefix + ("variants", dep.variant, "settings")
    return dep.doc.prefix + ("settings",)


def write_choices(plans) -> dict[str, int]:
    """Put each plan's chosen values into its profile; returns edits per file.

    Every file is edited and checked in memory before any is written, through vramc.yamledit:
    EditRefused (an edit that cannot be made safely) or OSError (a file that cannot be read or
    replaced) leave every file as it was, except files already saved when the OSError came.
    """
    from vramc.yamledit import Editor

    base_values: dict[tuple, dict] = {}
    for p in plans:
        if p.dep.variant is None:
            base_values[(p.dep.doc.file, p.dep.name)] = chosen(p)
    by_file: dict[Path, list] = {}
    display: dict[Path, str] = {}
    for p in plans:
        values = chosen(p)
        if p.dep.variant is not None:
            # a variant that inherits `auto` keeps the base's answer unless its own differs
            base = base_values.get((p.dep.doc.file, p.dep.name), {})
            values = {k: v for k, v in values.items() if base.get(k) != v or _variant_sets(p, k)}
        if values:
            by_file.setdefault(p.dep.doc.path, []).append((_settings_path(p), values))
            display[p.dep.doc.path] = p.dep.doc.file
    editors = []
    for path, edits in by_file.items():
        editor = Editor.open(path, display[path])
        n = 0
        for mapping_path, values in edits:  # mapping_path: ("deployments", 1, "settings") and the like
            for k in AUTO_KEYS:
                if k in values:
                    editor.set(mapping_path, k, values[k])
                    n += 1
        editors.append((editor, n))
    counts = {}
    for editor, n in editors:
        editor.save()
        counts[editor.file] = n
    return counts


def _variant_sets(plan, key: str) -> bool:
    v = plan.dep.doc.obj.variants.get(plan.dep.variant)
    return v is not None and key in v.settings.model_fields_set


def cli_fit(profile: Path, *, deployment: str | None, write: bool, fmt: str) -> int:
    from vramc.check import run_check
    from vramc.planview import plan_record, plan_text

    if fmt not in ("text", "json"):
        print("vramc fit: --format must be text or json", file=sys.stderr)
        return 2
    result = run_check([profile])
    plans = result.plans
    if deployment:
        base, _, variant = deployment.partition("@")
        plans = [p for p in plans if p.dep.name == base and (p.dep.variant or "") == variant]
        if not plans:
            print(f"vramc fit: no deployment named {deployment!r} in {profile}", file=sys.stderr)
            return 2
    blocking = [d for d in result.diagnostics if d.severity == Severity.ERROR and d.code < "VR300"]
    for d in blocking:
        print(f"{d.file}:{d.line}:{d.column}: {d.code} {d.severity.label}: {d.full_message()}", file=sys.stderr)
    if not plans:
        return 1
    if fmt == "json":
        doc = {"version": 1, "deployments": [
            {"name": p.dep.name, "variant": p.dep.variant, "chosen": chosen(p),
             "fits": p.verdict in ("fits", "tight"), "search": p.search, "hint": p.fit_hint,
             "plan": plan_record(p)} for p in plans]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        for p in plans:
            sys.stdout.write(_fit_text(p) + plan_text(p) + "\n")
    if write:
        from vramc.yamledit import EditRefused

        try:
            counts = write_choices(plans)
        except EditRefused as e:
            print(f"vramc fit: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"{e.filename or profile}: cannot write: {e.strerror or e}; the file was left as it was",
                  file=sys.stderr)
            return 1
        for file, n in sorted(counts.items()):
            print(f"wrote {n} setting{'s' if n != 1 else ''} into {file}", file=sys.stderr)
    return 0 if all(p.verdict in ("fits", "tight") for p in plans) else 1


def _fit_text(plan) -> str:
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
        if plan.fit_hint:
            lines.append(f"  these settings do not fit; {plan.fit_hint}")
    return "\n".join(lines) + "\n"


def _show(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) + "]"
    return str(v)
