"""`vramc analyze`: what it prints, what it writes and its exit code (the report itself is
vramc.model.analyze)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from vramc.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from vramc.model.analyze import (
    _human,
    build_report,
    default_name,
    meta_problem,
    profile_yaml,
    quants_profile_yaml,
    relative_gguf,
    render_json,
    render_text,
)
from vramc.model.gguf import GGUFError, read_gguf


def cli_analyze(path: str | Path | list, *, layers: bool, fmt: str, write: Path | None, name: str | None) -> int:
    if fmt not in ("text", "json"):
        return _usage(f"--format must be text or json, not {fmt!r}")
    if name is not None:
        from vramc.load.schema import valid_name

        if write is None:
            return _usage("--name names the profile that --write writes; give --write too")
        if not valid_name(name):
            return _usage(f"--name {name!r}: use letters, digits, '.', '_' or '-'")
    paths = [str(p) for p in path] if isinstance(path, (list, tuple)) else [path]
    if not paths:
        return _usage("give a GGUF file, a URL or hf://ORG/REPO[:QUANT]")
    if len(paths) > 1 or _several_quants(str(paths[0]), write):
        if write is None:
            return _usage(
                "several models are locked together into one model profile of their quants: give --write PROFILE"
            )
        return _cli_quants([str(p) for p in paths], write=write, name=name)
    path = paths[0]
    remote = None
    if isinstance(path, str) and path.startswith(("http://", "https://", "hf://")):
        from vramc.model.remote import RemoteError, note, read_remote

        try:
            remote = read_remote(path)
        except RemoteError as e:
            sys.stderr.write(f"vramc analyze: {e}\n")
            return EXIT_FAILED
        except GGUFError as e:
            sys.stderr.write(f"{e.path}: {e}\n")
            return EXIT_FAILED
        meta = remote.meta
        sys.stderr.write(note(remote))
    else:
        path = Path(path)
        try:
            meta = read_gguf(path)
        except GGUFError as e:
            sys.stderr.write(f"{e.path}: {e}\n")
            return EXIT_FAILED
    problem = meta_problem(meta)
    if problem:  # the header is described all the same: it shows what is wrong
        sys.stderr.write(f"{path}: warning: vramc cannot plan with this model (VR201): {problem}\n")
    report = build_report(meta, remote.source if remote else path)
    sys.stdout.write(render_json(report) if fmt == "json" else render_text(report, layers))
    if write is not None:
        command = ["vramc", "analyze", str(path), "--write", str(write)]
        command += ["--name", name] if name else []
        command_text = " ".join(shlex.quote(a) for a in command)
        try:
            # the folder first: whether profiles/models exists decides where relative paths start
            Path(write).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            sys.stderr.write(f"{write}: cannot write: {e.strerror or e}; nothing was written\n")
            return EXIT_FAILED
        if remote is not None:
            # not downloaded: gguf: is where the project expects the file, beside profiles/
            text = profile_yaml(
                meta,
                gguf=f"models/{remote.file_name}",
                name=name or default_name(remote.file_name),
                command=command_text,
                source=remote.source,
                download=remote.urls,
            )
        else:
            text = profile_yaml(
                meta, gguf=relative_gguf(path, write), name=name or default_name(path), command=command_text
            )
        return _write_profile(write, text)
    return EXIT_OK


def _several_quants(text: str, write: Path | None) -> bool:
    """`hf://ORG/REPO --write` (no file, no quant) of a repository with several model files."""
    if write is None or not text.startswith("hf://"):
        return False
    from vramc.model.remote import RemoteError, parse_ref

    try:
        ref = parse_ref(text)
    except RemoteError:
        return False  # the single-model path says what is wrong with it
    return ref.repo is not None and ref.file is None and ref.quant is None


def _entries_of(text: str, write: Path) -> list[dict]:
    """The quant files one argument names: a local file, a URL, hf://ORG/REPO/FILE or :QUANT,
    or every model file of hf://ORG/REPO (first parts of split models)."""
    from vramc.model.remote import Http, hf_endpoint, is_remote, list_repo, note, parse_ref, quant_tag, read_remote

    if not is_remote(text):
        p = Path(text)
        meta = read_gguf(p)
        return [
            {
                "quant": quant_tag(p.name),
                "meta": meta,
                "gguf": relative_gguf(p, write),
                "source": f"vramc analyze of {p.name}",
                "shown": text,
            }
        ]
    ref = parse_ref(text)
    refs = [text]
    if ref.repo is not None and ref.file is None and ref.quant is None:
        from vramc.model.remote import RemoteError, first_parts

        http = Http(token=os.environ.get("HF_TOKEN") or None)
        notes: list[str] = []
        commit, files = list_repo(http, hf_endpoint(), ref.repo, ref.revision, text, notes)
        sys.stderr.write("".join(notes))
        firsts = sorted(first_parts(files))
        if not firsts:
            raise RemoteError(f"{text}: no GGUF model files in {ref.repo}")
        refs = [f"hf://{ref.repo}@{commit}/{f}" for f in firsts]
    out = []
    for r in refs:
        got = read_remote(r)
        sys.stderr.write(note(got))
        out.append(
            {
                "quant": quant_tag(got.file_name),
                "meta": got.meta,
                "gguf": f"models/{got.file_name}",
                "source": got.source,
                "download": got.urls,
                "shown": got.source,
                "repo": ref.repo if got.revision else None,
                "commit": got.revision,
            }
        )
    return out


