"""vLLM pipeline parallelism and vLLM across machines (issue 17): the layer split of
get_pp_indices, each rank's memory following its stage, the per-worker KV budget, the layout of
ranks over nodes and the rules vLLM enforces there, the built launch files of every node, and
hostile input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from build_support import (
    FIXTURE,
    ROOT,
    args_file_lines,
    build,
    copy_fixture,
    execstart_argv,
    systemd_root,
    verify_unit,
)
from vramc.build.targets.vllm import option_names
from vramc.lint.check import run_check
from vramc.load import schema
from vramc.memory import vllm_arch as arch
from vramc.memory.usage import GpuBudget
from vramc.memory.vllm import estimate_vllm, layout
from vramc.plan.refusals import rule_code
from vramc.units import GiB, MiB


def model(name: str) -> schema.Model:
    return schema.Model.model_validate(yaml.safe_load((ROOT / "profiles/models" / f"{name}.yaml").read_text()))


def gpu(i=0, host=None, capacity=80 * GiB, name="NVIDIA H100 80GB HBM3", overhead=1500 * MiB):
    return GpuBudget(
        id=f"CUDA{i}" if host is None else f"{host}:CUDA{i}",
        name=name,
        gpu=i,
        capacity_bytes=capacity,
        overhead_bytes=overhead,
        host=host,
    )


def codes(est) -> list[str]:
    return [rule_code(kind) for kind, _ in est.errors]


# a Llama-3-8B-like shape with an awkward layer count (DeepSeek V3's 61)
SHAPE61 = schema.HFConfig(
    architecture="LlamaForCausalLM",
    num_hidden_layers=61,
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    max_position_embeddings=8192,
)


# --- get_pp_indices -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layers, pp, split",
    [
        (61, 4, [15, 15, 16, 15]),  # remainder 1: the second-to-last stage
        (63, 4, [16, 16, 16, 15]),  # remainder 3: every stage but the last
        (62, 4, [15, 16, 16, 15]),  # remainder 2: the middle stages
        (64, 4, [16, 16, 16, 16]),
        (80, 3, [27, 27, 26]),
        (28, 1, [28]),
        (3, 4, [1, 1, 1, 0]),  # more stages than layers: the last gets none
        (2, 4, [0, 1, 1, 0]),
    ],
)
def test_layer_split_is_get_pp_indices(layers, pp, split):
    got = arch.pp_partition(layers, pp)
    assert got == split and sum(got) == layers
    # vLLM's own algorithm, written out as in vllm/distributed/utils.py
    parts = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    assert got == parts


@pytest.mark.parametrize(
    "value, message",
    [
        ("15,16,15,15", None),
        ("15, 16,15 ,15", None),  # int() takes the spaces, as vLLM's does
        ("15;16;15;15", "Invalid partition string: 15;16;15;15"),
        ("", "Invalid partition string: "),
        ("15,16,30", "len(partitions)=3 does not match pp_size=4."),
        ("15,15,15,15", "sum(partitions)=60 does not match num_hidden_layers=61."),
    ],
)
def test_vllm_pp_layer_partition(value, message):
    if message is None:
        assert arch.pp_partition(61, 4, value) == [15, 16, 15, 15]
    else:
        with pytest.raises(ValueError) as e:
            arch.pp_partition(61, 4, value)
        assert str(e.value) == message


# --- each rank's memory follows its stage ---------------------------------------------------------
def test_stage_weights_from_weights_size_by_hand():
    m = model("qwen2.5-coder-32b-instruct-awq")  # 19.33 GB, 64 layers, H 5120, vocab 152064, untied
    table = 152064 * 5120 * 2  # one fp16 embedding matrix (152064 is a multiple of 64)
    per_layer = (19_330_000_000 - 2 * table - 5120 * 2) / 64
    w = arch.stage_weights(m, 2, 2, [32, 32])
    assert w[0] == int((32 * per_layer + table) / 2)  # layers 0-31 and the embedding, halved by TP
    assert w[1] == int((32 * per_layer + table + 5120 * 2) / 2)  # lm_head and the final norm
    assert abs(sum(w) * 2 - 19_330_000_000) <= 4
    assert arch.stage_weights(m, 2, 2, [64]) == [arch.weights_per_gpu(m, 2, 2)]  # one stage: as before


def test_stage_weights_from_the_config_by_hand():
    m = schema.Model(hf="x", config=SHAPE61)
    H, I, V = 4096, 14336, 128256  # noqa: E741
    layer = H * (4096 + 2 * 1024) + 4096 * H + 3 * H * I  # q, k, v, o, gate, up, down
    table = V * H * 2
    w = arch.stage_weights(m, 1, 2, [15, 15, 16, 15])
    assert w[0] == 15 * layer * 2 + table + 2 * 15 * H * 2
    assert w[1] == 15 * layer * 2 + 2 * 15 * H * 2
    assert w[2] == 16 * layer * 2 + 2 * 16 * H * 2
    assert w[3] == 15 * layer * 2 + table + 2 * 15 * H * 2 + H * 2  # lm_head + final norm
    assert sum(w) == arch.weights_per_gpu(m, 1, 2)  # the same model, cut in four
    tied = schema.Model(hf="x", config=SHAPE61.model_copy(update={"tie_word_embeddings": True}))
    wt = arch.stage_weights(tied, 1, 2, [15, 15, 16, 15])
    # tied: the last stage builds the embedding too (LlamaModel: embed_tokens on the last rank when tied)
    assert wt[3] == w[3] and sum(wt) == arch.weights_per_gpu(tied, 1, 2) + table


def test_each_rank_holds_its_stage_and_the_smallest_worker_sets_num_blocks():
    m = schema.Model(hf="x", config=SHAPE61, weights_size="16GiB")
    s = schema.Settings(pipeline_parallel_size=4, max_model_len=8192, max_num_seqs=64, max_num_batched_tokens=2048)
    est = estimate_vllm(m, [gpu(i) for i in range(4)], s)
    assert est.errors == []
    page = 16 * 8 * 256 * 2  # block x KV heads x (K + V head size) x fp16 = 65 536 B per layer
    per_block = [d.detail["kv_bytes_per_block"] for d in est.devices]
    assert per_block == [n * page for n in (15, 15, 16, 15)]
    avail = [d.detail["kv_available"] for d in est.devices]
    blocks = min(a // b for a, b in zip(avail, per_block))  # get_kv_cache_configs: the smallest worker's
    assert all(d.detail["kv_blocks"] == blocks for d in est.devices)
    assert [d.kv_bytes for d in est.devices] == [blocks * b for b in per_block]
    assert [(d.layers, d.n_layers, d.output) for d in est.devices] == [
        ((0, 14), 15, False),
        ((15, 29), 15, False),
        ((30, 45), 16, False),
        ((46, 60), 15, True),
    ]
    # the sampler runs on the last stage only; the others keep the received hidden states and residual
    act = [d.detail for d in est.devices]
    T, H = 2048, 4096
    assert act[0]["activation_sampler"] == 0 and act[0]["activation_intermediate"] == 0
    assert act[0]["activation"] == act[0]["activation_forward"] + T * H * 2
    assert act[1]["activation"] == act[1]["activation_forward"] + T * H * 2 + 2 * T * H * 2
    assert act[3]["activation_sampler"] == int(38.3 * 64 * 128256)
    assert act[3]["activation"] == max(act[3]["activation_forward"], act[3]["activation_sampler"]) + 3 * T * H * 2
    assert est.resolved["pipeline_parallel_size"] == 4 and est.resolved["pp_layer_partition"] == "15,15,16,15"
    assert est.host.weights_bytes == 0


def test_one_stage_estimates_are_unchanged():
    m = model("qwen2.5-7b-instruct")
    for settings in (schema.Settings(max_model_len=8192), schema.Settings(tensor_parallel_size=2, max_model_len=8192)):
        a = estimate_vllm(m, [gpu(0), gpu(1)], settings)
        b = estimate_vllm(m, [gpu(0), gpu(1)], settings.model_copy(update={"pipeline_parallel_size": 1}))
        assert a.resolved == b.resolved and [d.detail for d in a.devices] == [d.detail for d in b.devices]
        assert "pipeline_parallel_size" not in a.resolved and "rank" not in a.devices[0].detail
        assert all(d.layers is None for d in a.devices)


def test_a_worker_that_cannot_hold_one_request_stops_vllm_with_its_own_figures():
    m = schema.Model(hf="x", config=SHAPE61, weights_size="16GiB")
    small = gpu(1, capacity=12 * GiB, name="RTX 3060", overhead=600 * MiB)
    s = schema.Settings(pipeline_parallel_size=2, max_model_len=8192, gpu_memory_utilization=0.8, max_num_seqs=8)
    est = estimate_vllm(m, [gpu(0), small], s)  # stage 0 on an 80 GiB card is fine; stage 1 is not
    d1 = est.devices[1].detail
    assert arch.pp_partition(61, 2) == [31, 30] and d1["kv_bytes_per_block"] == 30 * 65536
    need = 512 * 30 * 65536  # cdiv(8192, 16) blocks of stage 1's 30 layers: 0.94 GiB
    check = d1["kv_available"] - d1["kv_bytes_per_block"]  # less the null block
    assert codes(est) == ["VR331"] and 0 < check < need
    assert f"({round(need / GiB, 2)} GiB KV cache is needed" in est.errors[0][1]
    assert f"available KV cache memory ({round(check / GiB, 2)} GiB)" in est.errors[0][1]
    assert f"estimated maximum model length is {check // (30 * 65536) * 16}." in est.errors[0][1]
    assert codes(estimate_vllm(m, [gpu(0), small], s.model_copy(update={"gpu_memory_utilization": 0.75}))) == ["VR332"]
    # auto-fit takes the shortest worker's length (_auto_fit_max_model_len)
    auto = estimate_vllm(m, [gpu(0), small], s.model_copy(update={"max_model_len": "auto"}))
    assert auto.errors == [] and auto.resolved["max_model_len"] == check // (30 * 65536) * 16


def test_single_machine_world_size_is_tp_times_pp():
    est = estimate_vllm(
        model("mistral-7b-instruct-awq"),
        [gpu(0), gpu(1)],
        schema.Settings(tensor_parallel_size=2, pipeline_parallel_size=2),
    )
    assert codes(est) == ["VR337"]
    assert "World size (4) is larger than the number of available GPUs (2) in this node" in est.errors[0][1]


# --- ranks over nodes ------------------------------------------------------------------------------
def test_mp_puts_world_size_over_nnodes_workers_on_every_node():
    gpus = [gpu(0), gpu(1), gpu(2), gpu(0, "n2"), gpu(1, "n2"), gpu(2, "n2")]
    lay = layout(gpus, 2, 2, None)
    assert (lay.backend, lay.nnodes, lay.local_world_size) == ("mp", 2, 2)
    assert [g.id for g in lay.ranks] == ["CUDA0", "CUDA1", "n2:CUDA0", "n2:CUDA1"]  # a third GPU each stays idle
    ray = layout(gpus, 2, 2, "ray")
    assert [g.id for g in ray.ranks] == ["CUDA0", "CUDA1", "CUDA2", "n2:CUDA0"]  # this machine's first


def test_node_rules():
    m = model("mistral-7b-instruct-awq")
    s = schema.Settings(tensor_parallel_size=2, pipeline_parallel_size=2, max_model_len=8192)
    three = [gpu(0), gpu(1), gpu(0, "b"), gpu(1, "b"), gpu(0, "c"), gpu(1, "c")]
    est = estimate_vllm(m, three, s)
    assert codes(est) == ["VR372"]
    assert est.errors[0][1].startswith("global world_size (4) must be divisible by nnodes_within_dp (3).")
    short = estimate_vllm(m, [gpu(0), gpu(1), gpu(0, "b")], s)
    assert codes(short) == ["VR373"] and short.errors[0][1].startswith("b has 1 GPU for vLLM's 2 workers per node")
    ray = estimate_vllm(m, [gpu(0), gpu(1), gpu(0, "b")], s.model_copy(update={"distributed_executor_backend": "ray"}))
    assert codes(ray) == ["VR372"] and "the Ray cluster has 3 GPUs (this machine 2, b 1)" in ray.errors[0][1]
    ok = estimate_vllm(m, [gpu(0), gpu(1), gpu(0, "b"), gpu(1, "b")], s)
    assert ok.errors == [] and (ok.resolved["nnodes"], ok.resolved["distributed_executor_backend"]) == (2, "mp")
    assert [
        (d.detail["rank"], d.detail["pp_rank"], d.detail["tp_rank"], d.detail["node_rank"]) for d in ok.devices
    ] == [
        (0, 0, 0, 0),
        (1, 0, 1, 0),
        (2, 1, 0, 1),
        (3, 1, 1, 1),
    ]
    # vLLM's start check names the device as that node numbers it
    tenant = GpuBudget("b:CUDA1", "H100", 1, 80 * GiB, tenants_bytes=20 * GiB, overhead_bytes=1500 * MiB, host="b")
    busy = estimate_vllm(m, [gpu(0), gpu(1), gpu(0, "b"), tenant], s)
    assert codes(busy) == ["VR330"] and busy.errors[0][1].startswith("Free memory on device cuda:1 ")
    assert busy.errors[0][1].endswith("(on b)")


# --- the plan ---------------------------------------------------------------------------------------
def test_shipped_two_node_plan_and_json():
    path = ROOT / "profiles" / "vllm-two-nodes.yaml"
    result = run_check([path])
    assert [d for d in result.diagnostics if d.severity.name in ("ERROR", "WARNING")] == []
    (plan,) = result.plans
    assert [(g.id, g.host) for g in plan.gpus] == [
        ("CUDA0", None),
        ("CUDA1", None),
        ("node2:CUDA0", "node2"),
        ("node2:CUDA1", "node2"),
    ]
    assert plan.cuda_visible_devices() == "0,1"  # this machine's only
    from vramc.plan.view import plan_record, plan_text

    rec = json.loads(json.dumps(plan_record(plan)))
    assert rec["settings"]["pipeline_parallel_size"] == 2 and rec["settings"]["nnodes"] == 2
    assert [(d["layers"], d["output"], d.get("host")) for d in rec["devices"]] == [
        ([0, 31], False, None),
        ([0, 31], False, None),
        ([32, 63], True, "node2"),
        ([32, 63], True, "node2"),
    ]
    text = plan_text(plan)
    assert "pipeline_parallel_size=2" in text and "32-63 (32)" in text and "stage 0: 32, stage 1: 32" in text
    assert "--rpc" not in text


# --- the build ---------------------------------------------------------------------------------------
def test_shipped_two_node_build_mp(tmp_path, monkeypatch):
    project = tmp_path / "p"
    shutil.copytree(ROOT / "profiles", project / "profiles")
    monkeypatch.chdir(project)
    assert build(["profiles/vllm-two-nodes.yaml"]) == 0
    out = project / "out" / "vllm-two-nodes"
    head = args_file_lines(out / "vllm.args")
    worker = args_file_lines(out / "hosts" / "node2" / "vllm.args")
    for args in (head, worker):
        flags = {a for a in args if a.startswith("--")}
        assert flags <= option_names(), flags - option_names()
        assert args[args.index("--tensor-parallel-size") + 1] == "2"
        assert args[args.index("--pipeline-parallel-size") + 1] == "2"
        assert args[args.index("--nnodes") + 1] == "2" and args[args.index("--master-addr") + 1] == "10.0.0.1"
    assert head[head.index("--node-rank") + 1] == "0" and "--headless" not in head
    assert worker[worker.index("--node-rank") + 1] == "1" and worker[-1] == "--headless"
    # the worker starts the same engine as node rank 1, without the API server
    rank = head.index("--node-rank") + 1
    assert worker == head[:rank] + ["1"] + head[rank + 1 :] + ["--headless"]
    config = yaml.safe_load((out / "hosts" / "node2" / "vllm.yaml").read_text())
    assert (config["node-rank"], config["headless"], config["pipeline-parallel-size"]) == (1, True, 2)
    script = (out / "hosts" / "node2" / "launch.sh").read_text()
    assert "export VLLM_HOST_IP=10.0.0.2\n" in script and "export NCCL_SOCKET_IFNAME=eth0\n" in script
    assert "export GLOO_SOCKET_IFNAME=eth0\n" in script and 'cd "$(dirname "$0")"/../../../..\n' in script
    # the worker's script runs from the project root it finds four folders up, and parses
    proc = subprocess.run(["sh", "-n", str(out / "hosts" / "node2" / "launch.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "hosts" / "node2" / "launch.sh").stat().st_mode & 0o111
    # and --check agrees
    assert build(["profiles/vllm-two-nodes.yaml"], check_only=True) == 0


def test_ray_build_golden_and_units(tmp_path):
    out = FIXTURE / "out" / "qwen-ray"
    head = (out / "launch.sh").read_text()
    assert "ray start --head --port=6379 --node-ip-address=10.0.0.1 --num-gpus=1\n" in head.replace(
        '"${RAY:-ray}" ', "ray "
    )
    args = args_file_lines(out / "vllm.args")
    assert args[args.index("--distributed-executor-backend") + 1] == "ray" and "--nnodes" not in args
    assert args[args.index("--pipeline-parallel-size") + 1] == "3"
    b = (out / "hosts" / "box-b" / "launch.sh").read_text()
    # box-b serves only its second GPU, named by UUID; its Ray worker offers that one GPU
    assert "export CUDA_VISIBLE_DEVICES=GPU-8f3c9d2a-1b4e-4c7a-9e21-55aa0c3d7e19\n" in b
    assert '"${RAY:-ray}" start --address=10.0.0.1:6379 --node-ip-address=10.0.0.2 --block --num-gpus=1\n' in b
    assert "export VLLM_PP_LAYER_PARTITION=8,10,10\n" in head and "export VLLM_PP_LAYER_PARTITION=8,10,10\n" in b
    assert not (out / "hosts" / "box-b" / "vllm.args").exists()  # a Ray worker runs no vllm
    unit = (out / "vramc-qwen-ray.service").read_text()
    # the head's daemons are started by the main process (systemd kills what ExecStartPre= forks)
    assert "ExecStartPre=" not in unit and "ExecStopPost=ray stop" in unit
    assert 'ExecStart=sh -c "ray start --head --port=6379 ' in unit
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze")
    root = systemd_root(tmp_path / "root")
    ray = root / "usr" / "local" / "bin" / "ray"
    ray.write_text("#!/bin/sh\n")
    ray.chmod(0o755)
    for path in [out / "vramc-qwen-ray.service", *sorted((out / "hosts").rglob("*.service"))]:
        assert verify_unit(root, path.name, path.read_text()) == "", path


def test_two_node_units_verify(tmp_path, monkeypatch):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze")
    out = ROOT / "out" / "vllm-two-nodes"
    root = systemd_root(tmp_path / "root")
    for path in (out / "vramc-vllm-two-nodes.service", out / "hosts" / "node2" / "vramc-vllm-two-nodes.service"):
        assert verify_unit(root, path.name, path.read_text()) == "", path


# --- hostile input --------------------------------------------------------------------------------
HOSTILE = textwrap.dedent("""\
    name: hostile
    hardware:
      address: 10.0.0.1
      network: {trusted: true, interface: eth0}
      gpus: [{name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}]
      hosts:
        - {name: node2, address: 10.0.0.2, gpus: [{name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}]}
    model: MODEL
    engine: vllm
    hosts: [node2]
    """)


@pytest.mark.parametrize(
    "extra, code, words",
    [
        ("settings: {distributed_executor_backend: slurm}\n", "VR101", "distributed_executor_backend"),
        ("settings: {distributed_executor_backend: true}\n", "VR101", "distributed_executor_backend"),
        ("settings: {pipeline_parallel_size: 0}\n", "VR101", "pipeline_parallel_size"),
        ("settings: {pipeline_parallel_size: -2}\n", "VR101", "pipeline_parallel_size"),
        ("settings: {pipeline_parallel_size: 1000}\n", "VR101", "pipeline_parallel_size"),
        ("settings: {pipeline_parallel_size: 2.5}\n", "VR101", "pipeline_parallel_size"),
        ("settings: {pipeline_parallel_size: true}\n", "VR101", "pipeline_parallel_size"),
        ("settings: {master_port: 70000}\n", "VR101", "master_port"),
        ("settings: {master_port: '29501; rm -rf /'}\n", "VR101", "master_port"),
        ("settings: {pipeline_parallel_size: 64, tensor_parallel_size: 1}\n", "VR370", "larger than the model"),
        ("env: {VLLM_PP_LAYER_PARTITION: '$(reboot)'}\nsettings: {pipeline_parallel_size: 2}\n", "VR371", "Invalid"),
        ("env: {VLLM_PP_LAYER_PARTITION: '40,-8'}\nsettings: {pipeline_parallel_size: 2}\n", "VR371", "negative"),
        ("env: {VLLM_PP_LAYER_PARTITION: '32,0'}\nsettings: {pipeline_parallel_size: 2}\n", "VR370", "no layers"),
        ("settings: {tensor_parallel_size: 3, pipeline_parallel_size: 1}\n", "VR337", "divisible"),
    ],
)
def test_hostile_settings_are_clear_diagnostics(tmp_path, extra, code, words):
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml")) + extra)
    found = [d for d in run_check([path]).diagnostics if d.code == code]
    assert found and words in found[0].message and found[0].line > 0, [
        (d.code, d.message) for d in run_check([path]).diagnostics
    ]
    proc = subprocess.run([sys.executable, "-m", "vramc", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr


def test_hosts_with_mismatched_gpu_counts(tmp_path):
    path = tmp_path / "mismatch.yaml"
    text = HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml"))
    text = text.replace("hosts: [node2]", "hosts: [{host: node2, gpus: [1]}]")
    path.write_text(text + "settings: {tensor_parallel_size: 2, pipeline_parallel_size: 2}\n")
    diags = run_check([path]).diagnostics
    assert [d.code for d in diags if d.severity.name == "ERROR"] == ["VR373"]
    # with Ray the same 3 GPUs are one too few for 4 workers
    path.write_text(
        text + "settings: {tensor_parallel_size: 2, pipeline_parallel_size: 2, distributed_executor_backend: ray}\n"
    )
    assert [d.code for d in run_check([path]).diagnostics if d.severity.name == "ERROR"] == ["VR372"]
    # three GPUs, TP 1 x PP 3 over them: Ray places them; mp cannot split 3 workers over 2 nodes
    path.write_text(text + "settings: {pipeline_parallel_size: 3, distributed_executor_backend: ray}\n")
    assert [d for d in run_check([path]).diagnostics if d.severity.name == "ERROR"] == []
    path.write_text(text + "settings: {pipeline_parallel_size: 3}\n")
    assert [d.code for d in run_check([path]).diagnostics if d.severity.name == "ERROR"] == ["VR372"]
    # a host whose entry gives it no GPU is still a node: vLLM would start its share of workers there
    path.write_text(
        text.replace("hosts: [{host: node2, gpus: [1]}]", "hosts: [{host: node2, gpus: []}]")
        + "settings: {pipeline_parallel_size: 2}\n"
    )
    found = [d for d in run_check([path]).diagnostics if d.severity.name == "ERROR"]
    assert [d.code for d in found] == ["VR373"] and found[0].message.split(": ", 1)[1].startswith("node2 has 0 GPUs")


def test_build_refuses_a_deployment_without_the_head_address(tmp_path, monkeypatch, capsys):
    project = copy_fixture(tmp_path / "p")
    (project / "profiles" / "vllm-ray.yaml").write_text(
        (FIXTURE / "profiles" / "vllm-ray.yaml").read_text().replace("  address: 10.0.0.1\n", "")
    )
    monkeypatch.chdir(project)
    assert build(["profiles/vllm-ray.yaml"]) == 1
    assert "not built: qwen-ray fails check (VR416)" in capsys.readouterr().err
    assert not (project / "out" / "qwen-ray").exists()


def test_one_machine_plan_json_keeps_its_keys():
    """Plan JSON of a one-stage vLLM deployment has the keys it had before issue 17, no more."""
    from vramc.plan.view import plan_record

    for plan in run_check([ROOT / "profiles" / "vllm-96gb.yaml"]).plans:
        rec = plan_record(plan)
        assert not {"pipeline_parallel_size", "pp_layer_partition", "distributed_executor_backend", "nnodes"} & set(
            rec["settings"]
        )
        for d in rec["devices"]:
            assert "host" not in d and d["layers"] is None and d["n_layers"] == 0 and d["output"] is False
        assert not any("pipeline" in n for n in rec["notes"])


# --- review of issue 17 ------------------------------------------------------------------------------
def _hostile(tmp_path, hosts: str, settings: str, engine: str = "vllm"):
    path = tmp_path / "p.yaml"
    text = HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml"))
    path.write_text(text.replace("hosts: [node2]", hosts).replace("engine: vllm", f"engine: {engine}") + settings)
    return path


@pytest.mark.parametrize(
    "hosts, col",
    [("hosts: [node2, node2]", 16), ("hosts: [{host: node2, gpus: [0]}, {host: node2, gpus: [1]}]", 42)],
)
def test_a_host_listed_twice_is_one_vllm_node(tmp_path, hosts, col):
    """A vLLM node is a machine (one node rank, one out/NAME/hosts/HOST/): listed twice it is
    VR116 at the second entry, not llama.cpp's rpc-server wording (VR117 GPUs, VR119 ports)."""
    path = _hostile(tmp_path, hosts, "settings: {tensor_parallel_size: 2, pipeline_parallel_size: 2}\n")
    errors = [d for d in run_check([path]).diagnostics if d.severity.name == "ERROR"]
    assert [(d.code, d.line, d.column) for d in errors] == [("VR116", 10, col)], [d.one_line() for d in errors]
    assert "host node2 is listed twice (hosts[0] and hosts[1])" in errors[0].message
    assert "rpc-server" not in errors[0].message + errors[0].hint
    proc = subprocess.run([sys.executable, "-m", "vramc", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "VR116" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    # llama.cpp may list a host twice (one rpc-server each): there the port clash is still VR119
    rpc = _hostile(tmp_path, "hosts: [{host: node2, gpus: [0]}, {host: node2, gpus: [1]}]", "", "llama-server")
    rpc.write_text(rpc.read_text().replace("mistral-7b-instruct-awq", "demo-tiny"))
    assert "VR119" in [d.code for d in run_check([rpc]).diagnostics]


def _plan_of(path):
    result = run_check([path])
    (plan,) = result.plans
    return plan, result.diagnostics


def test_tp_auto_across_machines_takes_gpus_per_node_and_a_stage_per_node(tmp_path):
    """`tensor_parallel_size: auto` with `hosts:` (PP unset) is vLLM's advice, TP = GPUs per node
    and PP = nodes, not the smallest TP that starts (TP 2 over the two nodes, a GPU idle on each)."""
    from vramc.plan.view import plan_record, plan_text

    shipped = (ROOT / "profiles" / "vllm-two-nodes.yaml").read_text()
    assert "  tensor_parallel_size: 2\n  pipeline_parallel_size: 2\n" in shipped
    (tmp_path / "profiles").mkdir()
    shutil.copytree(ROOT / "profiles" / "hardware", tmp_path / "profiles" / "hardware")
    shutil.copytree(ROOT / "profiles" / "models", tmp_path / "profiles" / "models")
    path = tmp_path / "profiles" / "auto.yaml"
    path.write_text(
        shipped.replace("  tensor_parallel_size: 2\n  pipeline_parallel_size: 2\n", "  tensor_parallel_size: auto\n")
    )
    plan, diags = _plan_of(path)
    fixed, _ = _plan_of(ROOT / "profiles" / "vllm-two-nodes.yaml")
    assert [d.code for d in diags if d.severity.name in ("ERROR", "WARNING")] == []
    assert (plan.choice.tensor_parallel_size, plan.choice.pipeline_parallel_size) == (2, 2)
    assert set(plan.auto) >= {"tensor_parallel_size", "pipeline_parallel_size"}
    # the same plan as the shipped profile, which writes TP 2 x PP 2 by hand
    assert [(d.id, d.total_bytes, d.layers) for d in plan.estimate.devices] == [
        (d.id, d.total_bytes, d.layers) for d in fixed.estimate.devices
    ]
    assert len(plan.estimate.devices) == 4
    text = plan_text(plan)
    assert "tensor_parallel_size=2*  pipeline_parallel_size=2*" in text
    assert "tensor_parallel_size 2 x pipeline_parallel_size 2 chosen by vramc" in text
    rec = plan_record(plan)
    assert {"tensor_parallel_size", "pipeline_parallel_size"} <= set(rec["auto"])
    assert rec["settings"]["pipeline_parallel_size"] == 2
    # the build writes what the plan chose, on both nodes
    monkey_cwd = tmp_path
    proc = subprocess.run(
        [sys.executable, "-m", "vramc", "build", "profiles/auto.yaml"],
        cwd=monkey_cwd,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "VRAMC_NO_CACHE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    for args in (tmp_path / "out/vllm-two-nodes/vllm.args", tmp_path / "out/vllm-two-nodes/hosts/node2/vllm.args"):
        lines = args_file_lines(args)
        assert lines[lines.index("--tensor-parallel-size") + 1] == "2"
        assert lines[lines.index("--pipeline-parallel-size") + 1] == "2"


THREE_NODES = textwrap.dedent("""\
    name: three
    hardware:
      address: 10.0.0.1
      network: {trusted: true, interface: eth0}
      gpus: [GPUS]
      hosts:
        - {name: b, address: 10.0.0.2, gpus: [GPUS]}
        - {name: c, address: 10.0.0.3, gpus: [GPUS]}
    model: MODEL
    engine: vllm
    hosts: [b, c]
    """)


@pytest.mark.parametrize(
    "per_node, model_name, extra, expect",
    [
        # 4 GPUs a node, 3 nodes, Ray: 4 x 3
        (4, "qwen2.5-coder-32b-instruct-awq", "distributed_executor_backend: ray, max_model_len: 8192", (4, 3)),
        # mp, 2 a node
        (2, "mistral-7b-instruct-awq", "max_model_len: 8192", (2, 3)),
        # 3 GPUs a node: Qwen2.5-7B's 28 heads take TP 2 (3 does not divide them), still one stage a node
        (
            3,
            "qwen2.5-7b-instruct-awq"
            if (ROOT / "profiles/models/qwen2.5-7b-instruct-awq.yaml").exists()
            else "qwen2.5-7b-instruct",
            "max_model_len: 8192",
            (2, 3),
        ),
        # PP given: TP auto takes the largest TP whose groups stay on one machine
        (4, "mistral-7b-instruct-awq", "pipeline_parallel_size: 3, max_model_len: 8192", (4, 3)),
        # PP 1 given, Ray over 3 x 2 GPUs: no TP keeps to one machine and uses every node; the
        # largest that starts (TP 2 would stay here and leave both hosts idle)
        (
            2,
            "mistral-7b-instruct-awq",
            "pipeline_parallel_size: 1, distributed_executor_backend: ray, max_model_len: 8192",
            (4, 1),
        ),
    ],
)
def test_tp_auto_across_three_nodes(tmp_path, per_node, model_name, extra, expect):
    gpus = ", ".join(["{name: RTX 4090, vram: 24GiB}"] * per_node)
    path = tmp_path / "three.yaml"
    path.write_text(
        THREE_NODES.replace("GPUS", gpus).replace("MODEL", str(ROOT / "profiles/models" / f"{model_name}.yaml"))
        + f"settings: {{tensor_parallel_size: auto, {extra}}}\n"
    )
    plan, diags = _plan_of(path)
    assert [d.code for d in diags if d.severity.name == "ERROR"] == []
    heads = plan.dep.model.obj.config.num_attention_heads
    tp, pp = expect
    if heads % tp:  # the parametrization's TP must be one vLLM accepts for this model
        pytest.fail(f"{model_name}: {heads} heads")
    assert (plan.choice.tensor_parallel_size, plan.choice.pipeline_parallel_size or 1) == expect
    assert ("pipeline_parallel_size" in plan.auto) == ("pipeline_parallel_size" not in extra)
    assert len(plan.estimate.devices) == tp * pp


def test_tp_auto_on_one_machine_is_unchanged():
    """Without hosts TP auto is still the smallest TP that starts, and PP is never chosen."""
    for plan in run_check([FIXTURE / "profiles"]).plans:
        if plan.engine == "vllm" and not plan.dep.doc.obj.hosts:
            assert "pipeline_parallel_size" not in plan.auto
            assert not any("chosen by vramc: across machines" in n for n in plan.estimate.notes)


def test_fit_write_keeps_the_pipeline_size_it_chose(tmp_path):
    """`vramc fit --write` writes the PP it chose with the TP (without it the profile would plan
    TP 2 over two nodes, one stage); `--refit` solves both again."""
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    path = tmp_path / "profiles" / "vllm-two-nodes.yaml"
    path.write_text(
        path.read_text().replace(
            "  tensor_parallel_size: 2\n  pipeline_parallel_size: 2\n", "  tensor_parallel_size: auto\n"
        )
    )

    def fit(*extra):
        proc = subprocess.run(
            [sys.executable, "-m", "vramc", "fit", str(path), "--write", *extra],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "VRAMC_NO_CACHE": "1"},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return yaml.safe_load(path.read_text())["settings"]

    written = fit()
    assert (written["tensor_parallel_size"], written["pipeline_parallel_size"]) == (2, 2)
    assert "pipeline_parallel_size: 2  # vramc fit: auto" in path.read_text()
    plan, _ = _plan_of(path)
    assert plan.auto == () or "pipeline_parallel_size" not in plan.auto
    assert (plan.choice.tensor_parallel_size, plan.choice.pipeline_parallel_size) == (2, 2)
    again = fit("--refit")
    assert (again["tensor_parallel_size"], again["pipeline_parallel_size"]) == (2, 2)
    # a node without GPUs (Ray: a node that holds none) leaves one stage here: --refit writes PP 1
    text = path.read_text().replace("hosts:\n  - node2\n", "hosts:\n  - {host: node2, gpus: []}\n")
    path.write_text(text.replace("  port: 8003\n", "  port: 8003\n  distributed_executor_backend: ray\n"))
    refit = fit("--refit")
    assert (refit["tensor_parallel_size"], refit["pipeline_parallel_size"]) == (2, 1)


def test_vllm_host_gpu_uuid_is_checked_like_this_machines(tmp_path):
    """A vLLM node's GPU uuid goes into its CUDA_VISIBLE_DEVICES: a newline (a command of its own in
    launch.sh) or a comma (one more device) is VR403 at check, as on this machine."""
    base = HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml"))
    for uuid, words in (('"GPU-1\\nrm -rf ~"', "newline"), ('"GPU-1,GPU-2"', "comma")):
        path = tmp_path / "uuid.yaml"
        path.write_text(
            base.replace(
                "- {name: node2, address: 10.0.0.2, gpus: [{name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}]}",
                f"- {{name: node2, address: 10.0.0.2, gpus: [{{name: H100, vram: 80GiB, uuid: {uuid}}}]}}",
            )
            + "settings: {pipeline_parallel_size: 2}\n"
        )
        found = [d for d in run_check([path]).diagnostics if d.code == "VR403"]
        assert found and words in found[0].message and (found[0].line, found[0].column) == (7, 79), [
            d.one_line() for d in run_check([path]).diagnostics
        ]


def test_diff_text_lines_up_the_bars_of_a_host_gpu(tmp_path):
    """`vramc diff`'s bars: a vLLM host's GPU id (node2:CUDA0) is longer than the 6 columns the
    text gave ids; each device's before and after bars start in the same column."""
    for side in ("base", "head"):
        shutil.copytree(ROOT / "profiles", tmp_path / side / "profiles")
    head = tmp_path / "head" / "profiles" / "vllm-two-nodes.yaml"
    head.write_text(head.read_text().replace("gpu_memory_utilization: 0.88", "gpu_memory_utilization: 0.9"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vramc",
            "diff",
            "--base-dir",
            str(tmp_path / "base"),
            "--head-dir",
            str(tmp_path / "head"),
            "--fail-on",
            "never",
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "VRAMC_NO_CACHE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    bars = [ln for ln in proc.stdout.splitlines() if " GiB  " in ln and "[" in ln]
    assert len(bars) == 8 and any(ln.startswith("  node2:CUDA0 before [") for ln in bars), proc.stdout
    assert {ln.index("[") for ln in bars} == {21}, bars


TOGETHER = textwrap.dedent("""\
    kind: deployments
    name: together
    hardware:
      address: 10.0.0.1
      network: {trusted: true, interface: eth0}
      gpus: [{name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}]
      hosts:
        - {name: node2, address: 10.0.0.2, gpus: [{name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}]}
    deployments:
      - name: a
        model: MODEL
        engine: vllm
        hosts: [node2]
        settings: {pipeline_parallel_size: 2, gpu_memory_utilization: 0.4, max_model_len: 8192, port: 8001@A@}
      - name: b
        model: MODEL
        engine: vllm
        hosts: [node2]
        settings: {pipeline_parallel_size: 2, gpu_memory_utilization: 0.4, max_model_len: 8192, port: 8002@B@}
    """).replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml"))


@pytest.mark.parametrize(
    "a, b, where, words",
    [
        ("", "", [(13, 12), (18, 12)], "each listen on this machine's port 29501"),
        ("", ", master_port: 29501", [(13, 12), (19, 118)], "each listen on this machine's port 29501"),
        (", master_port: 29600", "", [], ""),
        (
            ", distributed_executor_backend: ray",
            ", distributed_executor_backend: ray",
            [(13, 12), (18, 12)],
            "each start a Ray head on this machine's port 6379",
        ),
        (", distributed_executor_backend: ray", "", [], ""),
    ],
)
def test_vllm_deployments_across_machines_that_run_together_need_their_own_head_port(tmp_path, a, b, where, words):
    """Deployments of a `deployments:` file run together; each vLLM one across machines listens on
    this machine for its nodes (mp: --master-port, default 29501; Ray: the head's 6379): VR405."""
    path = tmp_path / "together.yaml"
    path.write_text(TOGETHER.replace("@A@", a).replace("@B@", b))
    found = [d for d in run_check([path]).diagnostics if d.code == "VR405"]
    assert [(d.line, d.column) for d in found] == where, [d.one_line() for d in found]
    assert all(words in d.message and d.message.startswith("a, b ") for d in found)


@pytest.mark.parametrize(
    "value, words",
    [
        ('"40,24,"', "Invalid partition string: 40,24,"),
        ('"0x10,0x10"', "Invalid partition string"),
        ("3232", "len(partitions)=1 does not match pp_size=2."),
        ('"3_2,1"', "sum(partitions)=33 does not match"),  # Python's int() reads 3_2 as 32, as vLLM's does
        ('"3_2,0"', "stage 1 holds no decoder layer"),  # VR370, at the split that empties the stage
        ('"99999999999999999999999,-99999999999999999999967"', "negative"),
    ],
)
def test_a_variants_layer_partition_is_reported_at_the_variant(tmp_path, value, words):
    """VR371 is about VLLM_PP_LAYER_PARTITION's value: it points at the `env:` entry that holds it,
    a variant's where the variant sets it (not at the base's pipeline_parallel_size)."""
    path = tmp_path / "part.yaml"
    path.write_text(
        HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml")).replace(
            "hosts: [node2]\n", ""
        )
        + "settings: {pipeline_parallel_size: 2, max_model_len: 8192}\n"
        + f"variants:\n  ok: {{env: {{VLLM_PP_LAYER_PARTITION: '16,16'}}}}\n  bad: {{env: {{VLLM_PP_LAYER_PARTITION: {value}}}}}\n"
    )
    found = [d for d in run_check([path]).diagnostics if d.code in ("VR370", "VR371")]
    code = "VR370" if "no decoder layer" in words else "VR371"
    assert [(d.code, d.deployment, d.line, d.column) for d in found] == [(code, "hostile@bad", 13, 40)], [
        d.one_line() for d in found
    ]
    assert words in found[0].message


def test_ray_head_unit_runs_the_head_then_vllm_serve_with_its_arguments(tmp_path):
    """The Ray head unit's ExecStart, split as systemd splits it and run by a real sh: `ray start
    --head ...` first, then `vllm serve` exec'd with exactly the arguments of vllm.args; a head that
    fails to start stops the unit before vllm serve."""
    out = FIXTURE / "out" / "qwen-ray"
    argv = execstart_argv((out / "vramc-qwen-ray.service").read_text())
    assert argv[:2] == ["sh", "-c"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ray", "vllm"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / name}.argv\nexit ${{FAIL_{name.upper()}:-0}}\n')
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ray_args = (tmp_path / "ray.argv").read_text().splitlines()
    assert ray_args == ["start", "--head", "--port=6379", "--node-ip-address=10.0.0.1", "--num-gpus=1"]
    assert (tmp_path / "vllm.argv").read_text().splitlines() == ["serve", *args_file_lines(out / "vllm.args")]
    (tmp_path / "vllm.argv").unlink()
    proc = subprocess.run(argv, env={**env, "FAIL_RAY": "1"}, capture_output=True, text=True)
    assert proc.returncode == 1 and not (tmp_path / "vllm.argv").exists()


def test_ray_note_counts_idle_gpus_in_words():
    m = model("mistral-7b-instruct-awq")
    s = schema.Settings(pipeline_parallel_size=2, max_model_len=8192, distributed_executor_backend="ray")
    one = estimate_vllm(m, [gpu(0), gpu(0, "b"), gpu(1, "b")], s, hosts=("b",))
    assert "on the cluster's 3 GPUs (this machine 1, b 2): 1 stays idle" in " ".join(one.notes)
    two = estimate_vllm(m, [gpu(0), gpu(0, "b"), gpu(1, "b"), gpu(2, "b")], s, hosts=("b",))
    assert "on the cluster's 4 GPUs (this machine 1, b 3): 2 stay idle" in " ".join(two.notes)


@pytest.mark.parametrize(
    "interface, gloo, vr419",
    [("eth0", "eth0", False), ("=eth0", "eth0", False), ("eth0,eth1", "eth0,eth1", False), ("^docker,lo", None, True)],
)
def test_gloo_gets_interface_names_it_can_read(tmp_path, monkeypatch, interface, gloo, vr419):
    """network.interface is NCCL_SOCKET_IFNAME's syntax; Gloo (vLLM's CPU group) takes exact names:
    NCCL's `=` is dropped for Gloo, NCCL's `^` exclusion is not written there (VR419 says so)."""
    project = tmp_path / "p"
    (project / "profiles").mkdir(parents=True)
    path = project / "profiles" / "iface.yaml"
    path.write_text(
        HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml")).replace(
            "interface: eth0", f"interface: {json.dumps(interface)}"
        )
        + "settings: {pipeline_parallel_size: 2, max_model_len: 8192}\n"
    )
    found = [d for d in run_check([path]).diagnostics if d.code == "VR419"]
    assert bool(found) == vr419 and all((d.line, d.column) == (4, 39) and "Gloo" in d.message for d in found), [
        d.one_line() for d in found
    ]
    monkeypatch.chdir(project)
    assert build(["profiles/iface.yaml"]) == 0
    for folder in (project / "out" / "hostile", project / "out" / "hostile" / "hosts" / "node2"):
        script = (folder / "launch.sh").read_text()
        unit = (folder / "vramc-hostile.service").read_text()
        assert f'Environment="NCCL_SOCKET_IFNAME={interface}"' in unit
        assert (f'Environment="GLOO_SOCKET_IFNAME={gloo}"' in unit) == (gloo is not None)
        assert ("GLOO_SOCKET_IFNAME" in unit) == (gloo is not None) == ("GLOO_SOCKET_IFNAME" in script)


def test_fit_write_keeps_a_variants_own_single_stage(tmp_path):
    """The base's TP auto across machines writes PP 2 into the base's settings; a variant that fixes
    its TP (and so never had PP chosen) keeps one stage: fit writes its PP 1, and check accepts the
    file (it refused it before: the variant inherited PP 2, 16 workers on 2 x 4 GPUs, VR373)."""
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    path = tmp_path / "profiles" / "vllm-two-nodes.yaml"
    path.write_text(
        path.read_text().replace(
            "  tensor_parallel_size: 2\n  pipeline_parallel_size: 2\n", "  tensor_parallel_size: auto\n"
        )
        + "variants:\n  tp4:\n    settings:\n      tensor_parallel_size: 4\n"
    )
    before = {
        p.dep.label: (p.choice.tensor_parallel_size, p.choice.pipeline_parallel_size) for p in run_check([path]).plans
    }
    assert before == {"vllm-two-nodes": (2, 2), "vllm-two-nodes@tp4": (4, None)}
    proc = subprocess.run(
        [sys.executable, "-m", "vramc", "fit", str(path), "--write"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "VRAMC_NO_CACHE": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = yaml.safe_load(path.read_text())
    assert doc["settings"]["pipeline_parallel_size"] == 2 and doc["variants"]["tp4"]["settings"] == {
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 1,
    }
    result = run_check([path])
    assert [d.code for d in result.diagnostics if d.severity.name == "ERROR"] == []
    after = {p.dep.label: (p.choice.tensor_parallel_size, p.choice.pipeline_parallel_size or 1) for p in result.plans}
    assert after == {"vllm-two-nodes": (2, 2), "vllm-two-nodes@tp4": (4, 1)}


@pytest.mark.parametrize(
    "backend, expect, error", [("ray", (2, 2), None), ("mp", (2, 3), "node3 has 0 GPUs for vLLM's 2 workers per node")]
)
def test_tp_auto_with_a_host_without_gpus(tmp_path, backend, expect, error):
    """A host whose entry gives it no GPU: Ray places no rank there (a stage per node with GPUs);
    mp starts workers on every node, so nothing starts and the advised layout's VR373 names it."""
    path = tmp_path / "nogpu.yaml"
    text = HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml"))
    text = text.replace(
        "  hosts:\n", "  hosts:\n    - {name: node3, address: 10.0.0.3, gpus: [{name: H100, vram: 80GiB}]}\n"
    ).replace("hosts: [node2]", "hosts: [node2, {host: node3, gpus: []}]")
    path.write_text(
        text
        + f"settings: {{tensor_parallel_size: auto, distributed_executor_backend: {backend}, max_model_len: 8192}}\n"
    )
    plan, diags = _plan_of(path)
    assert (plan.choice.tensor_parallel_size, plan.choice.pipeline_parallel_size) == expect
    errors = [d for d in diags if d.severity.name == "ERROR"]
    if error is None:
        assert errors == [] and [d.host for d in plan.estimate.devices] == [None, None, "node2", "node2"]
    else:
        assert [d.code for d in errors] == ["VR373"] and error in errors[0].message


def test_deployments_sharing_a_hosts_gpus_add_up_there(tmp_path):
    """Two deployments of one file on different GPUs here but the same GPUs of node2: their
    gpu_memory_utilization add up on node2's GPUs (1.2 of each), which VR335 now says (it looked at
    this machine's GPUs only, and the second deployment's workers on node2 would fail to start)."""
    text = (
        TOGETHER.replace("@A@", ", master_port: 29600")
        .replace("@B@", "")
        .replace("gpu_memory_utilization: 0.4", "gpu_memory_utilization: 0.6")
        .replace(
            "  gpus: [{name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}]\n",
            "  gpus: [{name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}, {name: H100, vram: 80GiB}]\n",
        )
    )
    text = text.replace(
        "engine: vllm\n    hosts: [node2]\n    settings: {pipeline_parallel_size: 2, gpu_memory_utilization: 0.6, max_model_len: 8192, port: 8002}",
        "engine: vllm\n    hosts: [node2]\n    gpus: [2, 3]\n    settings: {pipeline_parallel_size: 2, gpu_memory_utilization: 0.6, max_model_len: 8192, port: 8002}",
    )
    assert "gpus: [2, 3]" in text
    path = tmp_path / "shared.yaml"
    path.write_text(text)
    found = [d for d in run_check([path]).diagnostics if d.code in ("VR335", "VR336")]
    assert sorted((d.code, d.deployment, d.message.split(":")[0] + ":" + d.message.split(":")[1]) for d in found) == [
        ("VR335", "a", "node2:CUDA0 on node2 (H100)"),
        ("VR335", "b", "node2:CUDA0 on node2 (H100)"),
    ], [d.one_line() for d in found]
    assert "0.6 + 0.6 = 1.20" in found[0].message
    # 0.45 each fits there together
    path.write_text(text.replace("gpu_memory_utilization: 0.6", "gpu_memory_utilization: 0.45"))
    assert [d.code for d in run_check([path]).diagnostics if d.code in ("VR335", "VR336")] == []


def test_tp_across_nodes_hint_is_the_gpus_of_a_node(tmp_path):
    """VR374's advice counts the GPUs a node has, not the workers vLLM now starts there: TP 2 over two
    nodes of two GPUs runs one worker a node, and advising TP 1 would leave a GPU idle on each."""
    path = tmp_path / "tp2.yaml"
    path.write_text(
        HOSTILE.replace("MODEL", str(ROOT / "profiles/models/mistral-7b-instruct-awq.yaml"))
        + "settings: {tensor_parallel_size: 2, max_model_len: 8192}\n"
    )
    (found,) = [d for d in run_check([path]).diagnostics if d.code == "VR374"]
    assert "(tensor_parallel_size 2, 1 worker per node)" in found.message
    assert found.hint.startswith(
        "set tensor_parallel_size to the GPUs per node (2) and pipeline_parallel_size to the number of nodes (2)"
    )
    # following it is what TP auto chooses, and no TP group crosses a machine then
    path.write_text(
        path.read_text().replace("tensor_parallel_size: 2,", "tensor_parallel_size: 2, pipeline_parallel_size: 2,")
    )
    assert [d for d in run_check([path]).diagnostics if d.code == "VR374"] == []
