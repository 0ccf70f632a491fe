"""Several machines in one hardware profile (issue 17): the `hosts:` of a hardware profile and of
a deployment, as the loader reads them, and what it refuses (hostile input included)."""

from pathlib import Path

import pytest

from vramc.lint.check import run_check
from vramc.load.profiles import host_spans, load_paths

MODEL = Path(__file__).resolve().parent.parent / "profiles" / "models" / "llama-3.1-8b-instruct-q8_0.yaml"

HARDWARE = """\
kind: hardware
name: lab
gpus: [{name: RTX 4090, vram: 24GiB}]
host_ram: 64GiB
address: 192.168.1.10
llama_cpp: b7400
network:
  trusted: true
  interface: eth0
hosts:
  - name: box2
    address: 192.168.1.12
    gpus: [{name: RTX 3090, vram: 24GiB}, {name: RTX 3060, vram: 12GiB}]
    host_ram: 32GiB
    llama_cpp: b7400
  - name: cpu-box
    address: cpu-box.lan
    host_ram: 128GiB
"""


def project(tmp_path: Path, deployment: str, hardware: str = HARDWARE) -> Path:
    (tmp_path / "hardware").mkdir(exist_ok=True)
    (tmp_path / "hardware" / "lab.yaml").write_text(hardware)
    p = tmp_path / "dep.yaml"
    p.write_text(f"name: dep\nhardware: lab\nmodel: {MODEL}\nengine: llama-server\n" + deployment)
    return p


def errors(path: Path) -> list[tuple[str, int | None, int | None, str]]:
    res = run_check([path])
    return [(d.code, d.line, d.column, d.message) for d in res.diagnostics if d.severity.name == "ERROR"]


def test_the_profile_format_of_the_issue_loads_and_resolves_in_order(tmp_path):
    p = project(
        tmp_path,
        "hosts:\n  - cpu-box\n  - host: box2\n    port: 50053\n    gpus: [1]\n    cache: true\n    bind: 0.0.0.0\n",
    )
    res = load_paths([p])
    assert [d for d in res.diagnostics if d.severity.name == "ERROR"] == []
    (dep,) = res.deployments
    hw = dep.hardware.obj
    assert (hw.address, hw.llama_cpp, hw.network.trusted, hw.network.interface) == (
        "192.168.1.10",
        "b7400",
        True,
        "eth0",
    )
    spans = host_spans(dep.doc.obj, hw)
    assert [(s.name, s.address, s.port, s.gpus, s.cache, s.bind) for s in spans] == [
        ("cpu-box", "cpu-box.lan", 50052, (), False, "cpu-box.lan"),  # a CPU-only host: its CPU backend
        ("box2", "192.168.1.12", 50053, (1,), True, "0.0.0.0"),
    ]


def test_a_host_entry_without_gpus_takes_every_gpu_of_the_host(tmp_path):
    res = load_paths([project(tmp_path, "hosts: [box2]\n")])
    (dep,) = res.deployments
    assert [s.gpus for s in host_spans(dep.doc.obj, dep.hardware.obj)] == [(0, 1)]


@pytest.mark.parametrize(
    "address",
    ["a;b", "box 2", "$(reboot)", "`id`", "fe80::1", "192.168.1.12:50052", "-oProxyCommand=x", "box2\n", "", "a" * 300],
)
def test_hostile_addresses_are_refused_at_their_line(tmp_path, address):
    import json

    hw = HARDWARE.replace("address: cpu-box.lan", f"address: {json.dumps(address)}")
    p = project(tmp_path, "hosts: [cpu-box]\n", hw)
    found = run_check([p]).diagnostics
    at = [d for d in found if d.code == "VR101" and d.file.endswith("lab.yaml")]
    assert at and at[0].line == 17, found
    assert "address" in at[0].message


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("llama_cpp", "'b7400; rm -rf /'", "not a build name"),
        ("network", "{trusted: yes please}", "trusted"),
        ("network", "{interface: 'eth0 eth1'}", "not a network interface"),
        ("network", "{interface: averyveryverylongname0}", "not a network interface"),
    ],
)
def test_hostile_hardware_values(tmp_path, key, value, says):
    hw = HARDWARE.split("network:")[0].replace("llama_cpp: b7400\n", "") + f"{key}: {value}\n"
    found = run_check([project(tmp_path, "", hw)]).diagnostics
    assert any(d.code == "VR101" and says in d.message for d in found), found


@pytest.mark.parametrize(
    ("hosts", "code", "line", "says"),
    [
        ("hosts: [box3]\n", "VR115", 5, "has no host 'box3' (its hosts: box2, cpu-box)"),
        (
            "hosts:\n  - {host: box2, gpus: [2]}\n",
            "VR117",
            6,
            "host box2 has no GPU 2 (its GPUs: 0 (RTX 3090), 1 (RTX 3060))",
        ),
        ("hosts:\n  - {host: box2, gpus: [-1]}\n", "VR117", 6, "has no GPU -1"),
        ("hosts:\n  - {host: box2, gpus: [0, 0]}\n", "VR117", 6, "listed twice"),
        ("hosts:\n  - box2\n  - {host: box2, port: 50053, gpus: [1]}\n", "VR117", 7, "already served by hosts[0]"),
        ("hosts:\n  - cpu-box\n  - cpu-box\n", "VR119", 7, "already has an rpc-server on cpu-box.lan port 50052"),
        ("hosts: [42]\n", "VR101", 5, "a host is its name"),
        ("hosts: ['box2; reboot']\n", "VR101", 5, "letters, digits"),
        ("hosts:\n  - {host: box2, port: 70000}\n", "VR101", 6, "65535"),
        ("hosts:\n  - {host: box2, port: true}\n", "VR101", 6, "boolean"),
        ("hosts:\n  - {host: box2, gpus: [true]}\n", "VR101", 6, "whole number"),
        ("hosts:\n  - {host: box2, bind: '0.0.0.0 -p 1'}\n", "VR101", 6, "not a host name"),
        ("hosts:\n  - {host: box2, prot: 1}\n", "VR100", 6, "unknown key 'prot'"),
        ("hosts: box2\n", "VR101", 5, "list"),
    ],
)
def test_bad_deployment_hosts_are_errors_at_the_value(tmp_path, hosts, code, line, says):
    found = errors(project(tmp_path, hosts))
    assert any(c == code and ln == line and says in m for c, ln, _, m in found), found


