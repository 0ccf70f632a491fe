"""A thin stand-in for nvidia-ml-py's pynvml at the hardware boundary, for machines without an
NVIDIA GPU. It serves the GPUs described in the JSON file named by VRAMC_TEST_NVML (absent: no
driver, as nvmlInit raises on a machine without one). Only the calls vramc.hardware.detect makes exist."""

import json
import os
from types import SimpleNamespace


class NVMLError(Exception):
    pass


_gpus: list[dict] = []


def nvmlInit():
    path = os.environ.get("VRAMC_TEST_NVML")
    if not path:
        raise NVMLError("Driver Not Loaded")
    _gpus[:] = json.load(open(path))


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return len(_gpus)


def nvmlDeviceGetHandleByIndex(i):
    return _gpus[i]


def nvmlDeviceGetMemoryInfo(h):
    return SimpleNamespace(total=h["total"], free=h["free"], used=h["total"] - h["free"])


def nvmlDeviceGetName(h):
    return h["name"].encode()  # older nvidia-ml-py returns bytes


def nvmlDeviceGetUUID(h):
    return h["uuid"]


def nvmlDeviceGetDisplayActive(h):
    return 1 if h.get("display") else 0
