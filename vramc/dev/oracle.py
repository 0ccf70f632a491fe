"""Cross-check against llama.cpp itself, with RPC devices standing in for GPUs.

`ggml-rpc-server` processes on loopback act as devices: placement, KV and compute buffers are
decided by the same code as for CUDA devices. Two ways to ask llama.cpp:

* `run_fit_print`: `llama-fit-params --fit-print on`, the no_alloc dry run (what `--fit`
  projects). It loads only the model's metadata, so a sparse GGUF with the real tensor table is
  enough, and takes a fraction of a second. It prints `NAME model context compute` in MiB
  (rounded down) per device and for the host; `precise=True` also reads the compute buffers with
  two decimals from its debug log.
* `run_server_load`: a real `llama-server` load, stopped once its buffers are reserved. It moves
  every weight to the RPC servers (seconds per GB), so it suits small models; its buffer sizes
  (two decimals) are those of an actual launch, scheduler pins included.

Upstream: the RPC backend (ggml/src/ggml-rpc/ggml-rpc.cpp) and tools/fit-params/fit-params.cpp
(`llama-fit-params`) of llama.cpp 0c1e570, as vendored by llama-cpp-python 0.3.36; docs/memory-model.md describes how
vramc uses them. The binaries come from scripts/build-llama.sh.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from vramc.cache import cache_root
from vramc.memory.llama_params import LlamaParams

MiB = 1024 * 1024
ORACLE_VERSION = "0.3.36"  # llama-cpp-python whose vendored llama.cpp the binaries are built from
# where scripts/build-llama.sh puts them: $VRAMC_CACHE (default ~/.cache/vramc)/oracle-VERSION/bin
DEFAULT_BIN = cache_root() / f"oracle-{ORACLE_VERSION}" / "bin"
_BINARIES = ("llama-fit-params", "ggml-rpc-server")

_LINE_RE = re.compile(r"^(\S+) (\d+) (\d+) (\d+)\s*$")
_COMPUTE_RE = re.compile(r"sched_reserve:\s+(\S+) compute buffer size =\s+([\d.]+) MiB")
_BUFFER_RE = re.compile(r"(load_tensors|llama_kv_cache):\s+(\S+) (model|KV) buffer size =\s+([\d.]+) MiB")


class OracleError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeviceMemory:
    name: str  # RPC0, RPC1, ... or Host
    model_bytes: int  # MiB as printed (rounded down), in bytes
    context_bytes: int
    compute_bytes: int


@dataclass
class OracleResult:
    devices: list[DeviceMemory]  # one per RPC device in launch order (zeros if the model skips it)
    host: DeviceMemory
    compute_precise: dict[str, int] = field(default_factory=dict)  # name -> bytes (0.01 MiB)
    command: list[str] = field(default_factory=list)


def find_binaries(path: str | os.PathLike | None = None) -> Path | None:
    """The directory holding the oracle binaries: `path`, $VRAMC_ORACLE_BIN, or the build cache."""
    d = Path(path or os.environ.get("VRAMC_ORACLE_BIN") or DEFAULT_BIN)
    if all(os.access(d / b, os.X_OK) for b in _BINARIES):
        return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OracleError(f"ggml-rpc-server on port {port} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise OracleError(f"ggml-rpc-server on port {port} did not listen within {timeout_s} s")


class RpcServers:
    """`n` ggml-rpc-server processes on free loopback ports; always stopped on exit.

    with RpcServers(2, bin_dir) as rpc:
        run_fit_print(model, params, rpc.endpoints, bin_dir)
    """

    def __init__(self, n: int, bin_dir: Path, start_timeout_s: float = 10.0):
        self.n = n
        self.bin_dir = Path(bin_dir)
        self.start_timeout_s = start_timeout_s
        self.procs: list[subprocess.Popen] = []
        self.endpoints: list[str] = []

    def __enter__(self) -> "RpcServers":
        try:
            for _ in range(self.n):
                self._start_one()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_one(self) -> None:
        for _attempt in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            proc = subprocess.Popen(
                [str(self.bin_dir / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            try:
                _wait_listening(port, proc, self.start_timeout_s)
            except OracleError:
                if proc.poll() is None:
                    raise
                continue
            self.endpoints.append(f"127.0.0.1:{port}")
            return
        raise OracleError("could not start ggml-rpc-server")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
        self.endpoints.clear()


def rpc_buffer_names(endpoints: list[str]) -> list[str]:
    """The buffer type name of each RPC device (every server exposes its CPU as device 0)."""
    return [f"RPC0[{ep}]" for ep in endpoints]


def _params_args(params: LlamaParams, buffer_names: list[str]) -> list[str]:
    """Flags shared by llama-fit-params and llama-server. `buffer_names[i]` is the buffer type of
    device i, which `-ot` names; LlamaParams names the devices RPC0, RPC1, ... in launch order.
    `--fit off` keeps the parameters as given; `--no-repack` keeps host weights in the CPU buffer
    type, because common_fit_print leaves CPU_REPACK buffers (not host buffers) out of "Host"."""
    ngl = "all" if params.n_gpu_layers < 0 else str(params.n_gpu_layers)
    args = [
        "-c",
        str(params.n_ctx),
        "-np",
        str(params.n_seq_max),
        "-b",
        str(params.n_batch),
        "-ub",
        str(params.n_ubatch),
        "-ngl",
        ngl,
        "-sm",
        params.split_mode,
        "-mg",
        str(params.main_gpu),
        "-fa",
        params.flash_attn,
        "-ctk",
        params.type_k,
        "-ctv",
        params.type_v,
        "--fit",
        "off",
        "--no-repack",
    ]
    if params.tensor_split is not None:
        args += ["-ts", ",".join(f"{x:g}" for x in params.tensor_split)]
    if not params.offload_kqv:
        args.append("--no-kv-offload")
    if params.swa_full:
        args.append("--swa-full")
    if not params.op_offload:
        args.append("--no-op-offload")
    if params.overrides:
        parts = []
        for pattern, target in params.overrides:
            if target.upper() != "CPU":
                i = int(target[3:]) if target.startswith("RPC") and target[3:].isdigit() else -1
                if not 0 <= i < len(buffer_names):
                    raise OracleError(f"override target {target!r} is not an oracle device")
                target = buffer_names[i]
            parts.append(f"{pattern}={target}")
        args += ["-ot", ",".join(parts)]
    return args


def fit_print_args(params: LlamaParams, buffer_names: list[str]) -> list[str]:
    """llama-fit-params flags for `params` (see `llama-fit-params --help`)."""
    if params.kv_unified:
        raise OracleError("llama-fit-params has no --kv-unified flag")
    if params.n_outputs_max not in (None, 0, params.n_batch):
        raise OracleError("llama-fit-params reserves logits for n_batch outputs; n_outputs_max cannot be set")
    return _params_args(params, buffer_names)


def server_args(params: LlamaParams, buffer_names: list[str]) -> list[str]:
    """llama-server flags for `params`; the server reserves one output per slot."""
    if params.n_outputs_max != max(1, min(params.n_batch, params.n_seq_max)):
        raise OracleError("llama-server reserves min(n_batch, n_parallel) outputs; set n_outputs_max to that")
    return _params_args(params, buffer_names) + ["-kvu" if params.kv_unified else "-no-kvu", "--no-warmup"]


def parse_fit_print(stdout: str, n_devices: int) -> tuple[list[DeviceMemory], DeviceMemory]:
    """The per-device lines; devices the model does not use (split_mode none) are not printed."""
    rows = {}
    for line in stdout.splitlines():
        m = _LINE_RE.match(line.strip())
        if m:
            name, model, ctx, comp = m.group(1), *map(int, m.group(2, 3, 4))
            rows[name] = DeviceMemory(name, model * MiB, ctx * MiB, comp * MiB)
    names = [f"RPC{i}" for i in range(n_devices)]
    if "Host" not in rows or set(rows) - set(names) - {"Host"}:
        raise OracleError(f"unexpected llama-fit-params output:\n{stdout}")
    return [rows.get(n, DeviceMemory(n, 0, 0, 0)) for n in names], rows["Host"]


def _device_name(buffer: str, endpoints: list[str]) -> str:
    """RPC buffers are named after their endpoint; every host buffer (CPU, CPU_Mapped) is Host."""
    for i, ep in enumerate(endpoints):
        if ep in buffer:
            return f"RPC{i}"
    return "Host" if buffer.startswith("CPU") else buffer


def parse_compute_log(log: str, endpoints: list[str]) -> dict[str, int]:
    """sched_reserve's compute buffer lines, by device name (the last line per buffer wins)."""
    out: dict[str, int] = {}
    for m in _COMPUTE_RE.finditer(log):
        out[_device_name(m.group(1), endpoints)] = round(float(m.group(2)) * MiB)
    return out


