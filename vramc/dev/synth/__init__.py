"""Synthetic GGUF files with the real shapes of real models (see README.md in this folder).

    from vramc.dev.synth import CATALOG, write_sparse_gguf, write_tiny_model
    write_sparse_gguf("/tmp/l8b.gguf", CATALOG["llama-3.1-8b-instruct"], "Q4_K_M")

Importing this package loads neither numpy nor gguf; the writers do, when called.
"""

from vramc.dev.synth.quant import FTYPES, tensor_types
from vramc.dev.synth.shapes import CATALOG, ModelShape, get_shape
from vramc.dev.synth.writer import model_meta, write_sparse_gguf, write_tiny_model

__all__ = [
    "CATALOG",
    "FTYPES",
    "ModelShape",
    "get_shape",
    "model_meta",
    "tensor_types",
    "write_sparse_gguf",
    "write_tiny_model",
]
