"""Planned against actual memory for `vramc run`: llama.cpp's own buffer sizes, read from its log.

While it loads a model and creates a context, llama.cpp logs every buffer it allocates, one line
each, in MiB with two decimals (`ggml_backend_buffer_get_size / 1024 / 1024`):

    load_tensors:   CPU_Mapped model buffer size =     0.41 MiB
    llama_context:        CPU  output buffer size =     0.00 MiB
    llama_kv_cache:        CPU KV buffer size =     0.50 MiB
    sched_reserve:        CPU compute buffer size =     5.76 MiB

The pinned llama.cpp has no C function that returns these figures (its memory breakdown is a C++
std::map), so the log is the interface: `LogCapture` installs a ctypes callback with
`llama_log_set` (which also routes ggml's log), `parse_buffers` reads the lines, `compare` lines
them up with the plan's `MemoryEstimate`. Nothing here imports llama_cpp: the module is handed in.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from vramc.units import MiB

# enum ggml_log_level of the pinned ggml (llama_cpp/_logger.py still lists the older order)
LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CONT = 1, 2, 3, 4, 5

BUFFER_RE = re.compile(
    r"^(?P<func>\w+):\s+(?P<name>\S+)\s+(?P<kind>model|KV|RS|compute|output) buffer size\s*=\s*"
    r"(?P<mib>[0-9]+(?:\.[0-9]+)?) MiB"
)
# model/KV/RS lines add up (one line per mapped file, per SWA/non-SWA cache); compute and output
# buffers are re-reserved in place, so the last line for a buffer name is its size.
COMPONENT = {"model": "weights", "KV": "kv", "RS": "kv", "compute": "compute", "output": "output"}
SUMMED = {"model", "KV", "RS"}
COMPONENTS = ("weights", "kv", "compute")
HOST = -1
RESOLUTION_MIB = 0.005  # llama.cpp prints %.2f MiB
MIN_WARN_BYTES = 1 * MiB  # below this a difference is not worth a warning on any real device


@dataclass(frozen=True)
class Buffer:
    name: str  # ggml buffer (type) name: CPU_Mapped, CUDA0, CUDA_Host, RPC0[host:port], ...
    kind: str  # model | KV | RS | compute | output
    mib: float
    line: str


def parse_buffers(lines) -> list[Buffer]:
    """The buffer-size lines of a llama.cpp log, in order."""
    out = []
    for line in lines:
        m = BUFFER_RE.match(line.strip())
        if m:
            out.append(Buffer(m["name"], m["kind"], float(m["mib"]), line.strip()))
    return out


def place_of(name: str) -> int:
    """Which planned device a buffer lives on: HOST, or the device's index in launch order.

    Host memory: CPU buffers (CPU, CPU_Mapped, CPU_REPACK, ...) and a GPU backend's pinned host
    buffers (CUDA_Host). A device buffer is named after its device (CUDA0, ROCm1, Vulkan0,
    RPC0[...]); its number is the launch-order index, as in the plan, because CUDA_VISIBLE_DEVICES
    was applied in that order.
    """
    if name.startswith("CPU") or name.endswith("_Host"):
        return HOST
    m = re.match(r"^[A-Za-z_]*?(\d+)", name)
    return int(m.group(1)) if m else 0


def actual_use(buffers: list[Buffer]) -> dict[int, dict[str, float]]:
    """MiB per place (HOST or device index) and component, as llama.cpp reported them."""
    summed: dict[tuple[int, str], float] = {}
    last: dict[tuple[str, str], tuple[int, str, float]] = {}
    for b in buffers:
        comp, place = COMPONENT[b.kind], place_of(b.name)
        if b.kind in SUMMED:
            summed[(place, comp)] = summed.get((place, comp), 0.0) + b.mib
        else:
            last[(b.name, b.kind)] = (place, comp, b.mib)
    for place, comp, mib in last.values():
        summed[(place, comp)] = summed.get((place, comp), 0.0) + mib
    out: dict[int, dict[str, float]] = {}
    for (place, comp), mib in summed.items():
        out.setdefault(place, {})[comp] = mib
    return out


@dataclass
class Row:
    place: str  # CUDA0, host, or a buffer's device that the plan does not have
    component: str  # weights | kv | compute | output
    planned_bytes: int
    actual_mib: float
    checked: bool = True  # compared against the threshold (the output buffer grows on demand)

    @property
    def planned_mib(self) -> float:
        return self.planned_bytes / MiB

    @property
    def diff_mib(self) -> float:
        return self.actual_mib - self.planned_mib

    def exceeds(self, threshold: float) -> bool:
        """Off by more than `threshold` of the plan (and by more than llama.cpp's rounding and
        MIN_WARN_BYTES): a planned 0 that turns out not to be 0 counts too."""
        if not self.checked:
            return False
        diff = abs(self.diff_mib)
        return diff > threshold * self.planned_mib + RESOLUTION_MIB and diff * MiB >= MIN_WARN_BYTES


def compare(estimate, buffers: list[Buffer]) -> list[Row]:
    """One row per place and component that the plan or llama.cpp has (zero-zero rows skipped)."""
    actual = actual_use(buffers)
    rows: list[Row] = []

    def add(place: str, comp: str, planned: int, got: float, checked: bool = True) -> None:
        if planned or got:
            rows.append(Row(place, comp, planned, got, checked))

    for i, d in enumerate(estimate.devices):
        got = actual.get(i, {})
        for comp in COMPONENTS:
            add(d.id, comp, getattr(d, f"{comp}_bytes"), got.get(comp, 0.0))
    for i in sorted(k for k in actual if k != HOST and k >= len(estimate.devices)):
        for comp in COMPONENTS:  # a device the plan did not expect llama.cpp to use
            add(f"device{i}", comp, 0, actual[i].get(comp, 0.0))
    h, got = estimate.host, actual.get(HOST, {})
    for comp in COMPONENTS:
        add("host", comp, getattr(h, f"{comp}_bytes"), got.get(comp, 0.0))
    # llama_context reserves logits for n_seq_max rows and grows the buffer on the first batch
    # that needs more, up to the plan's figure: at load time it is smaller by design.
    add("host", "output", h.other_bytes, got.get("output", 0.0), checked=False)
    return rows


LABELS = {"weights": "weights", "kv": "KV", "compute": "compute", "output": "output"}


def _pct(r: Row) -> str:
    """The difference relative to the plan: "+1.5%", "not planned", or "" for 0 against 0."""
    if r.planned_bytes == 0:
        return "" if abs(r.diff_mib) < RESOLUTION_MIB else "not planned"
    return f"{r.diff_mib / r.planned_mib:+.1%}"


def format_table(rows: list[Row], estimate, threshold: float) -> str:
    """The planned-against-actual table, MiB with llama.cpp's two decimals."""
    header = ("device", "memory", "planned", "actual", "diff", "")
    body = []
    for r in rows:
        pct = _pct(r)
        if not r.checked:
            note = "grows on demand"
        elif r.exceeds(threshold):
            note = f"({pct}) over {threshold:.0%}"
        else:
            note = f"({pct})" if pct else ""
        body.append(
            (r.place, LABELS[r.component], f"{r.planned_mib:,.2f}", f"{r.actual_mib:,.2f}", f"{r.diff_mib:+,.2f}", note)
        )
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    lines = ["planned against actual (MiB; actual = the buffer sizes llama.cpp reported)"]
    prev = None
    for n, cells in enumerate([header] + body):
        place = cells[0] if cells[0] != prev or n == 1 else ""
        prev = cells[0]
        out = [place.ljust(widths[0]), cells[1].ljust(widths[1])]
        out += [c.rjust(w) for c, w in zip(cells[2:5], widths[2:5])]
        lines.append(("  " + "  ".join(out) + "  " + cells[5]).rstrip())
    unmeasured = [d for d in estimate.devices if d.overhead_bytes]
    if unmeasured:
        parts = ", ".join(f"{d.id} {d.overhead_bytes / MiB:,.0f}" for d in unmeasured)
        lines.append(
            f"  not measured: planned overhead {parts} MiB (CUDA context, cuBLAS, driver: "
            "llama.cpp does not report it; nvidia-smi shows it)"
        )
    return "\n".join(lines) + "\n"


