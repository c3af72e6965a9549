#!/usr/bin/env bash
# Builds libpackkv (build log in build/run-eval-build.log, shown only on failure) and runs
# the main job: packkv-eval on the real SmolLM2 KV sample in data/ (compressed size and
# accuracy of PackKV against fp8, KIVI-2 and KIVI-4).
# Extra arguments go to packkv-eval (`bash scripts/run-eval.sh --help` lists them).
# Environment: PACKKV_JOBS  parallel build jobs (default: nproc).
set -euo pipefail
case "${1:-}" in
  -h|--help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    echo "Usage: bash scripts/run-eval.sh [packkv-eval options]"
    eval_bin="$(dirname "$0")/../build/examples/eval/packkv-eval"
    if [ -x "$eval_bin" ]; then echo; exec "$eval_bin" --help; fi
    echo "(packkv-eval lists its options with --help once built: ./build/examples/eval/packkv-eval --help)"
    exit 0 ;;
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
