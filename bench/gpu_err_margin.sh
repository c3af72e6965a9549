#!/usr/bin/env bash
# Largest error per GPU test case over its "<= 1e-5" checks against the CPU backend (the
# relative L2 errors of scores, apply and decode outputs, and the lse checks, which are
# absolute where |lse| <= 1), from a doctest --success run of packkv_tests_gpu. Usage
# (device machine):
#   bench/gpu_err_margin.sh path/to/packkv_tests_gpu
set -u
case "${1:-}" in -h|--help|"") awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; [ -n "${1:-}" ]; exit $? ;; esac
"$1" -s 2>&1 | awk '
  /TEST CASE:/ { sub(/.*TEST CASE: */, ""); tc = $0 }
  /values: CHECK\( [0-9.e+-]+ <= 1e-05 \)/ {
    v = $0; sub(/.*CHECK\( /, "", v); sub(/ <=.*/, "", v); v += 0
    if (!(tc in mx) || v > mx[tc]) mx[tc] = v; n[tc]++ }
  END { for (t in mx) printf "%-90s max %.3g over %d checks\n", t, mx[t], n[t] }' | sort
