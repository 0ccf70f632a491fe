"""How a diff is shown: text (terminal), markdown (a pull-request comment), json (version 1, a
public interface: keys are only ever added), github (workflow annotations). Also
`plan --format markdown`, from the records of `plan --format json`.

Everything a profile wrote (names, variants, file names, setting values) is escaped for the
format it lands in: a deployment name cannot open an HTML tag, end a table cell or inject a
workflow command.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from vramc.diff.compare import COMPONENTS, DIFF_JSON_VERSION, HOST_COMPONENTS
from vramc.units import GiB, MiB

LABELS = {
    "total_bytes": "total",
    "weights_bytes": "weights",
    "kv_bytes": "KV",
    "compute_bytes": "compute",
    "overhead_bytes": "overhead",
    "free_bytes": "free",
    "other_bytes": "other",
}
ARROW = "->"
MD_ARROW = "→"


def label(d: dict) -> str:
    return f"{d['name']}@{d['variant']}" if d["variant"] else d["name"]


def _gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def _sgib(n: int) -> str:
    return f"{n / GiB:+.2f}" if n else "0"


def _mib(n) -> str:
    return "-" if n is None else f"{n / MiB:,.0f}"


def _smib(n: int) -> str:
    return f"{n / MiB:+,.0f}" if n else "0"


def _value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


def _layers(span) -> str:
    if not span:
        return "-"
    a, b = span
    return f"{a}-{b}" if a != b else str(a)


def _verdicts(d: dict, arrow: str = ARROW) -> str:
    v = d["verdict"]
    if v["base"] == v["head"]:
        return v["head"] or "-"
    return f"{v['base'] or '(none)'} {arrow} {v['head'] or '(none)'}"


def device_id(r: dict, arrow: str = ARROW) -> str:
    """A diff row's device: `RPC0->RPC1` when another machine's device got another id (its
    `hosts:` entry moved), else its id."""
    return f"{r['id_base']}{arrow}{r['id']}" if r.get("id_base") else r["id"]


def device_label(r: dict) -> str:
    """A text row's device: an RPC device's id with its host, as plan text names it (`RPC0 @box2`),
    the row of a host newly added to `hosts:` included; a vLLM node's id names its host already
    (node2:CUDA0), this machine's rows are their id (single-machine diffs unchanged)."""
    host = r.get("host")
    i = device_id(r)
    return f"{i} @{host}" if host and not r["id"].startswith(f"{host}:") else i


def largest(d: dict):
    """The device whose total changed most (by magnitude), or None."""
    rows = [r for r in d["devices"] if r["delta_bytes"]]
    return max(rows, key=lambda r: abs(r["delta_bytes"])) if rows else None


def counts(deps: list[dict]) -> str:
    n = {c: sum(1 for d in deps if d["change"] == c) for c in ("changed", "added", "removed", "unchanged")}
    return ", ".join(f"{v} {k}" for k, v in n.items())


def _side_label(s: dict) -> str:
    return f"{s['rev']} ({s['commit'][:12]})" if s.get("commit") else s["rev"]


# --- json ----------------------------------------------------------------------------------------


def to_json(doc: dict) -> str:
    public = dict(doc)
    public["deployments"] = [{k: v for k, v in d.items() if not k.startswith("_")} for d in doc["deployments"]]
    return json.dumps(public, indent=2, allow_nan=False) + "\n"


def document(base: dict, head: dict, deployments: list[dict], regressions) -> dict:
    flagged = {id(d): why for d, why in regressions}
    for d in deployments:
        d["regression"] = flagged.get(id(d))
    return {
        "version": DIFF_JSON_VERSION,
        "base": base,
        "head": head,
        "deployments": deployments,
        "summary": {
            c: sum(1 for d in deployments if d["change"] == c) for c in ("changed", "added", "removed", "unchanged")
        },
        "regressions": len(flagged),
    }


# --- text ----------------------------------------------------------------------------------------


def _bar(row_side: dict, capacity: int, width: int = 40) -> str:
    from vramc.plan.view import bar

    ns = SimpleNamespace(
        capacity_bytes=capacity,
        reserve_bytes=0,
        tenants_bytes=0,
        **{
            k: row_side.get(k, 0)
            for k in ("weights_bytes", "kv_bytes", "compute_bytes", "overhead_bytes", "free_bytes")
        },
    )
    return bar(ns, width)