def warnings(rows: list[Row], threshold: float) -> list[str]:
    out = []
    for r in rows:
        if r.exceeds(threshold):
            out.append(
                f"{r.place} {LABELS[r.component]}: llama.cpp allocated {r.actual_mib:,.2f} MiB, "
                f"the plan said {r.planned_mib:,.2f} MiB ({r.diff_mib:+,.2f} MiB, {_pct(r)}; "
                f"the threshold is {threshold:.0%})"
            )
    return out


def parse_threshold(text: str) -> float:
    """`5%` or `0.05` -> 0.05."""
    from vramc.units import parse_fraction

    value: object = text
    if isinstance(text, str) and not text.strip().endswith("%"):
        try:
            value = float(text)
        except ValueError:
            pass
    return parse_fraction(value)


class LogCapture:
    """llama.cpp's log (and ggml's: llama_log_set routes both), captured line by line.

    Every line is kept while loading (`lines`); afterwards only a short tail, so a server that
    runs for weeks does not grow. Warnings and errors are echoed to `console` as they come. The
    ctypes callback object is kept on the instance: if it were collected, llama.cpp would call
    freed memory.
    """

    def __init__(self, llama_cpp_module, console=None, log_file=None) -> None:
        import ctypes

        self.lines: list[str] = []
        self.levels: list[int] = []
        self.tail: deque = deque(maxlen=50)
        self.console = console
        self.log_file = log_file
        self.recording = True
        self._partial = ""
        self._level = LOG_INFO
        self._ll = llama_cpp_module.llama_cpp
        self._callback = self._ll.llama_log_callback(self._on_log)
        self._ll.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes, user_data) -> None:
        try:  # an exception must not escape into llama.cpp's thread
            if level != LOG_CONT:
                self._level = level
            self._partial += text.decode("utf-8", "replace")
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self._line(self._level, line)
        except Exception:  # pragma: no cover - defensive
            pass

    def _line(self, level: int, line: str) -> None:
        if self.log_file is not None:
            self.log_file.write(line + "\n")
            self.log_file.flush()
        if self.recording:
            self.lines.append(line)
            self.levels.append(level)
        self.tail.append((level, line))
        if level >= LOG_WARN and level != LOG_CONT and self.console is not None and line.strip():
            self.console.write(f"llama.cpp: {line}\n")
            self.console.flush()

    def stop_recording(self) -> None:
        self.recording = False

    def problems(self, n: int = 8) -> list[str]:
        """The last warning and error lines (what llama.cpp said when something failed)."""
        return [line for level, line in self.tail if level in (LOG_WARN, LOG_ERROR) and line.strip()][-n:]
