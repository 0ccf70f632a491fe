"""Atomic file writes: a killed vramc never leaves a half-written file behind.

The one writer for everything vramc puts on disk (profiles, locks, build artifacts, reports and,
without the fsync, cache entries). What it keeps of the file it replaces:
- its mode and, where the process may set it, its owner and group;
- a symlink: the link stays and the file it points to is replaced (a profile kept in a dotfiles
  repository and linked into place stays linked);
- the old content, whole, whenever anything fails: the new bytes go to a temporary file in the
  same directory, are fsynced, and only then renamed over the old file with os.replace.
Failures (a read-only directory, a read-only file system, a directory at the path, a full disk)
raise OSError with errno and filename set; callers turn that into a message and an exit code.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes, or None: absent, unreadable, not a
    regular file (a FIFO is opened non-blocking and never read, a device such as /dev/zero never
    read whole), or larger than `limit`. Through a symlink, as open() goes."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def resolve_target(path: Path) -> Path:
    """The file a write to `path` replaces: `path` itself, or what it links to."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_atomic(path: Path, data: bytes, mode: int | None = None, *, durable: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`.

    `mode` sets the file's mode; without it an existing file keeps its own and a new one gets 0644.
    `durable=False` skips the fsyncs, for caches, where losing the write only costs time.
    An OSError names `path` (not the temporary file, which the user never asked for).
    """
    try:
        _write(Path(path), data, mode, durable)
    except OSError as e:
        if e.errno is None or e.filename == str(path):
            raise
        raise type(e)(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


def _write(path: Path, data: bytes, mode: int | None, durable: bool) -> None:
    target = resolve_target(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if mode is None:
            mode = old.st_mode & 0o7777 if old is not None else 0o644
        if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, old.st_uid, old.st_gid)
            except OSError:
                pass  # only root may give a file away; the content still lands
        os.chmod(tmp, mode)  # after chown, which clears set-id bits
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some file systems cannot open a directory, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
