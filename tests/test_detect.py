"""`vramc detect` end to end through a thin pynvml stand-in (tests/fake_nvml), in a subprocess so
the stand-in shadows the real nvidia-ml-py exactly as the real one would be imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

from vramc.lint.check import run_check

FAKE = Path(__file__).parent / "fake_nvml"
MiB = 1024 * 1024
GPUS = [  # the orchestrator seed's machine, as nvidia-smi reported it
    {
        "name": "NVIDIA GeForce RTX 4080 Laptop GPU",
        "uuid": "GPU-aaaa",
        "total": 12281 * MiB,
        "free": 11047 * MiB,
        "display": True,
    },
    {"name": "NVIDIA GeForce RTX 3090 Ti", "uuid": "GPU-bbbb", "total": 24563 * MiB, "free": 23287 * MiB},
    {"name": "NVIDIA GeForce RTX 3090 Ti", "uuid": "GPU-cccc", "total": 24563 * MiB, "free": 23290 * MiB},
]


def detect(tmp_path, *args, gpus=GPUS):
    env = dict(os.environ, PYTHONPATH=f"{FAKE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    if gpus is not None:
        spec = tmp_path / "nvml.json"
        spec.write_text(json.dumps(gpus))
        env["VRAMC_TEST_NVML"] = str(spec)
    return subprocess.run(
        [sys.executable, "-m", "vramc", "detect", *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )


def test_detect_writes_a_valid_hardware_profile_in_free_desc_order(tmp_path):
    out = tmp_path / "profiles" / "hardware" / "rig.yaml"
    proc = detect(tmp_path, "--order", "free_desc", "--name", "rig", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    # largest free first: 3090 Ti #2 (23290), 3090 Ti #1 (23287), then the display GPU
    assert [line.split(": ")[1] for line in text.splitlines() if line.startswith("    index:")] == ["2", "1", "0"]
    assert 'name: "RTX 3090 Ti"' in text and "vram: 24563MiB" in text and "display: true" in text
    assert "in use at detection, vram: 1234MiB" in text  # 12281 - 11047 held by the desktop
    # the profile is usable as it stands
    dep = tmp_path / "profiles" / "d.yaml"
    dep.write_text("name: d\nhardware: rig\nmodel: {gguf: none.gguf}\nengine: vllm\n")
    result = run_check([out])
    assert result.diagnostics == []


def test_detect_order_index_to_stdout(tmp_path):
    proc = detect(tmp_path)
    assert proc.returncode == 0
    assert [line.split(": ")[1] for line in proc.stdout.splitlines() if line.startswith("    index:")] == [
        "0",
        "1",
        "2",
    ]
    assert "device_order: index" in proc.stdout


def test_no_driver_says_so_and_exits_2(tmp_path):
    proc = detect(tmp_path, gpus=None)
    assert proc.returncode == 2
    assert "no NVIDIA driver found" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_order_is_a_usage_error(tmp_path):
    proc = detect(tmp_path, "--order", "fastest")
    assert proc.returncode == 2 and "--order must be one of" in proc.stderr
