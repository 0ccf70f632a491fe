"""`vramc analyze`: describe a GGUF model from its header, and lock it into a model profile.

The report is a plain dict (`build_report`), rendered as aligned text or as JSON with sorted keys.
JSON fields (sizes in bytes; `null` where the GGUF does not say):

    report_version      1
    path, architecture, name, file_type, file_size, splits, header_sha256, tokenizer
    block_count, context_length, embedding_length, vocab_size, tensor_count, total_bytes
    blocks              {count, min_bytes, mean_bytes, max_bytes,
                         layers: [{index, bytes, types: {ggml type: tensor count}}]}
    input               {bytes, tensors}       token embeddings: llama.cpp keeps them in host memory
    output              {bytes, tensors, tied_embeddings, device_bytes}
                        device_bytes adds token_embd.weight when tied: llama.cpp copies it there
    other               {bytes, tensors}       tensors outside blocks, input and output
    attention           {head_count, head_count_kv (per layer), key_length, value_length,
                         gqa_ratios, sliding_window, sliding_window_pattern, swa_layers,
                         key_length_mla, value_length_mla, kv_lora_rank, q_lora_rank}
    experts             {expert_count, expert_used_count, expert_shared_count,
                         expert_feed_forward_length, leading_dense_block_count}  (those present)
    recurrent           the ssm.*, wkv.*, shortconv.* and token_shift_count hyper-parameters
    types               {ggml type: {bytes, tensors}}
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from vramc.model.gguf import GGUFError, read_gguf, split_paths
from vramc.model.modelmeta import ModelMeta, Tensor, block_ranges, lock_mismatch

REPORT_VERSION = 1
_INPUT = ("token_embd.", "token_embd_norm.", "token_types.", "position_embd.")
_OUTPUT = ("output.", "output_norm.")
_EXPERT_KEYS = (
    "expert_count",
    "expert_used_count",
    "expert_shared_count",
    "expert_feed_forward_length",
    "leading_dense_block_count",
)
_RECURRENT_PREFIXES = ("ssm.", "wkv.", "shortconv.")
_MLA_LABELS = {
    "key_length_mla": "MLA key length",
    "value_length_mla": "MLA value length",
    "kv_lora_rank": "KV LoRA rank",
    "q_lora_rank": "Q LoRA rank",
}


# --- report --------------------------------------------------------------------------------
def build_report(meta: ModelMeta, path: str | os.PathLike) -> dict[str, Any]:
    hp = meta.hparams
    n_layer = hp.get("block_count", 0)  # read_gguf checked it
    # a blk.N tensor past block_count is no layer llama.cpp would place: report it under "other"
    in_blocks = [t for t in meta.tensors if t.block is not None and t.block < n_layer]
    loose = [t for t in meta.tensors if t.block is None or t.block >= n_layer]
    layers = _layers(in_blocks, n_layer)
    block_bytes = [layer["bytes"] for layer in layers]
    inputs = [t for t in loose if t.name.startswith(_INPUT)]
    outputs = [t for t in loose if t.name.startswith(_OUTPUT)]
    others = [t for t in loose if not t.name.startswith(_INPUT + _OUTPUT)]
    embd = meta.tensor("token_embd.weight")
    tied = embd is not None and meta.tensor("output.weight") is None
    output_bytes = _sum(outputs)
    return {
        "report_version": REPORT_VERSION,
        "path": str(path),
        "architecture": meta.architecture,
        "name": meta.name,
        "file_type": meta.file_type,
        "file_size": meta.file_size,
        "splits": meta.splits,
        "header_sha256": meta.header_sha256,
        "tokenizer": meta.extra.get("tokenizer.ggml.model"),
        "block_count": n_layer,
        "context_length": hp.get("context_length"),
        "embedding_length": hp.get("embedding_length"),
        "vocab_size": meta.vocab_size,
        "tensor_count": len(meta.tensors),
        "total_bytes": meta.total_bytes,
        "blocks": {
            "count": n_layer,
            "min_bytes": min(block_bytes, default=0),
            "mean_bytes": round(sum(block_bytes) / len(block_bytes)) if block_bytes else 0,
            "max_bytes": max(block_bytes, default=0),
            "layers": layers,
        },
        "input": {"bytes": _sum(inputs), "tensors": [t.name for t in inputs]},
        "output": {
            "bytes": output_bytes,
            "tensors": [t.name for t in outputs],
            "tied_embeddings": tied,
            "device_bytes": output_bytes + (embd.nbytes if tied else 0),
        },
        "other": {"bytes": _sum(others), "tensors": [t.name for t in others]},
        "attention": _attention(meta, n_layer),
        "experts": {k: hp[k] for k in _EXPERT_KEYS if k in hp},
        "recurrent": {
            k: v for k, v in sorted(hp.items()) if k.startswith(_RECURRENT_PREFIXES) or k == "token_shift_count"
        },
        "types": _types(meta.tensors),
    }


def _layers(tensors: list[Tensor], n_layer: int) -> list[dict]:
    sizes, types = [0] * n_layer, [Counter() for _ in range(n_layer)]
    for t in tensors:
        sizes[t.block] += t.nbytes
        types[t.block][t.type] += 1
    return [{"index": i, "bytes": sizes[i], "types": dict(sorted(types[i].items()))} for i in range(n_layer)]


def _per_layer(value: Any, n_layer: int) -> list[int] | None:
    """A per-layer integer hyper-parameter (scalar or array), or None if it is not one."""
    if isinstance(value, list) and all(type(v) is int for v in value):
        return value
    return [value] * n_layer if type(value) is int else None


def _attention(meta: ModelMeta, n_layer: int) -> dict[str, Any]:
    hp = meta.hparams
    heads = _per_layer(hp.get("attention.head_count"), n_layer)
    kv_heads = _per_layer(hp.get("attention.head_count_kv"), n_layer) or heads
    n_embd = hp.get("embedding_length")
    # llama.cpp's default head size: n_embd over the first layer's head count
    head_dim = n_embd // heads[0] if heads and heads[0] and type(n_embd) is int else None
    ratios = sorted({h // kv for h, kv in zip(heads or [], kv_heads or []) if kv})
    window = hp.get("attention.sliding_window")
    pattern = hp.get("attention.sliding_window_pattern")
    out: dict[str, Any] = {
        "head_count": heads,
        "head_count_kv": kv_heads,
        "key_length": hp.get("attention.key_length", head_dim),
        "value_length": hp.get("attention.value_length", head_dim),
        "gqa_ratios": ratios,
        "sliding_window": window,
        "sliding_window_pattern": pattern,
        "swa_layers": _swa_layers(pattern, n_layer, meta.architecture),
    }
    out.update({k: hp.get(f"attention.{k}") for k in _MLA_LABELS})
    return out


def _swa_layers(pattern: Any, n_layer: int, arch: str) -> list[int] | None:
    """The sliding-window layers as llama.cpp derives them from the GGUF's pattern key."""
    if isinstance(pattern, list):
        return [i for i, swa in enumerate(pattern) if swa]
    if not isinstance(pattern, int):
        return None
    from vramc.memory.llama_hparams import SWA_DENSE_FIRST, swa_flags

    return [i for i, swa in enumerate(swa_flags(pattern, n_layer, arch in SWA_DENSE_FIRST)) if swa]


