"""`vramc run` for real: `python -m vramc run` subprocesses on a tiny generated GGUF (no GPU).

One server per module (free port on 127.0.0.1 via --port 0, API key on), always terminated.
The model is vramc.dev.synth's tiny llama with the end-of-sequence row of output.weight zeroed: its
logit is then always 0, the median of the random logits, so top-k sampling never picks it and
every completion has exactly max_tokens tokens (otherwise 1 prompt in a few hundred would
generate nothing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key-0123456789"
LOG_BUFFER_RE = re.compile(r"^\w+:\s+(\S+)\s+(model|KV|compute|output) buffer size\s*=\s*([0-9.]+) MiB")

DEPLOYMENT = """\
name: tiny
hardware: {name: cpu-only, gpus: []}
model: tiny
engine: llama-cpp-python
settings: {ctx: 1024, gpu_layers: 0, flash_attn: off}
"""


def write_model(path: Path) -> Path:
    from gguf import GGUFReader

    from vramc.dev.synth import write_tiny_model

    write_tiny_model(path)
    reader = GGUFReader(path, "r+")
    out = next(t for t in reader.tensors if t.name == "output.weight")
    out.data[2, :] = 0  # </s>: see the module doc
    reader.data.flush()
    del reader
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "profiles" / "models").mkdir(parents=True)
    (root / "models").mkdir()
    write_model(root / "models" / "tiny.gguf")
    (root / "profiles" / "models" / "tiny.yaml").write_text("kind: model\nname: tiny\ngguf: models/tiny.gguf\n")
    (root / "profiles" / "tiny.yaml").write_text(DEPLOYMENT)
    (root / "key.txt").write_text(f"# the key\n{KEY}\n")
    return root


def vramc_run(
    project: Path, *args: str, env: dict | None = None, timeout: float = 60, preexec=None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vramc", "run", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        preexec_fn=preexec,
    )


def add_profile(project: Path, name: str, text: str) -> None:
    (project / "profiles" / f"{name}.yaml").write_text(text)


# --- --prompt ----------------------------------------------------------------------------------


def test_prompt_returns_tokens(project):
    r = vramc_run(project, "tiny", "--prompt", "Hello", "--max-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "no text on stdout"
    m = re.search(r"generated (\d+) tokens in [0-9.]+ s", r.stderr)
    # llama-cpp-python may take a token or two more to complete a UTF-8 character
    assert m and int(m[1]) >= 12, r.stderr
    assert "CUDA_VISIBLE_DEVICES='' (no GPU" in r.stderr


def test_memory_table_matches_llama_log(project, tmp_path):
    """The table's actual column is what llama.cpp logged, and the plan's KV is llama.cpp's KV."""
    log = tmp_path / "llama.log"
    r = vramc_run(project, "tiny", "--prompt", "Hi", "--max-tokens", "2", env={"VRAMC_LLAMA_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    logged: dict[str, float] = {}
    for line in log.read_text().splitlines():
        m = LOG_BUFFER_RE.match(line.strip())
        if m:  # every buffer is a CPU one here: one figure per kind
            key = {"model": "weights", "KV": "KV"}.get(m[2], m[2])
            logged[key] = logged.get(key, 0.0) + float(m[3]) if key in ("weights", "KV") else float(m[3])
    assert set(logged) == {"weights", "KV", "compute", "output"}, logged
    table = {}
    for line in r.stderr.splitlines():
        m = re.match(r"^\s+(?:host\s+)?(weights|KV|compute|output)\s+([0-9.,]+)\s+([0-9.,]+)\s+([+-][0-9.,]+)", line)
        if m:
            table[m[1]] = tuple(float(x.replace(",", "")) for x in m.group(2, 3, 4))
    assert set(table) == set(logged), r.stderr
    for comp, (planned, actual, diff) in table.items():
        assert actual == logged[comp], (comp, actual, logged[comp])
        assert diff == pytest.approx(actual - planned, abs=0.011)

    from vramc.lint.check import run_check
    from vramc.load.profiles import find_deployment

    _, deps = find_deployment("tiny", [project / "profiles"])
    plan = run_check([project / "profiles"], deployments=deps).plans[0]
    kv = plan.estimate.host.kv_bytes
    assert kv == 1024 * 2 * 2 * 32 * 2  # cells x layers x (K, V) x n_embd_k_gqa x f16
    assert f"{kv / 2**20:.2f}" == f"{logged['KV']:.2f}"  # llama.cpp's exact figure at its precision
    assert table["KV"][0] == logged["KV"] and table["compute"][0] == pytest.approx(
        plan.estimate.host.compute_bytes / 2**20, abs=0.005
    )


# --- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    logs = tmp_path_factory.mktemp("server")
    # --queue 32: test_sixteen_concurrent_requests must not meet the queue's limit
    proc, url = start_server(project, logs, "--api-key-file", "key.txt", "--queue", "32")
    try:
        yield url
    finally:
        stop(proc)


def start_server(project: Path, logs: Path, *args: str):
    out, err = open(logs / "stdout.txt", "w"), open(logs / "stderr.txt", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vramc", "run", "tiny", "--port", "0", *args],
        cwd=project,
        stdout=out,
        stderr=err,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 30
    url = None
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", (logs / "stderr.txt").read_text())
        if m:
            url = m[1]
            try:
                if httpx.get(f"{url}/health", headers=auth(), timeout=2).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    stop(proc)
    raise AssertionError(f"server did not start: {(logs / 'stderr.txt').read_text()}")


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_health_and_models(server):
    assert httpx.get(f"{server}/health", headers=auth()).json()["status"] == "ok"
    models = httpx.get(f"{server}/v1/models", headers=auth()).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    paths = httpx.get(f"{server}/openapi.json", headers=auth()).json()["paths"]
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"} <= set(paths)


def test_completions(server):
    r = httpx.post(f"{server}/v1/completions", headers=auth(), json={"prompt": "Hello", "max_tokens": 5}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 5  # may finish a split UTF-8 character


def test_chat_completion(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    r = httpx.post(f"{server}/v1/chat/completions", headers=auth(), json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    assert r.json()["usage"]["completion_tokens"] >= 4


def test_streamed_chat_completion(server):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "stream": True}
    chunks, done = [], False
    with httpx.stream("POST", f"{server}/v1/chat/completions", headers=auth(), json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunks.append(json.loads(line[6:]))
    assert done
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(1 for c in chunks if "content" in c["choices"][0]["delta"]) >= 6


def test_sixteen_concurrent_requests(server):
    def one(i: int) -> int:
        if i % 2:
            body = {"messages": [{"role": "user", "content": f"n{i}"}], "max_tokens": 8, "stream": i % 4 == 1}
            path = "/v1/chat/completions"
        else:
            body, path = {"prompt": f"n{i}", "max_tokens": 8}, "/v1/completions"
        with httpx.Client(timeout=60) as c:
            if body.get("stream"):
                with c.stream("POST", server + path, headers=auth(), json=body) as r:
                    lines = [x for x in r.iter_lines() if x.startswith("data: ")]
                    assert lines[-1] == "data: [DONE]"  # not cut short by the other requests
                    finish = json.loads(lines[-2][6:])["choices"][0]["finish_reason"]
                    assert finish == "length"
                    return r.status_code
            r = c.post(server + path, headers=auth(), json=body)
            assert r.json()["usage"]["completion_tokens"] >= 8
            return r.status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(16)))
    assert codes == [200] * 16


@pytest.mark.parametrize(
    "path, body, status",
    [
        ("/v1/chat/completions", b"{not json", 400),  # OpenAI's status and error format (test_run_server)
        ("/v1/chat/completions", b'{"messages": 3}', 400),
        ("/v1/completions", b'"just a string"', 400),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": "many"}', 400),
        ("/v1/completions", json.dumps({"prompt": "a " * 1500, "max_tokens": 4}).encode(), 400),  # > ctx
        ("/v1/nothing", b"{}", 404),
    ],
)
def test_malformed_requests_get_4xx_and_server_keeps_serving(server, path, body, status):
    r = httpx.post(server + path, headers={**auth(), "content-type": "application/json"}, content=body, timeout=30)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    ok = httpx.post(f"{server}/v1/completions", headers=auth(), json={"prompt": "x", "max_tokens": 2}, timeout=30)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/extras/tokenize"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/nothing"),
    ],
)
def test_api_key_enforced_everywhere(server, method, path):
    for headers in ({}, auth("wrong"), {"Authorization": KEY}):
        r = httpx.request(method, server + path, headers=headers, json={"prompt": "x", "max_tokens": 1})
        assert r.status_code == 401, (path, headers, r.status_code)
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_ctrl_c_stops_cleanly(project, tmp_path):
    proc, url = start_server(project, tmp_path)
    assert stop(proc, signal.SIGINT) == 0
    assert "vramc run: stopped" in (tmp_path / "stderr.txt").read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


def test_sigterm_stops_cleanly(project, tmp_path):
    proc, _ = start_server(project, tmp_path)
    assert stop(proc, signal.SIGTERM) == 0
    assert "vramc run: stopped" in (tmp_path / "stderr.txt").read_text()


# --- refusals and plain failures ---------------------------------------------------------------


def test_public_host_without_key_is_refused(project):
    r = vramc_run(project, "tiny", "--host", "0.0.0.0")
    assert r.returncode == 2
    assert "without an API key" in r.stderr and "--insecure" in r.stderr


def test_port_in_use(project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = vramc_run(project, "tiny", "--port", str(s.getsockname()[1]))
    assert r.returncode == 6
    assert "already in use" in r.stderr
    assert "loaded in" not in r.stderr  # found before loading the model


def test_missing_model_says_how_to_make_it(project):
    (project / "profiles" / "models" / "gone.yaml").write_text(
        "kind: model\nname: gone\ngguf: models/gone.gguf\nsource: 'generated: python -m vramc.synth tiny models/gone.gguf'\n"
    )
    add_profile(project, "gone", DEPLOYMENT.replace("name: tiny", "name: gone").replace("model: tiny", "model: gone"))
    r = vramc_run(project, "gone", "--prompt", "x")
    assert r.returncode == 5
    assert "model file models/gone.gguf not found" in r.stderr
    assert "python -m vramc.synth tiny models/gone.gguf" in r.stderr


def test_not_a_gguf_file(project):
    (project / "models" / "fake.gguf").write_bytes(b"PK\x03\x04 this is a zip")
    (project / "profiles" / "models" / "fake.yaml").write_text("kind: model\nname: fake\ngguf: models/fake.gguf\n")
    add_profile(project, "fake", DEPLOYMENT.replace("name: tiny", "name: fake").replace("model: tiny", "model: fake"))
    r = vramc_run(project, "fake", "--prompt", "x")
    assert r.returncode == 5
    assert "is not a GGUF file" in r.stderr


def test_not_enough_memory(project):
    """A 2 GiB KV cache under a 1.5 GB address-space limit: llama.cpp's allocation fails."""
    import resource

    add_profile(
        project,
        "huge",
        DEPLOYMENT.replace("name: tiny", "name: huge").replace(
            "ctx: 1024", "ctx: 4194304, cache_type_k: f32, cache_type_v: f32"
        ),
    )

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1500 * 2**20, 1500 * 2**20))

    r = vramc_run(project, "huge", "--prompt", "x", preexec=limit)
    assert r.returncode == 5, r.stderr
    assert "not enough memory to load" in r.stderr
    assert "failed to allocate" in r.stderr  # llama.cpp's own words


