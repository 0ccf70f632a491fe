"""The build of a deployment across machines (issue 17): per rpc-server a launch script and a
systemd unit in hosts/HOST/, and llama-server's --rpc in the planned order. The scripts are run by
a real shell with a stand-in rpc-server that reports what it was given."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from build_support import FIXTURE, build, execstart_argv

OUT = FIXTURE / "out" / "mistral-rpc"
HARDWARE = """\
kind: hardware
name: lab
gpus: []
host_ram: 8GiB
network: {trusted: true}
hosts:
  - name: box2
    address: 10.0.0.2
    gpus:
      - {name: RTX 3090, vram: 24GiB, uuid: UUID}
      - {name: RTX 3060, vram: 12GiB, index: 3}
"""


def fake_server(tmp_path: Path) -> Path:
    """A stand-in rpc-server: prints its environment's device selection and its arguments."""
    exe = tmp_path / "fake-rpc-server"
    exe.write_text('#!/bin/sh\nprintf "%s\\n" "CVD=$CUDA_VISIBLE_DEVICES" "$@"\n')
    exe.chmod(0o755)
    return exe


def run_script(script: Path, tmp_path: Path) -> list[str]:
    proc = subprocess.run(
        [str(script)], env=dict(os.environ, RPC_SERVER=str(fake_server(tmp_path))), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_each_worker_gets_a_script_and_a_unit_in_its_host_folder():
    assert sorted(str(p.relative_to(OUT / "hosts")) for p in (OUT / "hosts").rglob("*")) == [
        "cpu-box",
        "cpu-box/rpc-server-50060.sh",
        "cpu-box/vramc-rpc-mistral-rpc-50060.service",
        "gpu-box",
        "gpu-box/rpc-server-50052.sh",
        "gpu-box/vramc-rpc-mistral-rpc-50052.service",
    ]


def test_llama_server_takes_the_rpc_servers_in_the_planned_order():
    args = [a for a in (OUT / "llama-server.args").read_text().splitlines() if not a.startswith("#")]
    assert args[args.index("--rpc") + 1] == "10.0.0.2:50052,cpu-box.lan:50060"
    assert args[args.index("--tensor-split") + 1] == "2,1,2"  # RPC0, RPC1, then this machine's CUDA0
    unit = (OUT / "vramc-mistral-rpc.service").read_text()
    assert 'Environment="CUDA_VISIBLE_DEVICES=0"' in unit  # this machine's GPU only


def test_scripts_start_what_the_units_start(tmp_path):
    for script in sorted((OUT / "hosts").rglob("*.sh")):
        unit = next(script.parent.glob("*.service"))
        said = run_script(script, tmp_path)
        assert ["ggml-rpc-server"] + said[1:] == execstart_argv(unit.read_text())
        assert f'Environment="CUDA_VISIBLE_DEVICES={said[0][4:]}"' in unit.read_text()
    assert run_script(OUT / "hosts" / "gpu-box" / "rpc-server-50052.sh", tmp_path) == [
        "CVD=GPU-8f3c9d2a-1b4e-4c7a-9e21-55aa0c3d7e19",  # the selected GPU (its UUID), as CUDA0
        "--host",
        "10.0.0.2",
        "--port",
        "50052",
        "--device",
        "CUDA0",
    ]
    assert run_script(OUT / "hosts" / "cpu-box" / "rpc-server-50060.sh", tmp_path) == [
        "CVD=",  # a CPU server hides the GPUs
        "--host",
        "0.0.0.0",
        "--port",
        "50060",
        "--device",
        "CPU",
        "--cache",
    ]
    assert (
        "Environment=LLAMA_CACHE=%S/vramc/llama.cpp"
        in (OUT / "hosts" / "cpu-box" / "vramc-rpc-mistral-rpc-50060.service").read_text()
    )


def project(tmp_path: Path, uuid: str, hosts: str) -> Path:
    (tmp_path / "profiles" / "hardware").mkdir(parents=True)
    (tmp_path / "profiles" / "hardware" / "lab.yaml").write_text(HARDWARE.replace("UUID", uuid))
    model = FIXTURE / "profiles" / "models" / "mistral-7b-q4_k_m.yaml"
    (tmp_path / "profiles" / "d.yaml").write_text(
        f"name: d\nhardware: lab\nmodel: {model}\nengine: llama-server\n"
        f"settings: {{ctx: 4096, gpu_layers: all}}\nhosts: {hosts}\n"
    )
    return tmp_path


def test_a_hostile_uuid_is_one_quoted_word(tmp_path, monkeypatch):
    hostile = "GPU-1;$(touch pwned)`id`'\"x"
    root = project(tmp_path, hostile, "[{host: box2, gpus: [0]}]")
    monkeypatch.chdir(root)
    assert build([Path("profiles/d.yaml")]) == 0
    script = root / "out" / "d" / "hosts" / "box2" / "rpc-server-50052.sh"
    said = run_script(script, tmp_path)
    assert said[0] == f"CVD={hostile}" and not (root / "pwned").exists()
    unit = (script.parent / "vramc-rpc-d-50052.service").read_text()
    assert execstart_argv(unit)[1:] == said[1:]


def test_gpus_by_index_in_the_chosen_order(tmp_path, monkeypatch):
    root = project(tmp_path, "GPU-a", "[{host: box2, gpus: [1, 0]}]")
    monkeypatch.chdir(root)
    assert build([Path("profiles/d.yaml")]) == 0
    said = run_script(root / "out" / "d" / "hosts" / "box2" / "rpc-server-50052.sh", tmp_path)
    # not every GPU has a UUID: the index field (3) or the position (0), in the deployment's order
    assert said[0] == "CVD=3,0" and said[-2:] == ["--device", "CUDA0,CUDA1"]


def test_a_tensor_override_names_the_rpc_buffer_type(tmp_path, monkeypatch):
    """llama-server's -ot takes buffer type names: an RPC device's is RPC<i>[ADDRESS:PORT], i its
    place within its own server (ggml-rpc.cpp ggml_backend_rpc_buffer_type)."""
    root = project(tmp_path, "GPU-a", "[{host: box2, gpus: [0, 1]}]")
    dep = root / "profiles" / "d.yaml"
    dep.write_text(dep.read_text().replace("gpu_layers: all}", "gpu_layers: all, override_tensor: ['ffn_up=RPC1']}"))
    monkeypatch.chdir(root)
    assert build([Path("profiles/d.yaml")]) == 0
    args = (root / "out" / "d" / "llama-server.args").read_text().splitlines()
    assert args[args.index("--override-tensor") + 1] == "ffn_up=RPC1[10.0.0.2:50052]"


def test_a_gpu_name_with_a_line_break_is_refused_not_written_into_comments(tmp_path, monkeypatch):
    """A worker GPU's name goes into the comments of its rpc-server's script and unit: a newline
    there would start a shell command of its own (VR403 at check, refused by the build with --force)."""
    from vramc.lint.check import run_check

    root = project(tmp_path, "GPU-a", "[{host: box2, gpus: [0]}]")
    hw = root / "profiles" / "hardware" / "lab.yaml"
    hw.write_text(hw.read_text().replace("{name: RTX 3090,", '{name: "RTX 3090\\ntouch pwned\\n#",'))
    found = [(d.code, d.line, Path(d.file).name) for d in run_check([root / "profiles" / "d.yaml"]).diagnostics]
    assert found == [("VR403", 10, "lab.yaml")], found  # at the GPU's name in the hardware profile
    monkeypatch.chdir(root)
    build([Path("profiles/d.yaml")], force=True)
    assert not (root / "out" / "d" / "hosts").exists()
    # a comma in a worker GPU's uuid would add a device to its CUDA_VISIBLE_DEVICES
    hw.write_text(HARDWARE.replace("UUID", "'GPU-a,GPU-b'"))
    found = [d for d in run_check([root / "profiles" / "d.yaml"]).diagnostics if d.code == "VR403"]
    assert found and "comma" in found[0].message and found[0].line == 10, found
