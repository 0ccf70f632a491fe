"""vramc: a declarative config compiler and linter for local LLM serving."""

import os as _os

# pydantic looks up plugins through importlib.metadata entry points on first use (~15 ms);
# vramc uses none, and `vramc check` runs in pre-commit where every millisecond shows.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

__version__ = "0.1.0"

# The llama.cpp build whose memory behaviour vramc models (vendored in this llama-cpp-python).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e570"
