#!/usr/bin/env bash
# Layout study of issue 14 (bench/RESULTS.md, "Layout study"), built only on demand, not
# part of the library or of CI. Needs nvcc (sm_90 target; no GPU), cuobjdump + nvdisasm
# (CUDA toolkit, or pip nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm on PATH) and a built
# tools/packkv_pack_widths (any preset). Usage, from the repository root:
#   bash bench/layout_study/run.sh [BUILD_DIR]     (default build-cpu)
# Prints the SASS counts per kernel and the study table; keeps the files in $OUT
# (default $TMPDIR/layout-study).
set -eu
BUILD=${1:-build-cpu}
OUT=${OUT:-${TMPDIR:-/tmp}/layout-study}
HERE=$(dirname "$0")
mkdir -p "$OUT"
nvcc -arch=sm_90 -cubin -O3 -o "$OUT/decode_step.cubin" "$HERE/decode_step.cu"
cuobjdump -sass "$OUT/decode_step.cubin" > "$OUT/decode_step.sass"
nvcc -O2 -I "$HERE/../../src" -o "$OUT/check_decode" "$HERE/check_decode.cu" && "$OUT/check_decode"
python3 "$HERE/count_sass.py" < "$OUT/decode_step.sass"
python3 "$HERE/count_sass.py" --csv < "$OUT/decode_step.sass" > "$OUT/counts.csv"
"$BUILD/tools/packkv_pack_widths" > "$OUT/pack_widths.txt"
for D in 64 128; do python3 "$HERE/cost_model.py" "$OUT/pack_widths.txt" "$OUT/counts.csv" $D; echo; done
