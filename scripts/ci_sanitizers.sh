#!/usr/bin/env bash
# Sanitizer and fuzzing CI (issue 7), called by .ci/run after the main test suite:
#   1. `asan` preset (clang 14, AddressSanitizer + UndefinedBehaviorSanitizer, CPU only):
#      builds the library, the host suite and the fuzz harnesses, runs the host suite and
#      replays the fuzz seed corpus and every past crash (tests/fuzz/regressions).
#   2. `tsan` preset (ThreadSanitizer): runs the host suite, whose test_threads.cpp is
#      the concurrency test (const calls on one cache from many threads, many caches
#      on many threads, per-thread last error).
#   3. `fuzz` preset: runs each libFuzzer harness for PACKKV_FUZZ_SECONDS (default 60)
#      on a scratch copy of its seed corpus; a crash fails the job and its input is
#      printed (base64) and kept under build-fuzz/artifacts/ to be added to
#      tests/fuzz/regressions/<harness>/.
# Any sanitizer report fails the job (halt_on_error / -fno-sanitize-recover).
# Environment: PACKKV_FUZZ_SECONDS, PACKKV_CI_JOBS (default: nproc).
# Usage: bash scripts/ci_sanitizers.sh        (after bash scripts/setup.sh)
set -euo pipefail
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac
cd "$(dirname "$0")/.."
. scripts/lib/env.sh
packkv_require_venv
jobs=${PACKKV_CI_JOBS:-$(nproc 2>/dev/null || echo 2)}
fuzz_seconds=${PACKKV_FUZZ_SECONDS:-60}
t0=$(date +%s)
stamp() { echo "== ci_sanitizers: $* ($(( $(date +%s) - t0 )) s)"; }

stamp "asan: configure + build"
cmake --preset asan "${PACKKV_CMAKE_PYTHON[@]}" >/dev/null
cmake --build --preset asan -j "$jobs"
stamp "asan: host suite + fuzz corpus replay"
ctest --preset asan -j "$jobs"

stamp "tsan: configure + build"
cmake --preset tsan "${PACKKV_CMAKE_PYTHON[@]}" >/dev/null
cmake --build --preset tsan -j "$jobs"
stamp "tsan: host suite (concurrency tests included)"
ctest --preset tsan -j "$jobs"

stamp "fuzz: configure + build"
cmake --preset fuzz "${PACKKV_CMAKE_PYTHON[@]}" >/dev/null
cmake --build --preset fuzz -j "$jobs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p build-fuzz/artifacts
pids=()
for name in api blob; do
  cp -r "tests/fuzz/corpus/$name" "$work/$name"
  stamp "fuzz: fuzz_$name for ${fuzz_seconds} s"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    build-fuzz/tests/fuzz/fuzz_$name -max_total_time="$fuzz_seconds" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/${name}-" \
    "$work/$name" "tests/fuzz/regressions/$name" >"$work/$name.log" 2>&1 &
  pids+=($!)
done
status=0
i=0
for name in api blob; do
  if ! wait "${pids[$i]}"; then
    status=1
    echo "== fuzz_$name FAILED; last lines of its log:"
    tail -n 60 "$work/$name.log"
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$work/$name.log" |
    sed "s/^/fuzz_$name /" || true
  i=$((i + 1))
done
if [ "$status" -ne 0 ]; then
  echo "crash inputs (add them to tests/fuzz/regressions/<harness>/ with the fix):"
  ls -l build-fuzz/artifacts/
  exit 1
fi
stamp "done"
