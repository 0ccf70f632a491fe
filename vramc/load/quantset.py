"""A model profile's `quants:` (issue 15): the GGUF files of several quant types of one model, each
with its lock, so that `quant: auto` is planned without the network or the files.

    kind: model
    hf: ORG/REPO              # where they come from (vramc analyze hf://ORG/REPO --write)
    quant: auto               # the planner picks; or Q4_K_M: that entry
    quants:
      - quant: Q8_0
        gguf: models/M-Q8_0.gguf
        source: hf://ORG/REPO@COMMIT/M-Q8_0.gguf
        lock: {...}           # a GGUFLock, as a model's own `lock:`
      - ...

Here: the checks of the list as written (VR207, VR208), and each entry as a model document of
its own (`candidates`), which the planner plans as it plans any model (vramc.plan.quants).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vramc.diagnostics import Diagnostic

if TYPE_CHECKING:
    from vramc.load.profiles import Doc

AUTO = "auto"


def is_auto(model) -> bool:
    return model.quant == AUTO


def uses_quants(model) -> bool:
    """Whether the model is planned from its `quants:` list (or should be: `quant: auto`)."""
    return model.quants is not None or is_auto(model)


def _analyze_command(doc: Doc) -> str:
    """The command that writes the `quants:` of `doc`'s model; an inline model (in a deployment)
    gets a model profile of its own, which the deployment then names."""
    m = doc.obj
    what = f"hf://{m.hf}" if m.hf else "A-Q8_0.gguf B-Q4_K_M.gguf ..."
    if doc.prefix:
        name = m.name or "NAME"
        return f"vramc analyze {what} --write profiles/models/{name}.yaml`, then `model: {name}"
    return f"vramc analyze {what} --write {doc.file}"


def problems(doc: Doc) -> list[Diagnostic]:
    """What makes the `quant`/`quants` of a model document unplannable (errors, VR207/VR208)."""
    m = doc.obj
    out: list[Diagnostic] = []

    from vramc.lint.codes import diagnostic

    def say(code: str, message: str, at: tuple, hint: str) -> None:
        span = doc.positions.locate(at) or doc.positions.locate(())
        out.append(diagnostic(code, message, doc.file, span, doc.prefix + at, hint))

    if m.quants is None:
        if is_auto(m):
            where = f"the quants of {m.hf}" if m.hf else "the GGUF files of the quants to choose from"
            say(
                "VR207",
                "quant: auto has no `quants:` to choose from (vramc never reads the network while checking)",
                ("quant",),
                f"lock {where} once: `{_analyze_command(doc)}`",
            )
        return out
    if m.quant is None:
        say(
            "VR208",
            "a model with `quants:` needs `quant:`: auto (the largest that fits) or one of "
            + ", ".join(e.quant for e in m.quants),
            ("quants",),
            "add `quant: auto`",
        )
    for key in ("gguf", "lock"):
        if getattr(m, key) is not None:
            say(
                "VR208",
                f"`{key}:` beside `quants:`: the file and lock of each quant go in its entry",
                (key,),
                f"move it into its `quants:` entry, or remove `quants:` and `quant:` to plan this `{key}:` alone",
            )
    seen: dict[str, int] = {}
    for i, e in enumerate(m.quants):
        key = e.quant.upper()
        if key in seen:
            say(
                "VR208",
                f"quant {e.quant} is listed twice in `quants:` (entries {seen[key] + 1} and {i + 1})",
                ("quants", i, "quant"),
                "keep one entry per quant type; `vramc analyze ... --write` writes the list again",
            )
        else:
            seen[key] = i
        if e.lock is None and e.gguf is None:
            say(
                "VR208",
                f"quants entry {e.quant} has neither `gguf:` nor `lock:`: nothing says how large it is",
                ("quants", i),
                f"lock it: `{_analyze_command(doc)}`",
            )
    if m.quant is not None and not is_auto(m) and m.quant.upper() not in seen:
        say(
            "VR208",
            f"quant {m.quant} is not in `quants:` (it has {', '.join(e.quant for e in m.quants)})",
            ("quant",),
            "name one of those, or `auto` to let vramc pick the largest that fits",
        )
    return out


@dataclass
class Candidate:
    index: int  # position in `quants:`
    quant: str
    doc: Doc  # the entry as a model document (what the planner plans)
    gguf_path: Path | None


def _merged_positions(doc: Doc, index: int):
    """The model's positions with the entry's laid over them: what a diagnostic about the model's
    file, lock or source says points at the entry; anything else (mmproj) at the model."""
    from vramc.load.yamlpos import Positions

    entry = doc.positions.sub(("quants", index))
    out = Positions(dict(doc.positions.keys), dict(doc.positions.values))
    out.keys.update(entry.keys)
    out.values.update(entry.values)
    return out


def candidates(doc: Doc, project_root: Path) -> list[Candidate]:
    """Each `quants:` entry as a model document: the model with that entry's gguf, lock, source
    and quant, and no `quants:` (so it is planned as a model of one file)."""
    from dataclasses import replace

    m = doc.obj
    out = []
    for i, e in enumerate(m.quants or ()):
        obj = m.model_copy(
            update={"quant": e.quant, "gguf": e.gguf, "lock": e.lock, "source": e.source or m.source, "quants": None}
        )
        gguf_path = None
        if e.gguf:
            gp = Path(os.path.expanduser(e.gguf))
            gguf_path = gp if gp.is_absolute() else project_root / gp
        out.append(Candidate(i, e.quant, replace(doc, obj=obj, positions=_merged_positions(doc, i)), gguf_path))
    return out
