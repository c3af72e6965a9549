#!/usr/bin/env bash
# Builds libpackkv and runs the main job: packkv-eval on the real SmolLM2 KV sample in
# data/ (compressed size and accuracy of PackKV against fp8, KIVI-2 and KIVI-4).
# Extra arguments go to packkv-eval (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p build
log=build/run-eval-build.log
if ! { cmake --preset default && cmake --build --preset default -j "$jobs" --target packkv-eval; } >"$log" 2>&1; then
  tail -40 "$log"
  echo "run-eval: the build failed; full log in $log" >&2
  exit 1
fi
exec ./build/examples/eval/packkv-eval "$@"