def _cli_quants(paths: list[str], *, write: Path, name: str | None) -> int:
    """`vramc analyze A B ... --write PROFILE`, `vramc analyze hf://ORG/REPO --write PROFILE`: one
    model profile with `quant: auto` and a locked `quants:` entry per file (issue 15)."""
    from vramc.model.remote import RemoteError

    command_text = " ".join(shlex.quote(a) for a in ["vramc", "analyze", *paths, "--write", str(write)])
    command_text += f" --name {shlex.quote(name)}" if name else ""
    try:
        Path(write).parent.mkdir(parents=True, exist_ok=True)  # where relative paths start
    except OSError as e:
        sys.stderr.write(f"{write}: cannot write: {e.strerror or e}; nothing was written\n")
        return EXIT_FAILED
    entries: list[dict] = []
    try:
        for text in paths:
            entries += _entries_of(text, write)
    except RemoteError as e:
        sys.stderr.write(f"vramc analyze: {e}\n")
        return EXIT_FAILED
    except GGUFError as e:
        sys.stderr.write(f"{e.path}: {e}\n")
        return EXIT_FAILED
    by_quant: dict[str, list[str]] = {}
    for e in entries:
        by_quant.setdefault(e["quant"].upper(), []).append(e["shown"])
        problem = meta_problem(e["meta"])
        if problem:
            sys.stderr.write(f"{e['shown']}: warning: vramc cannot plan with this model (VR201): {problem}\n")
    twice = {q: files for q, files in by_quant.items() if len(files) > 1}
    if twice:
        listing = "".join(f"\n  {q}: " + ", ".join(files) for q, files in sorted(twice.items()))
        return _usage(f"one file per quant type: several files are of the same quant (name one of each):{listing}")
    entries.sort(key=lambda e: (-e["meta"].total_bytes, e["quant"]))
    if len(entries) == 1:  # a repository of one model file: the profile of that file, as before
        e = entries[0]
        text = profile_yaml(
            e["meta"],
            gguf=e["gguf"],
            name=name or default_name(Path(e["gguf"]).name),
            command=command_text,
            source=e["source"],
            download=e.get("download"),
        )
        return _write_profile(write, text)
    repos = {e.get("repo") for e in entries}
    commits = {e.get("commit") for e in entries}
    hf = next(iter(repos)) if len(repos) == 1 and None not in repos else None
    source = f"hf://{hf}@{next(iter(commits))}" if hf and len(commits) == 1 else None
    if name is None:
        first = default_name(Path(entries[0]["gguf"]).name)
        stem = re.sub(r"[-.]" + re.escape(entries[0]["quant"]) + r"$", "", first, flags=re.IGNORECASE)
        name = default_name(hf.rsplit("/", 1)[-1]) if hf else (stem or first)
    sys.stdout.write(f"{'quant':<10} {'weights':>10}  {'blocks':>6}  file\n")
    for e in entries:
        m = e["meta"]
        sys.stdout.write(
            f"{e['quant']:<10} {_human(m.total_bytes):>10}  {m.hparams.get('block_count', 0):>6}  {e['shown']}\n"
        )
    text = quants_profile_yaml(entries, name=name, command=command_text, hf=hf, source=source)
    return _write_profile(write, text, f": quant: auto over {len(entries)} quants")


def _write_profile(write: Path, text: str, what: str = "") -> int:
    from vramc.load.yamledit import EditRefused, write_new

    try:
        write_new(write, text)
    except EditRefused as e:
        sys.stderr.write(f"vramc analyze: {e}\n")
        return EXIT_USAGE
    except OSError as e:
        sys.stderr.write(f"{write}: cannot write: {e.strerror or e}; nothing was written\n")
        return EXIT_FAILED
    sys.stderr.write(f"wrote {write}{what}\n")
    return EXIT_OK


def _usage(message: str) -> int:
    sys.stderr.write(f"vramc analyze: {message}\n")
    return EXIT_USAGE
