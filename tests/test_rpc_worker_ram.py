"""Each worker's RAM as the plan gives it (vramc.plan.rpc.worker_ram), against the peak resident
memory (VmHWM) of the real rpc-servers, started from the generated scripts over loopback, after
llama-server has loaded the model and answered: the demo model, and a larger one whose biggest
tensor (a 32 MiB FFN matrix) is a message the server reads whole before copying it to its CPU
buffer. Needs scripts/build-llama.sh."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_rpc_loopback import BIN, free_port, stop, wait_port

pytestmark = pytest.mark.oracle

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
# the demo model and one of about 210 MiB in F32: per block three 32 MiB FFN matrices
SHAPES = {"tiny": None, "wide": {"n_embd": 1024, "n_head": 8, "n_head_kv": 4, "n_ff": 8192}}


def write_model(path: Path, shape: dict | None) -> None:
    from vramc.dev.synth.writer import TINY_SHAPE, write_tiny_model

    write_tiny_model(path, shape=dataclasses.replace(TINY_SHAPE, **shape) if shape else TINY_SHAPE)


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.fixture(scope="module", params=sorted(SHAPES))
def measured(request, tmp_path_factory):
    """(plan JSON's rpc_hosts, {endpoint: VmHWM}) for one model on the shipped loopback example."""
    root = tmp_path_factory.mktemp(f"rpc-ram-{request.param}")
    for sub in ("profiles/hardware", "profiles/models", "models"):
        (root / sub).mkdir(parents=True)
    shutil.copy(ROOT / "profiles" / "hardware" / "rpc-loopback.yaml", root / "profiles" / "hardware")
    shutil.copy(ROOT / "profiles" / "models" / "demo-tiny.yaml", root / "profiles" / "models")
    ports = [free_port(), free_port(), free_port()]
    text = (ROOT / "profiles" / "demo-tiny-rpc.yaml").read_text()
    for old, new in (
        ("  - loop-a\n", f"  - {{host: loop-a, port: {ports[0]}}}\n"),
        ("    port: 50053\n", f"    port: {ports[1]}\n"),
        ("  port: 8081\n", f"  port: {ports[2]}\n"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (root / "profiles" / "demo-tiny-rpc.yaml").write_text(text)
    write_model(root / "models" / "demo-tiny.gguf", SHAPES[request.param])
    env = dict(os.environ, VRAMC_NO_CACHE="1")
    for cmd in (["build"], ["plan", "--format", "json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "vramc", *cmd, "profiles/demo-tiny-rpc.yaml"],
            cwd=root,
            env=env,
            text=True,
            capture_output=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    (dep,) = json.loads(proc.stdout)["deployments"]
    out = root / "out" / "demo-tiny-rpc"
    procs: list[subprocess.Popen] = []
    try:
        for host, port in zip(("loop-a", "loop-b"), ports):
            procs.append(
                subprocess.Popen(
                    [str(out / "hosts" / host / f"rpc-server-{port}.sh")],
                    env=dict(os.environ, RPC_SERVER=str(BIN / "ggml-rpc-server")),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_port(port, procs[-1], host)
        log = root / "llama-server.log"
        with open(log, "w") as f:
            server = subprocess.Popen(
                [str(out / "launch.sh")],
                env=dict(os.environ, LLAMA_SERVER=str(BIN / "llama-server")),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        procs.append(server)
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        # a prompt that fills the context: compute buffers and the batch's messages at their largest
        body = json.dumps({"prompt": "x " * 1000, "n_predict": 1, "cache_prompt": False}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{ports[2]}/completion", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        peaks = {f"127.0.0.1:{port}": vm_hwm(p.pid) for port, p in zip(ports[:2], procs)}
    finally:
        stop(procs[::-1])
    return request.param, dep, peaks


def test_each_servers_modelled_ram_bounds_its_measured_peak(measured):
    """The model is an upper bound of each rpc-server's VmHWM, within 10% + 8 MiB of it."""
    name, dep, peaks = measured
    servers = [s for h in dep["rpc_hosts"] for s in h["servers"]]
    assert [s["endpoint"] for s in servers] == list(peaks)
    for s in servers:
        got = peaks[s["endpoint"]]
        model = s["total_bytes"]
        print(
            f"{name} {s['endpoint']} {','.join(s['devices'])}: model {model / MiB:.1f} MiB "
            f"(base {s['base_bytes'] / MiB:.1f} + message {s['message_bytes'] / MiB:.1f} + buffers "
            f"{s['buffers_bytes'] / MiB:.1f}), VmHWM {got / MiB:.1f} MiB"
        )
        assert got <= model, (s["endpoint"], got / MiB, model / MiB)
        assert model - got <= 0.10 * got + 8 * MiB, (s["endpoint"], got / MiB, model / MiB)
