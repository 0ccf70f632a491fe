"""The proof of issue 17 on a machine without a GPU: the shipped loopback RPC deployment
(profiles/demo-tiny-rpc.yaml) is built, its rpc-servers are started from the generated worker
scripts (their command lines as written; RPC_SERVER names the pinned binary), llama-server from the
generated launch script (LLAMA_SERVER likewise), and it answers /v1/chat/completions.

The plan, device by device, is what llama.cpp itself says over those very servers: the dry run
(llama-fit-params --fit-print) and the buffers the real load logged. Needs scripts/build-llama.sh.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from vramc.dev.oracle import find_binaries, parse_compute_log, run_fit_print

pytestmark = pytest.mark.oracle

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
BIN = find_binaries()
if BIN is None or not os.access(BIN / "llama-server", os.X_OK):
    pytest.skip("llama.cpp oracle binaries not built (scripts/build-llama.sh)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the shipped loopback example on free ports, with its tiny model generated."""
    root = tmp_path_factory.mktemp("rpc-project")
    (root / "profiles" / "hardware").mkdir(parents=True)
    (root / "profiles" / "models").mkdir()
    (root / "models").mkdir()
    shutil.copy(ROOT / "profiles" / "hardware" / "rpc-loopback.yaml", root / "profiles" / "hardware")
    shutil.copy(ROOT / "profiles" / "models" / "demo-tiny.yaml", root / "profiles" / "models")
    ports = [free_port(), free_port(), free_port()]
    assert len(set(ports)) == 3
    text = (ROOT / "profiles" / "demo-tiny-rpc.yaml").read_text()
    for old, new in (
        ("  - loop-a\n", f"  - {{host: loop-a, port: {ports[0]}}}\n"),
        ("    port: 50053\n", f"    port: {ports[1]}\n"),
        ("  port: 8081\n", f"  port: {ports[2]}\n"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (root / "profiles" / "demo-tiny-rpc.yaml").write_text(text)
    subprocess.run(
        [sys.executable, "-m", "vramc.synth", "tiny", str(root / "models" / "demo-tiny.gguf")], check=True, cwd=root
    )
    env = dict(os.environ, VRAMC_NO_CACHE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "vramc", "build", "profiles/demo-tiny-rpc.yaml"],
        cwd=root,
        env=env,
        text=True,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, ports


@pytest.fixture(scope="module")
def running(project):
    """The rpc-servers and llama-server, started from the generated files; the server's log."""
    root, ports = project
    out = root / "out" / "demo-tiny-rpc"
    scripts = [
        out / "hosts" / "loop-a" / f"rpc-server-{ports[0]}.sh",
        out / "hosts" / "loop-b" / f"rpc-server-{ports[1]}.sh",
    ]
    procs: list[subprocess.Popen] = []
    log = root / "llama-server.log"
    try:
        for script, port in zip(scripts, ports):
            assert os.access(script, os.X_OK), script
            procs.append(
                subprocess.Popen(
                    [str(script)],
                    env=dict(os.environ, RPC_SERVER=str(BIN / "ggml-rpc-server")),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_port(port, procs[-1], script.name)
        # an rpc-server serves one client at a time: llama.cpp's dry run goes first
        dry = dry_run(root, ports)
        with open(log, "w") as f:
            procs.append(
                subprocess.Popen(
                    [str(out / "launch.sh")],
                    env=dict(
                        os.environ,
                        LLAMA_SERVER=str(BIN / "llama-server"),
                        LLAMA_ARG_LOG_VERBOSITY="4",
                        LLAMA_ARG_LOG_COLORS="off",
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 120
        while True:
            assert procs[-1].poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield root, ports, log, dry
    finally:
        stop(procs[::-1])


def test_the_generated_scripts_run_what_the_plan_says(project):
    root, ports = project
    out = root / "out" / "demo-tiny-rpc"
    args = [a for a in (out / "llama-server.args").read_text().splitlines() if not a.startswith("#")]
    assert args[args.index("--rpc") + 1] == f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    for name, port in (("loop-a", ports[0]), ("loop-b", ports[1])):
        script = (out / "hosts" / name / f"rpc-server-{port}.sh").read_text()
        assert f"  --host 127.0.0.1 \\\n  --port {port} \\\n  --device CPU\n" in script
        assert "export CUDA_VISIBLE_DEVICES=''" in script


def test_llama_server_over_the_rpc_servers_answers_chat_completions(running):
    root, ports, log, _ = running
    body = json.dumps({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{ports[2]}/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = json.loads(r.read())
    assert r.status == 200
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["completion_tokens"] >= 1
    text = log.read_text()
    # the model really is on the rpc-servers, in the planned order
    assert f"RPC0[127.0.0.1:{ports[0]}] model buffer size" in text
    assert f"RPC0[127.0.0.1:{ports[1]}] model buffer size" in text


def plan_of(root: Path):
    from vramc.load.profiles import load_paths
    from vramc.plan.planner import plan_all

    cwd = os.getcwd()
    os.chdir(root)
    try:
        (plan,) = plan_all(load_paths([Path("profiles/demo-tiny-rpc.yaml")]).deployments)
    finally:
        os.chdir(cwd)
    return plan


def test_plan_per_device_is_the_real_loads_buffers(running):
    """Every buffer the real load logged (model, KV, compute per device) is the plan's, to 0.05
    MiB (llama.cpp prints two decimals)."""
    root, ports, log, _ = running
    plan = plan_of(root)
    text = log.read_text()
    endpoints = [f"127.0.0.1:{p}" for p in ports[:2]]
    compute = parse_compute_log(text, endpoints)
    buffers: dict[str, list[float]] = {}
    for m in re.finditer(r"(load_tensors|llama_kv_cache):\s+(\S+) (model|KV) buffer size =\s+([\d.]+) MiB", text):
        name = next((f"RPC{i}" for i, ep in enumerate(endpoints) if ep in m.group(2)), "Host")
        buffers.setdefault(name, [0.0, 0.0])[0 if m.group(3) == "model" else 1] += float(m.group(4)) * MiB
    assert [d.id for d in plan.estimate.devices] == ["RPC0", "RPC1"]
    for d in plan.estimate.devices:
        model, kv = buffers.get(d.id, [0.0, 0.0])
        assert abs(d.weights_bytes - model) < 0.05 * MiB, (d.id, d.weights_bytes / MiB, model / MiB)
        assert abs(d.kv_bytes - kv) < 0.05 * MiB, (d.id, d.kv_bytes / MiB, kv / MiB)
        assert abs(d.compute_bytes - compute.get(d.id, 0)) < 0.05 * MiB, (d.id, d.compute_bytes / MiB)
    assert abs(plan.estimate.host.compute_bytes - compute["Host"]) < 0.05 * MiB


def dry_run(root: Path, ports: list[int]):
    """The plan's dry-run estimate and llama-fit-params' over the running rpc-servers."""
    from vramc.memory.llama import estimate_llama
    from vramc.model.gguf import read_gguf

    plan = plan_of(root)
    model = root / "models" / "demo-tiny.gguf"
    dry = dataclasses.replace(plan.params, n_outputs_max=None)  # llama-fit-params reserves n_batch outputs
    ours = estimate_llama(read_gguf(model), plan.gpus, dry, dry_run=True)
    return ours, run_fit_print(model, dry, [f"127.0.0.1:{p}" for p in ports[:2]], BIN, precise=True)


def test_plan_per_device_is_llama_fit_params_over_the_same_servers(running):
    """llama-fit-params' dry run over the rpc-servers started from the generated scripts, with the
    plan's settings: the same whole MiB per device (it prints them rounded down) and compute
    buffers to 0.05 MiB."""
    ours, theirs = running[3]
    assert [d.id for d in ours.devices] == [o.name for o in theirs.devices] == ["RPC0", "RPC1"]
    for d, o in zip(ours.devices, theirs.devices):
        assert (d.id, d.weights_bytes // MiB * MiB, d.kv_bytes // MiB * MiB) == (o.name, o.model_bytes, o.context_bytes)
        assert abs(d.compute_bytes - theirs.compute_precise.get(o.name, 0)) <= 0.05 * MiB, (d.id, d.compute_bytes / MiB)
    assert abs(ours.host.compute_bytes - theirs.compute_precise["Host"]) <= 0.05 * MiB
    figures = [
        f"{d.id} plan {d.weights_bytes / MiB:.2f}/{d.kv_bytes / MiB:.2f}/{d.compute_bytes / MiB:.2f} MiB, "
        f"llama-fit-params {o.model_bytes // MiB}/{o.context_bytes // MiB}/{theirs.compute_precise.get(o.name, 0) / MiB:.2f}"
        for d, o in zip(ours.devices, theirs.devices)
    ]
    print("\n".join(figures))