def _table(header, rows, numeric_from: int) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    return [
        "  "
        + "  ".join(
            str(c).rjust(w) if i >= numeric_from else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in [header] + rows
    ]


def text(doc: dict, show_unchanged: bool = False) -> str:
    deps = doc["deployments"]
    lines = [f"vramc diff: {_side_label(doc['base'])} {ARROW} {_side_label(doc['head'])}", f"  {counts(deps)}"]
    for d in deps:
        if d["change"] == "unchanged" and not show_unchanged:
            continue
        lines.append("")
        flag = f"   REGRESSION: {d['regression']}" if d.get("regression") else ""
        lines.append(f"{label(d)}  ({d['engine']}, {d['file']})  {d['change']}: {_verdicts(d)}{flag}")
        if d["change"] == "unchanged":
            continue
        if d["inputs_changed"]:
            lines.append("  inputs changed: " + ", ".join(d["inputs_changed"]))
        if d["settings"] and d["change"] == "changed":
            lines.append(
                "  settings: "
                + "; ".join(f"{s['key']} {_value(s['base'])} {ARROW} {_value(s['head'])}" for s in d["settings"])
            )
        q = d.get("quant")
        if q and q["base"] != q["head"] and d["change"] == "changed":
            star = "  (* chosen by quant: auto)" if "*" in f"{q['base']}{q['head']}" else ""
            lines.append(f"  quant: {q['base'] or '-'} {ARROW} {q['head'] or '-'}{star}")
        if d["plan_changes"]:
            lines.append("  also changed in the plan: " + ", ".join(d["plan_changes"]))
        header = ("device", "", *[LABELS[c] for c in COMPONENTS])
        rows = []
        for r in d["devices"]:
            rows.append((device_label(r), "before", *[_mib((r["base"] or {}).get(c)) for c in COMPONENTS]))
            rows.append(("", "after", *[_mib((r["head"] or {}).get(c)) for c in COMPONENTS]))
            rows.append(("", "delta", *[_smib(r["deltas"][c]) for c in COMPONENTS]))
        h = d["host"]
        hostcols = ("total_bytes", "weights_bytes", "kv_bytes", "compute_bytes")
        rows.append(("host", "before", *[_mib((h["base"] or {}).get(c)) for c in hostcols], "", ""))
        rows.append(("", "after", *[_mib((h["head"] or {}).get(c)) for c in hostcols], "", ""))
        rows.append(("", "delta", *[_smib(h["deltas"][c]) for c in hostcols], "", ""))
        table = _table(header, rows, 2)
        lines.append(table[0] + "   (MiB)")
        lines.extend(table[1:])
        # a vLLM host's GPU is HOST:CUDAi (issue 17): the bars line up under the longest id
        idw = max([6] + [len(device_label(r)) for r in d["devices"]])
        for r in d["devices"]:
            for side, word in (("base", "before"), ("head", "after")):
                s, cap = r[side], r["capacity_bytes"][side]
                if s is None:
                    continue
                used = f"{s['total_bytes'] / GiB:5.2f}/{cap / GiB:.2f} GiB"
                lines.append(
                    f"  {device_label(r) if side == 'base' or r['base'] is None else '':<{idw}} {word:<6} "
                    f"{_bar(s, cap)} {used}  {r['verdict'][side]}"
                )
        if d["layers_moved"]:
            lines.append(
                "  layers: "
                + "; ".join(
                    f"{device_id(m)} {_layers(m['base'])} {ARROW} {_layers(m['head'])}" for m in d["layers_moved"]
                )
            )
        if d["artifacts"]:
            lines.append(
                "  out/ differs: "
                + ", ".join(
                    a["path"] + ("" if a["change"] == "changed" else f" ({a['change']})") for a in d["artifacts"]
                )
            )
    return "\n".join(lines) + "\n"


# --- markdown ------------------------------------------------------------------------------------


def md(s) -> str:
    """Text from a profile, safe in a markdown table cell and in GitHub's HTML subset."""
    s = str(s)
    for a, b in (
        ("&", "&amp;"),
        ("#", "&#35;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("|", "&#124;"),
        ("`", "&#96;"),
        ("*", "&#42;"),
        ("[", "&#91;"),
        ("]", "&#93;"),
        ("\r", " "),
        ("\n", " "),
        ("@", "&#64;"),
    ):
        s = s.replace(a, b)
    return s


def _largest_md(d: dict) -> str:
    r = largest(d)
    if r is None:
        free = [x for x in d["devices"] if x["deltas"]["free_bytes"]]
        if free:  # the same use on another card: what is left changed
            f = max(free, key=lambda x: abs(x["deltas"]["free_bytes"]))
            return f"{md(device_id(f, MD_ARROW))} free {_sgib(f['deltas']['free_bytes'])} GiB"
        return "no change"
    b, h = r["base"], r["head"]
    return (
        f"{md(device_id(r, MD_ARROW))} {_sgib(r['delta_bytes'])} GiB "
        f"({_gib(b and b['total_bytes'])} {MD_ARROW} {_gib(h and h['total_bytes'])} GiB)"
    )


def _summary_row(d: dict) -> str:
    mark = " ⚠️" if d.get("regression") else ""
    return f"| {md(label(d))} | {md(d['file'])} | {d['change']} | {_verdicts(d, MD_ARROW)}{mark} | {_largest_md(d)} |"


def _device_table(d: dict) -> list[str]:
    out = [
        "| device | | " + " | ".join(LABELS[c] for c in COMPONENTS) + " | layers |",
        "|---|---|" + "---:|" * len(COMPONENTS) + "---|",
    ]
    for r in d["devices"]:
        name = f"{md(device_id(r, MD_ARROW))} {md(r['name'])}"
        for side, word in (("base", "before"), ("head", "after")):
            s = r[side]
            out.append(
                f"| {name if side == 'base' else ''} | {word} | "
                + " | ".join(_gib((s or {}).get(c)) for c in COMPONENTS)
                + f" | {_layers(r['layers'][side])} |"
            )
        out.append("| | **delta** | " + " | ".join(_sgib(r["deltas"][c]) for c in COMPONENTS) + " | |")
    h = d["host"]
    for side, word in (("base", "before"), ("head", "after")):
        s = h[side]
        out.append(
            f"| {'host' if side == 'base' else ''} | {word} | "
            + " | ".join(_gib((s or {}).get(c)) if c in HOST_COMPONENTS else "" for c in COMPONENTS)
            + " | |"
        )
    out.append(
        "| | **delta** | "
        + " | ".join(_sgib(h["deltas"][c]) if c in HOST_COMPONENTS else "" for c in COMPONENTS)
        + " | |"
    )
    return out


def markdown(doc: dict) -> str:
    deps = doc["deployments"]
    shown = [d for d in deps if d["change"] != "unchanged"]
    lines = [
        f"### vramc diff: {md(_side_label(doc['base']))} {MD_ARROW} {md(_side_label(doc['head']))}",
        "",
        f"{counts(deps)}"
        + (
            f"; **{doc['regressions']} regression{'s' if doc['regressions'] != 1 else ''}**"
            if doc["regressions"]
            else ""
        ),
        "",
    ]
    if not shown:
        lines.append("No deployment's memory plan or settings changed.")
        return "\n".join(lines) + "\n"
    lines += ["| deployment | file | change | verdict | largest per-GPU change |", "|---|---|---|---|---|"]
    lines += [_summary_row(d) for d in shown]
    for d in shown:
        lines += ["", "<details>", f"<summary>{md(label(d))}: {d['change']}, {_verdicts(d, MD_ARROW)}</summary>", ""]
        if d.get("regression"):
            lines += [f"**Regression:** {md(d['regression'])}", ""]
        if d["inputs_changed"]:
            lines += ["Inputs changed: " + ", ".join(md(f) for f in d["inputs_changed"]), ""]
        if d["settings"] and d["change"] == "changed":
            lines += ["| setting | before | after |", "|---|---|---|"]
            lines += [f"| {md(s['key'])} | {md(_value(s['base']))} | {md(_value(s['head']))} |" for s in d["settings"]]
            lines.append("")
        q = d.get("quant")
        if q and q["base"] != q["head"] and d["change"] == "changed":
            star = " (&#42; chosen by quant: auto)" if "*" in f"{q['base']}{q['head']}" else ""
            lines += [f"Quant: {md(q['base'] or '-')} {MD_ARROW} {md(q['head'] or '-')}{star}", ""]
        if d["plan_changes"]:
            lines += ["Also changed in the plan: " + ", ".join(md(k) for k in d["plan_changes"]), ""]
        lines += ["Memory in GiB:", ""]
        lines += _device_table(d)
        if d["layers_moved"]:
            lines += [
                "",
                "Layers moved: "
                + "; ".join(
                    f"{md(device_id(m, MD_ARROW))} {_layers(m['base'])} {MD_ARROW} {_layers(m['head'])}"
                    for m in d["layers_moved"]
                ),
            ]
        if d["artifacts"]:
            lines += [
                "",
                "Built files that differ: "
                + ", ".join(
                    md(a["path"]) + ("" if a["change"] == "changed" else f" ({a['change']})") for a in d["artifacts"]
                ),
            ]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def plans_markdown(records: list[dict]) -> str:
    """`plan --format markdown`: per deployment, its settings and per-device table in GiB."""
    lines = []
    for r in records:
        name = f"{r['name']}@{r['variant']}" if r["variant"] else r["name"]
        lines += [f"### {md(name)}", "", f"{md(r['engine'])}, {md(r['file'])}: **{md(r['verdict'])}**", ""]
        shown = {k: v for k, v in r["settings"].items() if v is not None}
        if shown:
            star = {k: "\\*" if k in r["auto"] else "" for k in shown}
            lines.append(
                ", ".join(f"{md(k)}={md(_value(v))}{star[k]}" for k, v in shown.items())
                + (" (\\* chosen by vramc)" if r["auto"] else "")
            )
            lines.append("")
        q = r.get("quant")
        if q:  # a model of several quants (issue 15): which one this plan is of, and each
            lines.append(
                f"Quant: **{md(q['chosen'])}**"
                + (f" ({md(q['gguf'])})" if q["gguf"] else "")
                + (
                    ", chosen by quant: auto among "
                    + ", ".join(
                        f"{md(c['quant'])} ({md(c['verdict'])}, {c['gpu_layers']}/{c['layers']} layers on the GPUs)"
                        for c in q["candidates"]
                    )
                    if q["auto"]
                    else ""
                )
            )
            lines.append("")
        if not r["devices"]:
            lines += ["Not planned: see `vramc check`.", ""]
            continue
        if "kv_tokens" in r:  # vLLM: what it logs at start (plan JSON's added keys)
            lines += [
                f"KV cache: {r['kv_blocks']:,} blocks x {r['block_size']} = {r['kv_tokens']:,} "
                f"tokens; maximum concurrency {r['max_concurrency']:g}x at max_model_len "
                f"{r['settings'].get('max_model_len')}; longest max_model_len that fits: "
                f"{r['max_model_len_fit']:,}",
                "",
            ]
        lines += [
            "| device | name | weights | KV | compute | overhead | total | capacity | free | verdict | layers |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for d in r["devices"]:
            lines.append(
                f"| {md(d['id'])} | {md(d['name'])} | "
                + " | ".join(
                    _gib(d[k])
                    for k in (
                        "weights_bytes",
                        "kv_bytes",
                        "compute_bytes",
                        "overhead_bytes",
                        "total_bytes",
                        "capacity_bytes",
                        "free_bytes",
                    )
                )
                + f" | {d['verdict']} | {_layers(d['layers'])} |"
            )
        h = r["host"]
        if h:
            parts = " | ".join(_gib(h[k]) for k in ("weights_bytes", "kv_bytes", "compute_bytes"))
            lines.append(f"| host | | {parts} | | {_gib(h['total_bytes'])} | | | | |")
        lines += ["", "Sizes in GiB.", ""]
    return "\n".join(lines)


# --- github --------------------------------------------------------------------------------------


def _gh_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(s: str) -> str:
    return _gh_data(s).replace(":", "%3A").replace(",", "%2C")


def _anchor(d: dict) -> tuple[str, int]:
    """The changed line a reviewer should see: the first changed setting the profile writes,
    else the hardware or model reference whose profile changed, else the deployment's name."""
    anchors = d.get("_anchors", {})
    for s in d["settings"]:
        if f"settings.{s['key']}" in anchors:
            return anchors[f"settings.{s['key']}"]
    for f in d["inputs_changed"]:
        if f != d["file"]:
            for k in ("hardware", "model"):
                if k in anchors:
                    return anchors[k]
    return anchors.get("deployment", (d["file"], 1))


def github(doc: dict, failing: bool) -> str:
    out = []
    for d in doc["deployments"]:
        if not d.get("regression"):
            continue
        file, line = _anchor(d)
        r = largest(d)
        grew = (
            (
                f"; {device_id(r)} {_sgib(r['delta_bytes'])} GiB ({_gib(r['base'] and r['base']['total_bytes'])} "
                f"{ARROW} {_gib(r['head'] and r['head']['total_bytes'])} GiB)"
            )
            if r
            else ""
        )
        level = "error" if failing else "warning"
        msg = f"{label(d)}: {d['regression']}{grew}"
        out.append(
            f"::{level} file={_gh_prop(file)},line={line},title={_gh_prop('vramc diff: ' + label(d))}::{_gh_data(msg)}"
        )
    return "".join(x + "\n" for x in out)
