#!/usr/bin/env bash
# Build, once, the two pinned llama.cpp artifacts that vramc's numbers depend on:
#   1. the llama-cpp-python 0.3.36 wheel (the `run` extra: `vramc run` and the tests), and
#   2. the oracle binaries (llama-server, ggml-rpc-server, llama-fit-params) compiled from the
#      llama.cpp source vendored in that same sdist (see ../shared/reference/ORACLE.md).
# Each takes ~5 minutes on 2 cores, so both live in a cache outside git ($VRAMC_CACHE, default
# ~/.cache/vramc) and are rebuilt only when missing. The wheel is compiled for this CPU
# (GGML_NATIVE), so its cache folder is keyed by the CPU's feature flags.
#   scripts/build-llama.sh              build what is missing
#   scripts/build-llama.sh --wheel-dir  print the folder holding the wheel
#   scripts/build-llama.sh --oracle-dir print the folder holding the oracle binaries
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
cache="${VRAMC_CACHE:-$HOME/.cache/vramc}"
cpu_key=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-12)
src="$cache/src"
wheels="$cache/wheels-$cpu_key"
oracle="$cache/oracle-$LLAMA_CPP_PYTHON_VERSION"
py="${PYTHON:-python3}"
jobs="${JOBS:-$(nproc)}"

case "${1:-}" in
  --wheel-dir) echo "$wheels"; exit 0 ;;
  --oracle-dir) echo "$oracle/bin"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--wheel-dir|--oracle-dir]" >&2; exit 2 ;;
esac

mkdir -p "$src" "$wheels"
sdist="$src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
if [[ ! -f $sdist ]]; then
  echo "build-llama: downloading the llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist"
  "$py" -m pip download -q --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$src"
fi

if ! ls "$wheels"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl >/dev/null 2>&1; then
  echo "build-llama: compiling the llama-cpp-python wheel (about 5 minutes)"
  rm -rf "$wheels.tmp"
  CMAKE_BUILD_PARALLEL_LEVEL="$jobs" "$py" -m pip wheel -q --no-deps "$sdist" -w "$wheels.tmp"
  mv "$wheels.tmp"/llama_cpp_python-*.whl "$wheels"/ && rm -rf "$wheels.tmp"
fi

if [[ ! -x $oracle/bin/llama-fit-params ]]; then
  echo "build-llama: compiling the oracle: llama-server, ggml-rpc-server, llama-fit-params (about 6 minutes)"
  tree="$src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
  [[ -d $tree ]] || tar xzf "$sdist" -C "$src"
  build="$cache/build-oracle"
  # Portable (no -march=native) and static, so the cached binaries run on any x86-64 machine.
  cmake -S "$tree/vendor/llama.cpp" -B "$build" -DGGML_RPC=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF >/dev/null 2>&1
  cmake --build "$build" -j "$jobs" --target llama-server ggml-rpc-server llama-fit-params >/dev/null
  rm -rf "$oracle.tmp" && mkdir -p "$oracle.tmp/bin"
  cp "$build"/bin/llama-server "$build"/bin/ggml-rpc-server "$build"/bin/llama-fit-params "$oracle.tmp/bin/"
  rm -rf "$oracle" && mv "$oracle.tmp" "$oracle" && rm -rf "$build"
fi
echo "build-llama: wheel in $wheels, oracle in $oracle/bin"
