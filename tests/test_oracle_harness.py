"""The oracle harness's own handling of llama-fit-params output (no llama.cpp needed): a stand-in
executable plays a run whose debug log lost its compute-buffer lines."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vramc.dev.oracle import OracleError, run_fit_print
from vramc.memory.llama_params import LlamaParams

MiB = 1024 * 1024
LOG = "sched_reserve:        CPU compute buffer size =    12.34 MiB"


def stand_in(bin_dir: Path, log_from_run: int) -> Path:
    """A llama-fit-params that prints the summary, and the compute log line from run `log_from_run` on."""
    counter = bin_dir / "runs"
    script = bin_dir / "llama-fit-params"
    script.write_text(f"""#!/bin/sh
n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 ))
echo $n > {counter}
echo "Host 100 0 12"
if [ $n -ge {log_from_run} ]; then echo "{LOG}" >&2; fi
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return counter


def test_a_run_without_its_compute_log_is_repeated(tmp_path):
    counter = stand_in(tmp_path, log_from_run=2)
    res = run_fit_print(tmp_path / "m.gguf", LlamaParams(n_ctx=512), [], tmp_path, precise=True)
    assert res.compute_precise == {"Host": round(12.34 * MiB)}
    assert counter.read_text().strip() == "2"


def test_a_compute_log_that_never_comes_is_an_oracle_error(tmp_path):
    counter = stand_in(tmp_path, log_from_run=99)
    with pytest.raises(OracleError, match="no compute buffer line for Host"):
        run_fit_print(tmp_path / "m.gguf", LlamaParams(n_ctx=512), [], tmp_path, precise=True)
    assert counter.read_text().strip() == "3"
    # without precise figures the summary is enough: one run
    counter.unlink()
    res = run_fit_print(tmp_path / "m.gguf", LlamaParams(n_ctx=512), [], tmp_path)
    assert res.host.compute_bytes == 12 * MiB and counter.read_text().strip() == "1"
