#!/usr/bin/env bash
# Builds the CPU backend only (no CUDA, no tests) and runs the CPU benchmark (issue 19) on
# this machine, e.g. the 16-core device machine: lscpu, then bench/cpu_bench.cpp with
# threads 1..nproc and the four default lengths, then the portable and AVX2 paths at the
# longest length (PACKKV_CPU_ISA) for the instruction-set comparison. Logs go to $OUT
# (default ./cpu-run-out): lscpu.txt, build.log, bench.txt (+ bench_avx2.txt, bench_portable.txt).
# Usage: bench/cpu_run.sh [extra args for packkv_cpu_bench]
# Environment: OUT, BUILD (build dir, default $TMPDIR/packkv-cpu-build), REPS (default 5).
set -u
case "${1:-}" in -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
OUT=${OUT:-$PWD/cpu-run-out}
BUILD=${BUILD:-${TMPDIR:-/tmp}/packkv-cpu-build}
REPS=${REPS:-5}
mkdir -p "$OUT"
JOBS=$(nproc 2>/dev/null || echo 8)
GEN=(); command -v ninja > /dev/null && GEN=(-G Ninja)
lscpu > "$OUT/lscpu.txt" 2>&1
t0=$(date +%s)
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DPACKKV_ENABLE_CUDA=OFF -DPACKKV_BUILD_TESTS=OFF \
  -DPACKKV_BUILD_EXAMPLES=OFF -DPACKKV_BUILD_BINDINGS_TESTS=OFF -DPACKKV_BUILD_BENCH=ON > "$OUT/build.log" 2>&1 &&
  cmake --build "$BUILD" -j "$JOBS" --target packkv_cpu_bench >> "$OUT/build.log" 2>&1 ||
  { echo "build failed"; tail -30 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s" | tee "$OUT/summary.txt"
threads=1; t=2; while [ "$t" -lt "$JOBS" ]; do threads="$threads,$t"; t=$((t * 2)); done
[ "$JOBS" -gt 1 ] && threads="$threads,$JOBS"
"$BUILD/bench/packkv_cpu_bench" --threads "$threads" --reps "$REPS" "$@" 2>&1 | tee "$OUT/bench.txt"
for isa in avx2 portable; do
  PACKKV_CPU_ISA=$isa "$BUILD/bench/packkv_cpu_bench" --tokens 32768 --threads "1,$JOBS" --reps 3 --no-encode \
    > "$OUT/bench_$isa.txt" 2>&1
done
echo "total: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
