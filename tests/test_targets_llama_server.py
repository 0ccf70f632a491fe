"""llama-server artifacts against the pinned llama-server itself.

The option list vramc spells flags from is the binary's own --help; every generated flag is in it;
and a built deployment of a tiny generated model starts from each of the three artifacts (the
argument file through xargs, the LLAMA_ARG_* env file, the launch script), answers /health and
/v1/chat/completions, and logs exactly the parameters the memory plan used.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from build_support import FIXTURE, Server, args_file_lines, build, free_port, llama_server_binary
from vramc import LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON_VERSION
from vramc.build.targets.llama_server import OPTIONS_FILE, option_table

_OPTION = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ENV = re.compile(r"\(env: ([A-Z0-9_]+)\)")
DESCRIPTION_COLUMN = 40
OPTIONS_HEADER = """\
# Options of the pinned llama-server: llama.cpp {commit}, vendored in llama-cpp-python {version}.
# Extracted from `llama-server --help` by tests/test_targets_llama_server.py; one option per line:
# its spellings, then env=NAME when llama-server also reads it from that environment variable.
# Regenerate: VRAMC_UPDATE_GOLDEN=1 pytest tests/test_targets_llama_server.py -k options_file
"""
REMOVED_FLAGS = {"--no-mmap", "--mmap", "--mlock", "--direct-io", "-dio"}


def parse_help(text: str) -> list[tuple[list[str], str | None]]:
    """(spellings, env var) per option of `llama-server --help`."""
    entries: list[tuple[list[str], str | None]] = []
    for line in text.splitlines():
        if line.startswith("-") and not line.startswith("-----"):
            # The spellings end where the description column starts; a long list of spellings
            # pushes the description to the next line.
            wide = line[DESCRIPTION_COLUMN - 2 : DESCRIPTION_COLUMN] == "  " and len(line) > DESCRIPTION_COLUMN
            spec = line[:DESCRIPTION_COLUMN] if wide else line
            entries.append(([t for t in re.split(r"[,\s]+", spec) if _OPTION.match(t)], None))
        elif entries and (m := _ENV.search(line)):
            entries[-1] = (entries[-1][0], m.group(1))
    return entries


def options_file_text(help_text: str) -> str:
    lines = [OPTIONS_HEADER.format(commit=LLAMA_CPP_COMMIT, version=LLAMA_CPP_PYTHON_VERSION)]
    for names, env in parse_help(help_text):
        lines.append(" ".join(names + ([f"env={env}"] if env else [])) + "\n")
    return "".join(lines)


binary = llama_server_binary()
needs_binary = pytest.mark.skipif(binary is None, reason="no pinned llama-server (scripts/build-llama.sh)")


@pytest.mark.oracle
@needs_binary
def test_options_file_is_the_pinned_binarys_help():
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    expected = options_file_text(help_text)
    if os.environ.get("VRAMC_UPDATE_GOLDEN"):
        OPTIONS_FILE.write_text(expected)
    assert OPTIONS_FILE.read_text() == expected
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert f"commit {LLAMA_CPP_COMMIT}" in version.stdout + version.stderr


def test_option_table_knows_the_flags_that_changed():
    table = option_table()
    assert table["--load-mode"] == "LLAMA_ARG_LOAD_MODE" and table["--fit"] == "LLAMA_ARG_FIT"
    assert table["--no-kv-unified"] == table["--kv-unified"] == "LLAMA_ARG_KV_UNIFIED"
    assert not REMOVED_FLAGS & set(table)


def test_every_generated_flag_is_one_the_binary_accepts():
    files = sorted((FIXTURE / "out").rglob("llama-server.args"))
    assert files
    for path in files:
        args = args_file_lines(path)
        flags = [a for a in args if a.startswith("-")]
        assert set(flags) <= set(option_table()), path
        assert not REMOVED_FLAGS & set(flags)
        value = dict(zip(args, args[1:]))
        assert value["--flash-attn"] in ("on", "off", "auto")
        assert value["--gpu-layers"] == "all" or value["--gpu-layers"].isdigit()
        assert value["--fit"] == "off" and value["--port"].isdigit()
        env = dict(
            line.split("=", 1)
            for line in (path.parent / "llama-server.env").read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert {k for k in env if k.startswith("LLAMA_ARG_")} <= set(filter(None, option_table().values()))


# --- a real server, from each artifact ----------------------------------------------------------

PROFILE = """\
kind: deployment
name: tiny
hardware: {{name: cpu-only, gpus: [], host_ram: 2GiB}}
model: {{gguf: models/tiny.gguf}}
engine: llama-server
settings:
  ctx: 1024
  parallel: 2
  kv_unified: true
  batch: 256
  ubatch: 128
  gpu_layers: all
  flash_attn: "off"
  load_mode: none
  port: {port}
