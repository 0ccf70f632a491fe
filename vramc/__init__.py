"""vramc: a declarative config compiler and linter for local LLM serving."""

__version__ = "0.1.0"

# The llama.cpp build whose memory behaviour vramc models (vendored in this llama-cpp-python).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e570"
