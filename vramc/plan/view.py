"""How plans are shown: a per-device table with a bar per GPU, and `plan --format json`.

The JSON document is a public interface (version 1): keys are only ever added, never renamed or
removed, and every size is an integer number of bytes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from vramc.plan.refusals import shown_code
from vramc.units import GiB, MiB

if TYPE_CHECKING:
    from vramc.plan.planner import Plan

PLAN_JSON_VERSION = 1


def resolved_settings(plan: Plan) -> dict:
    """The concrete engine settings the plan used, every default and `auto` filled in."""
    if plan.engine == "vllm":
        return dict(sorted((plan.estimate.resolved if plan.estimate else {}).items()))
    c, p = plan.choice, plan.params
    if c is None or p is None:
        return {}
    n_layers_total = plan.meta.n_layer + 1
    ngl = p.n_gpu_layers if p.n_gpu_layers >= 0 else n_layers_total
    return {
        "ctx": c.ctx if isinstance(c.ctx, int) else p.n_ctx,
        "n_ctx": p.n_ctx,
        "parallel": p.n_seq_max,
        "kv_unified": p.kv_unified,
        "batch": p.n_batch,
        "ubatch": p.n_ubatch,
        "gpu_layers": min(ngl, n_layers_total),
        "split_mode": p.split_mode,
        "tensor_split": list(p.tensor_split) if p.tensor_split else None,
        "main_gpu": p.main_gpu,
        "flash_attn": p.flash_attn,
        "cache_type_k": p.type_k,
        "cache_type_v": p.type_v,
        "kv_offload": p.offload_kqv,
    }


def plan_record(plan: Plan) -> dict:
    est = plan.estimate
    rec = {
        "name": plan.dep.name,
        "variant": plan.dep.variant,
        "file": plan.dep.doc.file,
        "engine": plan.engine,
        "model": plan.dep.model.obj.name or plan.dep.model.obj.gguf or plan.dep.model.obj.hf,
        "verdict": plan.verdict,
        "settings": resolved_settings(plan),
        "auto": list(plan.auto),
        # settings the engine decides itself (Ollama's scheduler), which the plan assumes
        "engine_choices": {k: c.record() for k, c in sorted(plan.engine_choices.items())},
        "devices": [],
        "host": None,
        "compute_model": est.compute_model if est else None,
        "notes": list(est.notes) if est else [],
        "errors": [{"code": shown_code(kind), "message": m} for kind, m in (est.errors if est else [])],
    }
    if plan.dep.server is not None:  # a model of a server that serves several (issue 14)
        rec["server"] = server_record(plan)
    if plan.quant is not None:  # a model of several quants (issue 15): which one, and every candidate
        rec["quant"] = plan.quant.record()
    if est is None:
        return rec
    if plan.engine == "vllm" and est.devices:  # vLLM's own start-up figures (added keys)
        rec.update(vllm_kv_record(est))
    for i, d in enumerate(est.devices):
        rec["devices"].append(
            {
                "id": d.id,
                "name": d.name,
                "gpu": d.gpu,
                "capacity_bytes": d.capacity_bytes,
                "reserve_bytes": d.reserve_bytes,
                "tenants_bytes": d.tenants_bytes,
                "available_bytes": d.available_bytes,
                "weights_bytes": d.weights_bytes,
                "kv_bytes": d.kv_bytes,
                "compute_bytes": d.compute_bytes,
                "overhead_bytes": d.overhead_bytes,
                "total_bytes": d.total_bytes,
                "free_bytes": d.free_bytes,
                "margin_bytes": plan.margins[i],
                "verdict": plan.device_verdict(i),
                "layers": list(d.layers) if d.layers else None,
                "n_layers": d.n_layers,
                "output": d.output,
            }
        )
        if d.host is not None:  # another machine's device (issue 17): added keys only
            rec["devices"][-1].update({"host": d.host, "endpoint": d.endpoint, "backend": d.backend})
    h = est.host
    rec["host"] = {
        "weights_bytes": h.weights_bytes,
        "kv_bytes": h.kv_bytes,
        "compute_bytes": h.compute_bytes,
        "other_bytes": h.other_bytes,
        "total_bytes": h.total_bytes,
    }
    if plan.engine != "vllm" and any(d.host is not None for d in est.devices):
        from vramc.plan.rpc import worker_ram_record

        rec["rpc_hosts"] = worker_ram_record(plan)  # llama.cpp RPC (issue 17): added key
    return rec


def _resident_from(plan: Plan, said: bool) -> str:
    if plan.dep.server_engine == "llama-swap":
        return "groups"
    if plan.dep.server_engine == "llama-server":  # --models-max, default 4
        said = plan.dep.models_max is not None
    return "max_loaded_models" if said else f"{plan.dep.server_engine}-default"


def server_record(plan: Plan) -> dict:
    """The server a model belongs to: how many of its models it keeps loaded at once, and per GPU
    the resident set of its models that needs the most."""
    from vramc.plan.servers import max_resident, worst_sets

    members = getattr(plan, "server_members", [plan])
    k, said = max_resident(members)
    return {
        "name": plan.dep.server,
        "tag": plan.dep.tag,
        "max_resident": min(k, len(members)),
        "engine": plan.dep.server_engine,
        # what decides it: max_loaded_models (Ollama, the router), Ollama's default, llama-swap's groups
        "max_resident_from": _resident_from(plan, said),
        "worst_resident_sets": [
            {"gpu": gpu, "models": [p.dep.label for p in members_set], "need_bytes": need, "available_bytes": have}
            for gpu, (members_set, need, have) in worst_sets(members).items()
        ],
    }


def vllm_kv_record(est) -> dict:
    """What vLLM 0.33.0 logs at start, from vllm/v1/core/kv_cache_utils.py: `kv_blocks` (num_blocks,
    the smallest rank's), `block_size`, `kv_tokens` = blocks x block size, `max_concurrency` =
    num_blocks / blocks per request at max_model_len (get_max_concurrency_for_kv_cache_config),
    `kv_capacity_tokens` = int(max_concurrency x max_model_len) ("GPU KV cache size: N tokens"),
    `max_model_len_fit`: the longest max_model_len whose one request fits (estimate_max_model_len
    over 1..the derived length; 0: not even one token)."""
    d = est.devices[0].detail
    per = d.get("blocks_per_request") or 0
    return {
        "kv_blocks": d["kv_blocks"],
        "block_size": est.resolved["block_size"],
        "kv_tokens": d["kv_tokens"],
        "max_concurrency": round(d["kv_blocks"] / per, 2) if per else 0.0,
        "kv_capacity_tokens": d["kv_capacity_tokens"],
        "max_model_len_fit": d["max_model_len_fit"],
    }


def plans_json(plans) -> str:
    doc = {"version": PLAN_JSON_VERSION, "deployments": [plan_record(p) for p in plans]}
    # JSON has no NaN or Infinity (Python would print them, and parsers refuse the document); the
    # schema refuses non-finite input, so one here is a bug to surface, not output to emit
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


# --- text ---------------------------------------------------------------------------------------


def _m(n: int) -> str:
    return f"{n / MiB:,.0f}"


def _layers(d, n_layer: int | None) -> str:
    """Blocks held, with the output layer (index n_layer in llama.cpp's numbering) as "+out"."""
    if not d.layers:
        return "-"
    a, b = d.layers
    out = ""
    if d.output and n_layer is not None and b == n_layer:
        b, out = b - 1, "+out"
        if b < a:
            return "out (1)"
    span = f"{a}-{b}" if a != b else f"{a}"
    return f"{span}{out} ({d.n_layers})"


BAR_PARTS = (("weights_bytes", "█"), ("kv_bytes", "▓"), ("compute_bytes", "▒"), ("overhead_bytes", "░"))


def bar(d, width: int = 40) -> str:
    """One row of the GPU: weights █, KV ▓, compute ▒, overhead ░, reserve/tenants ╳, free ·."""
    cap = max(d.capacity_bytes, 1)
    cells, used = [], 0
    blocked = d.reserve_bytes + d.tenants_bytes
    for attr, ch in BAR_PARTS + (("_blocked", "╳"),):
        n = blocked if attr == "_blocked" else getattr(d, attr)
        k = round(n / cap * width)
        k = min(k, width - used) if used < width else 0
        cells.append(ch * k)
        used += k
    body = "".join(cells) + "·" * max(0, width - used)
    over = " OVER" if d.free_bytes < 0 else ""
    return f"[{body}]{over}"


def shared_gpus(plan: Plan, plans) -> list[str]:
    """Lines saying which GPUs the plan shares with the other deployments of its machine."""
    if plan.estimate is None or plan.dep.variant is not None:
        return []
    if plan.dep.server is not None:  # said once per server, under its first model
        members = getattr(plan, "server_members", [plan])
        if plan is not min(members, key=lambda p: p.dep.member):
            return []
        from vramc.plan.servers import describe

        others = [
            p
            for p in plans
            if p.dep.group == plan.dep.group
            and p.dep.server is None
            and p.dep.variant is None
            and p.estimate is not None
        ]
        return describe(members, others)
    out = []
    for d in plan.estimate.devices:
        others = [
            (p.dep.label, o)
            for p in plans
            if p is not plan
            and p.dep.variant is None
            and p.dep.server is None
            and p.dep.group == plan.dep.group
            and p.estimate is not None
            for o in p.estimate.devices
            if o.gpu == d.gpu and o.host == d.host
        ]
        if others:
            together = d.total_bytes + sum(o.total_bytes for _, o in others)
            names = ", ".join(f"{label} ({o.total_bytes / GiB:.2f} GiB)" for label, o in others)
            out.append(
                f"  {d.id} is shared with {names}: {together / GiB:.2f} of {d.available_bytes / GiB:.2f} GiB together"
            )
    return out


def _engine_pin(plan: Plan) -> str:
    from vramc.plan.ollama_sched import PIN

    return PIN if plan.engine == "ollama" else plan.engine


def _choice_value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def plan_text(plan: Plan, color: bool = False, plans=()) -> str:
    est = plan.estimate
    title = f"{plan.dep.label}  ({plan.engine}, {plan.dep.doc.file})"
    verdict = plan.verdict
    lines = [f"{title}: {verdict.upper()}"]
    if est is None:
        lines.append("  not planned: see the diagnostics above")
        return "\n".join(lines) + "\n"
    s = resolved_settings(plan)
    if plan.engine == "vllm":
        keys = (
            "gpu_memory_utilization",
            "max_model_len",
            "max_num_seqs",
            "max_num_batched_tokens",
            "kv_cache_dtype",
            "tensor_parallel_size",
            "pipeline_parallel_size",  # these three only where set (issue 17)
            "distributed_executor_backend",
            "nnodes",
        )
    else:
        keys = (
            "ctx",
            "parallel",
            "gpu_layers",
            "split_mode",
            "tensor_split",
            "flash_attn",
            "cache_type_k",
            "cache_type_v",
            "ubatch",
        )
    shown = []
    for k in keys:
        if k in s and s[k] is not None:
            v = s[k]
            if isinstance(v, list):
                v = ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
            star = "*" if k in plan.auto else ""
            if not star and k in plan.engine_choices:
                star = "†"  # the engine's own choice, not the user's
            shown.append(f"{k}={v}{star}")
    if plan.engine != "vllm" and plan.params is not None and plan.params.overrides:
        star = "*" if "override_tensor" in plan.auto else ""
        shown.append(f"override_tensor={len(plan.params.overrides)} pattern(s){star}")
    marks = (["* chosen by vramc"] if plan.auto else []) + (
        [f"† chosen by {_engine_pin(plan)}"] if any(k in plan.engine_choices for k in keys) else []
    )
    lines.append("  " + "  ".join(shown) + (f"   ({'; '.join(marks)})" if marks else ""))
    if plan.engine == "vllm" and est.devices:
        from vramc.plan.vllm_fit import describe

        lines.append("  " + describe(est))
    header = ("device", "name", "weights", "KV", "compute", "overhead", "total", "capacity", "free", "layers")
    remote = any(d.host is not None for d in est.devices)
    rows = []
    for d in est.devices:
        rows.append(
            (
                d.id,
                # RPC devices (issue 17) say which machine and which backend serves them
                f"{d.name} @{d.host}" if d.host is not None else (f"{d.name} @this" if remote else d.name),
                _m(d.weights_bytes),
                _m(d.kv_bytes),
                _m(d.compute_bytes),
                _m(d.overhead_bytes),
                _m(d.total_bytes),
                _m(d.capacity_bytes),
                _m(d.free_bytes),
                _layers(d, plan.meta.n_layer if plan.meta is not None else None),
            )
        )
    h = est.host
    rows.append(
        ("host", "", _m(h.weights_bytes), _m(h.kv_bytes), _m(h.compute_bytes), "", _m(h.total_bytes), "", "", "")
    )
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    numeric = set(range(2, 9))

    def fmt(r):
        return (
            "  "
            + "  ".join(
                str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
        )

    lines.append(fmt(header) + "   (MiB)")
    lines.extend(fmt(r) for r in rows)
    lines.append("")
    id_width = max([6] + [len(d.id) for d in est.devices])  # a vLLM host's GPU: HOST:CUDA0
    for i, d in enumerate(est.devices):
        used = f"{d.total_bytes / GiB:5.2f}/{d.capacity_bytes / GiB:.2f} GiB"
        lines.append(f"  {d.id:<{id_width}} {bar(d)} {used}  {plan.device_verdict(i)}")
    lines.append("         █ weights  ▓ KV  ▒ compute  ░ overhead  ╳ reserve/others  · free")
    if remote and plan.engine != "vllm":  # llama.cpp's RPC devices (a vLLM plan's nodes: its note)
        from vramc.plan.rpc import order_line, worker_ram_line

        lines.append(order_line(est.devices))
        ram = worker_ram_line(plan)
        if ram:
            lines.append(ram)
    lines.extend(shared_gpus(plan, plans))
    if plan.quant is not None:
        from vramc.plan.quants import render_choice

        lines.append(f"  quant={plan.quant.chosen}{'*' if plan.quant.auto else ''}  {plan.quant.gguf or ''}".rstrip())
        if plan.quant.rows:
            lines.append(render_choice(plan).rstrip("\n"))
    for k, c in sorted(plan.engine_choices.items()):
        lines.append(f"  {plan.engine}: {k}={_choice_value(c.value)}: {c.why}")
    for n in est.notes:
        lines.append(f"  note: {n}")
    for kind, msg in est.errors:
        lines.append(f"  {shown_code(kind)}: {msg}")
    return "\n".join(lines) + "\n"
