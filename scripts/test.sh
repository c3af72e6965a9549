#!/usr/bin/env bash
# Builds libpackkv with every test suite and runs them all through CTest: the C++
# doctest suites, the examples, the install-tree consumers and the Python, Rust and Go
# bindings. GPU tests report "skipped" on machines without an NVIDIA GPU.
# Usage: bash scripts/test.sh        (after bash scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset default
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs"