def test_check_errors_refuse_with_diagnostics(project):
    """llama.cpp would refuse a quantized V cache without flash attention: so does vramc, first."""
    add_profile(
        project,
        "qv",
        DEPLOYMENT.replace("name: tiny", "name: qv").replace("flash_attn: off", "flash_attn: off, cache_type_v: q8_0"),
    )
    r = vramc_run(project, "qv", "--prompt", "x")
    assert r.returncode == 1, r.stderr
    assert re.search(r"profiles/qv\.yaml:\d+:\d+: VR\d{3} error", r.stderr), r.stderr
    assert "refusing to run qv" in r.stderr
    assert "loaded in" not in r.stderr


@pytest.mark.parametrize("engine", ["llama-server", "ollama", "vllm"])
def test_other_engines_are_refused(project, engine):
    text = (
        DEPLOYMENT.replace("name: tiny", f"name: e-{engine}")
        .replace("llama-cpp-python", engine)
        .replace("flash_attn: off", "port: 9000")
    )
    if engine == "vllm":  # a vLLM deployment without a GPU is invalid (VR114), not refused
        text = text.replace("gpus: []", "gpus: [{name: RTX 4090, vram: 24GiB}]")
    add_profile(project, f"e-{engine}", text)
    r = vramc_run(project, f"e-{engine}", "--prompt", "x")
    assert r.returncode == 2, r.stderr
    assert re.search(r"is an? \S+ deployment; vramc run loads llama-cpp-python deployments only", r.stderr)