def _types(tensors: list[Tensor]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for t in tensors:
        row = out.setdefault(t.type, {"bytes": 0, "tensors": 0})
        row["bytes"] += t.nbytes
        row["tensors"] += 1
    return out


def _sum(tensors: list[Tensor]) -> int:
    return sum(t.nbytes for t in tensors)


# --- text ----------------------------------------------------------------------------------
def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def render_text(report: dict, layers: bool = False) -> str:
    r = report
    blocks, out = r["blocks"], r["output"]
    file_size = f"{_human(r['file_size'])} ({r['file_size']:,} bytes"
    file_size += f" in {r['splits']} parts)" if r["splits"] > 1 else ")"
    vocab = f"{r['vocab_size']:,} tokens" + (f" ({r['tokenizer']})" if r["tokenizer"] else "")
    weights = [
        (
            "per block",
            f"min {_human(blocks['min_bytes'])}, mean {_human(blocks['mean_bytes'])}, "
            f"max {_human(blocks['max_bytes'])}",
        ),
        ("input", _tensors(r["input"]) + " (host memory)"),
        ("output", _tensors(out)),
        ("tied embeddings", "no"),
    ]
    if out["tied_embeddings"]:
        weights[-1] = (
            "tied embeddings",
            f"yes: token_embd.weight is copied onto the output device, {_human(out['device_bytes'])} there",
        )
    if r["other"]["tensors"]:
        weights.append(("other", _tensors(r["other"])))
    sections = [
        (
            None,
            [
                ("architecture", r["architecture"]),
                ("name", r["name"] or "-"),
                ("file type", r["file_type"] or "-"),
                ("file size", file_size),
                ("header sha256", r["header_sha256"]),
                ("blocks", str(r["block_count"])),
                ("trained context", _num(r["context_length"])),
                ("embedding length", _num(r["embedding_length"])),
                ("vocabulary", vocab),
            ],
        ),
        ("weights", weights),
        ("attention", _attention_rows(r["attention"])),
        ("experts", [(k.replace("_", " "), _num(v)) for k, v in r["experts"].items()]),
        ("recurrent state", [(k, _value(v)) for k, v in r["recurrent"].items()]),
    ]
    width = max(len(label) for _, rows in sections for label, _ in rows)
    lines = [r["path"]]
    for title, rows in sections:
        if rows:
            lines += ["", title] if title else []
            lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    lines += _types_table(r["types"], r["total_bytes"])
    if layers:
        lines += _layers_table(blocks["layers"])
    lines += ["", f"total: {_human(r['total_bytes'])} ({r['total_bytes']:,} bytes) in {r['tensor_count']} tensors"]
    return "\n".join(lines) + "\n"


def _attention_rows(a: dict) -> list[tuple[str, str]]:
    rows = []
    if a["head_count"] is not None:
        rows.append(("heads", _by_layer(a["head_count"])))
        rows.append(("KV heads", _by_layer(a["head_count_kv"])))
        lengths = f"{_value(a['key_length'])} / {_value(a['value_length'])}"
        rows.append(("key / value length", lengths))
        rows.append(("GQA ratio", ", ".join(map(str, a["gqa_ratios"])) or "-"))
    if a["sliding_window"] is not None:
        pattern = a["sliding_window_pattern"]
        if a["swa_layers"] is None:
            where = "on the layers llama.cpp picks for this architecture (no pattern in the GGUF)"
        elif a["swa_layers"]:
            where = _on_layers(a["swa_layers"])
            if isinstance(pattern, int):
                where += f" (pattern {pattern})"
        else:
            where = "on no layer"
        rows.append(("sliding window", f"{_num(a['sliding_window'])} tokens {where}"))
    rows += [(label, _value(a[k])) for k, label in _MLA_LABELS.items() if a[k] is not None]
    return rows


def _types_table(types: dict, total: int) -> list[str]:
    rows = sorted(types.items(), key=lambda kv: (-kv[1]["bytes"], kv[0]))
    lines = ["", "quantization mix", f"  {'type':<8} {'tensors':>7}  {'bytes':>16}  {'size':>11}  share"]
    for name, row in rows:
        n, share = row["bytes"], row["bytes"] / total if total else 0
        lines.append(f"  {name:<8} {row['tensors']:>7}  {n:>16,}  {_human(n):>11}  {share:6.1%}")
    return lines


def _layers_table(layers: list[dict]) -> list[str]:
    lines = ["", "blocks", f"  {'block':>5}  {'bytes':>14}  {'MiB':>10}  types"]
    for layer in layers:
        types = ", ".join(f"{t} x{n}" for t, n in layer["types"].items())
        n = layer["bytes"]
        lines.append(f"  {layer['index']:>5}  {n:>14,}  {n / 2**20:>10.2f}  {types}")
    return lines


def _by_layer(values: list) -> str:
    """`8 (all 32 layers)`, or `8 on layers 0-3,5; 0 on layer 4`."""
    groups: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(v, []).append(i)
    if len(groups) == 1:
        return f"{_value(values[0])} (all {len(values)} layers)"
    return "; ".join(f"{_value(v)} {_on_layers(ix)}" for v, ix in groups.items())


def _on_layers(indices: list[int]) -> str:
    return f"on layer{'s' if len(indices) > 1 else ''} {block_ranges(indices)}"


def _tensors(part: dict) -> str:
    return f"{_human(part['bytes'])}  {', '.join(part['tensors']) or '-'}"


def _human(n: int | float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _num(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else _value(v)


def _value(v: Any) -> str:
    return "-" if v is None else str(v)


# --- profile -------------------------------------------------------------------------------
def default_name(path: str | os.PathLike) -> str:
    """A profile name from the file name: `Llama-3.1-8B-Q8_0` from `Llama-3.1-8B-Q8_0.gguf`."""
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", Path(path).name.removesuffix(".gguf"))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "model"


def profile_yaml(
    meta: ModelMeta,
    *,
    gguf: str | None,
    name: str,
    command: str,
    source: str | None = None,
    download: list[str] | None = None,
) -> str:
    """A model profile holding the lock; loads back through `schema.Model`."""
    doc = {
        "kind": "model",
        "name": name,
        "gguf": gguf,
        "source": source or f"vramc analyze of {Path(gguf or '').name}",
        "lock": _lock(meta),
    }
    if gguf is None:  # derived without a file (vramc lock --config)
        del doc["gguf"]
    head = f"# Locked by `{command}`; regenerate with the same command.\n"
    if download:  # the file is not here: where to get it (gguf: says where it is expected)
        head += "".join(f"# download: {_comment(u)}\n" for u in download)
    return head + _dump(doc)


class _FlowMap(dict):
    pass


def _lock(meta: ModelMeta) -> dict:
    lock = meta.to_lock()
    if "file" in lock:
        lock["file"] = _FlowMap(lock["file"])
    return lock


def _dump(doc: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    # short lists and the file fingerprint on one line each; every other map in block style
    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    Dumper.add_representer(_FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120)


def quants_profile_yaml(
    entries: list[dict], *, name: str, command: str, hf: str | None = None, source: str | None = None
) -> str:
    """A model profile of several quants (issue 15): `quant: auto` and one `quants:` entry per
    file ({quant, meta, gguf, source, download}), largest first; loads back through `schema.Model`."""
    doc: dict = {"kind": "model", "name": name}
    if hf:
        doc["hf"] = hf
    if source:
        doc["source"] = source
    doc["quant"] = "auto"
    doc["quants"] = [
        {"quant": e["quant"], "gguf": e["gguf"], "source": e["source"], "lock": _lock(e["meta"])} for e in entries
    ]
    head = f"# Locked by `{command}`; regenerate with the same command.\n"
    for e in entries:
        head += "".join(f"# download {e['quant']}: {_comment(u)}\n" for u in e.get("download") or ())
    # the entries in block style, one after the other (the list style of _dump is for short lists)
    text = _dump({k: v for k, v in doc.items() if k != "quants"}) + "quants:\n"
    for q in doc["quants"]:
        text += "".join(("- " if i == 0 else "  ") + line + "\n" for i, line in enumerate(_dump(q).splitlines()))
    return head + text


def _comment(text: str) -> str:
    """`text` on one comment line: no line break can end the comment early."""
    return "".join(c if c.isprintable() else "?" for c in text)


def relative_gguf(gguf: Path, profile: Path) -> str:
    """The GGUF's path as the written profile resolves it: relative to its project's folder (the
    one that holds profiles/), so the project can move; absolute only where no relative path
    exists (another drive)."""
    from vramc.load.profiles import project_root

    target = Path(os.path.abspath(gguf))
    try:
        return Path(os.path.relpath(target, project_root(Path(os.path.abspath(profile))))).as_posix()
    except ValueError:
        return str(target)


def fingerprint_status(gguf_path: str | os.PathLike, lock) -> str | None:
    """None if the GGUF still matches `lock` (a `schema.GGUFLock`), else a short reason.

    Sizes first, from stat; only when they match is the header read and hashed again.
    """
    f = lock.file
    if f is None:
        return "the lock has no file fingerprint"
    try:
        paths = split_paths(gguf_path, f.splits)
    except GGUFError as e:
        return e.message
    size = 0
    for p in paths:
        try:
            size += os.stat(p).st_size
        except OSError as e:
            return f"{p}: {e.strerror}"
    if lock_mismatch(size, None, f) == "size":
        return f"size is {size:,} bytes, the lock says {f.size:,}"
    try:
        meta = read_gguf(paths[0])
    except GGUFError as e:
        return f"{e.path}: {e}"
    if lock_mismatch(size, meta.header_sha256, f) == "header":
        return "the header changed (its sha256 differs from the lock)"
    return None


def meta_problem(meta: ModelMeta) -> str | None:
    """Why `check` would refuse to plan with this header (modelmeta.validate_meta), or None."""
    from vramc.model.modelmeta import MetaError, validate_meta

    try:
        validate_meta(meta)
    except MetaError as e:
        return str(e)
    return None