def run_fit_print(
    model: str | os.PathLike,
    params: LlamaParams,
    endpoints: list[str],
    bin_dir: Path,
    precise: bool = False,
    timeout_s: float = 60.0,
) -> OracleResult:
    """Run the dry run for `params` with one RPC device per endpoint (none: CPU only)."""
    cmd = [str(Path(bin_dir) / "llama-fit-params"), "-m", str(model)]
    if endpoints:
        cmd += ["--rpc", ",".join(endpoints)]
    cmd += fit_print_args(params, rpc_buffer_names(endpoints))
    cmd += ["--fit-print", "on"]
    if precise:
        cmd += ["-lv", "5"]
    env = dict(os.environ, LLAMA_ARG_LOG_COLORS="off")
    # Rarely (about once in a few hundred runs) the -lv 5 log comes back without its
    # sched_reserve lines although the summary has compute figures: run it again rather than
    # compare against a missing figure.
    for _attempt in range(3):
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise OracleError(f"llama-fit-params timed out after {timeout_s} s: {' '.join(cmd)}") from None
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise OracleError(f"llama-fit-params failed (status {proc.returncode}):\n{tail}")
        devices, host = parse_fit_print(proc.stdout, len(endpoints))
        if not precise:
            return OracleResult(devices, host, {}, cmd)
        precise_compute = parse_compute_log(proc.stderr, endpoints)
        missing = [d.name for d in [*devices, host] if d.compute_bytes and d.name not in precise_compute]
        if not missing:
            return OracleResult(devices, host, precise_compute, cmd)
    raise OracleError(
        f"llama-fit-params printed no compute buffer line for {', '.join(missing)} (3 runs): {' '.join(cmd)}"
    )