def test_unknown_deployment(project):
    r = vramc_run(project, "nope")
    assert r.returncode == 2
    assert "no deployment 'nope'" in r.stderr and "tiny" in r.stderr


def test_llama_cpp_not_installed(project, tmp_path):
    fake = tmp_path / "site" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named llama_cpp')\n")
    r = vramc_run(project, "tiny", "--prompt", "x", env={"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}"})
    assert r.returncode == 4
    assert "pip install 'vramc[run]'" in r.stderr


TWO_GPUS = """\
name: gpus2
hardware:
  name: two
  device_order: free_desc
  gpus:
    - {name: small, vram: 8GiB, free: 1GiB, uuid: GPU-aaaa}
    - {name: big, vram: 24GiB, free: 20GiB, uuid: GPU-bbbb}
model: tiny
engine: llama-cpp-python
settings: {ctx: 1024, gpu_layers: all, flash_attn: off}
"""


def test_device_order_is_set_before_llama_cpp_loads(project, tmp_path):
    """A stand-in llama_cpp records CUDA_VISIBLE_DEVICES as it is imported (then fails)."""
    add_profile(project, "gpus2", TWO_GPUS)
    fake = tmp_path / "site" / "llama_cpp"
    fake.mkdir(parents=True)
    seen = tmp_path / "seen.txt"
    (fake / "__init__.py").write_text(
        f"import os\nopen({str(seen)!r}, 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))\n"
        "raise ImportError('stand-in')\n"
    )
    r = vramc_run(
        project,
        "gpus2",
        "--prompt",
        "x",
        env={"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}", "CUDA_VISIBLE_DEVICES": "7"},
    )
    assert r.returncode == 4
    assert seen.read_text() == "GPU-bbbb,GPU-aaaa"  # free_desc: the big free GPU is CUDA0
    assert "CUDA_VISIBLE_DEVICES=GPU-bbbb,GPU-aaaa (was '7')" in r.stderr


