"""Planned against actual, without an engine: llama.cpp log lines -> per-device figures -> table."""

from __future__ import annotations

import ctypes
import threading
import types

import pytest

from vramc.memory.usage import DeviceUse, HostUse, MemoryEstimate
from vramc.run.measured import (
    HOST,
    LogCapture,
    Row,
    actual_use,
    compare,
    format_table,
    parse_buffers,
    parse_threshold,
    place_of,
    warnings,
)
from vramc.units import MiB

# As the pinned llama.cpp prints them for two CUDA devices with an SWA model (two KV caches per
# device) and a context that reserved its compute buffers twice.
TWO_GPU_LOG = """\
load_tensors: offloaded 33/33 layers to GPU
load_tensors:   CPU_Mapped model buffer size =   532.31 MiB
load_tensors:        CUDA0 model buffer size =  2873.00 MiB
load_tensors:        CUDA1 model buffer size =  4731.50 MiB
llama_context:  CUDA_Host  output buffer size =     0.49 MiB
llama_kv_cache:      CUDA0 KV buffer size =   400.00 MiB
llama_kv_cache:      CUDA1 KV buffer size =   600.00 MiB
llama_kv_cache:      CUDA0 KV buffer size =    16.00 MiB
llama_kv_cache:      CUDA1 KV buffer size =    24.00 MiB
sched_reserve:      CUDA0 compute buffer size =   999.00 MiB
sched_reserve:      CUDA0 compute buffer size =   172.00 MiB
sched_reserve:      CUDA1 compute buffer size =   354.00 MiB
sched_reserve:  CUDA_Host compute buffer size =    72.01 MiB
sched_reserve: graph: nodes = 1030, splits = 3
"""


def estimate() -> MemoryEstimate:
    devs = [
        DeviceUse(
            "CUDA0",
            "RTX 4090",
            0,
            24 * 1024 * MiB,
            weights_bytes=2873 * MiB,
            kv_bytes=416 * MiB,
            compute_bytes=172 * MiB,
            overhead_bytes=512 * MiB,
        ),
        DeviceUse(
            "CUDA1",
            "RTX 3090",
            1,
            24 * 1024 * MiB,
            weights_bytes=4731 * MiB,
            kv_bytes=640 * MiB,
            compute_bytes=300 * MiB,
            overhead_bytes=512 * MiB,
        ),
    ]
    host = HostUse(weights_bytes=532 * MiB, compute_bytes=72 * MiB, other_bytes=int(0.5 * MiB))
    return MemoryEstimate(devices=devs, host=host)


def test_parse_buffers_reads_every_buffer_line():
    bufs = parse_buffers(TWO_GPU_LOG.splitlines())
    assert [(b.name, b.kind) for b in bufs][:4] == [
        ("CPU_Mapped", "model"),
        ("CUDA0", "model"),
        ("CUDA1", "model"),
        ("CUDA_Host", "output"),
    ]
    assert len(bufs) == 12
    assert bufs[0].mib == 532.31


@pytest.mark.parametrize(
    "name, place",
    [
        ("CPU", HOST),
        ("CPU_Mapped", HOST),
        ("CPU_REPACK", HOST),
        ("CUDA_Host", HOST),
        ("CUDA0", 0),
        ("CUDA1", 1),
        ("ROCm2", 2),
        ("Vulkan0", 0),
        ("RPC1[127.0.0.1:50053]", 1),
    ],
)
def test_place_of(name, place):
    assert place_of(name) == place


def test_actual_use_sums_model_and_kv_and_takes_the_last_compute():
    got = actual_use(parse_buffers(TWO_GPU_LOG.splitlines()))
    assert got[0] == {"weights": 2873.0, "kv": 416.0, "compute": 172.0}
    assert got[1] == {"weights": 4731.5, "kv": 624.0, "compute": 354.0}
    assert got[HOST] == {"weights": 532.31, "output": 0.49, "compute": 72.01}


def test_compare_lines_up_plan_and_log():
    rows = compare(estimate(), parse_buffers(TWO_GPU_LOG.splitlines()))
    table = {(r.place, r.component): (round(r.planned_mib, 2), r.actual_mib) for r in rows}
    assert table[("CUDA0", "kv")] == (416.0, 416.0)
    assert table[("CUDA1", "kv")] == (640.0, 624.0)
    assert table[("host", "compute")] == (72.0, 72.01)
    assert table[("host", "output")] == (0.5, 0.49)
    assert ("host", "kv") not in table  # neither planned nor allocated


