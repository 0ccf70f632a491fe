"""Check catalog shapes against llama.cpp itself: does the sparse file load, and does the model
memory that llama-fit-params reports for a fully offloaded model equal the catalog's tensor bytes?

One RPC device, `-ngl all`: every block and the output layer go to RPC0, the input layer
(token_embd) stays on the host; a model with tied embeddings has token_embd duplicated onto the
output device. llama-fit-params prints MiB rounded down, so a match is |printed - expected| < 1.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from vramc.dev.synth.shapes import CATALOG
from vramc.dev.synth.writer import model_meta, write_sparse_gguf
from vramc.model.modelmeta import ModelMeta

MiB = 1024 * 1024
INPUT_TENSORS = ("token_embd.weight",)


@dataclass(frozen=True)
class Check:
    shape: str
    ftype: str
    device_mib: int  # llama-fit-params: RPC0 model
    expected_device_mib: float  # catalog: blocks + output layer
    host_mib: int
    expected_host_mib: float
    context_mib: int
    compute_mib: int
    error: str | None = None  # why llama-fit-params failed, if it did

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and abs(self.device_mib - self.expected_device_mib) < 1
            and abs(self.host_mib - self.expected_host_mib) < 1
            and self.compute_mib > 0
        )


def expected_split(meta: ModelMeta) -> tuple[int, int]:
    """(bytes on the one offload device, bytes on the host) for a fully offloaded model."""
    host = sum(t.nbytes for t in meta.tensors if t.name in INPUT_TENSORS)
    device = sum(t.nbytes for t in meta.tensors if t.name not in INPUT_TENSORS)
    if meta.tensor("output.weight") is None:  # tied: llama.cpp duplicates token_embd as output
        device += meta.tensor("token_embd.weight").nbytes
    return device, host


def validate(
    names: list[str] | None = None,
    ftypes: tuple[str, ...] = ("Q4_K_M", "Q8_0"),
    n_ctx: int = 4096,
    bin_dir: Path | None = None,
) -> list[Check]:
    """Run the dry run for each shape x file type; raises vramc.dev.oracle.OracleError on failure."""
    from vramc.dev.oracle import OracleError, RpcServers, find_binaries, run_fit_print
    from vramc.memory.llama_params import LlamaParams

    bin_dir = bin_dir or find_binaries()
    if bin_dir is None:
        raise OracleError("oracle binaries not found (VRAMC_ORACLE_BIN or the build cache)")
    params = LlamaParams(n_ctx=n_ctx, n_gpu_layers=-1)
    out = []
    with RpcServers(1, bin_dir) as rpc, tempfile.TemporaryDirectory() as tmp:
        for name in names or list(CATALOG):
            for ftype in ftypes:
                path = write_sparse_gguf(Path(tmp) / f"{name}-{ftype}.gguf", CATALOG[name], ftype)
                device, host = expected_split(model_meta(CATALOG[name], ftype))
                try:
                    res = run_fit_print(path, params, rpc.endpoints, bin_dir)
                except OracleError as e:
                    out.append(Check(name, ftype, 0, device / MiB, 0, host / MiB, 0, 0, str(e)))
                    continue
                finally:
                    path.unlink()
                rpc0 = res.devices[0]
                out.append(
                    Check(
                        name,
                        ftype,
                        rpc0.model_bytes // MiB,
                        device / MiB,
                        res.host.model_bytes // MiB,
                        host / MiB,
                        rpc0.context_bytes // MiB,
                        rpc0.compute_bytes // MiB,
                    )
                )
    return out


def format_table(checks: list[Check]) -> str:
    rows = [
        "| shape | ftype | RPC0 model (oracle / catalog MiB) | Host model | context | compute | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        rows.append(
            f"| {c.shape} | {c.ftype} | {c.device_mib} / {c.expected_device_mib:.2f} | "
            f"{c.host_mib} / {c.expected_host_mib:.2f} | {c.context_mib} | {c.compute_mib} | "
            f"{'yes' if c.ok else 'NO: ' + (c.error or 'mismatch').splitlines()[-1]} |"
        )
    return "\n".join(rows)
