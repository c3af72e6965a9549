#!/usr/bin/env bash
# Builds libpackkv and runs the main job: packkv-eval on the real SmolLM2 KV sample in
# data/ (compressed size and accuracy of PackKV against fp8, KIVI-2 and KIVI-4).
# Extra arguments go to packkv-eval (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs" --target packkv-eval >/dev/null
exec ./build/examples/eval/packkv-eval "$@"
