"""vramc's fit solver against llama.cpp's own fit (`llama-fit-params --fit on`), a few cases.

The full comparison is bench/fit_compare.py (its results: bench/results/fit_compare.md); this runs
the same code on four cases: vramc's settings must fit every simulated card when llama.cpp loads
them, and vramc must keep at least as many layers on the GPUs as llama.cpp (dense models).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.oracle

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("llama8b-q8_0", "8+3", 8192),  # all layers on two unequal cards
    ("llama8b-q8_0", "8+3", 32768),  # partial offload
    ("gemma3-12b-q4_k_m", "16", 32768),  # SWA, tied embeddings, one card
    ("qwen3moe30b-q4_k_m", "16", 8192),  # MoE: whole layers, and vramc's expert offload
]


@pytest.fixture(scope="module")
def compare():
    from vramc.dev import oracle

    if oracle.find_binaries() is None:
        pytest.skip("oracle binaries not built (scripts/build-llama.sh)")
    spec = importlib.util.spec_from_file_location("fit_compare", ROOT / "bench" / "fit_compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def results(compare, tmp_path_factory):
    from vramc.dev import oracle

    tmp = tmp_path_factory.mktemp("fit_oracle")
    cases = [compare.Case(*c) for c in CASES]
    return compare.run_all(cases, oracle.find_binaries(), tmp / "models", tmp / "logs", verbose=False)


@pytest.mark.parametrize("i", range(len(CASES)), ids=["@".join(map(str, c)) for c in CASES])
def test_vramc_fit_loads_within_the_cards_and_keeps_as_many_layers(results, i):
    r = results[i]
    assert r.vramc_fits
    over = r.vramc_check.over(r.caps)
    assert r.fits_ok, f"{r.case.id}: over capacity in llama.cpp's dry run by {over} MiB ({r.notes})"
    if not r.case.moe:
        assert r.vramc_ngl >= r.llama.ngl, f"{r.case.id}: {r.notes}"
    # vramc's own estimate of the dry run is what llama.cpp reports (to its MiB rounding)
    for est, dev in zip(r.vramc_dry_mib, r.vramc_check.devices):
        assert abs(est - dev.self_mib) <= 2


def test_moe_expert_offload_keeps_all_layers_and_fits(results):
    r = next(r for r in results if r.case.moe)
    assert r.llama.ot  # llama.cpp moved expert tensors
    assert r.vramc_ngl < r.n_total  # whole layers: some on the host
    x = r.experts
    assert x is not None and x.fits and x.ngl == r.n_total and x.moved > 0
    assert x.check.fits(r.caps)
    # within one block's experts of what llama.cpp keeps on the GPU
    assert r.llama_check.gpu_mib - x.check.gpu_mib < 400


def test_same_layers_where_llama_cpp_changes_nothing_else(results):
    r = results[1]  # llama8b 8+3 32768: both put 30 of 33 layers, split 23,7
    assert (r.vramc_ngl, r.llama.ngl) == (30, 30)
    assert r.vramc_ts == r.llama.ts == (23.0, 7.0)
