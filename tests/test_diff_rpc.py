"""`vramc diff` of deployments across machines (issue 17): llama.cpp numbers its RPC devices in
`hosts:` order (RPC0, RPC1, ...), so a host inserted before another renames that host's device.
The diff pairs another machine's devices by host and GPU index (its CPU: -1), not by id."""

from __future__ import annotations

import json
from pathlib import Path

from test_diff import ROOT, commit, edit, git, run, write

HW = """\
kind: hardware
name: lab
gpus: [{name: RTX 4090, vram: 24GiB}]
network: {trusted: true}
hosts:
  - {name: box2, address: 10.0.0.2, gpus: [{name: RTX 3090, vram: 24GiB}]}
  - {name: cpu-box, address: 10.0.0.3, host_ram: 64GiB}
"""
DEP = """\
name: d
hardware: lab
model: llama8b
engine: llama-server
hosts: [box2]
settings: {ctx: 8192, gpu_layers: all, tensor_split: [1, 1]}
"""


def project(tmp_path: Path) -> Path:
    r = tmp_path / "rpc"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(r, "profiles/hardware/lab.yaml", HW)
    model = (ROOT / "profiles/models/llama-3.1-8b-instruct-q8_0.yaml").read_text()
    write(r, "profiles/models/llama8b.yaml", model.replace("name: llama-3.1-8b-instruct-q8_0", "name: llama8b"))
    write(r, "profiles/d.yaml", DEP)
    commit(r, "box2 and this machine")
    return r


def test_a_host_inserted_before_another_leaves_that_hosts_device_unchanged(tmp_path):
    r = project(tmp_path)
    # cpu-box first: box2's GPU becomes RPC1; a zero share keeps every layer where it was
    edit(r, "profiles/d.yaml", "hosts: [box2]", "hosts: [cpu-box, box2]")
    edit(r, "profiles/d.yaml", "tensor_split: [1, 1]", "tensor_split: [0, 1, 1]")
    res = run(r, "diff", "--format", "json")
    assert res.exit_code == 0, res.output
    (d,) = json.loads(res.stdout)["deployments"]
    rows = {(x.get("id_base"), x["id"]): x for x in d["devices"]}
    assert list(rows) == [("RPC0", "RPC1"), (None, "CUDA0"), (None, "RPC0")]
    box2, local, cpu = rows.values()
    assert (box2["host"], box2["name"], cpu["host"], cpu["name"]) == ("box2", "RTX 3090", "cpu-box", "CPU")
    assert box2["base"] == box2["head"] and not any(box2["deltas"].values())  # the same GPU, unchanged
    assert box2["layers"]["base"] == box2["layers"]["head"] and local["base"] == local["head"]
    assert cpu["base"] is None and cpu["head"] is not None  # the new host's device: added
    assert d["layers_moved"] == []
    assert "host" not in local and "id_base" not in local  # this machine's rows as before
    text = run(r, "diff").stdout
    lines = text.splitlines()
    at = lines.index("  settings: tensor_split 1,1 -> 0,1,1") + 3  # past "also changed" and the header
    assert lines[at].split()[:3] == ["RPC0->RPC1", "@box2", "before"], text
    assert lines[at + 2].split() == ["delta"] + ["0"] * 6, text
    added = next(x.split() for x in lines if x.startswith("  RPC0 "))
    assert added == ["RPC0", "@cpu-box", "before"] + ["-"] * 6, text
    assert "layers:" not in text
    md = run(r, "diff", "--format", "markdown").stdout
    assert "| RPC0→RPC1 RTX 3090 | before |" in md, md


def test_a_device_of_a_host_newly_added_to_hosts_is_labelled_with_its_host(tmp_path):
    """box3, new in the hardware's `hosts:` and the deployment's: its added row reads `RPC1 @box3`
    in the table and the bars, as box2's row reads `RPC0 @box2` (plan text's label); this
    machine's rows keep their bare id."""
    r = project(tmp_path)
    edit(
        r,
        "profiles/hardware/lab.yaml",
        "  - {name: cpu-box,",
        "  - {name: box3, address: 10.0.0.4, gpus: [{name: RTX 3090, vram: 24GiB}]}\n  - {name: cpu-box,",
    )
    edit(r, "profiles/d.yaml", "hosts: [box2]", "hosts: [box2, box3]")
    edit(r, "profiles/d.yaml", "tensor_split: [1, 1]", "tensor_split: [1, 0, 1]")
    res = run(r, "diff")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    ids = [x.split(" before ")[0].strip() for x in lines if " before " in x and not x.startswith("  host ")]
    # the table's rows, then the bars' (box3's has only an `after` bar)
    assert ids == ["RPC0 @box2", "CUDA0", "RPC1 @box3", "RPC0 @box2", "CUDA0"], res.stdout
    assert next(x for x in lines if x.startswith("  RPC1 @box3 ")).split()[2:] == ["before"] + ["-"] * 6
    assert next(x for x in lines if x.endswith("fits") and "@box3" in x).split()[:3] == ["RPC1", "@box3", "after"]


