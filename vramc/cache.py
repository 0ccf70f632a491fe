"""Where vramc keeps what it may throw away: $VRAMC_CACHE (default ~/.cache/vramc) holds the check
cache, the estimate cache and the builds of scripts/build-llama.sh. `VRAMC_NO_CACHE=1` turns the
two caches off. Kept free of heavy imports: a cached `vramc check` reads it first.

An entry is its JSON text wrapped with the text's sha256, so an entry that was cut short, edited
or overwritten reads as a miss (and is written again), never as a wrong answer or a
crash; readers still check what they decode, since a miss costs only time.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# An entry file is JSON too: {"sha256": "<hex digest of the entry's text>", "entry": <the text>}
_HEAD_START, _HEAD_END = '{"sha256": "', '", "entry": '
_HEAD_LEN = len(_HEAD_START) + 64 + len(_HEAD_END)
MAX_ENTRY = 64 * 1024 * 1024  # no entry comes near; a bigger "entry" is not read at all


def cache_root() -> Path:
    return Path(os.environ.get("VRAMC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vramc"))


def enabled() -> bool:
    return not os.environ.get("VRAMC_NO_CACHE")


def read_entry(path: Path) -> str | None:
    """The text stored by write_entry at `path`, or None: absent, not a regular file (a folder, a
    FIFO, which is never opened for blocking), too big, not ours or not intact."""
    from vramc.writer import read_regular

    raw = read_regular(path, MAX_ENTRY)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    head, body, tail = text[:_HEAD_LEN], text[_HEAD_LEN:-1], text[-1:]
    if not (head.startswith(_HEAD_START) and head.endswith(_HEAD_END) and tail == "}"):
        return None
    if head[len(_HEAD_START) : -len(_HEAD_END)] != hashlib.sha256(body.encode("utf-8")).hexdigest():
        return None
    return body


def write_entry(path: Path, text: str) -> None:
    """Store `text` (JSON) at `path` for read_entry; failing only costs speed."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    _store(path, f"{_HEAD_START}{digest}{_HEAD_END}{text}}}")


def _store(path: Path, text: str) -> None:
    """Write a cache entry with writer.write_atomic (vramc's one atomic writer, without the fsync)
    over whatever vramc did not put there; failing only costs speed."""
    from vramc import writer  # the one atomic writer; imported only when an entry is written

    try:
        # What sits at an entry's path and is no regular file was not put there by vramc: a link
        # is replaced, not written through (it could point anywhere), an empty folder removed.
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            os.unlink(path)
        elif stat.S_ISDIR(st.st_mode):
            os.rmdir(path)
    except (OSError, ValueError):
        pass
    try:
        writer.write_atomic(path, text.encode("utf-8"), durable=False)
    except OSError:
        pass  # a read-only home, a full disk, a folder that is not empty
