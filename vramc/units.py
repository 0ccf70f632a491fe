"""Byte sizes as people write them in profiles, and as vramc prints them.

Internally every size is an int of bytes. A bare number in a profile is MiB, because that is the
unit nvidia-smi, llama.cpp and the seeds' orchestrator all print.
"""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_UNITS = {
    "": MiB,  # bare numbers are MiB
    "b": 1,
    "kib": KiB, "k": KiB, "kb": 1000,
    "mib": MiB, "m": MiB, "mb": 1000**2,
    "gib": GiB, "g": GiB, "gb": 1000**3,
    "tib": 1024 * GiB, "t": 1024 * GiB, "tb": 1000**4,
}
DECIMAL_UNITS = {"kb", "mb", "gb", "tb"}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


class SizeError(ValueError):
    pass


def parse_size(value: object) -> int:
    """Parse `24GiB`, `24 GB`, `1024MiB`, `512M` or a bare number of MiB into bytes."""
    if isinstance(value, bool):
        raise SizeError("expected a size such as 24GiB, 1024MiB or 24576 (MiB), not a boolean")
    if isinstance(value, (int, float)):
        if value < 0:
            raise SizeError("a size cannot be negative")
        return int(round(value * MiB))
    if not isinstance(value, str):
        raise SizeError("expected a size such as 24GiB, 1024MiB or 24576 (MiB)")
    m = _SIZE_RE.match(value)
    if not m:
        raise SizeError(f"cannot read {value!r} as a size; write e.g. 24GiB, 1024MiB or 24576 (MiB)")
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _UNITS:
        raise SizeError(f"unknown unit {m.group(2)!r} in {value!r}; use B, KiB, MiB, GiB or TiB")
    return int(round(float(number) * _UNITS[unit]))


def size_unit(value: object) -> str:
    """The unit suffix a size was written with, lower-cased ('' for a bare number)."""
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return m.group(2).lower()
    return ""


def parse_fraction(value: object) -> float:
    """Parse `25%` or `0.25` into 0.25."""
    if isinstance(value, bool):
        raise SizeError("expected a fraction such as 0.25 or 25%")
    if isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            f = float(value.strip()[:-1]) / 100
        except ValueError as e:
            raise SizeError(f"cannot read {value!r} as a percentage") from e
    else:
        raise SizeError("expected a fraction such as 0.25 or 25%")
    if not 0 <= f <= 1:
        raise SizeError("a fraction must lie between 0 and 1 (0% and 100%)")
    return f


def fmt_size(n_bytes: int | float) -> str:
    """Human size: GiB above 10 GiB with two decimals, MiB otherwise."""
    if abs(n_bytes) >= GiB:
        return f"{n_bytes / GiB:.2f} GiB"
    return f"{n_bytes / MiB:.0f} MiB"
