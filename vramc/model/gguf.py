"""Read the header of a GGUF file (metadata and tensor table), never its tensor data.

Standard library only: the `gguf` package imports numpy (~100 ms) and its reader materialises every
array, which takes seconds on a 128k-token vocabulary. Here the file is memory-mapped, large arrays
are stepped over, and every length is checked against the bytes left before anything is read, so a
hostile or truncated file fails fast, in bounded memory, with a GGUFError naming the byte offset.
The checks are those of the pinned llama.cpp (ggml/src/gguf.cpp, src/llama-model-loader.cpp), so a
header refused here would be refused at launch too.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from vramc.diagnostics import show_bytes, show_value
from vramc.model.ggml import GGML_TYPES
from vramc.model.modelmeta import ModelMeta, Tensor, make_tensor

GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32
ARRAY_LIMIT = 1024  # arrays longer than this are stepped over (vocabularies), not read
MAX_NAME = 64  # GGML_MAX_NAME: a tensor name must be shorter
MAX_DIMS = 4
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS: per-layer hyper-parameters are arrays of this size
# Bounds on what a hostile length makes the reader copy or hash; real files are far below them
# (the longest strings are chat templates of some KiB, the biggest headers vocabularies of MBs).
STRING_LIMIT = 1 << 24  # longer string values are stepped over, not copied
MAX_KEY = 1 << 16  # a longer key is refused
MAX_HEADER = 1 << 28  # a longer header (metadata and tensor table) is refused, not read
_MAX_NESTING = 8  # llama.cpp refuses nested arrays; gguf-py writes them, so read a few levels
_INT64_MAX = 2**63 - 1

# llama_ftype (include/llama.h) by value, named as in quantized file names.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
    41: "Q2_0",
}

# GGUF value types: id -> (name, struct format or None, smallest encoded size).
_F32, _STRING, _ARRAY = 6, 8, 9
_VALUE_TYPES: dict[int, tuple[str, str | None, int]] = {
    0: ("u8", "B", 1),
    1: ("i8", "b", 1),
    2: ("u16", "H", 2),
    3: ("i16", "h", 2),
    4: ("u32", "I", 4),
    5: ("i32", "i", 4),
    6: ("f32", "f", 4),
    7: ("bool", "?", 1),
    8: ("str", None, 8),
    9: ("arr", None, 12),
    10: ("u64", "Q", 8),
    11: ("i64", "q", 8),
    12: ("f64", "d", 8),
}
_STRUCTS = {t: struct.Struct("<" + fmt) for t, (_, fmt, _) in _VALUE_TYPES.items() if fmt}
_U32, _U64, _F32_STRUCT = _STRUCTS[4], _STRUCTS[10], _STRUCTS[_F32]
_CHUNK = 1024  # strings walked per regular-expression match (see _short_strings)
# Smallest possible key-value pair (non-empty key, one-byte value) and tensor info (no dims, no
# name): bounds on what a count in the file header can honestly claim.
_MIN_KV, _MIN_TENSOR_INFO = 8 + 1 + 4 + 1, 8 + 4 + 4 + 8
_SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
# Header keys outside <arch>.* that ModelMeta.extra carries for display.
_EXTRA_KEYS = ("general.size_label", "general.quantization_version", "tokenizer.ggml.model", "tokenizer.ggml.pre")


class GGUFError(Exception):
    """A file that is not a GGUF llama.cpp would load; `offset` is where reading went wrong."""

    def __init__(self, path: str | os.PathLike, offset: int | None, message: str) -> None:
        super().__init__(path, offset, message)
        self.path, self.offset, self.message = str(path), offset, message

    def __str__(self) -> str:
        where = f" (at byte {self.offset})" if self.offset is not None else ""
        return f"{self.message}{where}"


@dataclass(frozen=True)
class SkippedArray:
    """An array the reader stepped over: only its element type and length are known."""

    type: str  # GGUF value type name: "str", "f32", "arr", ...
    count: int


@dataclass(frozen=True)
class SkippedString:
    """A string value longer than STRING_LIMIT that the reader stepped over: only its length."""

    length: int


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    kv: dict[str, Any]  # every key; arrays longer than the limit are SkippedArray
    tensors: list[Tensor]
    alignment: int
    data_offset: int  # where tensor data starts: the header is bytes [0, data_offset)
    file_size: int
    header_sha256: str


def read_header(path: str | os.PathLike, *, array_limit: int | None = ARRAY_LIMIT) -> GGUFHeader:
    """Parse one GGUF file's header. `array_limit=None` reads every array (tests, debugging)."""
    path = Path(path)
    try:
        # Only a regular file is opened: opening a FIFO blocks until a writer comes, and a device
        # such as /dev/zero never ends. O_NONBLOCK covers a FIFO swapped in after the stat.
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise GGUFError(path, None, "cannot read: Is a directory")
        if not stat.S_ISREG(mode):
            raise GGUFError(path, None, _NOT_REGULAR)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise GGUFError(path, None, _NOT_REGULAR)
            if st.st_size == 0:
                raise GGUFError(path, 0, "empty file, not a GGUF model")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _Parser(path, buf, st.st_size, array_limit).header()
    except OSError as e:
        raise GGUFError(path, None, f"cannot read: {e.strerror or e}") from None
    except ValueError as e:  # a path with a NUL byte
        raise GGUFError(path, None, f"cannot read: {e}") from None


