"""The output folder of `vramc build`, read and written without ever following a link below it.

The output root itself may be a symbolic link (the user named it); below it, every folder is
opened relative to its parent's file descriptor with O_NOFOLLOW, files are read with O_NOFOLLOW
(and O_NONBLOCK, so that a FIFO cannot hang a build), written as a temporary file in that folder
renamed over the name (a link at the name is replaced, never followed) and removed with unlinkat.
So a link planted anywhere below the root (`out/NAME -> ../../elsewhere`, or a link swapped in
while vramc runs) can make an operation fail, never reach outside. `problem()` finds such links
before anything is written, so that a build refuses as a whole instead of stopping half way.

Paths below the root are tuples of names (`("NAME", "@stable", "ollama.env")`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutTree:
    def __init__(self, root: Path):
        self.root = Path(root)

    def show(self, parts: tuple[str, ...]) -> Path:
        return self.root.joinpath(*parts)

    # --- looking, before anything is written ---------------------------------------------------

    def root_problem(self, writing: bool) -> str | None:
        """Why the root cannot hold the output: it, or a folder above it, is not a folder; or
        (when `writing`) the nearest existing folder is not writable."""
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            st = None
        except NotADirectoryError:
            return f"{self.root}: {self._file_above(self.root)} is a file, not a folder"
        except OSError as e:
            return f"{self.root}: {e.strerror}"
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return f"{self.root} is a file, not a folder"
        if st is None:
            above = self._file_above(self.root)
            if above is not None:
                return f"{self.root}: {above} is a file, not a folder"
        if writing:
            folder = self._existing(self.root)
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{self.root}: cannot write in {folder} ({os.strerror(errno.EACCES)})"
        return None

    @staticmethod
    def _file_above(path: Path) -> Path | None:
        for parent in reversed(Path(os.path.abspath(path)).parents):
            if parent.exists() and not parent.is_dir():
                return parent
        return None

    @staticmethod
    def _existing(path: Path) -> Path:
        path = Path(os.path.abspath(path))
        while not path.exists():
            path = path.parent
        return path

    def kind(self, parts: tuple[str, ...]) -> str | None:
        """'dir', 'file', 'link' or 'other' for the entry itself (lstat), None if missing."""
        try:
            mode = os.lstat(self.show(parts)).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(mode):
            return "link"
        return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"

    def problem(self, parts: tuple[str, ...], writing: bool) -> str | None:
        """Why the file at `parts` cannot be written (or read as vramc's): a link or a non-folder
        on the way to it, or something that is not a regular file at its place; and, when
        `writing`, a folder that exists but cannot be written to."""
        for i in range(1, len(parts) + 1):
            here = parts[:i]
            kind = self.kind(here)
            if kind is None:
                break
            if kind == "link":
                target = os.readlink(self.show(here))
                return (
                    f"{self.show(here)} is a symbolic link (to {target}): vramc writes nothing "
                    f"through a link below {self.root}; remove the link"
                )
            if i < len(parts) and kind != "dir":
                return f"{self.show(here)} is not a folder; remove it"
            if i == len(parts) and kind != "file":
                what = "a folder" if kind == "dir" else "not a regular file"
                return f"{self.show(here)} is {what}, where vramc writes a file; remove it"
        if writing:
            folder = self._existing(self.show(parts[:-1]))
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"cannot write in {folder} ({os.strerror(errno.EACCES)})"
        return None

    def walk(self, parts: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
        """Every entry below the folder `parts` as (parts, kind), sorted; links and other
        non-folders are listed, never entered."""
        found: list[tuple[tuple[str, ...], str]] = []
        try:
            entries = sorted(os.scandir(self.show(parts)), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return found
        for entry in entries:
            here = parts + (entry.name,)
            kind = self.kind(here)
            if kind is None:
                continue
            found.append((here, kind))
            if kind == "dir":
                found += self.walk(here)
        return found

    # --- reading and writing through file descriptors -------------------------------------------

    def _open_dir(self, parts: tuple[str, ...], create: bool) -> int:
        if create:
            os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in parts:
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read(self, parts: tuple[str, ...]) -> tuple[bytes, bool] | None:
        """(content, executable) of the regular file at `parts`, None if there is none. A link or
        anything but a regular file on the way raises OSError (ELOOP, ENOTDIR, EISDIR, ...)."""
        try:
            folder = self._open_dir(parts[:-1], create=False)
        except FileNotFoundError:
            return None
        try:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
            except FileNotFoundError:
                return None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", str(self.show(parts)))
                return f.read(), bool(st.st_mode & 0o111)
        finally:
            os.close(folder)

    def write(self, parts: tuple[str, ...], data: bytes, mode: int) -> None:
        """Atomically: a temporary file in the same folder, fsynced, renamed over the name."""
        folder = self._open_dir(parts[:-1], create=True)
        try:
            while True:
                tmp = f".{parts[-1]}.{os.urandom(4).hex()}.tmp"
                try:
                    fd = os.open(
                        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder
                    )
                    break
                except FileExistsError:
                    continue
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                    os.fchmod(f.fileno(), mode)
                os.replace(tmp, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=folder)
                except FileNotFoundError:
                    pass
                raise
        finally:
            os.close(folder)

    def remove(self, parts: tuple[str, ...]) -> None:
        """Unlink the file (a link itself, never what it points to)."""
        folder = self._open_dir(parts[:-1], create=False)
        try:
            os.unlink(parts[-1], dir_fd=folder)
        finally:
            os.close(folder)

    def remove_empty(self, parts: tuple[str, ...], stop: int) -> None:
        """Remove the folder `parts` and its parents down to `stop` names while they are empty."""
        while len(parts) > stop:
            try:
                folder = self._open_dir(parts[:-1], create=False)
            except OSError:
                return
            try:
                os.rmdir(parts[-1], dir_fd=folder)
            except OSError:
                return  # not empty (or not ours to judge): stop here
            finally:
                os.close(folder)
            parts = parts[:-1]