def test_threshold_warnings_name_the_numbers():
    rows = compare(estimate(), parse_buffers(TWO_GPU_LOG.splitlines()))
    warned = warnings(rows, 0.05)
    assert len(warned) == 1  # CUDA1 compute 300 -> 354 (+18%); KV -2.5% and the rest are within 5%
    assert warned[0].startswith("CUDA1 compute: llama.cpp allocated 354.00 MiB, the plan said 300.00 MiB")
    assert "(+54.00 MiB, +18.0%; the threshold is 5%)" in warned[0]
    assert len(warnings(rows, 0.02)) == 2  # the KV difference passes 2%
    assert warnings(rows, 0.5) == []


def test_small_or_unchecked_differences_do_not_warn():
    assert not Row("host", "weights", 0, 0.41).exceeds(0.05)  # under 1 MiB
    assert not Row("host", "kv", int(0.125 * MiB), 0.12).exceeds(0.0)  # llama.cpp's rounding
    assert Row("host", "compute", 0, 5.76).exceeds(0.05)  # a planned 0 that is not
    assert not Row("host", "output", 300 * MiB, 0.5, checked=False).exceeds(0.05)


def test_format_table():
    est = estimate()
    text = format_table(compare(est, parse_buffers(TWO_GPU_LOG.splitlines())), est, 0.05)
    lines = text.splitlines()
    assert lines[0].startswith("planned against actual (MiB")
    assert lines[1].split() == ["device", "memory", "planned", "actual", "diff"]
    assert lines[2].split() == ["CUDA0", "weights", "2,873.00", "2,873.00", "+0.00", "(+0.0%)"]
    assert lines[3].split()[0] == "KV"  # the device is named once
    assert any(line.split()[:2] == ["compute", "300.00"] and "over 5%" in line for line in lines)
    assert "grows on demand" in text
    assert "not measured: planned overhead CUDA0 512, CUDA1 512 MiB" in text


def test_an_unplanned_device_gets_its_own_rows():
    bufs = parse_buffers(["load_tensors:        CUDA2 model buffer size =  10.00 MiB"])
    rows = compare(estimate(), bufs)
    assert [(r.place, r.component, r.planned_bytes, r.actual_mib) for r in rows if r.place == "device2"] == [
        ("device2", "weights", 0, 10.0)
    ]


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.05", 0.05), ("12.5%", 0.125), ("0", 0.0)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["five", "150%", "-1%"])
def test_parse_threshold_rejects(text):
    with pytest.raises(ValueError):
        parse_threshold(text)


def fake_llama_cpp():
    ll = types.SimpleNamespace(
        llama_log_callback=ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p),
        llama_log_set=lambda cb, ud: None,
    )
    return types.SimpleNamespace(llama_cpp=ll)


class Sink:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_log_capture_assembles_lines_and_echoes_problems():
    console = Sink()
    cap = LogCapture(fake_llama_cpp(), console)
    cap._on_log(2, b"load_tensors:   CPU_Mapped model buffer size =     0.41 MiB\n", None)
    cap._on_log(2, b"loading", None)
    cap._on_log(5, b"...", None)  # GGML_LOG_LEVEL_CONT continues the line and its level
    cap._on_log(5, b"\n", None)
    cap._on_log(4, b"ggml_aligned_malloc: insufficient memory\n", None)
    assert cap.lines == [
        "load_tensors:   CPU_Mapped model buffer size =     0.41 MiB",
        "loading...",
        "ggml_aligned_malloc: insufficient memory",
    ]
    assert console.text == "llama.cpp: ggml_aligned_malloc: insufficient memory\n"
    assert cap.problems() == ["ggml_aligned_malloc: insufficient memory"]
    cap.stop_recording()
    cap._on_log(2, b"later\n", None)
    assert len(cap.lines) == 3


def test_progress_cancels_the_load():
    from vramc.run.load import Progress

    cancel = threading.Event()
    p = Progress(Sink(), cancel)
    assert p(0.5, None) is True
    cancel.set()
    assert p(0.6, None) is False  # llama.cpp aborts the load when the callback returns false


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("myhost", False),
    ],
)
def test_is_loopback(host, loopback):
    from vramc.run.serve import is_loopback

    assert is_loopback(host) is loopback