_NOT_REGULAR = "not a regular file (a device or a pipe): give the path of the .gguf file"


def present(path: str | os.PathLike) -> bool:
    """Whether something is at `path` for read_header to read or to refuse with a reason.

    A missing file (or a symlink to one: a model linked in from a disk not mounted here) is
    absent, and its profile's lock is used; anything else is present, whatever it is (a FIFO, a
    device, a file that may not be read, a symlink loop), so that it is reported, not skipped.
    """
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError):
        return True
    return True


def read_gguf(path: str | os.PathLike) -> ModelMeta:
    """The model in a GGUF file, or in all parts of a split model given any one of its parts.

    For a split model the tensor tables are merged in part order, `file_size` is the sum of the
    parts and `header_sha256` is the sha256 of the parts' header hashes (hex, in part order).
    """
    return meta_of_parts(_read_parts(read_header(path)))


def meta_of_parts(parts: list[GGUFHeader]) -> ModelMeta:
    """The model in the headers of all parts of one file, first part first (see read_gguf)."""
    head = parts[0]
    kv = head.kv
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(head.path, None, "no general.architecture key: not a llama.cpp model")
    prefix = arch + "."
    hparams = {k[len(prefix) :]: v for k, v in kv.items() if k.startswith(prefix) and _is_hparam(v)}
    n_layer = hparams.get("block_count", 0)
    if type(n_layer) is not int or not 0 <= n_layer <= MAX_LAYERS:
        raise GGUFError(
            head.path,
            None,
            f"{prefix}block_count is {show_value(n_layer)}; llama.cpp takes a whole number from 0 to {MAX_LAYERS}",
        )
    tokens = kv.get("tokenizer.ggml.tokens")
    if isinstance(tokens, (list, SkippedArray)):
        # llama.cpp sizes the vocabulary by its token list; <arch>.vocab_size only without one
        vocab_size = len(tokens) if isinstance(tokens, list) else tokens.count
    else:
        vocab_size = hparams.get("vocab_size", 0)
        vocab_size = vocab_size if type(vocab_size) is int and vocab_size >= 0 else 0
    ftype = kv.get("general.file_type")
    if len(parts) == 1:
        digest = head.header_sha256
    else:
        digest = hashlib.sha256("".join(p.header_sha256 for p in parts).encode()).hexdigest()
    name = kv.get("general.name")
    return ModelMeta(
        architecture=arch,
        hparams=hparams,
        vocab_size=vocab_size,
        tensors=[t for p in parts for t in p.tensors],
        name=name if isinstance(name, str) else None,
        file_type=FILE_TYPES.get(ftype, f"unknown ({ftype})") if isinstance(ftype, int) else None,
        file_size=sum(p.file_size for p in parts),
        header_sha256=digest,
        splits=len(parts),
        extra={k: kv[k] for k in _EXTRA_KEYS if k in kv},
    )