def test_duplicate_host_names_in_an_inline_hardware_of_a_deployments_file(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text(
        "deployments:\n  - name: a\n    engine: llama-server\n    model: " + str(MODEL) + "\n"
        "    hardware:\n      gpus: []\n      hosts:\n        - {name: w, address: 10.0.0.2}\n"
        "        - {name: w, address: 10.0.0.3}\nhardware: {gpus: []}\n"
    )
    found = errors(p)
    assert ("VR116", 9, 18) in [(c, ln, col) for c, ln, col, _ in found], found


@pytest.mark.parametrize("engine", ["ollama", "llama-cpp-python"])
def test_engines_that_cannot_span_hosts(tmp_path, engine):
    p = project(tmp_path, "hosts: [box2]\n")
    p.write_text(p.read_text().replace("engine: llama-server", f"engine: {engine}"))
    found = errors(p)
    assert [c for c, *_ in found] == ["VR118"], found
    assert f"engine {engine} cannot span several machines" in found[0][3]


def test_llama_server_router_cannot_span_hosts(tmp_path):
    p = project(tmp_path, "hosts: [box2]\n")
    p.write_text(p.read_text().replace(f"model: {MODEL}\n", f"models:\n  - {{name: a, model: {MODEL}}}\n"))
    found = errors(p)
    assert [c for c, *_ in found] == ["VR118"] and "router" in found[0][3], found


def test_profiles_without_hosts_are_unchanged(tmp_path):
    # a hardware without the new keys validates to the same defaults as before
    from vramc.load.schema import Hardware

    hw = Hardware.model_validate({"gpus": [{"name": "x", "vram": "8GiB"}]})
    assert (hw.hosts, hw.address, hw.llama_cpp, hw.network) == ([], None, None, None)


@pytest.mark.parametrize(
    ("hosts", "line", "says"),
    [
        # cpu-box's address is a DNS name and no bind: rpc-server would be given --host cpu-box.lan
        ("hosts: [cpu-box]\n", 5, "would listen on 'cpu-box.lan' (the host's address; no bind:)"),
        ("hosts:\n  - {host: box2, bind: localhost}\n", 6, "would listen on 'localhost' (its bind:)"),
        ("hosts:\n  - {host: box2, bind: box2.lan}\n", 6, "would listen on 'box2.lan' (its bind:)"),
    ],
)
def test_rpc_server_binds_an_ipv4_address_only(tmp_path, hosts, line, says):
    found = errors(project(tmp_path, hosts))
    assert [(c, ln) for c, ln, _, m in found if says in m] == [("VR412", line)], found
    good = project(tmp_path, "hosts:\n  - {host: cpu-box, bind: 0.0.0.0}\n  - {host: box2, bind: 192.168.1.12}\n")
    assert errors(good) == []


def test_the_real_rpc_server_refuses_a_host_name():
    """What VR412 stands on: the pinned rpc-server takes --host through inet_addr."""
    import os
    import subprocess

    from vramc.dev.oracle import find_binaries

    bin_dir = find_binaries()
    if bin_dir is None or not os.access(bin_dir / "ggml-rpc-server", os.X_OK):
        pytest.skip("llama.cpp oracle binaries not built (scripts/build-llama.sh)")
    proc = subprocess.run(
        [str(bin_dir / "ggml-rpc-server"), "--host", "localhost", "--port", "1", "--device", "CPU"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Invalid host address: localhost" in proc.stdout + proc.stderr


def test_workers_of_different_builds_without_this_machines_build(tmp_path):
    """VR411: with this machine's llama_cpp unstated, two workers that differ cannot both match it."""
    hw = HARDWARE.replace("llama_cpp: b7400\nnetwork", "network").replace(
        "    host_ram: 128GiB\n", "    host_ram: 128GiB\n    llama_cpp: b6900\n"
    )
    p = project(tmp_path, "hosts:\n  - box2\n  - {host: cpu-box, bind: 0.0.0.0}\n", hw)
    found = [(d.code, d.line, d.message) for d in run_check([p]).diagnostics if d.code == "VR411"]
    assert [(c, ln) for c, ln, _ in found] == [("VR411", 18)], found  # at cpu-box's llama_cpp
    assert "host cpu-box runs llama.cpp b6900 and host box2 b7400" in found[0][2]
    p.write_text(p.read_text().replace("  - box2\n", ""))  # one worker alone: nothing to compare
    assert [d for d in run_check([p]).diagnostics if d.code == "VR411"] == []


def test_a_cpu_host_with_host_ram_zero_is_told_so_at_its_host_ram(tmp_path):
    hw = HARDWARE.replace("    host_ram: 128GiB\n", "    host_ram: 0\n")
    found = [(c, ln, m) for c, ln, _, m in errors(project(tmp_path, "hosts: [{host: cpu-box, bind: 0.0.0.0}]\n", hw))]
    assert [(c, ln) for c, ln, _ in found] == [("VR361", 18)], found  # at its host_ram: 0
    assert "its host_ram is 0:" in found[0][2]
