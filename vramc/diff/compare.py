"""Plan both sides exactly as `vramc plan --format json` does, pair deployments, and diff them.

Each side goes through lint.check.run_check (the pipeline and caches behind `vramc plan`) and
plan.view.plan_record (the records of `plan --format json`), from the side's project folder, so
a record's `file` and every number are what `plan --format json` prints there.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

VERDICT_ORDER = {None: -1, "fits": 0, "tight": 1, "does-not-fit": 2, "unknown": 3}
COMPONENTS = ("total_bytes", "weights_bytes", "kv_bytes", "compute_bytes", "overhead_bytes", "free_bytes")
HOST_COMPONENTS = ("total_bytes", "weights_bytes", "kv_bytes", "compute_bytes", "other_bytes")
DIFF_JSON_VERSION = 1
SHOWN = ("name", "variant", "file", "verdict", "settings", "devices", "host")


@dataclass
class Planned:
    """One deployment (or variant) on one side."""

    record: dict  # plan.view.plan_record
    inputs: dict  # profile file (project-relative) -> sha256: the deployment, its hardware and model
    artifacts: dict  # out/... path -> bytes, or {} when it cannot be built
    lines: dict  # what -> (file, line): anchors for annotations


@dataclass
class SidePlans:
    planned: dict = field(default_factory=dict)  # (file, name, variant) -> Planned
    errors: list = field(default_factory=list)  # "file:line:col: CODE error: message"
    # (file, code, message) of each error that kept a profile from loading: no plan, so no verdict
    # to compare, and a revision that breaks a profile must not pass as one without change
    load_errors: set = field(default_factory=set)
    # (file, code, message) of every error, those of planned deployments included (VR303 on a
    # profile that still plans): without positions, so that moving a line creates none
    error_keys: set = field(default_factory=set)
    files: int = 0
    plans: dict = field(default_factory=dict)  # key -> the Plan, to render its files on demand
    all_plans: list = field(default_factory=list)
    templates: str | None = None  # a digest of the project's templates/ folder


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def plan_side(side, paths: list[str], margin=None) -> SidePlans:
    """Load and plan `paths` (relative to the side's project folder) as `vramc plan` would."""
    from vramc.diagnostics import Severity
    from vramc.diff.revisions import link_models
    from vramc.lint.check import run_check
    from vramc.lint.runner import raised_while_loading
    from vramc.plan.view import plan_record

    out = SidePlans()
    with _cwd(side.root):

        def adjust(dep) -> None:
            for gguf in (dep.gguf_path, *dep.quant_files):  # quant_files: a model's `quants:` (issue 15)
                if gguf is not None:
                    link_models(side, gguf)

        result = run_check([Path(p) for p in paths], margin=margin, adjust=adjust)
        out.files = len(result.files)
        out.errors = [
            f"{d.file}:{d.line}:{d.column}: {d.code} error: {d.full_message()}"
            for d in result.diagnostics
            if d.severity == Severity.ERROR
        ]
        out.error_keys = {
            (d.file, d.code, d.full_message()) for d in result.diagnostics if d.severity == Severity.ERROR
        }
        out.load_errors = {key for key in out.error_keys if raised_while_loading(key[1])}
        out.all_plans = result.plans
        for plan in result.plans:
            rec = plan_record(plan)
            dep = plan.dep
            inputs = {}
            for doc in (dep.doc, dep.hardware, dep.model):
                rel = _project_rel(doc.path, side.root)
                inputs[rel] = side.digest(Path(os.path.abspath(doc.path)))
            key = (rec["file"], rec["name"], rec["variant"])
            out.planned[key] = Planned(rec, inputs, {}, _anchors(plan))
            out.plans[key] = plan
    out.templates = _templates_digest(side.root)
    return out


def _templates_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    base = root / "templates"
    for folder, dirs, files in sorted(os.walk(base)):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(folder, name)
            h.update(os.path.relpath(p, base).encode() + b"\0")
            try:
                with open(p, "rb") as f:
                    h.update(f.read(4 * 1024 * 1024))
            except OSError:
                h.update(b"?")
    return h.hexdigest()


def render(side, sp: SidePlans, keys) -> None:
    """Render the files of the deployments `keys` as `vramc build` would (in memory), from the
    side's project folder, which must still exist."""
    keys = [k for k in keys if k in sp.plans]
    if not keys:
        return
    with _cwd(side.root):
        rendered = _render_all(sp.all_plans, [sp.plans[k] for k in keys], side.root)
    for k in keys:
        sp.planned[k].artifacts = rendered.get(id(sp.plans[k]), {})


def to_render(base: SidePlans, head: SidePlans) -> list:
    """Deployments on both sides whose built files may differ: a different record, a changed
    input or templates/. The others would render the same bytes (the same inputs and code)."""
    out = []
    for k in head.planned:
        b, h = base.planned.get(k), head.planned[k]
        if b is not None and (b.record != h.record or b.inputs != h.inputs or base.templates != head.templates):
            out.append(k)
    return out


def _project_rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def _anchors(plan) -> dict:
    """Lines a reviewer's annotation can point at: each setting as written, the deployment's name,
    its hardware and model references."""
    dep = plan.dep
    doc = dep.doc
    out = {}

    def at(key: str, path: tuple) -> None:
        span = doc.positions.locate(path)
        if span is not None:
            out[key] = (doc.file, span.line)

    at("deployment", ("name",))
    at("hardware", ("hardware",))
    at("model", ("model",))
    raw = doc.raw if isinstance(doc.raw, dict) else {}
    for k in (raw.get("settings") or {}) if isinstance(raw.get("settings"), dict) else {}:
        at(f"settings.{k}", ("settings", k))
    if dep.variant_path:
        at("deployment", dep.variant_path)
        vraw = raw.get("variants", {}).get(dep.variant, {}) if isinstance(raw.get("variants"), dict) else {}
        vset = vraw.get("settings") if isinstance(vraw, dict) else None
        for k in vset if isinstance(vset, dict) else {}:
            at(f"settings.{k}", dep.variant_path + ("settings", k))
    return out


def _render_all(plans, wanted, root: Path) -> dict:
    """Each wanted plan's built files as `vramc build` would write them under out/ (in memory);
    ports are assigned over all the side's plans, as the build does."""
    from vramc.build.builder import _job, _render
    from vramc.build.targets.common import assign_ports

    ports = assign_ports(plans)
    out_dir = root / "out"
    rendered = {}
    for plan in wanted:
        if plan.estimate is None:
            continue
        job = _job(out_dir, plan)
        try:
            _render(job, ports, out_dir)
        except ValueError:  # the build refuses it; `vramc build` says why
            continue
        files = {}
        for rel, (data, _) in job.files.items():
            path = _project_rel(job.folder / rel, root)
            files[path] = data
        rendered[id(plan)] = files
    return rendered


# --- pairing and deltas --------------------------------------------------------------------------


def _components(d: dict | None, keys) -> dict | None:
    return None if d is None else {k: d.get(k) for k in keys}


def _paired(devices: list[dict]) -> dict:
    """Devices by what they are: this machine's by id; another machine's (llama.cpp RPC: RPC0, ...,
    which shift when `hosts:` changes; vLLM: HOST:CUDAi, i in the host's launch order) by host and
    that host's GPU index (-1: its CPU), the n-th such device of the plan if several."""
    out: dict = {}
    seen: dict = {}
    for d in devices:
        if d.get("host") is None:
            out[d["id"]] = d
            continue
        k = (d["host"], d["gpu"])
        seen[k] = seen.get(k, 0) + 1
        out[(*k, seen[k])] = d
    return out


def _device_rows(b: dict | None, h: dict | None) -> list[dict]:
    bdev = _paired((b or {}).get("devices", []))
    hdev = _paired((h or {}).get("devices", []))
    keys = list(bdev) + [k for k in hdev if k not in bdev]
    rows = []
    for k in keys:
        bd, hd = bdev.get(k), hdev.get(k)
        bc, hc = _components(bd, COMPONENTS), _components(hd, COMPONENTS)
        i = (hd or bd)["id"]
        row = {
            "id": i,
            "name": (hd or bd)["name"],
            "base": bc,
            "head": hc,
            "delta_bytes": (hc or {}).get("total_bytes", 0) - (bc or {}).get("total_bytes", 0),
            "deltas": {k: (hc or {}).get(k, 0) - (bc or {}).get(k, 0) for k in COMPONENTS},
            "capacity_bytes": {"base": bd and bd["capacity_bytes"], "head": hd and hd["capacity_bytes"]},
            "verdict": {"base": bd and bd["verdict"], "head": hd and hd["verdict"]},
            "layers": {"base": bd and bd["layers"], "head": hd and hd["layers"]},
        }
        if bd and hd and bd["id"] != i:  # another machine's device, renamed by a change of `hosts:`
            row["id_base"] = bd["id"]
        if (hd or bd).get("host") is not None:  # added keys: devices of other machines only
            row["host"] = (hd or bd)["host"]
        rows.append(row)
    return rows


def _host(b: dict | None, h: dict | None) -> dict:
    bh, hh = (b or {}).get("host"), (h or {}).get("host")
    bc, hc = _components(bh, HOST_COMPONENTS), _components(hh, HOST_COMPONENTS)
    return {
        "base": bc,
        "head": hc,
        "delta_bytes": (hc or {}).get("total_bytes", 0) - (bc or {}).get("total_bytes", 0),
        "deltas": {k: (hc or {}).get(k, 0) - (bc or {}).get(k, 0) for k in HOST_COMPONENTS},
    }


def _settings(b: dict | None, h: dict | None) -> list[dict]:
    bs, hs = (b or {}).get("settings", {}), (h or {}).get("settings", {})
    out = []
    for k in list(bs) + [k for k in hs if k not in bs]:
        if bs.get(k) != hs.get(k):
            out.append({"key": k, "base": bs.get(k), "head": hs.get(k)})
    return out


def _artifacts(b: Planned | None, h: Planned | None) -> list[dict]:
    ba, ha = (b.artifacts if b else {}), (h.artifacts if h else {})
    out = []
    for path in sorted(set(ba) | set(ha)):
        if ba.get(path) != ha.get(path):
            change = "added" if path not in ba else "removed" if path not in ha else "changed"
            out.append({"path": path, "change": change})
    return out


def diff_deployments(base: SidePlans, head: SidePlans) -> list[dict]:
    keys = list(head.planned) + [k for k in base.planned if k not in head.planned]
    order = {k: i for i, k in enumerate(sorted(keys, key=lambda k: (k[0], k[1], k[2] or "")))}
    out = []
    for key in sorted(keys, key=order.get):
        file, name, variant = key
        b, h = base.planned.get(key), head.planned.get(key)
        br, hr = (b.record if b else None), (h.record if h else None)
        inputs_changed = (
            sorted(
                f
                for f in set(b.inputs if b else {}) | set(h.inputs if h else {})
                if (b.inputs.get(f) if b else None) != (h.inputs.get(f) if h else None)
            )
            if b and h
            else []
        )
        arts = _artifacts(b, h)
        if b is None or h is None:  # its whole folder comes or goes; no need to render it
            arts = [
                {
                    "path": f"out/{name}/" + (f"@{variant}/" if variant else ""),
                    "change": "added" if b is None else "removed",
                }
            ]
        if b is None:
            change = "added"
        elif h is None:
            change = "removed"
        # the profiles a deployment refers to count even when its numbers stay the same; its
        # own file only through what it plans and builds (a comment or a new variant beside it
        # does not change it)
        elif br != hr or arts or any(f != file for f in inputs_changed):
            change = "changed"
        else:
            change = "unchanged"
        out.append(
            {
                "name": name,
                "variant": variant,
                "file": file,
                "change": change,
                "engine": (hr or br)["engine"],
                "verdict": {"base": br["verdict"] if br else None, "head": hr["verdict"] if hr else None},
                "settings": _settings(br, hr),
                "devices": _device_rows(br, hr),
                "host": _host(br, hr),
                "layers_moved": _layers_moved(br, hr),
                # other keys of the plan record that differ (engine, model, auto, engine_choices, notes,
                # errors, ...): settings, devices and host have their own entries above
                "plan_changes": sorted(
                    k for k in set(br or {}) | set(hr or {}) if br and hr and k not in SHOWN and br.get(k) != hr.get(k)
                ),
                "inputs_changed": inputs_changed,
                "artifacts": arts,
                "_anchors": (h or b).lines,
            }
        )
        if (br or {}).get("quant") or (hr or {}).get("quant"):  # a model of several quants (issue 15)
            out[-1]["quant"] = {"base": _quant(br), "head": _quant(hr)}
    return out


def _quant(rec: dict | None) -> str | None:
    """The quant a plan record is of, `Q4_K_M*` when `quant: auto` chose it; None without `quants:`."""
    q = (rec or {}).get("quant")
    return f"{q['chosen']}{'*' if q['auto'] else ''}" if q else None


def _layers_moved(b: dict | None, h: dict | None) -> list[dict]:
    if b is None or h is None:
        return []
    rows = _device_rows(b, h)
    return [
        {"id": r["id"], "base": r["layers"]["base"], "head": r["layers"]["head"]}
        | ({"id_base": r["id_base"]} if "id_base" in r else {})
        for r in rows
        if r["layers"]["base"] != r["layers"]["head"]
    ]


def worse(d: dict) -> bool:
    """The verdict got worse; an added deployment counts as coming from `fits`."""
    v = d["verdict"]
    return v["head"] is not None and VERDICT_ORDER[v["head"]] > VERDICT_ORDER[v["base"] or "fits"]


def regressions(deployments: list[dict], policies: list) -> list[tuple[dict, str]]:
    """(deployment, why) for each deployment the policy counts as a regression."""
    out = []
    for d in deployments:
        if d["change"] in ("removed", "unchanged") or "never" in policies:
            continue
        v = d["verdict"]
        if worse(d):
            out.append((d, f"verdict {v['base'] or 'new'} -> {v['head']}"))
            continue
        if "tight" in policies and VERDICT_ORDER[v["head"]] >= VERDICT_ORDER["tight"]:
            out.append((d, f"verdict is {v['head']}"))
            continue
        for p in policies:
            if isinstance(p, float):
                grown = [
                    r
                    for r in d["devices"]
                    if r["base"] and r["head"] and r["delta_bytes"] > r["base"]["total_bytes"] * p / 100
                ]
                if grown:
                    r = grown[0]
                    pct = 100 * r["delta_bytes"] / max(r["base"]["total_bytes"], 1)
                    out.append((d, f"{r['id']} total grew {pct:.1f}% (more than {p:g}%)"))
                    break
    return out


def broken_by_head(base: SidePlans, head: SidePlans, policies: list) -> list[str]:
    """The files the newer revision keeps from loading that loaded (or were absent) before: a
    regression under every policy but `never`; a profile that fails on both sides, or only on the
    base side, is not one (the change did not break it)."""
    if "never" in policies:
        return []
    return sorted({file for file, code, message in head.load_errors - base.load_errors})


def errors_new_in_head(base: SidePlans, head: SidePlans, policies: list) -> list[tuple[str, str, str]]:
    """(file, code, message) of each `check` error the newer revision has and the older had not,
    on a profile that still loads (a plan can read "fits" while check refuses the profile, e.g. a
    tensor_split with too few numbers): a regression under every policy but `never`."""
    if "never" in policies:
        return []
    return sorted(head.error_keys - base.error_keys - head.load_errors)


def parse_policy(values: list[str]) -> list:
    """--fail-on values: worse-verdict, tight, growth:N%, never. A verdict that got worse fails
    under every policy but `never`."""
    out: list = []
    for v in values or ["worse-verdict"]:
        for part in v.split(","):
            part = part.strip()
            if part in ("worse-verdict", "tight", "never"):
                out.append(part)
            elif part.startswith("growth:"):
                n = part[len("growth:") :].rstrip("%")
                try:
                    pct = float(n)
                except ValueError:
                    pct = -1.0
                if not (0 <= pct < 1e6) or pct != pct:
                    raise ValueError(f"--fail-on {part!r}: growth takes a percentage, e.g. growth:5%")
                out.append(pct)
            else:
                raise ValueError(f"--fail-on {part!r}: use worse-verdict, tight, growth:N% or never")
    if "never" in out and len(out) > 1:
        raise ValueError("--fail-on never cannot be combined with another policy")
    return out
