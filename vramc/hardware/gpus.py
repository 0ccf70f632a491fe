"""What vramc knows about GPU models by name: streaming multiprocessor (SM) counts.

The CUDA context that every engine process creates on every visible GPU grows with the SM count;
docs/cuda-overhead.md fits llama.cpp's measured "unaccounted" memory as about 250 MiB + 2.4 MiB
per SM. SM counts are from NVIDIA's published specifications.
"""

from __future__ import annotations

import re

from vramc.units import MiB

# Longest names first where one contains another ("rtx 4080 laptop" before "rtx 4080").
SM_COUNT = {
    "rtx pro 6000 blackwell": 188,
    "rtx 6000 ada": 142,
    "rtx a6000": 84,
    "h200": 132,
    "h100 pcie": 114,
    "h100": 132,
    "a100": 108,
    "l40s": 142,
    "l40": 142,
    "l4": 58,
    "a10": 72,
    "v100": 80,
    "t4": 40,
    "rtx 5090": 170,
    "rtx 5080": 84,
    "rtx 5070 ti": 70,
    "rtx 5070": 48,
    "rtx 5060 ti": 36,
    "rtx 4090 laptop": 76,
    "rtx 4090": 128,
    "rtx 4080 laptop": 58,
    "rtx 4080 super": 80,
    "rtx 4080": 76,
    "rtx 4070 ti super": 66,
    "rtx 4070 ti": 60,
    "rtx 4070 super": 56,
    "rtx 4070": 46,
    "rtx 4060 ti": 34,
    "rtx 4060": 24,
    "rtx 3090 ti": 84,
    "rtx 3090": 82,
    "rtx 3080 ti": 80,
    "rtx 3080": 68,
    "rtx 3070 ti": 48,
    "rtx 3070": 46,
    "rtx 3060 ti": 38,
    "rtx 3060": 28,
    "rtx 2080 ti": 68,
    "rtx 2080": 46,
    "rtx 2070": 36,
    "rtx 2060": 30,
    "gtx 1080 ti": 28,
    "gtx 1080": 20,
    "gtx 1070": 15,
    "gtx 1060 3gb": 9,
    "gtx 1060": 10,
    "gtx 980": 16,
}
# one alternation, longest names first, so "rtx 4080 laptop" wins over "rtx 4080"
_NAME_RE = re.compile(
    r"(?:^|\b)(" + "|".join(re.escape(k) for k in sorted(SM_COUNT, key=len, reverse=True)) + r")(?:\b|$)"
)

CONTEXT_BASE = 250 * MiB
CONTEXT_PER_SM = int(2.4 * MiB)
UNKNOWN_GPU_OVERHEAD = 768 * MiB  # covers every measurement in docs/cuda-overhead.md


def sm_count(name: str) -> int | None:
    key = " ".join(name.lower().replace("nvidia", "").replace("geforce", "").split())
    m = _NAME_RE.search(key)
    return SM_COUNT[m.group(1)] if m else None


def default_overhead(name: str) -> int:
    """Per-process overhead of a llama.cpp-family engine on this GPU (context, cuBLAS, pool)."""
    sms = sm_count(name)
    if sms is None:
        return UNKNOWN_GPU_OVERHEAD
    return CONTEXT_BASE + sms * CONTEXT_PER_SM
