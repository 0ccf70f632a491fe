"""`vramc run NAME`: load a checked deployment in-process with llama-cpp-python and serve it.

    vramc run demo-tiny --prompt "Hello"     one completion on stdout, then exit
    vramc run demo-tiny                      OpenAI-compatible API on http://127.0.0.1:8000

Steps: find the deployment under --profiles, refuse if the model file is missing or not GGUF,
check it (refuse at error level, showing the diagnostics), bind the port (serving only), set
CUDA_VISIBLE_DEVICES to the plan's launch order and the profile's `env`, *then* import llama_cpp
(loading the shared library initialises the GPU backends, which read CUDA_VISIBLE_DEVICES once),
load `llama_cpp.Llama(**to_llama_kwargs(plan))` with a progress display, print the plan against
the buffer sizes llama.cpp reported (run_memory), and run the prompt or serve (run_serve).

Engines: llama-cpp-python deployments only. llama-server and Ollama deployments are refused
rather than approximated: their slots (`parallel`), output reservation and HTTP API differ from
`llama_cpp.Llama`'s, so the plan would not describe what runs; launch them with what
`vramc build` writes. vLLM is not llama.cpp at all.

Serving binds 127.0.0.1 unless --host says otherwise (a profile's `host` is not used: exposing a
model is decided on the command line). Another address needs an API key (--api-key-file, or the
profile's `api_key_file`, relative to the project folder; one key per line) unless --insecure.
With a key, every path, /health included, needs `Authorization: Bearer KEY`. --port 0 picks a
free port. VRAMC_LLAMA_LOG=FILE writes llama.cpp's whole log to FILE.

The server checks requests before they reach the model (run_serve): the Host header (421 unless
it names this server or an --allow-host NAME), request bodies (at most --max-body, default 1MiB:
413), OpenAI's parameter rules (400 in OpenAI's error format), and a bounded queue: one request
runs, at most --queue (default 8) wait, the next gets 503 with Retry-After.

How it ends is an Outcome (below: no such or an ambiguous deployment, a bad option, an engine
`run` does not load, a non-loopback --host without an API key or an unreadable key file are all
USAGE); the command layer maps it to README's exit codes (vramc.cli.common.run_exit_code).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vramc.engines import ENGINES

if TYPE_CHECKING:
    from vramc.plan.planner import Plan


class Outcome(Enum):
    """How `vramc run` ended; vramc.cli.common.run_exit_code maps it to the exit code."""

    DONE = "done"  # --prompt answered, or the server stopped cleanly
    CHECK_FAILED = "check failed"  # `vramc check` finds errors, or there is no plan
    USAGE = "usage"  # what the command line or the profiles ask cannot be run as given
    NO_ENGINE = "no engine"  # llama-cpp-python (or its server extra) missing
    LOAD_FAILED = "load failed"  # the model file, or llama.cpp loading it
    NO_ADDRESS = "no address"  # the address cannot be bound
    INTERRUPTED = "interrupted"  # Ctrl-C while loading or during --prompt


DEFAULT_PORT = 8000  # llama_cpp.server's
INSTALL_HINT = (
    "pip install 'vramc[run]' (llama-cpp-python 0.3.36 with its server extra; it compiles llama.cpp, about 6 minutes)"
)

REFUSED_ENGINES = {e.name: e.run_refusal for e in ENGINES.values() if e.run_refusal}
ENGINE_NAMES = {e.name: e.article for e in ENGINES.values()}
SOURCE_SHOWN = 240  # longer `source:` texts are pointed at, not printed


class Console(Protocol):
    """Where vramc run talks, given by the command layer (vramc.cli.run.Console): progress and
    messages (`write`, `say`: "vramc run: TEXT"), and the completion of --prompt (`answer`)."""

    def write(self, text: str) -> None: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...
    def say(self, text: str) -> None: ...
    def answer(self, text: str) -> None: ...


@dataclass(frozen=True)
class Options:
    name: str
    variant: str | None
    profiles_dir: Path
    prompt: str | None
    max_tokens: int
    host: str
    port: int | None
    api_key_file: Path | None
    insecure: bool
    threshold: str
    max_body: str = "1MiB"
    queue: int = 8
    allow_hosts: tuple[str, ...] = ()
    body_timeout: float = 30.0


def cli_run(
    name: str,
    *,
    console: Console,
    variant: str | None,
    profiles_dir: Path,
    prompt: str | None,
    max_tokens: int,
    host: str,
    port: int | None,
    api_key_file: Path | None,
    insecure: bool,
    threshold: str,
    max_body: str = "1MiB",
    queue: int = 8,
    allow_hosts: list[str] | tuple[str, ...] = (),
    body_timeout: float = 30.0,
) -> Outcome:
    opts = Options(
        name,
        variant,
        profiles_dir,
        prompt,
        max_tokens,
        host,
        port,
        api_key_file,
        insecure,
        threshold,
        max_body,
        queue,
        tuple(allow_hosts),
        body_timeout,
    )
    try:
        return _run(console, opts)
    except KeyboardInterrupt:
        console.say("interrupted")
        return Outcome.INTERRUPTED


def _run(console: Console, opts: Options) -> Outcome:
    from vramc.run.measured import parse_threshold

    try:
        threshold = parse_threshold(opts.threshold)
    except ValueError as e:
        console.say(f"--threshold {opts.threshold!r}: {e}")
        return Outcome.USAGE
    if opts.max_tokens < 1:
        console.say("--max-tokens must be at least 1")
        return Outcome.USAGE
    if opts.port is not None and not 0 <= opts.port <= 65535:
        console.say(f"--port {opts.port}: use 1 to 65535, or 0 for any free port")
        return Outcome.USAGE
    problem = server_option_problem(opts)
    if problem:
        console.say(problem)
        return Outcome.USAGE
    dep, code = _find(console, opts.name, opts.variant, opts.profiles_dir)
    if dep is None:
        return code
    engine = dep.doc.obj.engine
    if getattr(dep.doc.obj, "hosts", None):  # issue 17: llama_cpp.Llama (0.3.36) takes no rpc_servers
        hosts = ", ".join(h.host for h in dep.doc.obj.hosts)
        console.say(
            f"{dep.label} spans other machines ({hosts}); vramc run loads a model in this process only, and "
            "llama-cpp-python 0.3.36's Llama() cannot reach rpc-servers. Launch it with what `vramc build` "
            f"writes: on each host out/{dep.name}/hosts/HOST/rpc-server-PORT.sh (or its systemd unit), then "
            f"out/{dep.name}/launch.sh here (engine: llama-server)."
        )
        return Outcome.USAGE
    if engine in REFUSED_ENGINES:
        other = "" if engine == "vllm" else ", or use `engine: llama-cpp-python`"
        console.say(
            f"{dep.label} is {ENGINE_NAMES[engine]} deployment; vramc run loads llama-cpp-python "
            f"deployments only: {REFUSED_ENGINES[engine]}. Launch it with what `vramc build` "
            f"writes (out/{dep.name}/){other}."
        )
        return Outcome.USAGE
    several = dep.model.obj.quants is not None  # `quant: auto` (issue 15): its file is the plan's choice
    problem = None if several else model_file_problem(dep)
    if problem:
        console.say(problem)
        return Outcome.LOAD_FAILED
    plan, code = _check(console, dep, opts.profiles_dir)
    if plan is None:
        return code
    problem = model_file_problem(plan.dep) if several else None
    if problem:
        console.say(problem)
        return Outcome.LOAD_FAILED
    sock, api_keys = None, []
    if opts.prompt is None:
        sock, api_keys, code = _listen_socket(console, dep, opts)
        if sock is None:
            return code
    try:
        return _load_and_go(console, dep, plan, opts, sock, api_keys, threshold)
    finally:
        if sock is not None:
            sock.close()


def max_body_bytes(text: str) -> int:
    """--max-body: a size with its unit (a bare number would be MiB in a profile, bytes to some)."""
    from vramc.units import parse_size, size_unit

    size = parse_size(text)
    if size_unit(text) == "":
        raise ValueError("give a unit, e.g. 1MiB or 512KiB")
    if size < 1024:
        raise ValueError("at least 1KiB: a chat request does not fit in less")
    return size


def server_option_problem(opts: Options) -> str | None:
    """What is wrong with --max-body, --queue or --allow-host, said before anything loads."""
    from vramc.run.serve import valid_allow_host

    try:
        max_body_bytes(opts.max_body)
    except ValueError as e:
        return f"--max-body {opts.max_body!r}: {e}"
    if not 0 < opts.body_timeout <= 3600:
        return f"--body-timeout {opts.body_timeout:g}: seconds a client may take to send a request's body; more than 0, at most 3600"
    if opts.queue < 0:
        return f"--queue {opts.queue}: how many requests may wait while one runs; 0 or more"
    for name in opts.allow_hosts:
        if not valid_allow_host(name):
            return (
                f"--allow-host {name!r}: give a host name or address as clients write it, optionally with "
                "a port (example.lan, 192.168.1.5:8000, [::1]), or * to accept any Host"
            )
    return None


def _listen_socket(console: Console, dep, opts: Options):
    """The API keys and the bound socket, decided before anything is loaded."""
    from vramc.run.serve import BindError, bind, is_loopback

    api_keys, code = _api_keys(console, dep, opts.api_key_file)
    if code is not None:
        return None, [], code
    if not is_loopback(opts.host) and not api_keys:
        if not opts.insecure:
            console.say(
                f"refusing to serve on {opts.host} without an API key: anyone who can reach "
                "this machine could use the model. Give --api-key-file FILE (or `api_key_file` "
                "in the profile), or --insecure if the network is trusted."
            )
            return None, [], Outcome.USAGE
        console.say(f"warning: serving on {opts.host} without an API key (--insecure)")
    port = opts.port if opts.port is not None else (dep.settings.port or DEFAULT_PORT)
    try:
        return bind(opts.host, port), api_keys, None
    except BindError as e:
        console.say(str(e))
        return None, [], Outcome.NO_ADDRESS


def _find(console: Console, name: str, variant: str | None, profiles_dir: Path):
    from vramc.diagnostics import Severity
    from vramc.load.profiles import find_deployment, split_label

    base, at_variant = split_label(name)
    if at_variant is not None and not at_variant.strip():
        # `vramc run chat@$VARIANT` with the variable unset must not run the base deployment
        console.say(f"{name!r}: the variant after @ is empty; give NAME or NAME@VARIANT")
        return None, Outcome.USAGE
    if variant and at_variant and variant != at_variant:
        console.say(f"{name!r} and --variant {variant!r} name different variants")
        return None, Outcome.USAGE
    label = f"{base}@{variant or at_variant}" if (variant or at_variant) else base
    if not profiles_dir.is_dir():
        console.say(f"no profiles folder {profiles_dir} (give one with --profiles)")
        return None, Outcome.USAGE
    loaded, matches = find_deployment(label, [profiles_dir])
    if len(matches) == 1:
        return matches[0], None
    if matches:
        files = ", ".join(sorted({d.doc.file for d in matches}))
        console.say(f"{label!r} is defined more than once ({files}); rename one")
        return None, Outcome.USAGE
    known = sorted({d.label for d in loaded.deployments})
    msg = f"no deployment {label!r} in {profiles_dir}"
    same = [k for k in known if split_label(k)[0] == base]
    if same:
        msg += f"; it has: {', '.join(same)}"
    elif known:
        msg += f"; known: {', '.join(known)}"
    errors = sum(1 for d in loaded.diagnostics if d.severity == Severity.ERROR)
    if errors:
        msg += f" ({errors} error{'s' if errors != 1 else ''} in the profiles: `vramc check {profiles_dir}` shows them)"
    console.say(msg)
    return None, Outcome.USAGE


def model_file_problem(dep) -> str | None:
    """Why the model file cannot be loaded before anything is tried, with what to do about it."""
    path = dep.gguf_path
    model = dep.model.obj
    if path is None:
        return f"the model of {dep.label} ({dep.model.file}) has no `gguf:` file; llama.cpp needs a GGUF file"
    shown = _shown(path)
    if not path.exists():
        msg = f"model file {shown} not found (from `gguf:` in {dep.model.file})"
        if model.source and len(model.source) <= SOURCE_SHOWN:
            msg += f"; the model profile says where it comes from: {model.source}"
        elif model.source:
            msg += "; its `source:` says where it comes from"
        return msg
    if path.is_dir():
        return f"model file {shown} is a folder, not a GGUF file"
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        return f"cannot read model file {shown}: {e.strerror or e}"
    if magic != b"GGUF":
        what = "a safetensors file" if path.suffix == ".safetensors" else f"it starts with {magic!r}"
        return f"{shown} is not a GGUF file ({what}); llama.cpp loads GGUF models only"
    return None


def _shown(path: Path) -> str:
    """A path as the user would type it: relative when below the working directory."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _check(console: Console, dep, profiles_dir: Path):
    from vramc.diagnostics import Severity
    from vramc.lint.check import run_check
    from vramc.lint.report import format_text
    from vramc.lint.rules import load_rules

    result = run_check([profiles_dir], deployments=[dep])
    files = {dep.doc.file, dep.model.file, dep.hardware.file}
    mine = [d for d in result.diagnostics if d.deployment == dep.label or (not d.deployment and d.file in files)]
    if mine:
        console.write(format_text(mine, load_rules()))
    errors = [d for d in mine if d.severity == Severity.ERROR]
    plan = result.plans[0] if result.plans else None
    if errors:
        console.say(
            f"refusing to run {dep.label}: `vramc check` finds {len(errors)} error"
            f"{'s' if len(errors) != 1 else ''} (above)"
        )
        return None, Outcome.CHECK_FAILED
    if plan is None or plan.estimate is None or plan.params is None:
        console.say(f"{dep.label} could not be planned; `vramc plan -d {dep.label}` says why")
        return None, Outcome.CHECK_FAILED
    return plan, None