def split_paths(path: str | os.PathLike, count: int) -> list[Path]:
    """All parts of a split model (llama.cpp names them `<prefix>-00001-of-00003.gguf`)."""
    path = Path(path)
    if count <= 1:
        return [path]
    m = _SPLIT_RE.match(path.name)
    if not m or int(m["count"]) != count:
        raise GGUFError(
            path,
            None,
            f"the model is split into {count} parts, but the file name "
            f"does not end in -NNNNN-of-{count:05d}.gguf, so the other parts cannot "
            "be found",
        )
    prefix = m["prefix"]
    return [path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _read_parts(given: GGUFHeader) -> list[GGUFHeader]:
    count = given.kv.get("split.count", 1)
    if not isinstance(count, int) or count <= 1:
        return [given]
    paths = split_paths(given.path, count)
    given_no = int(_SPLIT_RE.match(given.path.name)["no"]) - 1
    parts = []
    for no, p in enumerate(paths):
        if no == given_no:
            part = given
        elif not present(p):
            raise GGUFError(p, None, f"part {no + 1} of {count} of {given.path.name} is missing")
        else:
            part = read_header(p)
        parts.append(part)
    return check_parts(parts, count)


def check_parts(parts: list[GGUFHeader], count: int) -> list[GGUFHeader]:
    """`parts` if they are the `count` parts of one split model in order, else a GGUFError."""
    for no, part in enumerate(parts):
        if part.kv.get("split.no") != no or part.kv.get("split.count") != count:
            raise GGUFError(
                part.path,
                None,
                f"the file name says part {no + 1} of {count}, but "
                f"its header says split.no={part.kv.get('split.no')} (0-based), "
                f"split.count={part.kv.get('split.count')}",
            )
    seen: set[str] = set()
    for part in parts:
        for t in part.tensors:
            if t.name in seen:
                raise GGUFError(part.path, None, f"tensor {t.name!r} appears in two parts")
            seen.add(t.name)
    expected = parts[0].kv.get("split.tensors.count")
    if isinstance(expected, int) and expected != len(seen):
        raise GGUFError(
            parts[0].path, None, f"split.tensors.count says {expected} tensors, but the {count} parts hold {len(seen)}"
        )
    return parts


def _is_hparam(value: Any) -> bool:
    # scalars and small numeric arrays (per-layer head counts, SWA patterns); not string lists
    if isinstance(value, list):
        return all(isinstance(x, (int, float)) for x in value)
    return not isinstance(value, (SkippedArray, SkippedString))


def _short_f32(x: float) -> float:
    """The shortest decimal that is the same float32: 1e-05, not 9.999999747378752e-06."""
    packed = _F32_STRUCT.pack(x)
    for digits in range(1, 10):
        y = float(f"{x:.{digits}g}")
        if _F32_STRUCT.pack(y) == packed:
            return y
    return x  # NaN payloads


@functools.lru_cache(maxsize=None)
def _short_strings() -> re.Pattern:
    """_CHUNK consecutive GGUF strings of fewer than 256 bytes each.

    One alternative per length: its u64 bytes, then that many bytes of anything. The first byte
    picks the alternative, so a match walks exactly as a Python loop over the lengths would, in C,
    in about half the time; a chunk holding a longer string just does not match. The engine tries
    alternatives in order, so the lengths of typical tokens and merges come first.
    """
    lengths = sorted(range(256), key=lambda n: abs(n - 8))
    alternatives = b"|".join(re.escape(_U64.pack(n)) + b".{%d}" % n for n in lengths)
    return re.compile(b"(?s)(?:%s){%d}" % (alternatives, _CHUNK))


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


class _Parser:
    def __init__(self, path: Path, buf: mmap.mmap, size: int, array_limit: int | None) -> None:
        self.path, self.buf, self.size, self.array_limit = path, buf, size, array_limit
        self.pos = 0
        self.types: dict[str, int] = {}  # value type of each key

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        raise GGUFError(self.path, self.pos if at is None else at, message)

    def take(self, n: int, what: str) -> int:
        """Claim the next n bytes; their start."""
        start = self.pos
        if n > self.size - start:
            self.fail(f"{what} needs {n} bytes, but only {self.size - start} are left (truncated or corrupt file)")
        if start + n > MAX_HEADER:
            self._too_long()
        self.need(start + n)
        self.pos = start + n
        return start

    def need(self, end: int) -> None:
        """Bytes [0, end) are about to be read: a parser over a partial buffer fetches them."""

    def _too_long(self) -> NoReturn:
        self.fail(
            f"the header (metadata and tensor table) runs past {MAX_HEADER} bytes; no "
            "model's comes near: a corrupt length or count?"
        )

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.take(8, what))[0]

    def raw_string(self, what: str, limit: tuple[int, str] | None = None) -> bytes | SkippedString:
        """A string's bytes; one longer than `limit` (bytes, who says so) fails, one longer than
        STRING_LIMIT is stepped over (copying a length the file claims could take gigabytes)."""
        at = self.pos
        n = self.u64(f"length of {what}")
        if limit is not None and limit[0] < n <= self.size - self.pos:  # past the end: take() says so
            self.fail(f"{what} is {n} bytes; {limit[1]} allows at most {limit[0]}", at)
        start = self.take(n, what)
        if n > STRING_LIMIT:
            return SkippedString(n)
        return self.buf[start : start + n]

    def text(self, what: str) -> str | SkippedString:
        raw = self.raw_string(what)
        return raw if isinstance(raw, SkippedString) else raw.decode("utf-8", "replace")

    def name(self, what: str, limit: tuple[int, str]) -> str:
        at = self.pos
        raw = self.raw_string(what, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8: {show_bytes(raw[:40])}", at)

    # --- file layout -----------------------------------------------------------------------
    def header(self) -> GGUFHeader:
        magic = bytes(self.buf[:4])
        if magic != b"GGUF":
            self.fail(f'starts with {show_bytes(magic)} (not a GGUF file: GGUF files start with "GGUF")', 0)
        self.pos = 4
        version = self.u32("version")
        if version == 0:
            self.fail("GGUF version 0 does not exist", 4)
        if version & 0xFFFF == 0:
            self.fail(f"version {version:#x}: a big-endian GGUF, which llama.cpp cannot load", 4)
        if version == 1:
            self.fail("GGUF version 1 is no longer supported; convert the model again", 4)
        if version > GGUF_VERSION:
            self.fail(f"GGUF version {version} is not supported (this reader knows 2 and 3)", 4)
        n_tensors = self.u64("tensor count")
        n_kv = self.u64("key-value count")
        left = self.size - self.pos
        if n_kv * _MIN_KV + n_tensors * _MIN_TENSOR_INFO > left:
            self.fail(
                f"the header claims {n_kv} key-value pairs and {n_tensors} tensors, which "
                f"cannot fit in the {left} bytes that follow",
                8,
            )
        kv = self.key_values(n_kv)
        alignment = self.alignment(kv)
        tensors, offsets = self.tensor_infos(n_tensors)
        data_offset = _pad(self.pos, alignment) if n_tensors else self.pos
        if data_offset > self.size:
            self.fail(
                f"the data section would start at byte {data_offset}, past the end of the file ({self.size} bytes)"
            )
        self.check_placement(tensors, offsets, data_offset, alignment)
        if data_offset > MAX_HEADER:
            self._too_long()
        self.need(data_offset)
        with memoryview(self.buf) as view, view[:data_offset] as head:
            digest = hashlib.sha256(head).hexdigest()
        return GGUFHeader(self.path, version, kv, tensors, alignment, data_offset, self.size, digest)

    def key_values(self, n_kv: int) -> dict[str, Any]:
        kv: dict[str, Any] = {}
        for i in range(n_kv):
            at = self.pos
            key = self.name(f"key {i}", (MAX_KEY, "vramc"))
            if not key:
                self.fail(f"key {i} is empty", at)
            if key in kv:
                self.fail(f"duplicate key {key!r}", at)
            type_at = self.pos
            self.types[key] = vtype = self.u32(f"type of {key!r}")
            kv[key] = self.value(vtype, repr(key), type_at)
        return kv

    def alignment(self, kv: dict[str, Any]) -> int:
        if "general.alignment" not in kv:
            return DEFAULT_ALIGNMENT
        value, vtype = kv["general.alignment"], self.types["general.alignment"]
        if vtype != 4:
            self.fail(f"general.alignment must be a u32, not {_type_name(vtype)}")
        if value == 0 or value & (value - 1):
            self.fail(f"general.alignment {value} is not a power of 2")
        return value

    # --- values ----------------------------------------------------------------------------
    # `what` names the value in messages: the quoted key
    def value(self, vtype: int, what: str, at: int) -> Any:
        s = _STRUCTS.get(vtype)
        if s is not None:
            v = s.unpack_from(self.buf, self.take(s.size, what))[0]
            return _short_f32(v) if vtype == _F32 else v
        if vtype == _STRING:
            return self.text(what)
        if vtype == _ARRAY:
            return self.array(what, 0, keep=True)
        self.fail(f"{what} has unknown value type {vtype}", at)

    def array(self, what: str, depth: int, keep: bool) -> Any:
        at = self.pos
        etype = self.u32(f"element type of {what}")
        count = self.u64(f"length of {what}")
        if etype not in _VALUE_TYPES:
            self.fail(f"{what} is an array of unknown value type {etype}", at)
        ename, _, min_size = _VALUE_TYPES[etype]
        if etype == _ARRAY and depth + 1 >= _MAX_NESTING:
            self.fail(f"{what} nests arrays more than {_MAX_NESTING} deep", at)
        left = self.size - self.pos
        if count * min_size > left:
            self.fail(
                f"{what} claims {count} elements of type {ename} (at least "
                f"{count * min_size} bytes), but only {left} bytes are left",
                at,
            )
        if self.pos + count * min_size > MAX_HEADER:
            self._too_long()
        if not keep or (self.array_limit is not None and count > self.array_limit):
            self.skip(etype, count, what, depth)
            return SkippedArray(ename, count)
        s = _STRUCTS.get(etype)
        if s is not None:
            start = self.take(count * s.size, what)
            values = list(struct.unpack_from(f"<{count}{s.format[1:]}", self.buf, start))
            return [_short_f32(v) for v in values] if etype == _F32 else values
        if etype == _STRING:
            return [self.text(what) for _ in range(count)]
        return [self.array(what, depth + 1, keep=True) for _ in range(count)]

    def skip(self, etype: int, count: int, what: str, depth: int) -> None:
        s = _STRUCTS.get(etype)
        if s is not None:
            self.take(count * s.size, what)
        elif etype == _STRING:
            self.skip_strings(count, what)
        else:
            for _ in range(count):
                self.array(what, depth + 1, keep=False)

    def skip_strings(self, count: int, what: str) -> None:
        buf, pos, end = self.buf, self.pos, self.size
        match, length = _short_strings().match, _U64.unpack_from
        i = 0
        while i < count:
            m = match(buf, pos) if count - i >= _CHUNK else None
            if m is not None:
                pos, i = m.end(), i + _CHUNK
                continue
            # a long string in this chunk, or the tail: walk it checking every length
            stop = min(count, i + _CHUNK)
            while i < stop:
                n = length(buf, pos)[0] if end - pos >= 8 else end
                if n > end - pos - 8:
                    self.fail(f"string {i} of {what} runs past the end of the file", pos)
                pos += 8 + n
                i += 1
        self.pos = pos

    # --- tensors ---------------------------------------------------------------------------
    def tensor_infos(self, n_tensors: int) -> tuple[list[Tensor], list[tuple[int, int]]]:
        tensors: list[Tensor] = []
        offsets: list[tuple[int, int]] = []  # (where the info starts, data offset)
        seen: set[str] = set()
        for i in range(n_tensors):
            at = self.pos
            name = self.name(f"name of tensor {i}", (MAX_NAME - 1, "llama.cpp"))
            if name in seen:
                self.fail(f"duplicate tensor {name!r}", at)
            seen.add(name)
            n_dims = self.u32(f"dimension count of {name!r}")
            if n_dims > MAX_DIMS:
                self.fail(f"tensor {name!r} has {n_dims} dimensions; ggml allows {MAX_DIMS}", at)
            start = self.take(8 * n_dims, f"shape of {name!r}")
            shape = struct.unpack_from(f"<{n_dims}q", self.buf, start) or (1,)
            n_elements = 1
            for d in shape:
                if d < 0:
                    self.fail(f"tensor {name!r} has a negative dimension {d}", at)
                n_elements *= d
            if n_elements > _INT64_MAX:
                self.fail(f"tensor {name!r} shape {list(shape)} overflows int64 elements", at)
            type_id = self.u32(f"type of {name!r}")
            if type_id not in GGML_TYPES:
                self.fail(f"tensor {name!r} has unknown ggml type {type_id}", at)
            type_name, block, _ = GGML_TYPES[type_id]
            if shape[0] % block:
                self.fail(
                    f"tensor {name!r} rows of {shape[0]} elements are not a whole number of "
                    f"{type_name} blocks ({block} elements)",
                    at,
                )
            offsets.append((at, self.u64(f"data offset of {name!r}")))
            tensors.append(make_tensor(name, type_name, shape))
        return tensors, offsets

    def check_placement(
        self, tensors: list[Tensor], offsets: list[tuple[int, int]], data_offset: int, alignment: int
    ) -> None:
        # llama.cpp requires tensors packed in table order, each padded to the alignment.
        expected = 0
        for t, (at, offset) in zip(tensors, offsets):
            if offset != expected:
                self.fail(
                    f"tensor {t.name!r} has data offset {offset}, expected {expected} "
                    "(llama.cpp requires tensors packed in table order)",
                    at,
                )
            end = data_offset + offset + t.nbytes
            if end > self.size:
                self.fail(
                    f"tensor {t.name!r} data ends at byte {end}, past the end of the file "
                    f"({self.size} bytes): truncated download?",
                    at,
                )
            expected += _pad(t.nbytes, alignment)


def _type_name(vtype: int) -> str:
    return _VALUE_TYPES[vtype][0] if vtype in _VALUE_TYPES else str(vtype)
