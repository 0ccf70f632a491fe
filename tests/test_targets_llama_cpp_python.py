"""llama-cpp-python artifacts against llama_cpp itself: the config file loads through
llama_cpp.server's own settings classes and serves a request; serve.py builds its Llama from
exactly to_llama_kwargs(plan) and serves a request; the config pins every ModelSettings default
that differs from Llama()'s."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os

import pytest
import yaml

from build_support import FIXTURE, build, free_port

llama_cpp = pytest.importorskip("llama_cpp", reason="the run extra (llama-cpp-python) is not installed")
pytestmark = pytest.mark.engine

PROFILE = """\
kind: deployment
name: tiny-py
hardware: {{name: cpu-only, gpus: [], host_ram: 2GiB}}
model: {{gguf: models/tiny.gguf}}
engine: llama-cpp-python
settings:
  ctx: 512
  gpu_layers: all
  flash_attn: "off"
  cache_type_k: f16
  cache_type_v: f16
  threads: 2
  port: {port}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from vramc.dev.synth import write_tiny_model
    from vramc.lint.check import run_check

    root = tmp_path_factory.mktemp("llama-cpp-python-project")
    (root / "models").mkdir()
    write_tiny_model(root / "models" / "tiny.gguf")
    (root / "profiles").mkdir()
    (root / "profiles" / "tiny-py.yaml").write_text(PROFILE.format(port=free_port()))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert build(["profiles"]) == 0
        plan = run_check([root / "profiles"]).plans[0]
    finally:
        os.chdir(cwd)
    return root, plan


def ask(client) -> None:
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


def test_config_file_loads_through_llama_cpp_server_and_serves(project, monkeypatch):
    from fastapi.testclient import TestClient
    from llama_cpp.server import app as server_app
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ConfigFileSettings, ModelSettings, ServerSettings

    root, plan = project
    config = root / "out" / "tiny-py" / "llama-cpp-server.yaml"
    # exactly what `python -m llama_cpp.server --config_file X.yaml` does with the file
    settings = ConfigFileSettings.model_validate_json(json.dumps(yaml.safe_load(config.read_text())))
    server = ServerSettings.model_validate(settings)
    (model,) = settings.models
    assert isinstance(model, ModelSettings)
    assert (server.host, server.port) == ("127.0.0.1", plan.dep.settings.port)
    assert model.model_alias == "tiny-py" and model.n_ctx == 512 and model.n_gpu_layers == -1
    assert model.logits_all is False and model.use_mlock is False and model.flash_attn is False
    monkeypatch.chdir(root)  # relative model paths resolve against the working directory
    monkeypatch.setenv("CONFIG_FILE", str(config))  # create_app reads the file itself
    with TestClient(create_app()) as client:
        ask(client)
        assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-py"
    server_app._llama_proxy.free()


def test_serve_script_loads_to_llama_kwargs_and_serves(project, monkeypatch):
    from fastapi.testclient import TestClient

    from vramc.build.targets.llama_cpp_python import to_llama_kwargs

    root, plan = project
    path = root / "out" / "tiny-py" / "serve.py"
    assert os.access(path, os.X_OK) and path.read_text().startswith("#!/usr/bin/env python3\n")
    spec = importlib.util.spec_from_file_location("serve_tiny_py", path)
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    assert serve.LLAMA_KWARGS == to_llama_kwargs(plan)
    from llama_cpp.server import app as server_app
    from llama_cpp.server.model import LlamaProxy

    # serve.py patches these for its own process; restore them for the rest of the test session
    for key in serve.ENV:
        monkeypatch.setenv(key, os.environ.get(key, ""))
    monkeypatch.setattr(
        LlamaProxy, "load_llama_from_model_settings", LlamaProxy.__dict__["load_llama_from_model_settings"]
    )
    monkeypatch.chdir(FIXTURE)  # anywhere: serve.py finds the model through its own location
    with TestClient(serve.create_app()) as client:
        llama = server_app._llama_proxy._current_model
        assert os.path.samefile(llama.model_path, root / "models" / "tiny.gguf")
        assert llama.n_ctx() == plan.params.n_ctx and llama.context_params.swa_full is plan.params.swa_full
        ask(client)
    server_app._llama_proxy.free()


def test_config_pins_every_server_default_that_differs_from_llama():
    """ModelSettings defaults that differ from Llama()'s must be set explicitly by the config
    (except the thread counts, which both resolve to the same values at run time)."""
    from llama_cpp.server.settings import ModelSettings

    from vramc.build.targets.llama_cpp_python import NOT_IN_SERVER_SETTINGS

    llama_defaults = inspect.signature(llama_cpp.Llama.__init__).parameters
    configs = sorted((FIXTURE / "out").rglob("llama-cpp-server.yaml"))
    assert configs
    for path in configs:
        (model,) = yaml.safe_load(path.read_text())["models"]
        assert set(model) <= set(ModelSettings.model_fields)
        assert not set(NOT_IN_SERVER_SETTINGS) & set(model)
        for name, field in ModelSettings.model_fields.items():
            key = "model_path" if name == "model" else name
            if key not in llama_defaults or name in ("n_threads", "n_threads_batch"):
                continue
            if llama_defaults[key].default != field.default:
                assert name in model, f"{path}: {name} left to ModelSettings' default {field.default!r}"
