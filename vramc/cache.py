"""Where vramc keeps what it may throw away: $VRAMC_CACHE (default ~/.cache/vramc) holds the check
cache, the estimate cache and the builds of scripts/build-llama.sh. `VRAMC_NO_CACHE=1` turns the
two caches off. Kept free of heavy imports: a cached `vramc check` reads it first."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("VRAMC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vramc"))


def enabled() -> bool:
    return not os.environ.get("VRAMC_NO_CACHE")


def write_atomic(path: Path, text: str) -> None:
    """Write a cache entry so that a reader never sees half of it; failing only costs speed."""
    from vramc import writer  # the one atomic writer; imported only when an entry is written

    try:
        writer.write_atomic(path, text.encode("utf-8"), durable=False)
    except OSError:
        pass  # a read-only home or a full disk