"""
CONTEXT_LINE = re.compile(
    r"llama_context: (n_seq_max|n_ctx|n_ctx_seq|n_batch|n_ubatch|n_outputs_max|"
    r"flash_attn|kv_unified)\s+= (\S+)"
)
LOAD_MODE = re.compile(r"load_tensors: .*\(load_mode = (\S+)\)")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from vramc.dev.synth import write_tiny_model
    from vramc.lint.check import run_check

    root = tmp_path_factory.mktemp("llama-server-project")
    (root / "models").mkdir()
    write_tiny_model(root / "models" / "tiny.gguf")
    port = free_port()
    (root / "profiles").mkdir()
    (root / "profiles" / "tiny.yaml").write_text(PROFILE.format(port=port))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert build(["profiles"]) == 0
        plan = run_check([root / "profiles"]).plans[0]
    finally:
        os.chdir(cwd)
    return root, port, plan


def logged_parameters(log_text: str) -> dict[str, str]:
    found = dict(CONTEXT_LINE.findall(log_text))
    found["load_mode"] = LOAD_MODE.search(log_text).group(1)
    return found


def serve_and_ask(argv: list[str], project, tmp_path, env_extra: dict | None = None) -> dict[str, str]:
    import httpx

    root, port, _ = project
    env = {**os.environ, "LLAMA_ARG_LOG_VERBOSITY": "5", **(env_extra or {})}  # logs the context
    with Server(argv, cwd=root, env=env, log=tmp_path / "server.log") as server:
        server.wait_healthy(port)
        # greedy: the tiny model's weights are random, and a sampled byte token that is not valid
        # UTF-8 on its own makes llama-server answer 500 (json type_error.316); its greedy answer is
        # the same every run
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=30,
            json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0},
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["role"] == "assistant"
        props = httpx.get(f"http://127.0.0.1:{port}/props", timeout=5).json()
        assert props["model_path"] == "models/tiny.gguf" and props["total_slots"] == 2
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert models["data"][0]["id"] == "tiny"
    return logged_parameters((tmp_path / "server.log").read_text(errors="replace"))


def expected_parameters(plan) -> dict[str, str]:
    r = plan.estimate.resolved
    return {
        "n_seq_max": str(r["n_seq_max"]),
        "n_ctx": str(r["n_ctx"]),
        "n_ctx_seq": str(r["n_ctx_seq"]),
        "n_batch": str(r["n_batch"]),
        "n_ubatch": str(r["n_ubatch"]),
        "n_outputs_max": str(r["n_outputs_max"]),
        "flash_attn": "disabled",
        "kv_unified": "true",
        "load_mode": "none",
    }


@pytest.mark.oracle
@needs_binary
def test_argument_file_through_xargs_starts_the_planned_server(project, tmp_path):
    root, _, plan = project
    argv = ["sh", "-c", "sed -n '/^[^#]/,$p' out/tiny/llama-server.args | xargs -d '\\n' \"$0\"", str(binary)]
    assert serve_and_ask(argv, project, tmp_path) == expected_parameters(plan)


@pytest.mark.oracle
@needs_binary
def test_env_file_alone_starts_the_same_server(project, tmp_path):
    _, _, plan = project
    argv = ["sh", "-c", 'set -a; . ./out/tiny/llama-server.env; set +a; exec "$0"', str(binary)]
    assert serve_and_ask(argv, project, tmp_path) == expected_parameters(plan)


@pytest.mark.oracle
@needs_binary
def test_launch_script_starts_the_same_server_from_anywhere(project, tmp_path):
    root, _, plan = project
    argv = ["sh", str(root / "out" / "tiny" / "launch.sh")]
    found = serve_and_ask(argv, project, tmp_path, {"LLAMA_SERVER": str(binary)})
    assert found == expected_parameters(plan)


def test_generated_shell_scripts_parse():
    scripts = sorted((FIXTURE / "out").rglob("launch.sh"))
    assert scripts
    for script in scripts:
        subprocess.run(["sh", "-n", str(script)], check=True)
