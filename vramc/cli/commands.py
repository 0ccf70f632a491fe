"""vramc's command line. Only the command layer (vramc.cli) prints or exits; heavy imports stay inside commands."""

# No `from __future__ import annotations` here: Typer reads every command's parameters on each
# run, and string annotations would be parsed again each time (~6 ms of `vramc check`, issue 12).
import sys
from pathlib import Path
from typing import List, Optional

import typer

from vramc import __version__

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Check VRAM budgets of local LLM deployments before launch, and compile launch artifacts.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

from vramc.cli.common import (  # noqa: E402
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    is_selected,
    say_diagnostics,
    selection_problem,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vramc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


def _write_output(output: Path, text: str) -> None:
    """check --output FILE, written atomically. A file that cannot be written exits 2, not 1: for
    check, 1 means findings, and a CI step must not read a lost report as one."""
    from vramc.writer import write_atomic

    try:
        write_atomic(output, text.encode())
    except OSError as e:
        typer.echo(f"{output}: cannot write: {e.strerror or e}; nothing was written", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _refuse_input_as_output(output: Path, paths: List[Path]) -> None:
    """check --output must not name what check reads: `-o profiles/a.yaml` replaced that profile with
    the report (empty when clean). Refused before anything is read: a checked profile, anything in
    a checked folder (a report there becomes a profile), and any existing YAML or GGUF file."""
    import os

    from vramc.load import profiles

    try:
        target = Path(os.path.realpath(output))
        found, _ = profiles.discover(paths)
        inputs = {Path(os.path.realpath(f)) for f in found}
        folders = [Path(os.path.realpath(p)) for p in paths if p.is_dir()]
    except (OSError, ValueError):
        return  # what cannot be resolved is reported by check itself, or by the write
    suffix = target.suffix.lower()
    if (
        target in inputs
        or any(folder == target or folder in target.parents for folder in folders)
        or (suffix in (".yaml", ".yml", ".gguf") and os.path.lexists(output))
    ):
        _fail_usage(
            f"--output {output} would replace a file that vramc check reads (a profile or a model) or "
            "put the report among the profiles; write the report elsewhere (e.g. vramc-report.txt)"
        )


def _fail_usage(message: str) -> None:
    typer.echo(f"vramc: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _margin_option(text: Optional[str]):
    if text is None:
        return None
    from vramc.load.schema import Margin, _margin

    try:
        n = float(text.strip())
    except ValueError:
        pass
    else:
        # As VR104 says of a profile's `margin: 10`: a bare number is MiB, but from 1 to 100 it is
        # almost always meant as a share, and 10 MiB free would let a full GPU read `fits`.
        if 1 <= n <= 100:
            shown = text.strip()
            _fail_usage(
                f"--margin {shown} would be read as {shown} MiB of each GPU (a bare number is MiB); "
                f"write --margin {shown}% for a share of each GPU, or --margin {shown}MiB if you mean MiB"
            )
    try:
        return Margin(**_margin(text))
    except ValueError as e:
        _fail_usage(f"--margin: {e}")


def _output_format(fmt: str, allowed: tuple) -> str:
    import os

    if fmt == "auto":
        fmt = "github" if os.environ.get("GITHUB_ACTIONS") == "true" else "text"
    if fmt not in allowed:
        _fail_usage(f"--format must be one of {', '.join(allowed + ('auto',))}")
    return fmt


def _default_paths(paths: Optional[List[Path]]) -> List[Path]:
    if paths:
        return paths
    if Path("profiles").is_dir():
        return [Path("profiles")]
    _fail_usage("no profiles given and no profiles/ folder here")


@app.command()
def check(
    paths: Optional[List[Path]] = typer.Argument(None, help="Profiles or folders of profiles (default: profiles/)."),
    fmt: str = typer.Option(
        "text", "--format", "-f", help="text, json, github, sarif or auto (github under GitHub Actions)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    margin: Optional[str] = typer.Option(
        None, "--margin", help="Default free-memory margin per GPU, e.g. 10% or 1GiB (profiles' own lint.margin wins)."
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report to a file instead of stdout."),
) -> None:
    """Validate profiles and lint their memory plans. Exit 0 clean, 1 findings, 2 usage error."""
    from vramc.diagnostics import Severity
    from vramc.lint.check import cached_check
    from vramc.lint.report import FORMATS, FORMATTERS, summary
    from vramc.lint.rules import load_rules

    fmt = _output_format(fmt, FORMATS)
    paths = _default_paths(paths)
    if output is not None:
        _refuse_input_as_output(output, paths)
    result = cached_check(paths, margin=_margin_option(margin))
    text = FORMATTERS[fmt](result.diagnostics, load_rules())
    if output is not None:
        _write_output(output, text)
    else:
        sys.stdout.write(text)
    if fmt == "text":
        typer.echo(summary(result.diagnostics, len(result.files)), err=True)
    threshold = Severity.WARNING if strict else Severity.ERROR
    failed = any(d.severity >= threshold for d in result.diagnostics)
    raise typer.Exit(EXIT_FINDINGS if failed else EXIT_OK)


@app.command()
def plan(
    paths: Optional[List[Path]] = typer.Argument(None, help="Profiles or folders (default: profiles/)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or markdown."),
    deployment: Optional[str] = typer.Option(
        None, "--deployment", "-d", help="Only this deployment (NAME or NAME@VARIANT)."
    ),
    margin: Optional[str] = typer.Option(None, "--margin", help="Default free-memory margin per GPU."),
    quants: Optional[str] = typer.Option(
        None,
        "--quants",
        help="Plan every quant of a GGUF repository, hf://ORG/REPO, in place of the model: fits, tight or not, layers on GPU.",
    ),
) -> None:
    """Show each deployment's per-device memory plan. Exit 1 if a deployment cannot be planned."""
    from vramc.diagnostics import Severity
    from vramc.lint.check import run_check
    from vramc.lint.runner import raised_while_loading
    from vramc.plan.view import plan_text, plans_json

    fmt = _output_format(fmt, ("text", "json", "markdown"))
    problem = selection_problem(deployment)
    if problem:
        _fail_usage(problem)
    result = run_check(_default_paths(paths), margin=_margin_option(margin))
    plans = result.plans
    if deployment is not None:
        plans = [p for p in plans if is_selected(p.dep, deployment)]
        if not plans:
            _fail_usage(f'no deployment named "{deployment}"')
    errors = [d for d in result.diagnostics if d.severity == Severity.ERROR]
    if quants is not None:
        from vramc.cli.quants import cli_quants

        if not plans and errors:  # nothing to plan the quants with (a missing file): say why
            say_diagnostics(errors)
            raise typer.Exit(EXIT_FINDINGS)
        raise typer.Exit(cli_quants(plans, quants))
    say_diagnostics(errors)
    if not plans and not errors:  # a hardware or model profile: an empty answer said nothing
        typer.echo(
            f"vramc plan: no deployment in {', '.join(map(str, _default_paths(paths)))}: plan takes "
            "deployment profiles (a file with `engine:`, or `deployments:`) or folders of them",
            err=True,
        )
    if fmt == "json":
        sys.stdout.write(plans_json(plans))
    elif fmt == "markdown":
        from vramc.diff.formats import plans_markdown
        from vramc.plan.view import plan_record

        sys.stdout.write(plans_markdown([plan_record(p) for p in plans]))
    else:
        sys.stdout.write("\n".join(plan_text(p, plans=result.plans) for p in plans))
    unplanned = [p for p in plans if p.estimate is None]
    load_failed = any(raised_while_loading(d.code) for d in errors)
    raise typer.Exit(EXIT_FINDINGS if unplanned or (load_failed and not plans) else EXIT_OK)


@app.command()
def diff(
    args: Optional[List[str]] = typer.Argument(
        None,
        metavar="[BASE] [HEAD] [PATH...]",
        help="Git revisions (BASE: the merge base with the upstream branch, else HEAD; HEAD: the working tree) and profiles or folders (default: profiles/); `--` ends the revisions.",
    ),
    base_dir: Optional[Path] = typer.Option(None, "--base-dir", help="Compare this folder (without git) ..."),
    head_dir: Optional[Path] = typer.Option(None, "--head-dir", help="... with this one."),
    fmt: str = typer.Option(
        "text", "--format", "-f", help="text, markdown, json, github or auto (github under GitHub Actions)."
    ),
    fail_on: Optional[List[str]] = typer.Option(
        None, "--fail-on", help="worse-verdict (default), tight, growth:N% or never; repeatable."
    ),
    margin: Optional[str] = typer.Option(None, "--margin", help="Default free-memory margin per GPU."),
    show_unchanged: bool = typer.Option(False, "--all", help="Text: list unchanged deployments too."),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="A side without profiles counts every deployment as added or removed."
    ),
) -> None:
    """What a change does to every GPU: memory plans of two revisions, deployment by deployment.

    BASE and HEAD are git revisions (BASE: the merge base with the upstream branch, else HEAD;
    HEAD: the working tree), then PATHs (default: profiles/). Exit 0 nothing regressed, 1 a
    regression (--fail-on), 2 usage error."""
    from vramc.cli.diff import cli_diff
    from vramc.diff import FORMATS

    fmt = _output_format(fmt, FORMATS)
    raise typer.Exit(
        cli_diff(
            list(args or []),
            base_dir=base_dir,
            head_dir=head_dir,
            fmt=fmt,
            fail_on=list(fail_on or []),
            margin=_margin_option(margin),
            show_unchanged=show_unchanged,
            allow_empty=allow_empty,
        )
    )


@app.command()
def rules(
    fmt: str = typer.Option("text", "--format", "-f", help="text, md or json."),
) -> None:
    """List the lint rules with their codes and default severities."""
    import json

    from vramc.lint.rules import load_rules

    table = sorted(load_rules().values(), key=lambda r: r.code)
    if fmt == "json":
        typer.echo(
            json.dumps(
                [{"code": r.code, "slug": r.slug, "severity": r.severity.label, "summary": r.summary} for r in table],
                indent=2,
            )
        )
    elif fmt == "md":
        typer.echo("| code | name | severity | what it catches |\n|---|---|---|---|")
        for r in table:
            typer.echo(f"| {r.code} | `{r.slug}` | {r.severity.label} | {r.summary} |")
    elif fmt == "text":
        for r in table:
            typer.echo(f"{r.code}  {r.severity.label:<7}  {r.slug:<32}  {r.summary}")
    else:
        _fail_usage("--format must be text, md or json")


@app.command()
def explain(code: str = typer.Argument(..., help="A rule code such as VR300, or its name.")) -> None:
    """Print a rule's documentation, with a bad and a good example."""
    from vramc.lint.registry import parse_rule_doc
    from vramc.lint.rules import load_rules

    table = load_rules()
    r = table.get(code.upper()) or next((x for x in table.values() if x.slug == code), None)
    if r is None:
        _fail_usage(f"no rule {code!r}; `vramc rules` lists them")
    doc = parse_rule_doc(r.doc)
    out = [f"{r.code} {r.slug} ({r.severity.label})", "", doc["summary"]]
    if doc["body"]:
        out += ["", doc["body"]]
    for label in ("bad", "good"):
        if doc[label]:
            out += ["", f"{label.capitalize()}:", *("    " + line for line in doc[label].splitlines())]
    typer.echo("\n".join(out))


@app.command()
def schema() -> None:
    """Print the profile format's JSON Schema (for editors: yaml-language-server, VS Code)."""
    from vramc.load.json_schema import PACKAGED

    # the shipped copy, which tests keep equal to the models' schema: no pydantic schema generation
    typer.echo(PACKAGED.read_text(encoding="utf-8"), nl=False)


@app.command()
def detect(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write the hardware profile here (default: stdout)."
    ),
    name: str = typer.Option("this-machine", "--name", help="Name of the hardware profile."),
    order: str = typer.Option(
        "index", "--order", help="GPU order for CUDA_VISIBLE_DEVICES: index, free_desc or total_desc."
    ),
) -> None:
    """Read the NVIDIA GPUs (name, total and free VRAM, index, UUID) into a hardware profile."""
    from vramc.hardware.detect import ORDERS, NoDriver, hardware_yaml, host_ram_bytes, read_gpus

    if order not in ORDERS:
        _fail_usage(f"--order must be one of {', '.join(ORDERS)}")
    try:
        gpus = read_gpus()
    except NoDriver as e:
        typer.echo(
            f"vramc detect: {e}; nothing to detect on this machine. Write the hardware "
            "profile by hand (see README.md).",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE) from None
    if not gpus:
        typer.echo("vramc detect: the NVIDIA driver reports no GPUs.", err=True)
        raise typer.Exit(EXIT_USAGE)
    text = hardware_yaml(gpus, name, order, host_ram_bytes())
    if output is None:
        sys.stdout.write(text)
    else:
        from vramc.load.yamledit import EditRefused, write_new

        try:
            write_new(output, text)
        except (OSError, EditRefused) as e:
            reason = e.strerror or e if isinstance(e, OSError) else e.reason
            typer.echo(f"{output}: cannot write: {reason}; nothing was written", err=True)
            raise typer.Exit(EXIT_FINDINGS) from None
        typer.echo(f"wrote {output} ({len(gpus)} GPU{'s' if len(gpus) != 1 else ''})", err=True)


@app.command()
def fit(
    profile: Path = typer.Argument(..., help="A deployment profile."),
    deployment: Optional[str] = typer.Option(
        None, "--deployment", "-d", help="Only this deployment (NAME or NAME@VARIANT)."
    ),
    write: bool = typer.Option(
        False,
        "--write",
        help="Write the chosen settings into the profile, keeping its comments and layout, each marked `# vramc fit: auto`; nothing is written if `vramc check` would reject the result.",
    ),
    fmt: str = typer.Option("text", "--format", "-f", help="text or json."),
    relax: Optional[str] = typer.Option(
        None,
        "--relax",
        metavar="KEY[,KEY]",
        help="Let the solver change these fixed settings too: ctx, gpu_layers, tensor_split, cache_type_k, cache_type_v.",
    ),
    refit: bool = typer.Option(
        False,
        "--refit",
        help="Solve again the values an earlier --write marked `# vramc fit: auto` (after a new GPU or a longer context); with --write, write the new answers.",
    ),
) -> None:
    """Choose settings that fit (every `auto`, or gpu_layers/tensor_split/ctx left to the engine).

    Deployments that run at the same time (a `deployments:` file, in each combination of their
    variants) are fitted together, so that they share each GPU with its margin left free.
    """
    from vramc.cli.fit import cli_fit

    raise typer.Exit(cli_fit(profile, deployment=deployment, write=write, fmt=fmt, relax=relax, refit=refit))


@app.command()
def build(
    paths: Optional[List[Path]] = typer.Argument(None, help="Profiles or folders (default: profiles/)."),
    out: str = typer.Option("out", "--out", help="Output folder; each deployment gets out/<name>/."),
    check_only: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 and show the difference if out/ is stale."
    ),
    force: bool = typer.Option(
        False, "--force", help="Build deployments that fail `check` at error level too (says what it skips)."
    ),
) -> None:
    """Compile each checked deployment (and variant) into its launch artifacts under out/."""
    from vramc.build.builder import cli_build
    from vramc.cli.common import build_exit_code, build_report

    if not out.strip():  # `--out "$OUT"` with OUT unset: Path("") is ".", the project's own top
        _fail_usage("--out is empty (an unset variable?); give the output folder, e.g. --out out")
    _refuse_out_over_profiles(out, _default_paths(paths))
    outcome = cli_build(_default_paths(paths), out=Path(out), check_only=check_only, force=force, report=build_report())
    raise typer.Exit(build_exit_code(outcome))


def _refuse_out_over_profiles(out: str, paths: List[Path]) -> None:
    """build --out must not hold the profiles it builds, nor lie in a folder of them that is read:
    `--out .` reported the project's profiles/ and models/ as stray folders to remove, and `--out
    profiles` wrote vllm.yaml where `vramc check profiles/` then read it as a broken profile."""
    import os

    from vramc.load import profiles

    try:
        target = Path(os.path.realpath(out))
        found, _ = profiles.discover(paths)
        held = {Path(os.path.realpath(f)).parent for f in found}
        read = {Path(os.path.realpath(p)) for p in paths if p.is_dir()}
    except (OSError, ValueError):
        return  # what cannot be resolved is reported by the build itself
    for folder in sorted(held | read):
        if target == folder or target in folder.parents or (folder in read and folder in target.parents):
            _fail_usage(
                f"--out {out} holds or lies in {folder}, a folder of the profiles it builds: the build would "
                "report them as stray folders to remove, and check would read what it writes; write "
                "elsewhere, e.g. --out out; nothing was written"
            )


@app.command()
def run(
    name: str = typer.Argument(..., help="Deployment name (NAME, or NAME@VARIANT)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Variant to run (same as NAME@VARIANT)."),
    profiles_dir: Path = typer.Option(Path("profiles"), "--profiles", help="Where to look for the deployment."),
    prompt: Optional[str] = typer.Option(
        None, "--prompt", help="Run one completion, print it and exit instead of serving."
    ),
    max_tokens: int = typer.Option(128, "--max-tokens", help="Tokens to generate with --prompt."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default: the profile's, else 8000)."),
    api_key_file: Optional[Path] = typer.Option(
        None, "--api-key-file", help="File holding the API key clients must send."
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback address without an API key."),
    threshold: str = typer.Option(
        "5%", "--threshold", help="Warn when actual memory differs from the plan by more than this."
    ),
    max_body: str = typer.Option("1MiB", "--max-body", help="Largest request body the server reads (413 beyond)."),
    queue: int = typer.Option(8, "--queue", help="Requests that may wait while one runs (503 beyond)."),
    body_timeout: float = typer.Option(
        30.0, "--body-timeout", help="Seconds a client may take to send a request's body (408 beyond)."
    ),
    allow_host: Optional[List[str]] = typer.Option(
        None, "--allow-host", help="Also accept this Host header name (repeatable; * for any)."
    ),
) -> None:
    """Load a compiled deployment in-process with llama-cpp-python and serve it (or run one prompt)."""
    from vramc.cli.common import run_exit_code
    from vramc.cli.run import Console
    from vramc.run.runner import cli_run

    outcome = cli_run(
        name,
        console=Console(),
        variant=variant,
        profiles_dir=profiles_dir,
        prompt=prompt,
        max_tokens=max_tokens,
        host=host,
        port=port,
        api_key_file=api_key_file,
        insecure=insecure,
        threshold=threshold,
        max_body=max_body,
        queue=queue,
        allow_hosts=allow_host or [],
        body_timeout=body_timeout,
    )
    raise typer.Exit(run_exit_code(outcome))


@app.command()
def analyze(
    model: List[str] = typer.Argument(
        ...,
        help="A GGUF file (the first part of a split model is enough), an http(s) URL, hf://ORG/REPO/FILE.gguf or hf://ORG/REPO:QUANT (only the header is read). Several, or hf://ORG/REPO, with --write: one model profile of every quant (quant: auto).",
    ),
    layers: bool = typer.Option(False, "--layers", help="Print the full per-block table."),
    fmt: str = typer.Option("text", "--format", help="text or json."),
    write: Optional[Path] = typer.Option(None, "--write", help="Write a model profile with the locked metadata."),
    name: Optional[str] = typer.Option(None, "--name", help="Name for the written model profile."),
) -> None:
    """Read a GGUF header, local or over HTTP (never its tensor data), and describe the model."""
    from vramc.cli.analyze import cli_analyze

    raise typer.Exit(cli_analyze(model, layers=layers, fmt=fmt, write=write, name=name))


@app.command()
def lock(
    config: Path = typer.Option(..., "--config", help="The model's Hugging Face config.json."),
    quant: str = typer.Option(..., "--quant", help="The llama-quantize file type, e.g. Q4_K_M."),
    write: Optional[Path] = typer.Option(None, "--write", help="Write a model profile with the derived lock."),
    name: Optional[str] = typer.Option(None, "--name", help="Name for the written model profile."),
) -> None:
    """Derive the GGUF tensor table convert_hf_to_gguf.py + llama-quantize would write, from config.json alone."""
    from vramc.cli.lock import cli_lock

    raise typer.Exit(cli_lock(config, quant, write=write, name=name))


def main() -> None:
    import os

    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # a bug in vramc, never the user's input: say so, briefly
        if os.environ.get("VRAMC_DEBUG"):
            raise
        sys.stderr.write(
            f"vramc: internal error: {type(e).__name__}: {e}\n"
            "This is a bug in vramc; rerun with VRAMC_DEBUG=1 for the traceback and report it.\n"
        )
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
