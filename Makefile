# Two entry points, each self-contained on a fresh machine with only Python 3.10+:
#   make demo   check, plan and build the shipped example profiles
#   make test   the whole test suite (builds the pinned llama.cpp once, cached outside git)
PYTHON ?= python3
VENV   ?= .venv
export VRAMC_CACHE ?= $(HOME)/.cache/vramc
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test engine bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The run extra (llama-cpp-python 0.3.36) compiles llama.cpp: build the wheel once into the cache.
$(VENV)/.engine: $(STAMP) scripts/build-llama.sh
	PYTHON=$(BIN)/python scripts/build-llama.sh
	$(BIN)/python -m pip install -q --find-links "$$(scripts/build-llama.sh --wheel-dir)" -e '.[dev,run]'
	touch $@

# The tiny random-weight model that `vramc run demo-tiny` serves (generated, never downloaded).
models/demo-tiny.gguf: | $(STAMP)
	$(BIN)/python -m vramc.synth tiny $@

demo: $(STAMP) models/demo-tiny.gguf
	$(BIN)/vramc check profiles/
	$(BIN)/vramc plan profiles/
	$(BIN)/vramc build --check

engine: $(VENV)/.engine models/demo-tiny.gguf

# lint (ruff) and types (mypy, configured in pyproject.toml) first: they take seconds, the suite minutes
test: $(VENV)/.engine
	$(BIN)/ruff check vramc tests bench scripts
	$(BIN)/ruff format --check vramc tests bench scripts
	$(BIN)/mypy vramc
	$(BIN)/python -m pytest -q

bench: $(VENV)/.engine
	$(BIN)/python bench/check_speed.py
	$(BIN)/python bench/header.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
