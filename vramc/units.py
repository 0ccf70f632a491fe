"""Byte sizes as people write them in profiles, and as vramc prints them.

Internally every size is an int of bytes. A bare number in a profile is MiB, because that is the
unit nvidia-smi, llama.cpp and the seeds' orchestrator all print.

The units (case-insensitive, a space before the unit optional): B; K, KiB; M, MiB; G, GiB; T, TiB
are binary (powers of 1024: `24G` = `24GiB`, as llama.cpp, Ollama and nvidia-smi mean "G"); KB,
MB, GB, TB are decimal (powers of 1000, as disks are sold). Sizes are finite, not negative, and at
most 1 PiB: anything larger is a typo, not a machine.
"""

from __future__ import annotations

import math
import re

# stdlib only, as this module is: values in messages are shown as YAML writes them
from vramc.diagnostics import show_value

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
MAX_SIZE = 1024 * TiB  # 1 PiB: no GPU or host comes near it; larger values are typos

_UNITS = {
    "": MiB,  # bare numbers are MiB
    "b": 1,
    "kib": KiB,
    "k": KiB,
    "kb": 1000,
    "mib": MiB,
    "m": MiB,
    "mb": 1000**2,
    "gib": GiB,
    "g": GiB,
    "gb": 1000**3,
    "tib": 1024 * GiB,
    "t": 1024 * GiB,
    "tb": 1000**4,
}
DECIMAL_UNITS = {"kb", "mb", "gb", "tb"}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")  # fullmatch: no "24GiB\n"
UNIT_NAMES = {
    "": "MiB",
    "b": "B",
    "k": "KiB",
    "kib": "KiB",
    "m": "MiB",
    "mib": "MiB",
    "g": "GiB",
    "gib": "GiB",
    "t": "TiB",
    "tib": "TiB",
    "kb": "KB",
    "mb": "MB",
    "gb": "GB",
    "tb": "TB",
}


class SizeError(ValueError):
    pass


def parse_size(value: object) -> int:
    """Parse `24GiB`, `24 GB`, `1024MiB`, `512M` or a bare number of MiB into bytes."""
    if isinstance(value, bool):
        raise SizeError("expected a size such as 24GiB, 1024MiB or 24576 (MiB), not a boolean")
    if isinstance(value, (int, float)):
        return _bytes(value, MiB, f"{show_value(value)} (MiB)")
    if not isinstance(value, str):
        raise SizeError("expected a size such as 24GiB, 1024MiB or 24576 (MiB)")
    m = _SIZE_RE.fullmatch(value)
    if not m:
        raise SizeError(f"cannot read {show_value(value)} as a size; write e.g. 24GiB, 1024MiB or 24576 (MiB)")
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _UNITS:
        raise SizeError(
            f"unknown unit {show_value(m.group(2))} in {show_value(value)}; use B, KiB, MiB, GiB or TiB "
            "(or K, M, G, T, which are the same; KB, MB, GB, TB are powers of 1000)"
        )
    return _bytes(float(number), _UNITS[unit], show_value(value))


def _bytes(number: float, unit: int, shown: str) -> int:
    # float('inf') * MiB cannot become an int (OverflowError) and NaN cannot either (ValueError):
    # both, and sizes no machine has, are refused here with words a person can act on
    if not math.isfinite(number):
        raise SizeError(f"a size must be a finite number, not {shown}")
    if number < 0:
        raise SizeError("a size cannot be negative")
    if number * unit > MAX_SIZE:
        hint = "write the size with its unit, e.g. 24GiB"
        if unit == MiB and number <= MAX_SIZE:  # a bare number: bytes, as NVML and `free -b` print?
            hint = f"a bare number is MiB; if it is bytes ({fmt_size(number)}), write {_number_text(number)}B"
        raise SizeError(f"{shown} is more than 1 PiB; {hint}")
    return int(round(number * unit))


def size_unit(value: object) -> str:
    """The unit suffix a size was written with, lower-cased ('' for a bare number)."""
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m:
            return m.group(2).lower()
    return ""


def implausible(value: object, low: int, high: int) -> tuple[str, str | None] | None:
    """How a size outside [low, high] was read, and the spelling that was probably meant.

    None when the size is plausible (or unreadable: that is another error). The suggestion is the
    same number in the nearest unit that lands inside the range ("24" -> "24GiB")."""
    try:
        n_bytes = parse_size(value)
    except SizeError:
        return None
    if low <= n_bytes <= high:
        return None
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        assert m is not None  # parse_size read it
        number, unit = m.group(1), m.group(2).lower()
    else:
        assert isinstance(value, (int, float))  # parse_size read it
        number, unit = _number_text(value), ""
    name = UNIT_NAMES[unit]
    read = f"{number} {name}" + (f" ({fmt_size(n_bytes)})" if name not in ("MiB", "GiB", "TiB") else "")
    ladder = ["B", "KiB", "MiB", "GiB", "TiB"]  # memory is sold in binary units (VR103)
    here = ladder.index(name[0] + "iB" if name != "B" else name)
    # the next unit up for a size too small, down for one too large: one slip of the unit
    guess = (
        ladder[here + 1]
        if n_bytes < low and here + 1 < len(ladder)
        else (ladder[here - 1] if n_bytes > high and here > 0 else None)
    )
    if guess is None or float(number) < 1 or not low <= float(number) * _UNITS[guess.lower()] <= high:
        return read, None
    return read, f"{number}{guess}"


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


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
            raise SizeError(f"cannot read {show_value(value)} as a percentage") from e
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
