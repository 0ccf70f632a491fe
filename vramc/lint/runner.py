"""Running the rules: over each plan and each machine's deployments, the memory models' refusals,
and the profile's `lint:` ignores and severity overrides, into positioned Diagnostics."""

from __future__ import annotations

from typing import Iterator

from vramc.diagnostics import Diagnostic, Severity
from vramc.lint.registry import Finding, Rule
from vramc.lint.rules import load_rules
from vramc.plan import refusals


def raised_while_loading(code: str) -> bool:
    """A finding of the load stage (a profile, its hardware or its model could not be read as
    written), as its rule's scope says; the command layer reports those before any plan."""
    rule = load_rules().get(code)
    return rule is not None and rule.scope == "load"


def _locate(dep, f: Finding):
    """Span and full path of a finding; settings set by a variant point at the variant."""
    if f.target == "hardware":
        doc = dep.hardware
    elif f.target == "model":
        doc = dep.model
    else:
        doc = dep.doc
        path = f.path
        if dep.variant and path and path[0] in ("settings", "env"):
            vpath = ("variants", dep.variant) + path
            raw = dep.doc.raw
            try:
                node = raw
                for seg in vpath[:3]:
                    node = node[seg]
                if len(path) < 2 or path[1] in node:
                    return doc.file, doc.positions.locate(vpath), doc.prefix + vpath
            except (KeyError, TypeError, IndexError):
                pass
        if path and path[0] == "margin" and dep.variant:
            return doc.file, doc.positions.locate(("variants", dep.variant, "margin")), doc.prefix
    return doc.file, doc.positions.locate(f.path), doc.prefix + f.path


def _apply_config(code: str, default: Severity, lint_cfg) -> Severity | None:
    if lint_cfg is None:
        return default
    if code in lint_cfg.ignore:
        return None
    if code in lint_cfg.severity:
        return Severity.parse(lint_cfg.severity[code])
    return default


def run_plan_rules(plans) -> list[Diagnostic]:
    rules = load_rules()
    out: list[Diagnostic] = []
    for plan in plans:
        out.extend(plan.diagnostics)
        for kind, message in plan.estimate.errors if plan.estimate else ():
            # an engine refusal's rule (vramc.plan.refusals), the catch-all where it is not registered
            r = rules.get(refusals.rule_code(kind)) or rules[refusals.UNKNOWN]
            key = refusals.setting(kind)
            if (
                kind in ("vllm-pp-partition-invalid", "vllm-pp-stage-empty")
                and "VLLM_PP_LAYER_PARTITION" in plan.dep.env
            ):
                anchor = ("env", "VLLM_PP_LAYER_PARTITION")  # the split at fault (a variant's too)
            elif key and key in plan.dep.settings.model_fields_set:
                anchor = ("settings", key)
            elif isinstance(plan.dep.doc.raw, dict) and "settings" in plan.dep.doc.raw:
                anchor = ("settings",)
            else:
                anchor = ("name",)
            who = "vLLM" if plan.engine == "vllm" else "llama.cpp"
            hint = _weights_alone_hint(plan) if kind == "vllm-no-kv-memory" else ""
            out.extend(_to_diagnostics(r, Finding(f"{who} would stop with: {message}", anchor, hint), plan.dep))
        for r in rules.values():
            if r.scope != "plan":
                continue
            for f in r.func(plan) or ():
                out.extend(_to_diagnostics(r, f, plan.dep))
    from dataclasses import replace

    from vramc.plan.planner import combinations

    # a machine's deployments run together in each combination of their variants (plan.Combination)
    combos = combinations(plans)
    for r in rules.values():
        group = r.func if r.scope == "group" else r.together
        if group is None:
            continue
        said: set = set()  # a base combination's finding met again in a variant's is said once
        for combo in combos:
            for plan, f in group(combo.members) or ():
                if (id(plan), f.message) in said:
                    continue
                said.add((id(plan), f.message))
                if combo.variant is not None:
                    f = replace(f, message=f"with variant {combo.variant} ({combo.label}): {f.message}")
                out.extend(_to_diagnostics(r, f, plan.dep))
    return out


def _weights_alone_hint(plan) -> str:
    """vLLM's "Try increasing `gpu_memory_utilization`" cannot help where the weights alone
    outgrow the GPU (with gpu_memory_utilization: auto already at its largest): say what can."""
    from vramc.units import fmt_size

    for d in plan.estimate.devices:
        if d.weights_bytes + d.overhead_bytes > d.available_bytes:
            return (
                f"the weights alone ({fmt_size(d.weights_bytes)} on {d.id}, {d.name}, of {fmt_size(d.available_bytes)}) "
                "outgrow the GPU, so no gpu_memory_utilization can help: spread them over more GPUs "
                "(tensor_parallel_size, pipeline_parallel_size), keep some in host memory (cpu_offload_gb), "
                "or use a smaller quantisation"
            )
    return ""


def _to_diagnostics(r: Rule, f: Finding, dep) -> Iterator[Diagnostic]:
    sev = _apply_config(r.code, f.severity or r.severity, dep.lint)
    if sev is None:
        return
    file, span, path = _locate(dep, f)
    yield Diagnostic(r.code, sev, f.message, file, span, path, f.hint, dep.label, f.data)


def apply_config_to_load(diags: list[Diagnostic], lint_by_file: dict) -> list[Diagnostic]:
    """Ignores and severity overrides for diagnostics raised while loading a file."""
    out = []
    for d in diags:
        sev = _apply_config(d.code, d.severity, lint_by_file.get(d.file))
        if sev is None:
            continue
        out.append(
            d
            if sev == d.severity
            else Diagnostic(d.code, sev, d.message, d.file, d.span, d.path, d.hint, d.deployment, d.data)
        )
    return out


def dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    """One diagnostic per (code, place, message): variants often repeat their base's findings."""
    seen: dict[tuple, Diagnostic] = {}
    for d in sorted(diags, key=Diagnostic.sort_key):
        key = (d.code, d.file, d.line, d.column, d.message)
        if key in seen:
            continue
        seen[key] = d
    return list(seen.values())
