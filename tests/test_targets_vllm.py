"""vLLM artifacts: every option is one the pinned vLLM has (vramc/data/vllm_options.txt), the
--config YAML says the same as the argument file, and instances sharing a GPU get the shares
that were checked and ports of their own."""

from __future__ import annotations

import textwrap

import yaml

import vramc.lint.rules.quoting  # noqa: F401  (registers VR405 until vramc.lint.rules.load_rules imports it)
from build_support import FIXTURE, args_file_lines, build, copy_fixture
from vramc.build.targets.vllm import option_names
from vramc.lint.check import run_check

OUT = FIXTURE / "out"


def parsed_args(args: list[str]) -> tuple[str, dict[str, str]]:
    """(model, {option: value}) of `vllm serve` arguments: a positional model, then --opt [value]
    or --opt=value; a switch maps to "true"."""
    model, rest = args[0], args[1:]
    options: dict[str, str] = {}
    i = 0
    while i < len(rest):
        flag = rest[i]
        assert flag.startswith("--"), f"stray value {flag!r}"
        if "=" in flag:
            key, value = flag.split("=", 1)
            i += 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            key, value = flag, rest[i + 1]
            i += 2
        else:
            key, value = flag, "true"
            i += 1
        options[key] = value
    return model, options


def test_options_exist_in_the_pinned_vllm_and_config_says_the_same():
    files = sorted(OUT.rglob("vllm.args"))
    assert files
    for path in files:
        model, options = parsed_args(args_file_lines(path))
        assert set(options) <= option_names(), set(options) - option_names()
        config = yaml.safe_load((path.parent / "vllm.yaml").read_text())
        assert {f"--{k}" for k in config if k != "model"} <= option_names()
        assert config.pop("model") == model
        as_text = {f"--{k}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
        assert as_text == options


def test_instances_sharing_a_gpu_get_the_checked_shares_and_distinct_ports():
    plans = {p.dep.name: p for p in run_check([FIXTURE / "profiles" / "vllm-shared.yaml"]).plans}
    got = {}
    for name in ("qwen-chat", "qwen-batch"):
        _, options = parsed_args(args_file_lines(OUT / name / "vllm.args"))
        got[name] = options
        resolved = plans[name].estimate.resolved
        assert float(options["--gpu-memory-utilization"]) == resolved["gpu_memory_utilization"]
        assert int(options["--max-model-len"]) == resolved["max_model_len"]  # `auto` pinned to the fit
        assert options["--served-model-name"] == name
    assert sum(float(o["--gpu-memory-utilization"]) for o in got.values()) <= 1
    assert [got[n]["--port"] for n in ("qwen-chat", "qwen-batch")] == ["8000", "8001"]
    assert got["qwen-chat"]["--enforce-eager"] == "true" and "--enforce-eager" not in got["qwen-batch"]


def test_equal_explicit_ports_on_one_machine_are_vr405(tmp_path, monkeypatch, capsys):
    project = copy_fixture(tmp_path / "p")
    (project / "profiles" / "vllm-shared.yaml").write_text(
        textwrap.dedent("""\
        kind: deployments
        hardware: rtx4090
        deployments:
          - name: a
            model: qwen2.5-7b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: 0.45, max_model_len: 4096, port: 9000}
          - name: b
            model: qwen2.5-7b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: 0.45, max_model_len: 4096, port: 9000}
        """)
    )
    diagnostics = run_check([project / "profiles" / "vllm-shared.yaml"]).diagnostics
    found = [(d.code, d.deployment, d.line) for d in diagnostics if d.code == "VR405"]
    assert found == [("VR405", "a", 7), ("VR405", "b", 11)]
    monkeypatch.chdir(project)
    assert build(["profiles/vllm-shared.yaml"]) == 1
    assert "not built: a fails check (VR405)" in capsys.readouterr().err


def test_auto_settings_are_written_as_the_values_vramc_chose(tmp_path, monkeypatch):
    """Issue 16: `auto` utilization, max_num_seqs and tensor_parallel_size reach vLLM as numbers,
    and kv_cache_memory_bytes as --kv-cache-memory-bytes (in bytes)."""
    project = copy_fixture(tmp_path / "p")
    (project / "profiles" / "vllm-shared.yaml").write_text(
        textwrap.dedent("""\
        kind: deployments
        hardware: rtx4090
        deployments:
          - name: a
            model: qwen2.5-7b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: auto, max_num_seqs: auto, tensor_parallel_size: auto,
                       max_model_len: 8192, port: 9000}
          - name: b
            model: qwen2.5-7b-instruct-awq
            engine: vllm
            settings: {gpu_memory_utilization: 0.3, kv_cache_memory_bytes: 2GiB, max_model_len: 8192,
                       port: 9001}
        """)
    )
    plans = {p.dep.name: p for p in run_check([project / "profiles" / "vllm-shared.yaml"]).plans}
    monkeypatch.chdir(project)
    assert build(["profiles/vllm-shared.yaml"]) == 0
    _, a = parsed_args(args_file_lines(project / "out" / "a" / "vllm.args"))
    _, b = parsed_args(args_file_lines(project / "out" / "b" / "vllm.args"))
    ra = plans["a"].estimate.resolved
    assert a["--gpu-memory-utilization"] != "auto"
    assert float(a["--gpu-memory-utilization"]) == ra["gpu_memory_utilization"]
    assert int(a["--max-num-seqs"]) == ra["max_num_seqs"] and a["--tensor-parallel-size"] == "1"
    # a takes what b's 0.3 and two CUDA contexts leave, less the 5 % margin
    assert ra["gpu_memory_utilization"] + 0.3 <= 0.95
    assert b["--kv-cache-memory-bytes"] == str(2 * 1024**3) and "--kv-cache-memory-bytes" not in a
