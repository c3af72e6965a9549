#!/usr/bin/env bash
# Builds libpackkv with the CUDA backend for sm_90, runs the GPU test suite (plus
# compute-sanitizer memcheck/racecheck of it) and the GPU benchmark, in one go, on the
# device machine. Logs go to $OUT (or ./gpu-run-out). Usage:
#   bench/gpu_run.sh [all|test|bench|sanitize|profile|ab] [extra args for packkv_bench_gpu]
#   ab: same-run A/B: builds a second tree B, from this source with AB_FLAGS added to the
#       CUDA flags (e.g. AB_FLAGS=-DPACKKV_ATTN_G4_MIN_CTAS=0; knobs: cuda/attention/tuning.h)
#       and/or from another source tree AB_SRC (e.g. an older commit's snapshot, for a
#       before/after comparison of a refactor), and runs the benchmark A, B, A, B with the
#       extra args (logs bench_A1, bench_B1, ...). A is always this tree.
#   bench/gpu_run.sh prepare   (run HERE, not on the device: copies the system doctest into
#                               .devdeps/, a relocatable prefix; add "/.devdeps/" to
#                               .git/info/exclude and pass carry [".devdeps"] to the device
#                               tool, since the device image has no doctest)
# Environment: OUT (logs), BUILD (build dir, default $TMPDIR/packkv-build), SDPA_MAX_GB (SDPA
# shapes), NCU_KERNELS.
set -u
MODE=${1:-all}; shift || true
if [ "$MODE" = prepare ]; then
  mkdir -p .devdeps/include .devdeps/lib/cmake && cp -r /usr/include/doctest .devdeps/include/ &&
    cp -r /usr/lib/cmake/doctest .devdeps/lib/cmake/ &&
    sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
      .devdeps/lib/cmake/doctest/doctestTargets.cmake && echo "prepared .devdeps"
  exit $?
fi
OUT=${OUT:-$PWD/gpu-run-out}
mkdir -p "$OUT"
SRC=$PWD
BUILD=${BUILD:-${TMPDIR:-/tmp}/packkv-build}
JOBS=$(nproc 2>/dev/null || echo 8)
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
log "gpu: $(tail -1 "$OUT/gpu.txt")"
log "commit: $(cat .git-commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# configure BUILD_DIR CUDA_FLAGS LOG [SOURCE_DIR]: the sm_90 Release tree of every mode.
configure() {
  cmake -S "${4:-$SRC}" -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPACKKV_ENABLE_CUDA=ON \
    "-DCMAKE_CUDA_FLAGS=$2" -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH=$PWD/.devdeps \
    -DPACKKV_BUILD_EXAMPLES=OFF -DPACKKV_BUILD_BINDINGS_TESTS=OFF > "$3" 2>&1
}

t0=$(date +%s)
configure "$BUILD" -Xptxas=-v "$OUT/configure.log" \
  || { log "configure failed (no doctest? see 'prepare')"; tail -30 "$OUT/configure.log"; exit 1; }
if ! cmake --build "$BUILD" -j "$JOBS" > "$OUT/build.log" 2>&1; then
  log "full build failed; building GPU targets only"
  grep -E "error" "$OUT/build.log" | head -20
  cmake --build "$BUILD" -j "$JOBS" --target packkv_tests_gpu packkv_bench_gpu >> "$OUT/build.log" 2>&1 \
    || { log "build failed"; grep -E "error" "$OUT/build.log" | head -30; exit 1; }
fi
log "build: $(( $(date +%s) - t0 )) s"
find "$BUILD"/cuda/CMakeFiles/packkv_cuda_obj.dir -name "*.o" | sort | while read -r o; do cuobjdump --dump-resource-usage "$o"; done > "$OUT/resource-usage.txt" 2>&1

