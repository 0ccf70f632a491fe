"""Jinja environment and quoting filters for launch artifacts: targets compute, templates lay out.

Templates come from two folders, searched in this order:
1. the project's own `templates/` (the folder beside `profiles/`, see `project_templates_dir`),
   so a project can override a built-in template by giving its file the same name, or add targets;
2. the built-in templates: `vramc/_templates` in an installed wheel (pyproject force-includes the
   repository's top-level `templates/` there), else `templates/` of this checkout. They are also
   reachable as `builtin/<target>/<file>.j2`, so an override can `{% extends %}` the original.

Every value a template writes into a shell script, a unit or an env file goes through one of the
filters below. Each either produces a form the consumer reads back as exactly the value, or raises
`UnsafeValue` (a character that is not printable has no safe form in these files, see
`unsafe_char`); lint rule VR403 reports such values at `check` time, so the exception is only the
last line of defence.
"""

from __future__ import annotations

import json
import pprint
import re
import shlex
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TEMPLATE_SUFFIX = ".j2"


class UnsafeValue(ValueError):
    """A value that no quoting can carry safely into the artifact being rendered."""


def unsafe_char(text: str, spaces: bool = False) -> tuple[int, str] | None:
    """(index, character) of the first character no artifact can carry, or None.

    That is every character Python's str.isprintable() rejects (Unicode categories Cc, Cf, Zl,
    Zp, Co, Cs, Cn) except the spaces (Zs): controls, C1 included, which end or corrupt a line
    (U+0085 NEL is a line break to YAML, and PyYAML does not even read its own output back);
    U+2028/U+2029, line breaks to YAML, so a value or a file name in a YAML comment would start
    a key of its own; format characters (bidi overrides, zero-width, BOM) that make a file read
    differently from how it displays; private-use, surrogate and unassigned code points. With
    `spaces`, spaces other than U+0020 too (NBSP, ...): Ollama's Modelfile parser drops every
    character that Go's unicode.IsPrint rejects, which are these same ones plus those spaces, so
    a FROM path would name another file."""
    if text.isprintable():
        return None
    for i, ch in enumerate(text):
        if not ch.isprintable() and (spaces or unicodedata.category(ch) != "Zs"):
            return i, ch
    return None


def describe_char(ch: str) -> str:
    """'a newline', 'U+2028 LINE SEPARATOR': what the user has to look for."""
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}
    if ch in names:
        return names[ch]
    name = unicodedata.name(ch, "") or {
        "Cc": "a control character",
        "Cs": "a surrogate",
        "Co": "a private-use character",
    }.get(unicodedata.category(ch), "an unassigned code point")
    return f"U+{ord(ch):04X} ({name})"


def check_safe(value: object, spaces: bool = False) -> str:
    text = str(value)
    found = unsafe_char(text, spaces)
    if found:
        i, ch = found
        raise UnsafeValue(f"{text!r} contains {describe_char(ch)} at character {i + 1}, which no artifact can carry")
    return text


# --- POSIX shell ----------------------------------------------------------------------------------


class PathArg(str):
    """A path from the profile: a leading `~/` means the home directory where the artifact's
    reader can expand it (the shell's `~/`, systemd's `%h/`); elsewhere it stays as written."""


def shquote(value: object) -> str:
    """One shell word that the shell reads back as exactly `value` (no expansion of any kind),
    except the leading `~/` of a PathArg, left unquoted so that the shell expands it."""
    text = check_safe(value)
    if isinstance(value, PathArg) and text.startswith("~/"):
        return "~/" + shlex.quote(text[2:]) if text[2:] else "~/"
    return shlex.quote(text)


# --- systemd (systemd.syntax, systemd.service "Command lines", systemd.exec "Environment=") -------

_SYSTEMD_SAFE = re.compile(r"^[A-Za-z0-9_+=:,./@-]+\Z")


def _systemd_quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def systemd_escape(value: object) -> str:
    """One ExecStart= word: `%` specifiers become `%%` and `$` variable references `$$`; anything
    beyond plain characters is double-quoted (so `;` or a space never splits the command). The
    leading `~/` of a PathArg becomes the `%h` specifier (the service user's home)."""
    text = check_safe(value)
    prefix = ""
    if isinstance(value, PathArg) and text.startswith("~/"):
        prefix, text = "%h/", text[2:]
    if not prefix and _SYSTEMD_SAFE.match(text):
        return text
    return '"' + prefix + _systemd_quoted(text).replace("$", "$$") + '"'


def systemd_env(pair: tuple[str, object]) -> str:
    """`"KEY=value"` for Environment=: quoted, `\\` and `"` escaped, `%` doubled; `$` is literal
    there (systemd.exec: no variable expansion in Environment=)."""
    key, value = pair
    return '"' + _systemd_quoted(f"{check_env_name(key)}={check_safe(value)}") + '"'


# --- env files: POSIX sh `.` and systemd EnvironmentFile= read them the same way ------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: `$` also matches before a final newline
_ENV_SAFE = re.compile(r"^[A-Za-z0-9_+=:,./@%-]*\Z")


def check_env_name(name: object) -> str:
    text = str(name)
    if not _ENV_NAME.match(text):
        raise UnsafeValue(f"{text!r} is not an environment variable name")
    return text


