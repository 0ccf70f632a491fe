#!/usr/bin/env bash
# Build, once, the two pinned llama.cpp artifacts that vramc's numbers depend on:
#   1. the llama-cpp-python 0.3.36 wheel (used by `vramc run` and the tests), and
#   2. the oracle binaries (llama-server, ggml-rpc-server, llama-fit-params) compiled from the
#      llama.cpp source vendored in that same sdist (see ../shared/reference/ORACLE.md).
# Both take ~6 minutes on 2 cores, so they live in a cache outside git and are rebuilt only
# when missing. Prints nothing but progress; exits non-zero if a build fails.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
cache="${VRAMC_CACHE:-$HOME/.cache/vramc}"
src="$cache/src"
wheels="$cache/wheels"
oracle="$cache/oracle-$LLAMA_CPP_PYTHON_VERSION"
py="${PYTHON:-python3}"
jobs="${JOBS:-$(nproc)}"
mkdir -p "$src" "$wheels"

sdist="$src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
if [[ ! -f $sdist ]]; then
  echo "build-llama: downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist"
  "$py" -m pip download -q --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$src"
fi

if ! ls "$wheels"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl >/dev/null 2>&1; then
  echo "build-llama: compiling the llama-cpp-python wheel (about 6 minutes)"
  CMAKE_BUILD_PARALLEL_LEVEL="$jobs" "$py" -m pip wheel -q --no-deps "$sdist" -w "$wheels.tmp"
  mv "$wheels.tmp"/llama_cpp_python-*.whl "$wheels"/ && rmdir "$wheels.tmp"
fi

if [[ ! -x $oracle/bin/llama-fit-params ]]; then
  echo "build-llama: compiling the oracle (llama-server, ggml-rpc-server, llama-fit-params)"
  tree="$src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
  [[ -d $tree ]] || tar xzf "$sdist" -C "$src"
  build="$cache/build-oracle"
  cmake -S "$tree/vendor/llama.cpp" -B "$build" -DGGML_RPC=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF >/dev/null
  cmake --build "$build" -j "$jobs" --target llama-server ggml-rpc-server llama-fit-params >/dev/null
  mkdir -p "$oracle.tmp/bin"
  cp "$build"/bin/llama-server "$build"/bin/ggml-rpc-server "$build"/bin/llama-fit-params "$oracle.tmp/bin/"
  rm -rf "$oracle" && mv "$oracle.tmp" "$oracle" && rm -rf "$build"
fi
echo "build-llama: wheel in $wheels, oracle in $oracle/bin"