if [ "$MODE" = all ] || [ "$MODE" = test ] || [ "$MODE" = sanitize ]; then
  if [ "$MODE" != sanitize ]; then
    "$BUILD"/tests/gpu/packkv_tests_gpu > "$OUT/tests_gpu.log" 2>&1; rc=$?
    log "gpu tests rc=$rc: $(grep -E '^\[doctest\] (test cases|assertions)' "$OUT/tests_gpu.log" | tr '\n' ' ')"
    [ $rc -ne 0 ] && grep -B2 -A12 "ERROR" "$OUT/tests_gpu.log" | head -80
  fi
  if [ "$MODE" != test ]; then
    for tool in memcheck racecheck; do
      t1=$(date +%s)
      compute-sanitizer --tool $tool --error-exitcode 1 "$BUILD"/tests/gpu/packkv_tests_gpu \
        > "$OUT/sanitizer_$tool.log" 2>&1; rc=$?
      log "compute-sanitizer $tool rc=$rc ($(( $(date +%s) - t1 )) s): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tr '\n' ' ')"
    done
  fi
fi
if [ "$MODE" = all ] || [ "$MODE" = bench ]; then
  if [ -x "$BUILD/bench/packkv_bench_gpu" ]; then
    if [ -f bench/sdpa_baseline.py ]; then
      python3 bench/sdpa_baseline.py --max-gb "${SDPA_MAX_GB:-9}" --out "$OUT/sdpa.csv" > "$OUT/sdpa.log" 2>&1 || log "sdpa baseline failed"
    fi
    "$BUILD"/bench/packkv_bench_gpu --data data/smollm2_kv_sample.safetensors --sdpa "$OUT/sdpa.csv" "$@" \
      > "$OUT/bench.log" 2>&1; log "bench rc=$?"
    tail -60 "$OUT/bench.log"
  else
    log "no benchmark binary"
  fi
fi
if [ "$MODE" = ab ]; then
  BUILD_B=$BUILD-ab
  configure "$BUILD_B" "${AB_FLAGS:-}" "$OUT/configure_b.log" "${AB_SRC:-$SRC}" &&
    cmake --build "$BUILD_B" -j "$JOBS" --target packkv_bench_gpu > "$OUT/build_b.log" 2>&1 \
    || { log "B build failed"; grep -E "error" "$OUT/build_b.log" | head -20; exit 1; }
  log "ab: B = ${AB_SRC:-this tree} ${AB_FLAGS:-}, args $*"
  for rep in 1 2; do
    for v in A B; do
      b=$BUILD; [ $v = B ] && b=$BUILD_B
      "$b"/bench/packkv_bench_gpu --data data/smollm2_kv_sample.safetensors "$@" > "$OUT/bench_$v$rep.log" 2>&1
      log "bench $v$rep rc=$?"
      grep -E "^(real|synth) " "$OUT/bench_$v$rep.log" | awk -v v=$v$rep '{print v, $0}' | tee -a "$OUT/summary.txt"
    done
  done
  rm -f "$OUT/configure_b.log" "$OUT/build_b.log"
fi
if [ "$MODE" = all ] || [ "$MODE" = profile ]; then
  # Hardware counters of the fused attention kernel (first launch: scores at the
  # headline shape) and of the flush kernels (first prefill batch).
  # decode-time flush: the prefill of --one issues 96 flush kernels first.
  timeout 240 ncu --clock-control none -k regex:flush_ --launch-skip 96 --launch-count 3 \
    --section SpeedOfLight --section LaunchStats --section Occupancy \
    "$BUILD"/bench/packkv_bench_gpu --one --reps 1 --data data/smollm2_kv_sample.safetensors > "$OUT/ncu_flush_decode.txt" 2>&1
  log "ncu decode flush rc=$?: $(grep -E '^  [a-z_:<>(), ]*flush_|Duration' "$OUT/ncu_flush_decode.txt" | tr -s ' ' | tr '\n' ' ' | head -c 600)"
  for k in ${NCU_KERNELS:-attn_kernel}; do
    timeout 240 ncu --clock-control none -k regex:$k --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
      "$BUILD"/bench/packkv_bench_gpu --one --reps 1 --data data/smollm2_kv_sample.safetensors > "$OUT/ncu_$k.txt" 2>&1
    log "ncu $k rc=$?"
  done
fi
cat "$OUT/summary.txt"
