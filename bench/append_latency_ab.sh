#!/usr/bin/env bash
# Same-run A/B of CPU single-token append latency (issue 16): packkv_bench_memory latency
# (it uses only packkv.h in this mode) run against a baseline library and this build's,
# alternating base / branch in each round, in the tight loop and the decode loop.
# Usage: bash bench/append_latency_ab.sh BASE_LIB_DIR [ROUNDS] [TIGHT_TOKENS] [DECODE_TOKENS]
#   BASE_LIB_DIR: a directory holding the baseline libpackkv.so.0 (e.g. main built from
#   `git archive` into a separate tree: cmake --preset cpu && cmake --build build-cpu
#   --target packkv); this tree's build-cpu/ holds the branch library and the benchmark.
# Prints each run's output with `uptime` before and after each round.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: bench/append_latency_ab.sh BASE_LIB_DIR [ROUNDS] [TIGHT_TOKENS] [DECODE_TOKENS]}
rounds=${2:-3}
tight=${3:-32768}
decode=${4:-32768}
bench=build-cpu/bench/packkv_bench_memory
for r in $(seq 1 "$rounds"); do
  echo "=== round $r: $(uptime)"
  for loop in 0 1; do
    n=$tight
    [ "$loop" = 1 ] && n=$decode
    for lib in "$base" build-cpu; do
      echo "--- round $r, $([ "$loop" = 1 ] && echo decode || echo tight) loop, library $lib"
      LD_LIBRARY_PATH=$lib "$bench" latency --tokens "$n" --decode "$loop"
    done
  done
done
echo "=== end: $(uptime)"
