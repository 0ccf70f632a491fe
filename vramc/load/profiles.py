"""Load profiles: YAML with positions -> validated schema objects -> resolved deployments.

A file is one of four kinds (hardware, model, deployment, deployments). A deployment may name its
hardware and model (`profiles/hardware/NAME.yaml`, `profiles/models/NAME.yaml`) or give them
inline; each variant of a deployment becomes its own `Deployment`, planned and checked on its own.
Every problem becomes a Diagnostic pointing into the file that holds the offending value.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vramc.diagnostics import Diagnostic
from vramc.lint.codes import diagnostic

if TYPE_CHECKING:  # YAML is parsed only when a file is loaded, not to discover files
    from typing import Any

    from pydantic import BaseModel

    from vramc.load.schema import LintConfig, Margin, Settings
    from vramc.load.yamlpos import Loaded, Positions

PROFILE_SUFFIXES = (".yaml", ".yml")
KINDS = ("hardware", "model", "deployment", "deployments")


def display_path(path: Path) -> str:
    """Paths as the user would type them: relative to the working directory when below it, else
    absolute (`../../tmp/x.yaml` depends on where the command ran and reads worse than `/tmp/x.yaml`)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)
    return os.path.abspath(path) if rel == ".." or rel.startswith(".." + os.sep) else rel


@dataclass
class Doc:
    """One validated document (or a part of one, such as an inline hardware block)."""

    file: str  # display path of the file it lives in
    path: Path
    obj: BaseModel  # the schema object: a DeploymentBody, Hardware or Model
    positions: Positions  # rooted at this document
    raw: Any  # the plain data, for rules that need to see what was written
    prefix: tuple = ()  # where this document sits in its file


@dataclass
class Deployment:
    name: str
    variant: str | None
    doc: Doc  # the deployment body
    hardware: Doc
    model: Doc
    settings: Settings  # with the variant applied
    env: dict
    margin: Margin
    lint: LintConfig  # merged: file, deployment, variant
    group: str  # deployments sharing a group share the same GPUs (one file = one machine)
    variant_path: tuple = ()  # path of the variant body inside the deployment, for positions
    gguf_path: Path | None = None
    project_root: Path | None = None
    # one model of a server that serves several (`models:`, issue 14): the server's deployment
    # name, this model's position in its `models:` list, and the name the server knows it by
    server: str | None = None
    member: int | None = None
    tag: str | None = None
    server_engine: str | None = None  # the server's `engine:` (the model runs as its llama-server)
    ttl: int | None = None  # llama-swap: the model's ttl
    models_max: int | None = None  # llama-server's router: --models-max (the server's max_loaded_models)
    quant_files: tuple = ()  # the GGUF paths of the model's `quants:` entries (issue 15), resolved

    @property
    def label(self) -> str:
        return f"{self.name}@{self.variant}" if self.variant else self.name

    def is_named(self, label: str) -> bool:
        """Whether NAME or NAME@VARIANT (split_label) names this deployment; `NAME@` is NAME."""
        name, variant = split_label(label)
        return self.name == name and (self.variant or "") == (variant or "")


def split_label(label: str) -> tuple[str, str | None]:
    """A deployment as the command line names it, NAME or NAME@VARIANT (Deployment.label's form),
    split into (NAME, VARIANT); VARIANT is None without an `@`, "" after a trailing one. The one
    place that reads that form (`vramc run`, `plan -d`, `fit -d`; tests/test_exit_codes.py)."""
    name, at, variant = label.partition("@")
    return name, variant if at else None


@dataclass
class LoadResult:
    deployments: list[Deployment] = field(default_factory=list)
    docs: list[Doc] = field(default_factory=list)  # every valid file, any kind
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    refs: dict[str, set[str]] = field(default_factory=dict)  # file -> files its references looked at


# --- discovering files --------------------------------------------------------------------------


def probe(path: Path) -> tuple[str, str]:
    """What is at `path`: ("file" | "dir" | "other" | "missing" | "error", why it cannot be read).

    Path.is_file() raises on some errors (a name too long, permission) and answers False on
    others (a symlink loop), and a NUL raises ValueError: each would be an internal error or a
    misleading "not found"; here each is a reason to show."""
    import errno
    import stat

    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "missing", ""
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.ELOOP:
            reason += " (a symbolic link that leads back to itself)"
        return "error", reason
    except ValueError as e:  # embedded NUL
        return "error", str(e)
    return ("file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"), ""


# path -> safe_resolve(path) while load_paths runs: one load asks about the same few folders and
# files hundreds of times (references, the check cache's inputs), each a chain of lstat calls
_RESOLVED: dict | None = None


def safe_resolve(path: Path) -> Path:
    """path.resolve(), or the absolute path where resolving fails (a symlink loop raises)."""
    memo = _RESOLVED
    if memo is not None:
        hit = memo.get(path)
        if hit is not None:
            return hit
    try:
        out = path.resolve()
    except (OSError, RuntimeError, ValueError):
        out = Path(os.path.abspath(path))
    if memo is not None:
        memo[path] = out
    return out


def _unreadable(path: Path, reason: str) -> Diagnostic:
    return diagnostic(
        "VR000",
        f"cannot read: {reason}",
        display_path(path),
        None,
        (),
        unreadable_hint(reason),
    )


def unreadable_hint(reason: str) -> str:
    """What to do about one of probe()'s reasons, per cause: chmod cures a permission, never a
    symlink loop, and a loop is cured by fixing the link, never by permissions."""
    if "leads back to itself" in reason:
        return "fix the link so that it ends at a file, or remove it"
    if "ermission" in reason:
        return "make it readable (chmod u+r on the file, u+x on its folders), or run vramc as its owner"
    if "too long" in reason:
        return "shorten the path"
    if "Not a directory" in reason:
        return "a part of the path is a file, not a folder: check the path"
    return "check the path"


