#!/usr/bin/env bash
# Builds libpackkv with every test suite and runs them all through CTest: the C++
# doctest suites, the examples, the install-tree consumers and the Python, Rust and Go
# bindings. GPU tests report "skipped" on machines without an NVIDIA GPU.
# Uses the project virtual environment .venv/ made by scripts/setup.sh (its python3 for
# the Python binding and tests) and rustup's ~/.cargo/bin if present (scripts/lib/env.sh).
# Extra arguments go to ctest (e.g. -L python, -R rust, --output-on-failure).
# Environment: PACKKV_JOBS  parallel build/test jobs (default: nproc).
set -euo pipefail
case "${1:-}" in
  -h|--help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    echo "Usage: bash scripts/test.sh [ctest arguments]      (after bash scripts/setup.sh)"
    exit 0 ;;
esac
cd "$(dirname "$0")/.."
. scripts/lib/env.sh
packkv_require_venv
jobs=${PACKKV_JOBS:-$(nproc 2>/dev/null || echo 2)}
cmake --preset default "${PACKKV_CMAKE_PYTHON[@]}"
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs" "$@"
