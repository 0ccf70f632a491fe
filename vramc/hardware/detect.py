"""Read the machine's NVIDIA GPUs through NVML and write a hardware profile.

NVML (nvidia-ml-py's `pynvml`) is the hardware boundary: `read_gpus` is the only code that talks
to it, so tests on a machine with no GPU put a thin stand-in `pynvml` module first on the path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vramc.units import MiB


class NoDriver(Exception):
    """No NVIDIA driver or no GPU: nothing to detect."""


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    uuid: str
    total_bytes: int
    free_bytes: int
    display: bool


def read_gpus() -> list[GpuReading]:
    try:
        import pynvml
    except ImportError as e:  # pragma: no cover - a core dependency
        raise NoDriver("nvidia-ml-py is not installed") from e
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise NoDriver(f"no NVIDIA driver found ({e})") from None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            try:
                display = bool(pynvml.nvmlDeviceGetDisplayActive(h))
            except pynvml.NVMLError:
                display = False
            out.append(
                GpuReading(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else name,
                    uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                    total_bytes=int(mem.total),
                    free_bytes=int(mem.free),
                    display=display,
                )
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def short_name(name: str) -> str:
    """'NVIDIA GeForce RTX 3090 Ti' -> 'RTX 3090 Ti', as llama.cpp's memory breakdown prints it."""
    for prefix in ("NVIDIA ", "GeForce "):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


ORDERS = ("index", "free_desc", "total_desc")


def order_gpus(gpus: list[GpuReading], order: str) -> list[GpuReading]:
    if order == "free_desc":
        return sorted(gpus, key=lambda g: (-g.free_bytes, g.index))
    if order == "total_desc":
        return sorted(gpus, key=lambda g: (-g.total_bytes, g.index))
    return sorted(gpus, key=lambda g: g.index)


def hardware_yaml(gpus: list[GpuReading], name: str, order: str, host_ram: int | None) -> str:
    """A hardware profile in MiB as nvidia-smi prints them; `free` is kept for free_desc ordering."""
    lines = [
        "# Written by `vramc detect`; edit reserves and tenants by hand, re-run to refresh.",
        "kind: hardware",
        f"name: {name}",
        f"device_order: {order}",
    ]
    if host_ram:
        lines.append(f"host_ram: {host_ram // MiB}MiB")
    lines.append("gpus:")
    for g in order_gpus(gpus, order):
        used_by_others = g.total_bytes - g.free_bytes
        lines.append(f"  - name: {json.dumps(short_name(g.name))}")
        lines.append(f"    vram: {g.total_bytes // MiB}MiB")
        lines.append(f"    free: {g.free_bytes // MiB}MiB")
        lines.append(f"    index: {g.index}")
        lines.append(f"    uuid: {json.dumps(g.uuid)}")
        if g.display:
            lines.append("    display: true")
        if used_by_others >= 64 * MiB:
            lines.append("    tenants:")
            lines.append(f"      - {{name: in use at detection, vram: {used_by_others // MiB}MiB}}")
    return "\n".join(lines) + "\n"


def host_ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
