#!/usr/bin/env bash
# On the GPU machine: builds the GPU doctest suite and the Python binding against the CUDA
# backend (sm_90), runs the GPU suite, the Python suite (its torch/CUDA tests included) and
# the head-sharded multi-GPU example
# (issue 8) with as many ranks as GPUs (NCCL) and with 3 ranks sharing the GPUs (gloo).
# Needs, carried from the development machine (both git-ignored):
#   .whl/swig-*.whl      the SWIG wheel from PyPI (the GPU image has no swig)
#   .devdeps/            doctest's CMake package and .devdeps/swig/numpy.i
# Logs go to $OUT (or ./gpu-bindings-out). With the argument "build" it stops after the build
# (the Python package is then $TMPDIR/packkv-bind-build/bindings/python/pkg, e.g. for
# bench/hf_study_device.sh).
set -u
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; echo "Usage: bash bench/gpu_bindings_run.sh [build]   (on the GPU machine)"; exit 0 ;; esac
OUT=${OUT:-$PWD/gpu-bindings-out}
mkdir -p "$OUT"
SCRATCH=${TMPDIR:-/tmp}
BUILD=$SCRATCH/packkv-bind-build
SITE=$SCRATCH/site  # the carried wheels are installed here
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl >/dev/null 2>&1
export PATH=$SITE/bin:$PATH PYTHONPATH=$SITE  # the swig launcher imports its package from there
log "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1) x $(nvidia-smi -L | wc -l)"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPACKKV_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH=$PWD/.devdeps \
  -DPACKKV_NUMPY_I=$PWD/.devdeps/swig/numpy.i -DSWIG_EXECUTABLE=$(command -v swig) \
  -DPACKKV_BUILD_EXAMPLES=OFF -DPACKKV_BUILD_BENCH=OFF > "$OUT/configure.log" 2>&1 \
  || { log "configure failed"; tail -30 "$OUT/configure.log"; exit 1; }
t0=$(date +%s)
TARGETS="packkv_python_raw packkv_python_files"
[ "${1:-}" = build ] || TARGETS="packkv_tests_gpu $TARGETS"
cmake --build "$BUILD" -j "$(nproc)" --target $TARGETS > "$OUT/build.log" 2>&1 \
  || { log "build failed"; grep -E "error" "$OUT/build.log" | head -30; exit 1; }
log "build: $(( $(date +%s) - t0 )) s"
[ "${1:-}" = build ] && exit 0
"$BUILD"/tests/gpu/packkv_tests_gpu > "$OUT/tests_gpu.log" 2>&1
log "gpu tests rc=$?: $(grep -E '^\[doctest\] (test cases|assertions)' "$OUT/tests_gpu.log" | tr '\n' ' ')"
grep -B2 -A10 "ERROR" "$OUT/tests_gpu.log" | head -40
export PYTHONPATH=$BUILD/bindings/python/pkg PYTHONDONTWRITEBYTECODE=1 NCCL_NVLS_ENABLE=0
python3 -m pytest -q -p no:cacheprovider bindings/python/tests > "$OUT/pytest.log" 2>&1
log "pytest rc=$?: $(tail -1 "$OUT/pytest.log")"
grep -E "FAILED|Error" "$OUT/pytest.log" | head -20
NG=$(nvidia-smi -L | wc -l)
timeout 300 python3 examples/multi_gpu/shard_heads.py --world "$NG" > "$OUT/shard_nccl.log" 2>&1
log "shard_heads --world $NG rc=$?: $(tail -2 "$OUT/shard_nccl.log" | tr '\n' ' ')"
timeout 300 python3 examples/multi_gpu/shard_heads.py --world 3 --port 29572 > "$OUT/shard_gloo.log" 2>&1
log "shard_heads --world 3 rc=$?: $(tail -2 "$OUT/shard_gloo.log" | tr '\n' ' ')"
cat "$OUT/summary.txt"
