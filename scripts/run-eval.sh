#!/usr/bin/env bash
# Builds libpackkv (build log in build/run-eval-build.log, shown only on failure) and runs
# the main job: packkv-eval on the real SmolLM2 KV sample in data/ (compressed size and
# accuracy of PackKV against fp8, KIVI-2 and KIVI-4).
# Extra arguments go to packkv-eval (`bash scripts/run-eval.sh --help` lists them).
# Environment: PACKKV_JOBS  parallel build jobs (default: nproc).
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; echo "Usage: bash scripts/run-eval.sh [packkv-eval options]"; echo ;;
esac
cd "$(dirname "$0")/.."
. scripts/lib/env.sh
jobs=${PACKKV_JOBS:-$(nproc 2>/dev/null || echo 2)}
mkdir -p build
log=build/run-eval-build.log
py_args=()
[ -x "$PACKKV_VENV/bin/python3" ] && py_args=("${PACKKV_CMAKE_PYTHON[@]}")
if ! { cmake --preset default "${py_args[@]}" && cmake --build --preset default -j "$jobs" --target packkv-eval; } >"$log" 2>&1; then
  tail -40 "$log"
  echo "run-eval: the build failed; full log in $log" >&2
  exit 1
fi
exec ./build/examples/eval/packkv-eval "$@"
