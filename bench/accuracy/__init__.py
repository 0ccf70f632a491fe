"""Accuracy of vramc's llama.cpp memory model against llama.cpp itself.

    python -m bench.accuracy            # sampled grid, a few minutes on 2 cores
    python -m bench.accuracy --full     # the whole cross product (hours)
    python -m bench.accuracy --real     # also a few real llama-server loads (launch mode)

Needs the oracle binaries (scripts/build-llama.sh). Sparse GGUFs of the synth catalog are written
to ~/.cache/vramc/bench-models (a few MB of disk). Prints every comparison, a summary, and writes
bench/accuracy/RESULTS.md. See grid.py for the dimensions and compare.py for the targets.
"""