def envquote(value: object) -> str:
    """A value for a KEY=VALUE line: bare when plain, else double-quoted with `\\ " $ \\``
    backslash-escaped, which sh and systemd's EnvironmentFile= both unescape the same way."""
    text = check_safe(value)
    if _ENV_SAFE.match(text):
        return text
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


# --- Ollama Modelfile (parser/parser.go: unquote strips "..." or """...""", knows no escapes) ----


def modelfile_value(value: object) -> str:
    text = check_safe(value, spaces=True)
    if '"""' in text:
        raise UnsafeValue(f'{text!r} contains """, which a Modelfile cannot quote')
    if text.startswith('"') or text != text.strip() or not text:
        return '"""' + text + '"""'
    return text


# --- data formats ---------------------------------------------------------------------------------


def _check_strings(data: object) -> None:
    """check_safe every string (key or value) of a plain data structure."""
    if isinstance(data, str):
        check_safe(data)
    elif isinstance(data, dict):
        for key, value in data.items():
            _check_strings(key)
            _check_strings(value)
    elif isinstance(data, (list, tuple)):
        for item in data:
            _check_strings(item)


def to_yaml(data: object) -> str:
    import yaml

    _check_strings(data)  # PyYAML writes U+0085 unescaped and then cannot read the file back
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True, width=100)


def to_json(data: object) -> str:
    _check_strings(data)
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)


def to_python(data: object) -> str:
    """A Python literal (repr of str, int, float, bool, None, list, dict), keys sorted."""
    return pprint.pformat(data, width=96, sort_dicts=True)


def num(value: float | int) -> str:
    """3.0 -> '3', 0.6 -> '0.6': the shortest text that reads back as the same number."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


FILTERS = {
    "shquote": shquote,
    "systemd_escape": systemd_escape,
    "systemd_env": systemd_env,
    "envquote": envquote,
    "argline": check_safe,
    "env_name": check_env_name,
    "modelfile_value": modelfile_value,
    "to_yaml": to_yaml,
    "to_json": to_json,
    "to_python": to_python,
    "num": num,
}


# --- template folders and the environment -------------------------------------------------------


def builtin_templates_dir() -> Path:
    package = Path(__file__).resolve().parents[1]  # the vramc package (installed: _templates beside it)
    installed = package / "_templates"
    return installed if installed.is_dir() else package.parent / "templates"


def project_templates_dir(project_root: Path | None) -> Path | None:
    """`templates/` beside the project's `profiles/` folder (profiles.project_root), if any."""
    if project_root is None:
        return None
    d = Path(project_root) / "templates"
    if not d.is_dir() or d.resolve() == builtin_templates_dir().resolve():
        return None
    return d


@lru_cache(maxsize=None)
def environment(project_dir: Path | None):
    from jinja2 import ChoiceLoader, FileSystemLoader, PrefixLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    builtin = FileSystemLoader(str(builtin_templates_dir()))
    loaders = [FileSystemLoader(str(project_dir))] if project_dir else []
    loaders += [PrefixLoader({"builtin": builtin}), builtin]
    # keep_trailing_newline: files end with exactly the newline the template has (copier does the
    # same); trim/lstrip: block tags do not leave blank lines; no autoescape: this is not HTML.
    env = SandboxedEnvironment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def template_names(project_dir: Path | None, folder: str) -> list[str]:
    """Templates in `folder` of the project and the built-ins (`_`-prefixed files are partials)."""
    names: set[str] = set()
    for root in (builtin_templates_dir(), project_dir):
        if root is None or not (Path(root) / folder).is_dir():
            continue
        for p in (Path(root) / folder).rglob(f"*{TEMPLATE_SUFFIX}"):
            rel = p.relative_to(root)
            if p.is_file() and not p.name.startswith("_"):
                names.add(rel.as_posix())
    return sorted(names)


def project_target_folders(project_dir: Path | None) -> list[str]:
    if project_dir is None:
        return []
    return sorted(p.name for p in Path(project_dir).iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def render_template(project_dir: Path | None, name: str, context: dict) -> str:
    return environment(project_dir).get_template(name).render(context)


# --- rendering a target ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    path: str  # inside the deployment's folder, POSIX separators
    text: str

    @property
    def executable(self) -> bool:
        return self.text.startswith("#!")


def render_target(folder: str, outputs: dict[str, str], variables: dict, project_dir: Path | None) -> list[Rendered]:
    """Render the templates of one target for one deployment.

    `outputs` maps the target's own templates (file names in `folder`) to output paths; any other
    template the project adds to `folder` becomes an output named like the template without .j2.
    A template that renders to nothing but whitespace writes no file (a project template can
    leave out deployments that do not concern it).
    """
    files = {f"{folder}/{tpl}": out for tpl, out in outputs.items()}
    for name in template_names(project_dir, folder):
        files.setdefault(name, name[len(folder) + 1 : -len(TEMPLATE_SUFFIX)])
    out = []
    for name, path in sorted(files.items(), key=lambda kv: kv[1]):
        text = render_template(project_dir, name, variables)
        if text.strip():
            out.append(Rendered(path, text))
    return out
