"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os
from importlib.metadata import version


def package_version(package: str) -> str:
    return version(package)


def cpus() -> int:
    """CPUs this process may use (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