def test_gpu_plan_on_a_cpu_only_build(project):
    """Where the planned GPUs do not exist, vramc run still runs, and says what differs."""
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python has a GPU backend")
    add_profile(project, "gpus2", TWO_GPUS)
    r = vramc_run(project, "gpus2", "--prompt", "x", "--max-tokens", "2")
    assert r.returncode == 0, r.stderr
    assert "built without GPU support" in r.stderr
    assert re.search(r"^  CUDA0\s+weights\s+[0-9.]+\s+0\.00", r.stderr, re.M), r.stderr


def test_shipped_demo_profile(tmp_path):
    """profiles/demo-tiny.yaml runs as the README says, with the model made by the documented command."""
    (tmp_path / "profiles" / "models").mkdir(parents=True)
    for rel in ("profiles/demo-tiny.yaml", "profiles/models/demo-tiny.yaml"):
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = vramc_run(tmp_path, "demo-tiny", "--prompt", "Hello")
    assert r.returncode == 5 and "python -m vramc.synth tiny models/demo-tiny.gguf" in r.stderr
    (tmp_path / "models").mkdir()  # the documented command is `mkdir -p models && python -m ...`
    subprocess.run(
        [sys.executable, "-m", "vramc.dev.synth", "tiny", "models/demo-tiny.gguf"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    r = vramc_run(tmp_path, "demo-tiny", "--prompt", "Hello", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert "VR202" not in r.stderr  # the generated file matches the profile's lock
    assert "generated" in r.stderr