def run_server_load(
    model: str | os.PathLike, params: LlamaParams, endpoints: list[str], bin_dir: Path, timeout_s: float = 300.0
) -> OracleResult:
    """Load for real with llama-server and stop once the compute buffers are reserved."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [
        str(Path(bin_dir) / "llama-server"),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-lv",
        "4",
    ]
    if endpoints:
        cmd += ["--rpc", ",".join(endpoints)]
    cmd += server_args(params, rpc_buffer_names(endpoints))
    env = dict(os.environ, LLAMA_ARG_LOG_COLORS="off")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        for line in proc.stdout:
            lines.append(line)
            if "sched_reserve: graph" in line:
                break
            if time.monotonic() > deadline:
                raise OracleError(f"llama-server did not reserve its buffers within {timeout_s} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    log = "".join(lines)
    compute = parse_compute_log(log, endpoints)
    if not compute:
        tail = "\n".join(log.strip().splitlines()[-5:])
        raise OracleError(f"llama-server stopped before reserving its buffers:\n{tail}")
    sums: dict[str, list[int]] = {}
    for m in _BUFFER_RE.finditer(log):
        col = 0 if m.group(3) == "model" else 1
        sums.setdefault(_device_name(m.group(2), endpoints), [0, 0])[col] += round(float(m.group(4)) * MiB)

    def row(name: str) -> DeviceMemory:
        model_b, ctx_b = sums.get(name, (0, 0))
        return DeviceMemory(name, model_b, ctx_b, compute.get(name, 0))

    return OracleResult([row(f"RPC{i}") for i in range(len(endpoints))], row("Host"), compute, cmd)


def check(
    model: str | os.PathLike,
    params: LlamaParams,
    n_devices: int,
    bin_dir: Path | None = None,
    precise: bool = False,
    timeout_s: float = 60.0,
) -> OracleResult:
    """Start `n_devices` RPC servers, run the dry run, stop them."""
    bin_dir = bin_dir or find_binaries()
    if bin_dir is None:
        raise OracleError(
            f"oracle binaries not found (set VRAMC_ORACLE_BIN or run scripts/build-llama.sh; looked in {DEFAULT_BIN})"
        )
    if not Path(model).exists():
        raise OracleError(f"model not found: {model}")
    with RpcServers(n_devices, bin_dir) as rpc:
        return run_fit_print(model, params, rpc.endpoints, bin_dir, precise=precise, timeout_s=timeout_s)