MAX_KEY_FILE = 64 * 1024


def _api_keys(console: Console, dep, api_key_file: Path | None):
    path = api_key_file
    if path is None and dep.settings.api_key_file:
        path = Path(os.path.expanduser(dep.settings.api_key_file))
        if not path.is_absolute():
            path = (dep.project_root or Path.cwd()) / path
    if path is None:
        return [], None
    try:
        # bounded: /dev/zero (or any endless file) was read until memory ran out; not only regular
        # files, so that `--api-key-file <(pass show key)` (a pipe) still works
        with open(path, "rb") as f:
            raw = f.read(MAX_KEY_FILE + 1)
        if len(raw) > MAX_KEY_FILE:
            console.say(
                f"the API key file {path} is larger than {MAX_KEY_FILE // 1024} KiB: not a key file (one key per line)"
            )
            return [], Outcome.USAGE
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        console.say(f"cannot read the API key file {path}: {getattr(e, 'strerror', None) or e}")
        return [], Outcome.USAGE
    keys = [k.strip() for k in text.splitlines() if k.strip() and not k.strip().startswith("#")]
    if not keys:
        console.say(f"the API key file {path} holds no key (one per line)")
        return [], Outcome.USAGE
    return keys, None


def apply_environment(plan: Plan, console: Console) -> None:
    """The profile's env, then the plan's device order; before llama_cpp is imported."""
    dep = plan.dep
    for key, value in dep.env.items():
        os.environ[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    order = plan.cuda_visible_devices()
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = order
    note = "" if before in (None, order) else f" (was {before!r})"
    shown = order if order else "'' (no GPU: the plan is CPU only)"
    console.say(f"CUDA_VISIBLE_DEVICES={shown}{note}")
    if "llama_cpp" in sys.modules and plan.gpus:
        console.say("warning: llama_cpp was imported before vramc run; the device order may not apply")


def import_engine(console: Console, serving: bool):
    try:
        import llama_cpp
    except ImportError:
        console.say(f"llama-cpp-python is not installed: {INSTALL_HINT}")
        return None
    except OSError as e:  # the package is there, its libllama is not loadable (missing CUDA libs...)
        console.say(f"llama-cpp-python is installed but its llama.cpp library does not load: {e}")
        return None
    if serving:
        try:
            import fastapi  # noqa: F401
            import llama_cpp.server.app  # noqa: F401  (sse_starlette, starlette_context)
            import uvicorn  # noqa: F401
        except ImportError as e:
            console.say(f"the llama-cpp-python server extra is missing ({e.name}): {INSTALL_HINT}")
            return None
    return llama_cpp


def _load_and_go(console: Console, dep, plan: Plan, opts: Options, sock, api_keys, threshold: float) -> Outcome:
    from vramc.build.targets.llama_cpp_python import to_llama_kwargs
    from vramc.run.load import LoadError, load_llama
    from vramc.run.measured import LogCapture, compare, format_table, parse_buffers, warnings

    console.say(describe(plan))
    apply_environment(plan, console)
    llama_cpp = import_engine(console, serving=opts.prompt is None)
    if llama_cpp is None:
        return Outcome.NO_ENGINE
    log_path = os.environ.get("VRAMC_LLAMA_LOG")
    log_file = open(log_path, "w", encoding="utf-8") if log_path else None
    capture = LogCapture(llama_cpp, console, log_file)
    kwargs = to_llama_kwargs(plan, absolute_path=True)
    t0 = time.monotonic()
    try:
        llm = load_llama(llama_cpp, kwargs, console, capture)
    except LoadError as e:
        console.say(str(e))
        if e.memory:
            console.say(
                f"`vramc plan -d {dep.label}` shows what the plan expected on each device; "
                "lower ctx or gpu_layers, or describe the machine (vram, host_ram) so that "
                "`vramc check` catches this before loading"
            )
        return Outcome.INTERRUPTED if e.interrupted else Outcome.LOAD_FAILED
    capture.stop_recording()
    console.say(f"loaded in {time.monotonic() - t0:.1f} s")
    if plan.gpus and plan.params.n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
        console.say(
            "warning: this llama-cpp-python was built without GPU support, so every layer "
            "runs on the CPU, whatever the plan says; reinstall it with a GPU backend, e.g. "
            "CMAKE_ARGS=-DGGML_CUDA=on pip install --force-reinstall --no-cache-dir 'vramc[run]'"
        )
    buffers = parse_buffers(capture.lines)
    if buffers:
        rows = compare(plan.estimate, buffers)
        console.write(format_table(rows, plan.estimate, threshold))
        for w in warnings(rows, threshold):
            console.say(f"warning: {w}")
    else:
        console.say("llama.cpp reported no buffer sizes, so actual memory cannot be compared")
    try:
        if opts.prompt is not None:
            return _prompt(console, llm, opts.prompt, opts.max_tokens)
        return _serve(console, llm, dep, sock, api_keys, opts)
    finally:
        llm.close()


def describe(plan: Plan) -> str:
    dep, p = plan.dep, plan.params
    n_layers = plan.meta.n_layer + 1
    ngl = n_layers if p.n_gpu_layers < 0 else min(p.n_gpu_layers, n_layers)
    where = "CPU only" if not plan.gpus else ", ".join(f"{g.id} {g.name}" for g in plan.gpus)
    return (
        f"{dep.label} ({plan.engine}, {dep.doc.file}): plan {plan.verdict}; ctx {p.n_ctx}, "
        f"{ngl}/{n_layers} layers on GPU, {where}"
    )


def _prompt(console: Console, llm, prompt: str, max_tokens: int) -> Outcome:
    # One plain create_completion call, as a bare llama_cpp user would write it: no streaming, no
    # callback, so vramc does nothing per token (bench/run_overhead.py measures this window).
    t0, c0 = time.perf_counter(), time.process_time()
    out = llm.create_completion(prompt, max_tokens=max_tokens)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    console.answer(out["choices"][0]["text"] + "\n")
    usage = out.get("usage", {})
    n = usage.get("completion_tokens", 0)
    rate = n / elapsed if elapsed > 0 else 0.0
    console.say(
        f"generated {n} tokens in {elapsed:.3f} s ({rate:.1f} tokens/s, {cpu:.3f} s of CPU; prompt "
        f"{usage.get('prompt_tokens', 0)} tokens, finish: {out['choices'][0].get('finish_reason')})"
    )
    return Outcome.DONE


def _serve(console: Console, llm, dep, sock, api_keys, opts: Options) -> Outcome:
    from vramc.run.serve import build_app, serve, url_of

    alias = dep.settings.alias or dep.label
    app = build_app(
        llm,
        alias,
        api_keys,
        host=opts.host,
        port=sock.getsockname()[1],
        allow_hosts=list(opts.allow_hosts),
        max_body=max_body_bytes(opts.max_body),
        queue=opts.queue,
        body_timeout=opts.body_timeout,
    )
    url = url_of(sock)
    auth = "API key required" if api_keys else "no API key"
    console.say(
        f"serving {alias} on {url} ({auth}): /v1/models, /v1/chat/completions, "
        f"/v1/completions, /health; one request at a time, {opts.queue} may wait; Ctrl-C stops"
    )
    serve(app, sock, console)
    console.say("stopped")
    return Outcome.DONE
