"""Planning a deployment across machines (issue 17): llama.cpp's device order with RPC devices
first, a GPU behind RPC planned as that GPU (the remote CUDA backend's buffers, its CUDA context on
the worker), a host's CPU in its RAM, and what plan text and JSON show."""

from __future__ import annotations

import json
from pathlib import Path

from vramc.lint.check import run_check
from vramc.load.profiles import load_paths
from vramc.plan.planner import plan_all
from vramc.plan.view import plan_text, plans_json

MODEL = Path(__file__).resolve().parent.parent / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml"
HW = """\
hardware:
  gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 4090, vram: 24GiB}]
  network: {trusted: true}
  hosts:
    - {name: box2, address: 10.0.0.2, gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 3090, vram: 24GiB}]}
    - {name: cpu-box, address: 10.0.0.3, host_ram: 64GiB}
"""


def plan(tmp_path: Path, body: str, name: str = "d"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\nmodel: {MODEL}\nengine: llama-server\n" + HW + body)
    res = load_paths([p])
    assert not [d for d in res.diagnostics if d.severity.name == "ERROR"], res.diagnostics
    return plan_all(res.deployments)


def test_rpc_devices_come_first_in_hosts_order_then_this_machines_gpus(tmp_path):
    (p,) = plan(
        tmp_path,
        "hosts: [cpu-box, {host: box2, gpus: [1, 0], port: 50053}]\ngpus: [1]\n"
        "settings: {ctx: 8192, gpu_layers: all, tensor_split: [1, 1, 1, 1]}\n",
    )
    devs = p.estimate.devices
    assert [(d.id, d.host, d.gpu, d.name, d.backend) for d in devs] == [
        ("RPC0", "cpu-box", -1, "CPU", "rpc"),
        ("RPC1", "box2", 1, "RTX 3090", "rpc-cuda"),
        ("RPC2", "box2", 0, "RTX 4090", "rpc-cuda"),
        ("CUDA0", None, 1, "RTX 4090", ""),
    ]
    assert [d.endpoint for d in devs] == ["10.0.0.3:50052", "10.0.0.2:50053", "10.0.0.2:50053", None]
    assert devs[0].capacity_bytes == 64 << 30 and devs[0].overhead_bytes == 0  # the host's RAM, no CUDA
    assert p.cuda_visible_devices() == "1"  # this machine's GPU only
    layers = [d.layers for d in devs]
    assert layers == sorted(layers) and all(d.n_layers for d in devs)  # split in device order
    text = plan_text(p)
    assert "RPC1    RTX 3090 @box2" in text and "CUDA0   RTX 4090 @this" in text
    assert "order: --rpc 10.0.0.3:50052,10.0.0.2:50053: RPC0=cpu-box" in text


def test_a_gpu_behind_rpc_is_planned_as_that_gpu(tmp_path):
    """The same model on (box2's 4090 over RPC, this machine's 4090) and on this machine's two
    4090s: the same buffers, device for device (CUDA's padding and alignment come from the remote
    backend), and the same CUDA context, held on the worker."""
    settings = "settings: {ctx: 8192, gpu_layers: all, tensor_split: [1, 1]}\n"
    (remote,) = plan(tmp_path, "hosts: [{host: box2, gpus: [0]}]\ngpus: [0]\n" + settings, "r")
    (local,) = plan(tmp_path, "gpus: [0, 1]\n" + settings, "l")
    figures = [
        [(d.weights_bytes, d.kv_bytes, d.compute_bytes, d.overhead_bytes) for d in p.estimate.devices]
        for p in (remote, local)
    ]
    assert figures[0] == figures[1]
    assert remote.estimate.devices[0].overhead_bytes > 0
    # a CPU behind RPC holds no CUDA context
    (cpu,) = plan(tmp_path, "hosts: [cpu-box]\ngpus: [0]\n" + settings, "c")
    assert cpu.estimate.devices[0].overhead_bytes == 0


def test_plan_json_adds_host_keys_to_rpc_devices_only(tmp_path):
    (p,) = plan(tmp_path, "hosts: [cpu-box]\ngpus: [0]\nsettings: {ctx: 8192, gpu_layers: all}\n")
    devices = json.loads(plans_json([p]))["deployments"][0]["devices"]
    assert {k: devices[0][k] for k in ("id", "gpu", "host", "endpoint", "backend")} == {
        "id": "RPC0",
        "gpu": -1,
        "host": "cpu-box",
        "endpoint": "10.0.0.3:50052",
        "backend": "rpc",
    }
    assert not {"host", "endpoint", "backend"} & set(devices[1])


def test_deployments_sharing_this_machine_share_only_its_gpus(tmp_path):
    """A GPU of box2 and this machine's GPU with the same position are different cards (VR312)."""
    p = tmp_path / "two.yaml"
    p.write_text(
        HW + "deployments:\n"
        f"  - {{name: a, model: {MODEL}, engine: llama-server, hosts: [{{host: box2, gpus: [0]}}], gpus: [],"
        " settings: {ctx: 65536, gpu_layers: all}}\n"
        f"  - {{name: b, model: {MODEL}, engine: llama-server, gpus: [0], settings: {{ctx: 100000, gpu_layers: all, port: 8090}}}}\n"
    )
    assert [d.code for d in run_check([p]).diagnostics if d.severity.name != "INFO"] == []
    p.write_text(p.read_text().replace("gpus: [], settings", "gpus: [0], settings"))
    found = [d for d in run_check([p]).diagnostics if d.code == "VR312"]
    assert found and all("GPU 0 (RTX 4090) is shared" in d.message for d in found)


def test_a_gpu_behind_rpc_sizes_compute_as_cuda_does(tmp_path):
    """Flash attention over a quantized KV cache: CUDA converts K and V next to the result
    (ggml_cuda_flash_attn_ext_get_alloc_size), and the RPC client asks the remote backend for that
    size (ggml_backend_rpc_buffer_type_get_alloc_size); a CPU behind RPC needs no such room."""
    s = (
        "settings: {ctx: 8192, gpu_layers: all, tensor_split: [1, 1], flash_attn: on,"
        " cache_type_k: q8_0, cache_type_v: q8_0}\n"
    )
    (gpu,) = plan(tmp_path, "hosts: [{host: box2, gpus: [0]}]\ngpus: [0]\n" + s, "g")
    (cpu,) = plan(tmp_path, "hosts: [cpu-box]\ngpus: [0]\n" + s, "c")
    local = gpu.estimate.devices[1].compute_bytes
    assert abs(gpu.estimate.devices[0].compute_bytes - local) < (1 << 20)  # as this machine's 4090
    assert cpu.estimate.devices[0].compute_bytes < local - (4 << 20)


def test_deployments_that_run_together_cannot_share_an_rpc_server_port(tmp_path):
    """Each deployment's build starts its own rpc-server: two on box2:50052 cannot both listen (VR405)."""
    p = tmp_path / "two.yaml"
    p.write_text(
        HW + "deployments:\n"
        f"  - {{name: a, model: {MODEL}, engine: llama-server, hosts: [{{host: box2, gpus: [0]}}], gpus: [],"
        " settings: {ctx: 8192, gpu_layers: all, port: 8090}}\n"
        f"  - {{name: b, model: {MODEL}, engine: llama-server, hosts: [{{host: box2, gpus: [1]}}], gpus: [],"
        " settings: {ctx: 8192, gpu_layers: all, port: 8091}}\n"
    )
    found = [(d.code, d.line, d.deployment) for d in run_check([p]).diagnostics if d.severity.name == "ERROR"]
    assert found == [("VR405", 8, "a"), ("VR405", 9, "b")], found
    p.write_text(p.read_text().replace("gpus: [1]}]", "gpus: [1], port: 50053}]"))
    assert [d for d in run_check([p]).diagnostics if d.severity.name == "ERROR"] == []


def test_sixteen_devices_are_more_than_llama_server_splits(tmp_path):
    """llama-server refuses --tensor-split with llama_max_devices() (16) numbers or more (common/arg.cpp),
    and its build writes one per device: 15 devices build, 16 are VR303 (the tensor_split auto chose)."""
    hosts = "".join(
        f"    - {{name: w{i}, address: 10.0.1.{i + 1}, gpus: [{{name: RTX 3090, vram: 24GiB}}]}}\n" for i in range(15)
    )

    def check(n_hosts: int) -> list:
        p = tmp_path / "many.yaml"
        p.write_text(
            f"name: many\nmodel: {MODEL}\nengine: llama-server\n"
            "hardware:\n  gpus: [{name: RTX 4090, vram: 24GiB}]\n  network: {trusted: true}\n  hosts:\n"
            + hosts
            + "hosts: ["
            + ", ".join(f"w{i}" for i in range(n_hosts))
            + "]\n"
            "settings: {ctx: 8192, gpu_layers: all, tensor_split: auto}\n"
        )
        return [(d.code, d.line, d.message) for d in run_check([p]).diagnostics if d.severity.name == "ERROR"]

    assert check(14) == []  # 14 RPC devices + CUDA0
    (found,) = check(15)
    assert found[:2] == ("VR303", 24) and "refuses a tensor_split of 16 numbers (at most 15" in found[2], found


def test_deployments_sharing_a_cpu_host_are_told_its_ram(tmp_path):
    """VR312 on the rpc-servers of one host's CPU names that host's RAM (not 'GPU -1'), and `hosts:`."""
    p = tmp_path / "two.yaml"
    p.write_text(
        HW.replace("host_ram: 64GiB", "host_ram: 8GiB") + "deployments:\n"
        f"  - {{name: a, model: {MODEL}, engine: llama-server, hosts: [cpu-box], gpus: [],"
        " settings: {ctx: 8192, gpu_layers: all, port: 8090}}\n"
        f"  - {{name: b, model: {MODEL}, engine: llama-server, hosts: [{{host: cpu-box, port: 50053}}], gpus: [],"
        " settings: {ctx: 8192, gpu_layers: all, port: 8091}}\n"
    )
    found = [d for d in run_check([p]).diagnostics if d.code == "VR312"]
    assert [d.deployment for d in found] == ["a", "b"], found
    assert all(d.message.startswith("the RAM of host cpu-box (its CPU's rpc-servers) is shared by a ") for d in found)
    assert all("(`hosts:`)" in d.hint for d in found)


def test_a_device_over_its_memory_names_its_host(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text(
        f"name: d\nmodel: {MODEL}\nengine: llama-server\n"
        + HW.replace("host_ram: 64GiB", "host_ram: 4GiB")
        + "hosts: [cpu-box]\ngpus: []\nsettings: {ctx: 8192, gpu_layers: all}\n"
    )
    (found,) = [d for d in run_check([p]).diagnostics if d.code == "VR300"]
    assert found.message.startswith("RPC0 (CPU of host cpu-box) needs "), found


def test_tensor_split_auto_fills_the_gpus_before_a_cpu_behind_rpc(tmp_path):
    """Balanced by its share of 64 GiB of RAM, cpu-box would take most layers while the GPUs idle:
    the GPUs hold them when they can (cpu-box none, VR308), and cpu-box helps only when they cannot."""
    s = "gpus: [0]\nsettings: {ctx: 8192, gpu_layers: all, tensor_split: auto}\n"
    (p,) = plan(tmp_path, "hosts: [cpu-box, {host: box2, gpus: [0]}]\n" + s, "a")
    assert [d.n_layers for d in p.estimate.devices][0] == 0
    assert sum(d.n_layers for d in p.estimate.devices[1:]) == 33 and p.verdict == "fits"
    small = tmp_path / "small"
    small.mkdir()
    global HW
    saved, HW = (
        HW,
        HW.replace(
            "gpus: [{name: RTX 4090, vram: 24GiB}, {name: RTX 4090",
            "gpus: [{name: RTX 4090, vram: 4GiB}, {name: RTX 4090",
        ),
    )
    try:
        (q,) = plan(small, "hosts: [cpu-box]\n" + s, "b")  # this machine's 4 GiB cannot hold 8.5 GB
    finally:
        HW = saved
    assert q.estimate.devices[0].n_layers > 0 and q.estimate.devices[1].n_layers > 0 and q.verdict == "fits"


def test_a_gpu_workers_rpc_server_needs_host_ram_for_its_largest_tensor(tmp_path):
    """An rpc-server reads each tensor whole into host memory before copying it to its GPU
    (ggml-rpc.cpp recv_msg, rpc_server::set_tensor): box2's peak is its process and the largest
    tensor on its GPU (blk.*.ffn_*: 14336 x 4096 at Q8_0, 59.5 MiB), shown per host in the plan
    and its JSON (`rpc_hosts`, RPC plans only), and VR360 when the host has less RAM."""
    body = "hosts: [{host: box2, gpus: [0]}]\ngpus: [0]\nsettings: {ctx: 8192, gpu_layers: all, tensor_split: [1, 1]}\n"
    (p,) = plan(tmp_path, body)
    rec = json.loads(plans_json([p]))["deployments"][0]
    ffn = 14336 * 4096 // 32 * 34
    assert rec["rpc_hosts"] == [
        {
            "host": "box2",
            "ram_bytes": 150 * 2**20 + ffn,
            "host_ram": None,
            "servers": [
                {
                    "endpoint": "10.0.0.2:50052",
                    "devices": ["RPC0"],
                    "base_bytes": 150 * 2**20,
                    "message_bytes": ffn,
                    "buffers_bytes": 0,
                    "total_bytes": 150 * 2**20 + ffn,
                }
            ],
        }
    ]
    assert "  worker RAM (MiB, peak): box2 210 (:50052 150 base + 60 message)\n" in plan_text(p)
    (local,) = plan(tmp_path, "gpus: [0, 1]\nsettings: {ctx: 8192, gpu_layers: all}\n", "l")
    assert "rpc_hosts" not in json.loads(plans_json([local]))["deployments"][0]
    assert "worker RAM" not in plan_text(local)

    def vr360(ram: str) -> list[str]:
        f = tmp_path / "ram.yaml"
        f.write_text(
            f"name: ram\nmodel: {MODEL}\nengine: llama-server\n"
            + HW.replace("{name: box2, address: 10.0.0.2,", f"{{name: box2, address: 10.0.0.2, host_ram: {ram},")
            + body
        )
        return [d.message for d in run_check([f]).diagnostics if d.code == "VR360"]

    (msg,) = vr360("200MiB")  # its process fits, not with the largest tensor
    assert msg.startswith("the rpc-server on host box2 needs 210 MiB of its RAM at its peak (RPC0 "), msg
    assert vr360("256MiB") == []


def test_deployments_that_run_together_add_their_rpc_servers_ram_on_a_host(tmp_path):
    """Each deployment of a `deployments:` file starts its own rpc-server on box2 (one per GPU, each
    its own port): 210 MiB each (150 base + 59.5 the largest tensor) fits box2's 300 MiB alone, not
    together, 419 MiB (VR360 on both, each's share named); 512 MiB holds both."""
    p = tmp_path / "two.yaml"

    def vr360(ram: str) -> list:
        p.write_text(
            HW.replace("{name: box2, address: 10.0.0.2,", f"{{name: box2, address: 10.0.0.2, host_ram: {ram},")
            + "deployments:\n"
            f"  - {{name: a, model: {MODEL}, engine: llama-server, hosts: [{{host: box2, gpus: [0]}}], gpus: [0],"
            " settings: {ctx: 8192, gpu_layers: all, port: 8090, tensor_split: [1, 1]}}\n"
            f"  - {{name: b, model: {MODEL}, engine: llama-server,"
            " hosts: [{host: box2, gpus: [1], port: 50053}], gpus: [1],"
            " settings: {ctx: 8192, gpu_layers: all, port: 8091, tensor_split: [1, 1]}}\n"
        )
        return [(d.deployment, d.line, d.message) for d in run_check([p]).diagnostics if d.code == "VR360"]

    found = vr360("300MiB")
    assert [(who, line) for who, line, _ in found] == [("a", 8), ("b", 9)], found
    for _, _, msg in found:
        assert msg == (
            "the rpc-servers on host box2 of the deployments that run together need 419 MiB of its RAM at "
            "their peak (a 210 MiB, b 210 MiB) but it has 300 MiB"
        ), msg
    assert vr360("512MiB") == []
    # one deployment alone over the host's RAM keeps its own message, not this one too
    alone = vr360("200MiB")
    assert [who for who, _, _ in alone] == ["a", "b"], alone
    assert all(m.startswith("the rpc-server on host box2 needs 210 MiB") for _, _, m in alone), alone