def test_a_host_taken_away_is_removed_not_renamed(tmp_path):
    r = project(tmp_path)
    edit(r, "profiles/d.yaml", "hosts: [box2]", "hosts: [cpu-box, box2]")
    edit(r, "profiles/d.yaml", "tensor_split: [1, 1]", "tensor_split: [0, 1, 1]")
    commit(r, "cpu-box too")
    edit(r, "profiles/d.yaml", "hosts: [cpu-box, box2]", "hosts: [box2]")
    edit(r, "profiles/d.yaml", "tensor_split: [0, 1, 1]", "tensor_split: [1, 1]")
    (d,) = json.loads(run(r, "diff", "--format", "json").stdout)["deployments"]
    rows = [(x.get("id_base"), x["id"], x["base"] is None, x["head"] is None) for x in d["devices"]]
    assert rows == [(None, "RPC0", False, True), ("RPC1", "RPC0", False, False), (None, "CUDA0", False, False)]


def test_a_vllm_hosts_gpu_is_paired_by_its_index_not_its_launch_position(tmp_path):
    """A vLLM node's GPU is HOST:CUDAi, i its position among the GPUs the deployment takes there
    (CUDA_VISIBLE_DEVICES): `gpus: [0, 1]` -> `[1, 2]` makes GPU 1 node2:CUDA1 -> node2:CUDA0, the
    same card; GPU 0 leaves and GPU 2 comes."""
    r = tmp_path / "vllm"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    card = "{name: RTX 3090, vram: 24GiB}"
    write(
        r,
        "profiles/hardware/nodes.yaml",
        f"kind: hardware\nname: nodes\ngpus: [{card}, {card}]\nhost_ram: 64GiB\naddress: 10.0.0.1\n"
        f"network: {{trusted: true, interface: eth0}}\n"
        f"hosts:\n  - {{name: node2, address: 10.0.0.2, host_ram: 64GiB, gpus: [{card}, {card}, {card}]}}\n",
    )
    write(r, "profiles/models/q.yaml", (ROOT / "profiles/models/qwen2.5-coder-32b-instruct-awq.yaml").read_text())
    write(
        r,
        "profiles/v.yaml",
        "name: v\nhardware: nodes\nmodel: q\nengine: vllm\n"
        "hosts: [{host: node2, gpus: [0, 1]}]\n"
        "settings: {tensor_parallel_size: 2, pipeline_parallel_size: 2, max_model_len: 8192, port: 8003}\n",
    )
    commit(r, "node2 GPUs 0 and 1")
    edit(r, "profiles/v.yaml", "gpus: [0, 1]", "gpus: [1, 2]")
    res = run(r, "diff", "--format", "json")
    assert res.exit_code == 0, res.output
    (d,) = json.loads(res.stdout)["deployments"]
    rows = [(x.get("id_base"), x["id"], x.get("host"), x["base"] is None, x["head"] is None) for x in d["devices"]]
    assert rows == [
        (None, "CUDA0", None, False, False),
        (None, "CUDA1", None, False, False),
        (None, "node2:CUDA0", "node2", False, True),  # GPU 0: removed
        ("node2:CUDA1", "node2:CUDA0", "node2", False, False),  # GPU 1: the same card
        (None, "node2:CUDA1", "node2", True, False),  # GPU 2: added
    ], rows
    assert not any(d["devices"][3]["deltas"].values())
    text = run(r, "diff").stdout
    added = [x.split()[:2] for x in text.splitlines() if x.startswith("  node2:CUDA1 ")]
    assert added == [["node2:CUDA1", "before"], ["node2:CUDA1", "after"]] and "@node2" not in text, (
        text
    )  # its id names its host