def _walk(root: Path, problems: list[Diagnostic]) -> list[Path]:
    """Profile files below `root`, hidden folders skipped, unreadable folders reported (rglob
    skips a folder it may not list without a word, and its profiles would go unchecked)."""
    found: list[Path] = []
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            problems.append(_unreadable(Path(folder), f"cannot list the folder: {e.strerror}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():  # only links cost a stat: a loop or a dangling link shows here
                if entry.name.endswith(PROFILE_SUFFIXES):
                    kind, reason = probe(Path(entry.path))
                    if kind == "file":
                        found.append(Path(entry.path))
                    elif kind == "error":
                        problems.append(_unreadable(Path(entry.path), reason))
                    else:
                        problems.extend(_not_a_profile(Path(entry.path), kind))
            elif entry.is_dir():
                stack.append(entry.path)
            elif entry.name.endswith(PROFILE_SUFFIXES):
                if entry.is_file():
                    found.append(Path(entry.path))
                else:  # a FIFO or a device named like a profile
                    problems.extend(_not_a_profile(Path(entry.path), "other"))
    return sorted(found)


# VR000's message for a FIFO, a device or a socket: `vramc check` counts each as a file it checked
NOT_REGULAR = "not a regular file (a pipe, a device or a socket)"
# VR000's message for a path given that is not there (`vramc check typo.yaml`): counted the same way
NO_SUCH = "no such file or directory"


def _not_a_profile(path: Path, kind: str, given: bool = False) -> list[Diagnostic]:
    """VR000 for a path that probe() found missing or not a regular file, when that is worth
    saying: a symlink whose target is gone, a FIFO or a device (never opened: it could block).
    `given`: named on the command line (`vramc check /dev/zero`), where renaming is no cure."""
    if kind == "other":
        return [
            diagnostic(
                "VR000",
                NOT_REGULAR,
                display_path(path),
                None,
                (),
                "give a profile (a regular .yaml file) or a folder of them, e.g. vramc check profiles/"
                if given
                else "profiles are regular YAML files: remove it or rename it so that it does not end in .yaml",
            )
        ]
    if kind == "missing" and os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return [
            diagnostic(
                "VR000",
                f"a symbolic link to {target}, which does not exist",
                display_path(path),
                None,
                (),
                "fix or remove the link",
            )
        ]
    return []


def discover(paths: list[Path]) -> tuple[list[Path], list[Diagnostic]]:
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for p in paths:
        kind, reason = probe(p)
        if kind == "dir":
            files.extend(_walk(p, problems))
        elif kind == "file":
            files.append(p)
        elif kind == "error":
            problems.append(_unreadable(p, reason))
        else:
            problems.extend(
                _not_a_profile(p, kind, given=True)
                or [
                    diagnostic(
                        "VR000",
                        NO_SUCH,
                        display_path(p),
                        None,
                        (),
                        "check the path",
                    )
                ]
            )
    seen, unique = set(), []
    for f in files:
        key = safe_resolve(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


# --- validation with positions ------------------------------------------------------------------


def _existing_prefix(data: object, loc: tuple) -> tuple:
    """The part of a pydantic `loc` that indexes into the data.

    Union members add tag segments ("Hardware", "int", "literal['all','auto']") that are not in
    the data; they are skipped so an error inside an inline hardware block still finds its line.
    """
    out: list = []
    cur = data
    for seg in loc:
        if isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
            out.append(seg)
        elif isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur):
            cur = cur[seg]
            out.append(seg)
    return tuple(out)


def _inner_model(ann):
    """The pydantic model inside an annotation such as `str | Hardware` or `list[GPU]`."""
    import typing

    from pydantic import BaseModel

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _model_fields(schema_cls, path: tuple):
    """Field names valid at `path` in `schema_cls`, for 'did you mean' on unknown keys."""
    from pydantic import BaseModel

    cls = schema_cls
    for seg in path:
        if isinstance(seg, int):  # a list element: the annotation already unwrapped below
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return []
        f = cls.model_fields.get(seg)
        if f is None:
            return []
        cls = _inner_model(f.annotation)
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return []


def _plain(msg: str) -> str:
    """pydantic's wording, shortened to what a person needs: 'expected an integer'."""
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if msg.startswith("Input should be "):
        msg = msg[len("Input should be ") :]
        msg = msg.split(", unable to parse")[0]
        msg = msg.replace("a valid integer", "an integer").replace("a valid number", "a number")
        msg = msg.replace("a valid ", "")
        return "expected " + msg
    return msg


_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
_MAPPING = "a mapping (key: value lines)"
_WANTED = {  # pydantic error type -> what the value must be, in a profile's words
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number (not .inf or .nan)",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "string_type": "text",
    "dict_type": _MAPPING,
    "model_type": _MAPPING,
    "model_attributes_type": _MAPPING,
    "list_type": "a list ([a, b], or lines starting with '- ')",
    "string_pattern_mismatch": "letters, digits, '.', '_' or '-', starting with a letter or digit",
}


def _yaml_kind(value: object) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return "a number"
    return "text"


def _wanted(err: dict) -> list[str] | None:
    """What one pydantic error says the value must be (['a whole number >= 0'], ['on', 'off'])."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        bound = ctx.get(key)
        # pydantic gives the bound in the field's type: an int bound is a whole-number field, a
        # float one a number field even when the value written (`gpu_memory_utilization: 2`) is whole
        whole = isinstance(bound, int) and not isinstance(bound, bool)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        if not whole and op in ("<=", "<") and bound == 1:
            return [f"a fraction {op} 1 (e.g. 0.9)"]
        return [f"{'a whole number' if whole else 'a number'} {op} {bound}"]
    if kind == "literal_error":
        return [x.strip().strip("'") for x in str(ctx.get("expected", "")).replace(" or ", ", ").split(", ")]
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return [f"a list of at least {n} item{'s' if n != 1 else ''}"]
    return [_WANTED[kind]] if kind in _WANTED else None


def _alternatives(items: list[str]) -> str:
    items = [x for i, x in enumerate(items) if x not in items[:i]]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _where(path: tuple) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int) or not str(seg).isidentifier():
            out += f"[{seg!r}]"
        else:
            out += f".{seg}" if out else seg
    return out or "the document"


def _describe_input(value: object) -> str:
    from vramc.diagnostics import show_value

    return show_value(value)


def _value_message(path: tuple, errs: list[dict]) -> str:
    """One sentence for every complaint about one value: 'settings.ctx must be a whole number
    >= 0 or auto, got -8192'; a validator's own words (sizes, patterns) as they are."""
    where = _where(path)
    value = errs[0].get("input")
    got = _describe_input(value)
    own = [_plain(e["msg"]) for e in errs if e["type"] == "value_error"]
    if own and any("[key]" in e["loc"] for e in errs):  # a key's validator names the key itself
        return " or ".join(own)
    wanted = [_wanted(e) for e in errs if e["type"] != "value_error"]
    if own or any(w is None for w in wanted):  # a validator's words, or a type we have no words for
        msgs = own + [_plain(e["msg"]) for e in errs if e["type"] != "value_error" and _wanted(e) is None]
        msgs = [m for i, m in enumerate(msgs) if m not in msgs[:i]]
        text = " or ".join(msgs)
        shown = got if got not in text and str(value) not in text else ""
        return f"invalid value for {where}: {text}" + (f", got {shown}" if shown else "")
    alts = _alternatives([x for w in wanted for x in w])
    type_only = all(e["type"] not in _BOUNDS and e["type"] != "literal_error" for e in errs)
    if type_only and isinstance(value, (dict, list)) or value is None:
        return f"{where} must be {alts}, not {_yaml_kind(value)}"
    return f"{where} must be {alts}, got {got}"


def validate(schema_cls, data: object, positions: Positions, file: str, prefix: tuple = ()):
    """Validate `data` against `schema_cls`; return (object or None, diagnostics)."""
    from pydantic import ValidationError

    try:
        return schema_cls.model_validate(data), []
    except ValidationError as e:
        errors = e.errors(include_url=False)
    mapped = []
    for err in errors:
        loc = tuple(err["loc"])
        path = _existing_prefix(data, loc)
        if err["type"] == "missing":
            err = dict(err, _missing=loc[-1])
        mapped.append((path, err))
    # A union reports every member's failure; when one member got deeper into the value (an
    # inline hardware block), the other members' "wrong type" complaints are noise.
    deeper = {p[:i] for p, _ in mapped for i in range(len(p))}
    grouped: dict[tuple, list[dict]] = {}
    for path, err in mapped:
        if path in deeper and err["type"] not in ("missing", "extra_forbidden"):
            continue
        grouped.setdefault(path, []).append(err)
    diags = []
    for path, errs in grouped.items():
        first = errs[0]
        if first["type"] == "extra_forbidden":
            key = path[-1]
            valid = _model_fields(schema_cls, path[:-1])
            low = str(key).lower().lstrip("-").replace("-", "_")
            alias = low if low in valid else _ENGINE_NAMES.get(low)
            close = [alias] if alias in valid else difflib.get_close_matches(str(key), valid, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else (f"valid keys here: {', '.join(valid)}" if valid else "remove it")
            )
            diags.append(
                diagnostic(
                    "VR100",
                    f"unknown key {key!r}",
                    file,
                    positions.locate(path, prefer_key=True),
                    prefix + path,
                    hint,
                )
            )
            continue
        if first["type"] == "missing":
            missing = [str(e.get("_missing")) for e in errs if e["type"] == "missing"]
            names = ", ".join(sorted(set(missing)))
            diags.append(
                diagnostic(
                    "VR102",
                    f"missing required key {names}",
                    file,
                    positions.locate(path, prefer_key=True),
                    prefix + path,
                    "add it (see `vramc explain VR102`)",
                )
            )
            continue
        at_key = any("[key]" in e["loc"] for e in errs)  # a mapping's key (a variant's name)
        diags.append(
            diagnostic(
                "VR101",
                _value_message(path, errs),
                file,
                positions.locate(path, prefer_key=at_key),
                prefix + path,
            )
        )
    return None, diags


# An engine's own name for a setting (llama-server's long and short options, llama_cpp.Llama's and
# Ollama's parameters): VR100's "did you mean" names the setting, where spelling alone led
# `ctx_size` (llama-server's --ctx-size) to ctx_min, the floor of `ctx: auto`.
_ENGINE_NAMES = {
    **dict.fromkeys(("ctx_size", "c", "n_ctx", "num_ctx", "context", "context_length"), "ctx"),
    **dict.fromkeys(("ngl", "n_gpu_layers", "num_gpu", "gpu_layer"), "gpu_layers"),
    **dict.fromkeys(("np", "n_parallel", "num_parallel"), "parallel"),
    **dict.fromkeys(("b", "batch_size", "n_batch", "num_batch"), "batch"),
    **dict.fromkeys(("ub", "ubatch_size", "n_ubatch"), "ubatch"),
    **dict.fromkeys(("ts",), "tensor_split"),
    **dict.fromkeys(("sm",), "split_mode"),
    **dict.fromkeys(("mg",), "main_gpu"),
    **dict.fromkeys(("fa",), "flash_attn"),
    **dict.fromkeys(("ctk", "type_k"), "cache_type_k"),
    **dict.fromkeys(("ctv", "type_v"), "cache_type_v"),
}


# VR104's bounds: GPUs that run LLMs have 1 GiB (a GTX 1060 3GB has 3) to a few hundred GiB; hosts
# with under 1 GiB of RAM do not run them either, and 64 TiB is beyond the largest servers.
GPU_VRAM_RANGE = (1 << 30, 1 << 40)
HOST_RAM_RANGE = (1 << 30, 64 << 40)
_BOUND_TEXT = {1 << 30: "1 GiB", 1 << 40: "1 TiB", 64 << 40: "64 TiB"}


def _implausible(what: str, v, bounds, positions: Positions, file: str, p: tuple) -> Diagnostic | None:
    """VR104: `vram: 24` is 24 MiB (a bare number is MiB); say so, and what was meant."""
    from vramc.units import implausible

    found = implausible(v, *bounds)
    if found is None:
        return None
    read, guess = found
    low, high = bounds
    side = f"less than {_BOUND_TEXT[low]}" if _parsed(v) < low else f"more than {_BOUND_TEXT[high]}"
    shown = v if isinstance(v, str) else _number(v)
    from vramc.units import size_unit

    example = "24GiB" if what == "vram" else "64GiB"
    if guess:
        hint = f"did you mean {guess}?"
    elif size_unit(v):  # `vram: 0.5GiB` has its unit: the number itself is what to check
        hint = (
            f"check the value: {_WHAT[what]} with {'so little' if _parsed(v) < low else 'so much'} memory "
            f"is unlikely (e.g. {example})"
        )
    else:
        hint = f"write the size with its unit, e.g. {example}"
    return diagnostic(
        "VR104",
        f"{what} {shown} is read as {read}, {side}, implausible for {_WHAT[what]}",
        file,
        positions.locate(p),
        p,
        hint,
    )


_WHAT = {"vram": "a GPU", "host_ram": "a host's memory"}


def _bare_margin(v, positions: Positions, file: str, p: tuple) -> Diagnostic | None:
    """VR104: `margin: 10` is 10 MiB of each GPU (a bare number is MiB), almost always meant as
    10%; from 1 to 100 without a unit it is said how it was read, and how to write either."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        n = float(v) if not isinstance(v, str) else float(v.strip())
    except ValueError:
        return None  # has a unit or a % (or is invalid: VR101 says so)
    if not 1 <= n <= 100:
        return None
    shown = _number(n)
    return diagnostic(
        "VR104",
        f"margin {shown} is read as {shown} MiB of each GPU (a bare number is MiB)",
        file,
        positions.locate(p),
        p,
        f"write {shown}% for a share of each GPU, or {shown}MiB if you mean MiB",
    )


def _parsed(v) -> int:
    from vramc.units import parse_size

    return parse_size(v)


def _number(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _decimal_vram(data, positions: Positions, file: str, path: tuple = ()) -> list[Diagnostic]:
    """VR103: `vram: 24 GB` is 22.35 GiB, almost never what the card has. VR104: `vram: 24` is 24
    MiB, `host_ram: 64` 64 MiB: sizes no machine has, almost always a missing unit."""
    from vramc.units import DECIMAL_UNITS, GiB, parse_size, size_unit

    out: list[Diagnostic] = []
    if isinstance(data, dict):
        if "margin" in data and (d := _bare_margin(data["margin"], positions, file, path + ("margin",))):
            out.append(d)
        if "host_ram" in data and ("gpus" in data or data.get("kind") == "hardware"):
            d = _implausible("host_ram", data["host_ram"], HOST_RAM_RANGE, positions, file, path + ("host_ram",))
            out += [d] if d else []
        gpus = data.get("gpus")
        for i, g in enumerate(gpus if isinstance(gpus, list) else []):
            v = g.get("vram") if isinstance(g, dict) else None
            if v is not None and not isinstance(v, bool):
                d = _implausible("vram", v, GPU_VRAM_RANGE, positions, file, path + ("gpus", i, "vram"))
                if d is not None:  # one warning per value: VR104 says what VR103 would and more
                    out.append(d)
                    continue
            if size_unit(v) in DECIMAL_UNITS:
                p = path + ("gpus", i, "vram")
                try:
                    gib = parse_size(v) / GiB
                except ValueError:
                    continue
                out.append(
                    diagnostic(
                        "VR103",
                        f"vram {v} is {gib:.2f} GiB in decimal units",
                        file,
                        positions.locate(p),
                        p,
                        f"GPU memory is sold in GiB: write {v.strip()[:-2].strip()}GiB if you mean the card's size",
                    )
                )
        for k, v in data.items():
            if k != "gpus" and isinstance(v, (dict, list)):
                out.extend(_decimal_vram(v, positions, file, path + (k,)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(_decimal_vram(v, positions, file, path + (i,)))
    return out


# --- kinds --------------------------------------------------------------------------------------


def _kind_of(data: dict) -> str | None:
    kind = data.get("kind")
    if kind in KINDS:
        return kind
    if "deployments" in data:
        return "deployments"
    if "engine" in data or ("model" in data and ("hardware" in data or "settings" in data)):
        return "deployment"
    if "gpus" in data:
        return "hardware"
    if any(k in data for k in ("lock", "gguf", "hf", "config", "quants")):
        return "model"
    return None


def _schema_for(kind: str):
    from vramc.load import schema

    return {
        "hardware": schema.Hardware,
        "model": schema.Model,
        "deployment": schema.DeploymentBody,
        "deployments": schema.DeploymentFile,
    }[kind]


def profiles_root(file: Path) -> Path:
    """The folder whose hardware/ and models/ subfolders named references resolve against.

    The profile's own folder or its parent (profiles/x.yaml, profiles/team/x.yaml); never further
    up, so an unrelated models/ folder higher in the tree is not picked up by accident.
    """
    d = safe_resolve(file).parent
    for cand in (d, d.parent):
        if probe(cand / "hardware")[0] == "dir" or probe(cand / "models")[0] == "dir":
            return cand
    return d


def project_root(file: Path) -> Path:
    """Relative model paths resolve against the folder that holds `profiles/` (the project)."""
    root = profiles_root(file)
    return root.parent if root.name == "profiles" else root


class Loader:
    """Loads files once each, validates them, and resolves deployments."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[Loaded, Doc | None, str | None]] = {}
        # resolved path -> text read instead of the file (fit --write checks its edit before writing)
        self.texts: dict[Path, str] = {}
        self.diagnostics: list[Diagnostic] = []
        self._reported: set[Path] = set()
        self.refs: dict[str, set[str]] = {}  # file -> what its references read or looked for (the check cache's inputs)

    def load(self, path: Path) -> tuple[Loaded, Doc | None, str | None]:
        key = safe_resolve(path)
        if key in self._files:
            return self._files[key]
        display = display_path(path)
        from vramc.load.yamlpos import load_file, load_text

        loaded = load_text(self.texts[key], display) if key in self.texts else load_file(path, display)
        diags = list(loaded.diagnostics)
        doc, kind = None, None
        if loaded.data is None and not diags:
            diags.append(
                diagnostic(
                    "VR004",
                    "empty profile",
                    display,
                    None,
                    (),
                    "a profile needs at least a name and its settings",
                )
            )
        elif isinstance(loaded.data, dict):
            kind = _kind_of(loaded.data)
            if kind is None:
                diags.append(
                    diagnostic(
                        "VR004",
                        "cannot tell what kind of profile this is",
                        display,
                        loaded.positions.locate(()),
                        (),
                        "add `kind: hardware|model|deployment|deployments`, or the keys of one "
                        "(gpus; gguf/lock/hf; engine; deployments)",
                    )
                )
            elif not diags:
                obj, vdiags = validate(_schema_for(kind), loaded.data, loaded.positions, display)
                diags.extend(vdiags)
                diags.extend(_decimal_vram(loaded.data, loaded.positions, display))
                if obj is not None:
                    doc = Doc(display, path, obj, loaded.positions, loaded.data)
                    if kind == "model":  # a model's `quants:` as written (the planner says it again)
                        from vramc.load import quantset

                        diags.extend(quantset.problems(doc))
                    diags.extend(_duplicate_hosts(obj, kind, loaded.positions, display))
        elif loaded.data is not None and not diags:
            diags.append(
                diagnostic(
                    "VR004",
                    "a profile must be a YAML mapping",
                    display,
                    loaded.positions.locate(()),
                    (),
                )
            )
        self._files[key] = (loaded, doc, kind)
        if key not in self._reported:
            self._reported.add(key)
            self.diagnostics.extend(diags)
        return self._files[key]

    # --- references ---
    def _resolve_ref(self, owner: Doc, path_in_owner: tuple, value, folder: str, kind: str) -> Doc | None:
        if not isinstance(value, str):  # inline
            return Doc(
                owner.file,
                owner.path,
                value,
                owner.positions.sub(path_in_owner),
                _get(owner.raw, path_in_owner),
                owner.prefix + path_in_owner,
            )
        from vramc.load.schema import path_problem

        span = owner.positions.locate(path_in_owner)
        if value.endswith(PROFILE_SUFFIXES) or "/" in value:
            candidates = [owner.path.parent / value]
        else:
            root = profiles_root(owner.path)
            candidates = [root / folder / f"{value}{s}" for s in PROFILE_SUFFIXES]
        where = owner.prefix + path_in_owner
        problem = next((pp for pp in (path_problem(str(c)) for c in candidates) if pp), None)
        if problem:  # no file can have this name: say why, rather than "not found" or a crash
            self.diagnostics.append(
                diagnostic(
                    "VR101",
                    f"{kind} {_describe_input(value)} cannot name a profile file: {problem}",
                    owner.file,
                    span,
                    where,
                    f"give the name of a file in {folder}/ without .yaml, or inline the {kind}",
                )
            )
            return None
        # the link as well as its target: a symlink pointed at another file changes the answer
        looked = {str(safe_resolve(c)) for c in candidates} | {os.path.abspath(c) for c in candidates}
        self.refs.setdefault(str(safe_resolve(owner.path)), set()).update(looked)
        probes = [(c, *probe(c)) for c in candidates]
        target = next((c for c, what, _ in probes if what == "file"), None)
        failed = next(((c, why) for c, what, why in probes if what == "error"), None)
        if target is None and failed is not None:
            self.diagnostics.append(
                diagnostic(
                    "VR000",
                    f"{kind} profile {value!r} cannot be read: {display_path(failed[0])}: {failed[1]}",
                    owner.file,
                    span,
                    where,
                    unreadable_hint(failed[1]),
                )
            )
            return None
        if target is None:
            looked = ", ".join(display_path(c) for c in candidates)
            close = _close_names(value, candidates[0].parent)
            self.diagnostics.append(
                diagnostic(
                    "VR110",
                    f"{kind} profile {value!r} not found",
                    owner.file,
                    span,
                    where,
                    (f"did you mean {close!r}? " if close else "") + f"looked for {looked}; create it or fix the name",
                )
            )
            return None
        _, doc, found_kind = self.load(target)
        if doc is None:
            self.diagnostics.append(
                diagnostic(
                    "VR111",
                    f"{kind} profile {value!r} is invalid",
                    owner.file,
                    span,
                    owner.prefix + path_in_owner,
                    f"fix {display_path(target)} (see its diagnostics)",
                )
            )
            return None
        if found_kind != kind:
            self.diagnostics.append(
                diagnostic(
                    "VR111",
                    f"{display_path(target)} is a {found_kind} profile, not a {kind} profile",
                    owner.file,
                    span,
                    owner.prefix + path_in_owner,
                )
            )
            return None
        return doc

    # --- deployments ---
    def deployments_of(self, doc: Doc, kind: str) -> list[Deployment]:
        from vramc.load import schema

        out: list[Deployment] = []
        if kind == "deployment":
            bodies = [(doc, ())]
            file_hw, file_lint, group = None, None, f"{doc.file}#{doc.obj.name}"
        else:
            f: schema.DeploymentFile = doc.obj
            bodies = [(doc, ("deployments", i)) for i in range(len(f.deployments))]
            file_hw = self._resolve_ref(doc, ("hardware",), f.hardware, "hardware", "hardware")
            file_lint, group = f.lint, doc.file
            seen: dict[str, int] = {}
            for i, body in enumerate(f.deployments):
                if body.name in seen:
                    self.diagnostics.append(
                        diagnostic(
                            "VR112",
                            f"deployment name {body.name!r} is used twice in this file",
                            doc.file,
                            doc.positions.locate(("deployments", i, "name")),
                            ("deployments", i, "name"),
                            "give each deployment its own name",
                        )
                    )
                seen[body.name] = i
        for owner, prefix in bodies:
            body = _get_obj(owner.obj, prefix)
            bdoc = Doc(owner.file, owner.path, body, owner.positions.sub(prefix), _get(owner.raw, prefix), prefix)
            if body.hardware is not None:
                hw = self._resolve_ref(bdoc, ("hardware",), body.hardware, "hardware", "hardware")
                if kind == "deployments" and hw is not None and file_hw is not None and hw.obj != file_hw.obj:
                    # they run together on one machine: a deployment planned on other GPUs read
                    # `fits` (a 70B on two H100s "sharing" CUDA0 with one on an RTX 3060)
                    self.diagnostics.append(
                        diagnostic(
                            "VR101",
                            "this deployment's hardware is not the file's: the deployments of a `deployments:` "
                            "file run together on the machine its `hardware:` describes, and are planned there",
                            bdoc.file,
                            bdoc.positions.locate(("hardware",)),
                            prefix + ("hardware",),
                            "remove it from the deployment, or give the deployment a file of its own",
                        )
                    )
                    hw = file_hw
            elif kind == "deployments":
                hw = file_hw
            else:
                hw = None
                self.diagnostics.append(
                    diagnostic(
                        "VR102",
                        "missing required key hardware",
                        bdoc.file,
                        bdoc.positions.locate(()),
                        prefix,
                        "name a hardware profile or describe the GPUs inline",
                    )
                )
            if body.models is not None or body.model is None or body.engine == "llama-swap":
                out += self._server_members(bdoc, body, hw, file_lint, group)
                continue
            model = self._resolve_ref(bdoc, ("model",), body.model, "models", "model")
            if hw is None or model is None:
                continue
            gpu_problems = check_gpus(bdoc, body, hw) + check_hosts(bdoc, body, hw)
            if gpu_problems:  # planned on other GPUs than asked for, it would say "fits" wrongly
                self.diagnostics.extend(gpu_problems)
                continue
            lint = _merge_lint(file_lint, body.lint)
            base_margin = lint.margin
            variants = [(None, None)] + sorted(body.variants.items())
            for vname, variant in variants:
                settings, env, margin = body.settings, dict(body.env), base_margin
                vpath: tuple = ()
                if variant is not None:
                    settings = _overlay(body.settings, variant.settings)
                    env.update(variant.env)
                    margin = variant.margin or base_margin
                    vpath = ("variants", vname)
                gguf_path = None
                if model.obj.gguf:
                    gp = Path(os.path.expanduser(model.obj.gguf))
                    gguf_path = gp if gp.is_absolute() else project_root(model.path) / gp
                quant_files: tuple = ()
                if model.obj.quants:
                    from vramc.load import quantset

                    cands = quantset.candidates(model, project_root(model.path))
                    quant_files = tuple(c.gguf_path for c in cands if c.gguf_path is not None)
                out.append(
                    Deployment(
                        name=body.name,
                        variant=vname,
                        doc=bdoc,
                        hardware=hw,
                        model=model,
                        settings=settings,
                        env=env,
                        margin=margin or schema.Margin(fraction=DEFAULT_MARGIN),
                        lint=lint,
                        group=group,
                        variant_path=vpath,
                        gguf_path=gguf_path,
                        project_root=project_root(bdoc.path),
                        quant_files=quant_files,
                    )
                )
        return out

    def _server_members(self, bdoc: Doc, body, hw: Doc | None, file_lint, group: str) -> list[Deployment]:
        """A server that serves several models (`models:`): one Deployment per model, each planned
        as the server would start it (the server's settings under the model's own), all in the
        server's group so that the planner can form the sets that are resident at once."""
        from vramc.load import schema

        def say(msg: str, path: tuple, hint: str, code: str = "VR343") -> None:
            self.diagnostics.append(
                diagnostic(code, msg, bdoc.file, bdoc.positions.locate(path), bdoc.prefix + path, hint)
            )

        if body.models is None and body.engine == "llama-swap":
            say(
                "engine llama-swap serves `models:`, a list of models",
                ("model",),
                "write `models: [{name: NAME, model: MODEL}]`, or engine: llama-server for one model",
            )
            return []
        if body.models is None:
            say(
                "missing required key model (or `models:` for a server that serves several)",
                (),
                "name a model profile, or list the server's models under `models:`",
                "VR102",
            )
            return []
        problems = False
        if body.model is not None:
            say(
                "`model` and `models` cannot both be given",
                ("model",),
                "keep `models:` (a server with several models) or `model:` (one)",
            )
            problems = True
        if body.engine not in SERVER_ENGINES:
            say(
                f"engine {body.engine} serves one model per deployment; `models:` needs engine: "
                f"{' or '.join(SERVER_ENGINES)}",
                ("models",),
                "write one deployment per model in a `deployments:` file instead",
            )
            problems = True
        if body.variants:
            say(
                "a server with `models:` cannot have variants (yet)",
                ("variants",),
                "write each variant as its own deployment file",
            )
            problems = True
        seen: dict[str, int] = {}
        tags: dict[str, int] = {}
        for i, m in enumerate(body.models):
            if m.name in seen:
                say(
                    f"model name {m.name!r} is used twice in this server",
                    ("models", i, "name"),
                    "give each model its own name",
                )
                problems = True
            seen.setdefault(m.name, i)
            tag = m.tag or m.name
            if tag.lower() in tags:  # Ollama's names compare case-insensitively (types/model/name.go)
                say(
                    f"tag {tag!r} is used twice in this server: the second `ollama create` would replace the first",
                    ("models", i, "tag" if m.tag else "name"),
                    "give each model its own tag",
                )
                problems = True
            tags.setdefault(tag.lower(), i)
            if body.engine == "llama-server" and not schema.valid_name(tag):
                say(
                    f"tag {tag!r} cannot name a router preset: llama-server rewrites the part after ':' "
                    "(common/preset.cpp load_from_ini)",
                    ("models", i, "tag"),
                    "use letters, digits, '.', '_' and '-' only",
                )
                problems = True
            for key in sorted(SERVER_SETTINGS.get(body.engine, frozenset()) & m.settings.model_fields_set):
                say(
                    f"{key} is a setting of the whole server, not of one model",
                    ("models", i, "settings", key),
                    "move it to the deployment's own `settings:`",
                )
                problems = True
            if m.ttl is not None and body.engine != "llama-swap":
                say(
                    "ttl is llama-swap's; Ollama keeps a model loaded for the server's keep_alive",
                    ("models", i, "ttl"),
                    "set `keep_alive` in the deployment's `settings:`",
                )
                problems = True
        if (body.groups is not None or body.ttl is not None) and body.engine != "llama-swap":
            key = "groups" if body.groups is not None else "ttl"
            say(
                f"`{key}` is llama-swap's (engine: llama-swap)",
                (key,),
                "for Ollama, max_loaded_models and keep_alive in `settings:` say what stays loaded",
            )
            problems = True
        grouped: dict[str, str] = {}
        for gname, g in (body.groups or {}).items():
            for j, member in enumerate(g.members):
                if member not in seen:
                    say(
                        f"group {gname} names {member!r}, which is not one of this server's models ({', '.join(seen)})",
                        ("groups", gname, "members", j),
                        "use a name from `models:`",
                    )
                    problems = True
                elif member in grouped:
                    say(
                        f"{member!r} is in group {grouped[member]} and in group {gname}: llama-swap allows "
                        "a model in one group only",
                        ("groups", gname, "members", j),
                        "keep it in one group",
                    )
                    problems = True
                grouped.setdefault(member, gname)
        if problems or hw is None:
            return []
        gpu_problems = check_gpus(bdoc, body, hw) + check_hosts(bdoc, body, hw)
        if gpu_problems:
            self.diagnostics.extend(gpu_problems)
            return []
        lint = _merge_lint(file_lint, body.lint)
        out: list[Deployment] = []
        for i, m in enumerate(body.models):
            mdoc = Doc(
                bdoc.file,
                bdoc.path,
                m,
                bdoc.positions.sub(("models", i)),
                _get(bdoc.raw, ("models", i)),
                bdoc.prefix + ("models", i),
            )
            model = self._resolve_ref(mdoc, ("model",), m.model, "models", "model")
            if model is None:
                continue
            settings = _overlay(body.settings, m.settings)
            # the member is planned as a one-model deployment of the server's engine and GPUs
            # (llama-swap's models as the llama-server each starts)
            engine = "llama-server" if body.engine == "llama-swap" else body.engine
            if engine == "llama-server":  # the router's own setting, not its models'
                values = {**dict(settings), "max_loaded_models": None}
                settings = type(settings).model_construct(
                    _fields_set=settings.model_fields_set - {"max_loaded_models"}, **values
                )
            one = body.model_copy(update={"model": m.model, "models": None, "settings": settings, "engine": engine})
            doc = Doc(bdoc.file, bdoc.path, one, bdoc.positions, bdoc.raw, bdoc.prefix)
            gguf_path = None
            if model.obj.gguf:
                gp = Path(os.path.expanduser(model.obj.gguf))
                gguf_path = gp if gp.is_absolute() else project_root(model.path) / gp
            quant_files: tuple = ()
            if model.obj.quants:  # as a single deployment's: the check cache's inputs, diff's links
                from vramc.load import quantset

                cands = quantset.candidates(model, project_root(model.path))
                quant_files = tuple(c.gguf_path for c in cands if c.gguf_path is not None)
            out.append(
                Deployment(
                    name=f"{body.name}.{m.name}",
                    variant=None,
                    doc=doc,
                    hardware=hw,
                    model=model,
                    settings=settings,
                    env=dict(body.env),
                    margin=lint.margin or schema.Margin(fraction=DEFAULT_MARGIN),
                    lint=lint,
                    group=group,
                    gguf_path=gguf_path,
                    project_root=project_root(bdoc.path),
                    quant_files=quant_files,
                    server=body.name,
                    member=i,
                    tag=m.tag or m.name,
                    server_engine=body.engine,
                    ttl=m.ttl,
                    models_max=body.settings.max_loaded_models,
                )
            )
        return out


# engines whose one server serves several models, and the settings that belong to the server
SERVER_ENGINES = ("ollama", "llama-swap", "llama-server")
SERVER_SETTINGS = {
    # Ollama reads these from its own environment, once for every model
    "ollama": frozenset(
        {
            "parallel",
            "cache_type_k",
            "cache_type_v",
            "flash_attn",
            "keep_alive",
            "max_loaded_models",
            "host",
            "port",
            "device_order",
        }
    ),
    # llama-swap listens on host:port; each llama-server it starts takes the rest per model
    "llama-swap": frozenset({"host", "port"}),
    # llama-server's router mode: its own address and --models-max (max_loaded_models)
    "llama-server": frozenset({"host", "port", "max_loaded_models"}),
}

DEFAULT_MARGIN = 0.05  # warn when less than 5% of a GPU would stay free


def _close_names(value: str, folder: Path) -> str | None:
    """The existing profile name nearest to a misspelt reference ("workstaton" -> "workstation")."""
    try:
        entries = os.listdir(folder)
    except (OSError, ValueError):
        return None
    by_path = "/" in value or value.endswith(PROFILE_SUFFIXES)
    names = sorted(n if by_path else n.rsplit(".", 1)[0] for n in entries if n.endswith(PROFILE_SUFFIXES))
    key = os.path.basename(value) if by_path else value
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if not close:
        return None
    return os.path.join(os.path.dirname(value), close[0]) if by_path else close[0]


def check_gpus(bdoc: Doc, body, hw: Doc) -> list[Diagnostic]:
    """VR113/VR114: a deployment's `gpus:` are positions in its hardware's `gpus` list.

    An index the hardware does not have, a negative one or one listed twice is an error at that
    index (planning on what is left would call the plan fine while the engine sees other
    devices). `gpus: []` hides every GPU (CUDA_VISIBLE_DEVICES=''): the llama.cpp engines then run
    on the CPU, while vLLM cannot start at all."""
    gpus = hw.obj.gpus
    listing = ", ".join(f"{i} ({g.name})" for i, g in enumerate(gpus)) or "none"
    named = repr(hw.obj.name) if hw.obj.name else display_path(hw.path) if hw.path != bdoc.path else "(inline)"
    have = f"{named} has {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}: {listing}"
    out: list[Diagnostic] = []
    seen: dict[int, int] = {}
    for pos, i in enumerate(body.gpus or []):
        where = ("gpus", pos)
        if i in seen:
            msg = f"GPU {i} is listed twice in gpus (first at position {seen[i]})"
            hint = "list each GPU once: one GPU is one device to the engine"
        elif not 0 <= i < len(gpus):
            msg = (f"GPU index {i} is negative" if i < 0 else f"there is no GPU {i}") + f": hardware {have}"
            same = [k for k, g in enumerate(gpus) if g.index == i]
            hint = (
                f"gpus: counts positions in the hardware's gpus list from 0; the GPU with "
                f"`index: {i}` is at position {same[0]}"
                if same
                else "gpus: counts positions in the hardware's gpus list, from 0"
            )
        else:
            seen[i] = pos
            continue
        out.append(diagnostic("VR113", msg, bdoc.file, bdoc.positions.locate(where), bdoc.prefix + where, hint))
    if not out and body.engine == "vllm" and (body.gpus == [] or (body.gpus is None and not gpus)):
        where = ("gpus",) if body.gpus is not None else ("hardware",)
        out.append(
            diagnostic(
                "VR114",
                f"no GPUs selected: vLLM needs at least one (hardware {have})",
                bdoc.file,
                bdoc.positions.locate(where),
                bdoc.prefix + where,
                "list the GPUs to use, e.g. gpus: [0]"
                if gpus
                else "describe the machine's GPUs in the hardware profile",
            )
        )
    return out


def _hardware_blocks(obj, kind: str) -> list[tuple[tuple, object]]:
    """(path, Hardware) of every hardware described in one file: the file itself, an inline block."""
    from vramc.load import schema

    found: list[tuple[tuple, object]] = []
    if kind == "hardware":
        found.append(((), obj))
    elif kind == "deployment" and isinstance(obj.hardware, schema.Hardware):
        found.append((("hardware",), obj.hardware))
    elif kind == "deployments":
        if isinstance(obj.hardware, schema.Hardware):
            found.append((("hardware",), obj.hardware))
        for i, d in enumerate(obj.deployments):
            if isinstance(d.hardware, schema.Hardware):
                found.append((("deployments", i, "hardware"), d.hardware))
    return found


def _duplicate_hosts(obj, kind: str, positions: Positions, file: str) -> list[Diagnostic]:
    """VR116: two hosts of one hardware profile with one name (a deployment names hosts by it)."""
    out: list[Diagnostic] = []
    for base, hw in _hardware_blocks(obj, kind):
        seen: dict[str, int] = {}
        for i, h in enumerate(hw.hosts):  # type: ignore[attr-defined]
            if h.name in seen:
                where = base + ("hosts", i, "name")
                out.append(
                    diagnostic(
                        "VR116",
                        f"host name {h.name!r} is used twice in hosts (first at position {seen[h.name]})",
                        file,
                        positions.locate(where),
                        where,
                        "give each host its own name: deployments name the hosts they span by it",
                    )
                )
            seen.setdefault(h.name, i)
    return out


@dataclass(frozen=True)
class HostSpan:
    """One host a deployment spans, resolved against its hardware: for llama.cpp one rpc-server."""

    position: int  # in the deployment's `hosts:` list (the --rpc order)
    name: str
    address: str
    port: int
    gpus: tuple[int, ...]  # positions in the host's gpus; () = its CPU backend
    cache: bool
    bind: str  # the address rpc-server listens on
    host: Any  # the schema Host


def host_spans(dep_body, hw) -> list[HostSpan]:
    """The hosts `dep_body` spans, in its order (check_hosts has accepted them)."""
    by_name = {h.name: h for h in hw.hosts}
    out = []
    for i, use in enumerate(dep_body.hosts or []):
        h = by_name[use.host]
        gpus = tuple(range(len(h.gpus))) if use.gpus is None else tuple(use.gpus)
        out.append(HostSpan(i, h.name, h.address, use.port, gpus, use.cache, use.bind or h.address, h))
    return out


def check_hosts(bdoc: Doc, body, hw: Doc) -> list[Diagnostic]:
    """VR115/VR117/VR118/VR119: a deployment's `hosts:` are hosts of its hardware, each with GPUs
    it has, on an engine that can span machines, and no two rpc-servers on one address and port."""
    if not body.hosts:
        return []
    from vramc.engines import ENGINES

    out: list[Diagnostic] = []

    def say(code: str, msg: str, where: tuple, hint: str) -> None:
        out.append(diagnostic(code, msg, bdoc.file, bdoc.positions.locate(where), bdoc.prefix + where, hint))

    refusal = ENGINES[body.engine].hosts_refusal
    if refusal is None and body.models is not None:
        refusal = "a llama-server with `models:` (its router) starts one llama-server per model, on this machine"
    if refusal is not None:
        say(
            "VR118",
            f"engine {body.engine} cannot span several machines: {refusal}",
            ("hosts",),
            "use engine: llama-server (its build writes the rpc-server of every host and the --rpc arguments), "
            "or remove `hosts:`",
        )
        return out
    hosts = hw.obj.hosts
    named = repr(hw.obj.name) if hw.obj.name else display_path(hw.path) if hw.path != bdoc.path else "(inline)"
    by_name = {h.name: h for h in hosts}
    listing = ", ".join(h.name for h in hosts) or "none"
    used_gpus: dict[tuple[str, int], int] = {}
    endpoints: dict[tuple[str, int], int] = {}
    nodes: dict[str, int] = {}  # vLLM: host -> its entry (node rank - 1)
    vllm = ENGINES[body.engine].family == "vllm"
    for pos, use in enumerate(body.hosts):
        raw = _get(bdoc.raw, ("hosts", pos))
        name_at = ("hosts", pos) if isinstance(raw, str) else ("hosts", pos, "host")
        h = by_name.get(use.host)
        if vllm and use.host in nodes:
            # a vLLM node is a machine: one node rank, one `vllm serve` (or `ray start`), one
            # out/NAME/hosts/HOST/; the rpc-server checks below (GPUs, ports) do not apply
            say(
                "VR116",
                f"host {use.host} is listed twice (hosts[{nodes[use.host]}] and hosts[{pos}]): a vLLM node is "
                "one machine with one node rank",
                name_at,
                "list each host once; give it the GPUs vLLM uses there with {host: " + use.host + ", gpus: [...]}",
            )
            continue
        nodes.setdefault(use.host, pos)
        if h is None:
            close = difflib.get_close_matches(use.host, list(by_name), n=1)
            say(
                "VR115",
                f"hardware {named} has no host {use.host!r} (its hosts: {listing})",
                name_at,
                (f"did you mean {close[0]!r}? " if close else "")
                + "name a host of the hardware profile's `hosts:`, or describe it there (name, address, gpus, host_ram)",
            )
            continue
        have = ", ".join(f"{i} ({g.name})" for i, g in enumerate(h.gpus)) or "none: it serves its CPU"
        seen: set[int] = set()
        for j, i in enumerate(use.gpus or []):
            where = ("hosts", pos, "gpus", j)
            if i in seen:
                say("VR117", f"GPU {i} of host {h.name} is listed twice", where, "list each GPU once")
            elif not 0 <= i < len(h.gpus):
                say(
                    "VR117",
                    f"host {h.name} has no GPU {i} (its GPUs: {have})",
                    where,
                    "gpus: counts positions in the host's gpus list from 0; [] is its CPU backend",
                )
            elif (h.name, i) in used_gpus:
                say(
                    "VR117",
                    f"GPU {i} of host {h.name} is already served by hosts[{used_gpus[h.name, i]}]",
                    where,
                    "one GPU is one device: give it to one rpc-server",
                )
            seen.add(i)
            used_gpus.setdefault((h.name, i), pos)
        if use.gpus is None:
            for i in range(len(h.gpus)):
                if (h.name, i) in used_gpus:
                    say(
                        "VR117",
                        f"host {h.name}'s GPU {i} is already served by hosts[{used_gpus[h.name, i]}]; "
                        "this entry takes every GPU of the host",
                        name_at,
                        "list the GPUs each rpc-server serves with gpus: [...]",
                    )
                    break
                used_gpus[h.name, i] = pos
        key = (h.address, use.port)  # one machine: 0.0.0.0:P and 127.0.0.1:P cannot both be bound
        if key in endpoints:
            say(
                "VR119",
                f"hosts[{endpoints[key]}] already has an rpc-server on {key[0]} port {key[1]}: a second cannot listen there",
                ("hosts", pos, "port") if "port" in (raw if isinstance(raw, dict) else {}) else name_at,
                "give each rpc-server of one address its own port, e.g. port: " + str(use.port + 1),
            )
        endpoints.setdefault(key, pos)
    return out


def _get(data, path: tuple):
    for seg in path:
        data = data[seg]
    return data


def _get_obj(obj, path: tuple):
    for seg in path:
        obj = obj[seg] if isinstance(seg, int) else getattr(obj, seg)
    return obj


def _overlay(base, over):
    """A variant's settings on top of the deployment's: only keys the variant sets change."""
    changed = over.model_dump(exclude_unset=True)
    return base.model_copy(update=changed)


def _merge_lint(*configs):
    from vramc.load import schema

    margin, ignore, severity = None, [], {}
    for c in configs:
        if c is None:
            continue
        margin = c.margin or margin
        ignore.extend(x for x in c.ignore if x not in ignore)
        severity.update(c.severity)
    return schema.LintConfig(margin=margin, ignore=ignore, severity=severity)


def load_paths(paths: list[Path], texts: dict | None = None) -> LoadResult:
    """Load `paths`; `texts` (path -> text) stands in for what some files hold."""
    global _RESOLVED
    if _RESOLVED is not None:  # inside another load: its view of the tree
        return _load_paths(paths, texts)
    _RESOLVED = {}
    try:
        return _load_paths(paths, texts)
    finally:
        _RESOLVED = None


def _load_paths(paths: list[Path], texts: dict | None) -> LoadResult:
    files, problems = discover(paths)
    result = LoadResult(diagnostics=problems)
    loader = Loader()
    loader.texts = {Path(p).resolve(): t for p, t in (texts or {}).items()}
    for f in files:
        loaded, doc, kind = loader.load(f)
        result.files.append(display_path(f))
        if doc is None:
            continue
        result.docs.append(doc)
        if kind in ("deployment", "deployments"):
            result.deployments.extend(loader.deployments_of(doc, kind))
    result.diagnostics.extend(loader.diagnostics)
    result.refs = loader.refs
    for dep in result.deployments:
        for gguf in (dep.gguf_path, *dep.quant_files):
            if gguf is not None:
                ggufs = _gguf_files(gguf)
                result.refs.setdefault(str(safe_resolve(dep.doc.path)), set()).update(ggufs)
    return result


def _gguf_files(path: Path) -> list[str]:
    """A model file and, for a split model, every part next to it (the header reader reads all)."""
    import re

    out = [str(safe_resolve(path)), os.path.abspath(path)]  # the target, and a link to it
    m = re.match(r"^(.*)-\d{5}-of-(\d{5})\.gguf$", path.name)
    if m:
        out += [
            str(safe_resolve(path.parent / f"{m.group(1)}-{i:05d}-of-{m.group(2)}.gguf"))
            for i in range(1, int(m.group(2)) + 1)
        ]
    return out


def find_deployment(name: str, roots: list[Path]) -> tuple[LoadResult, list[Deployment]]:
    """Deployments called `name` (or `name@variant`) in the profiles below `roots`."""
    result = load_paths(roots)
    return result, [d for d in result.deployments if d.is_named(name)]
