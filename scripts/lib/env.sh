# Sourced by the scripts in scripts/ (not run): puts the project's tools first on PATH.
#   - The project virtual environment .venv/ (made by scripts/setup.sh with the system
#     Python, or with $PYTHON): its python3, pytest and numpy serve every script, CMake
#     (Python_EXECUTABLE / Python3_EXECUTABLE, see PACKKV_CMAKE_PYTHON) and CTest's Python
#     tests. Debian 12's Python is "externally managed" (PEP 668): pip refuses to install
#     into it, hence the environment.
#   - Rust: rustup's standard location ($CARGO_HOME/bin, default ~/.cargo/bin) if it has a
#     cargo, else the cargo on PATH (scripts/setup.sh installs Debian's cargo and rustc).
# Requires: the caller has cd'ed to the repository root.
PACKKV_VENV="${PACKKV_VENV:-$PWD/.venv}"
packkv_require_venv() {
  if [ ! -x "$PACKKV_VENV/bin/python3" ]; then
    echo "$(basename "$0"): no project virtual environment at $PACKKV_VENV; run: bash scripts/setup.sh" >&2
    exit 1
  fi
}
_packkv_cargo_bin="${CARGO_HOME:-${HOME:-}/.cargo}/bin"
if [ -x "$_packkv_cargo_bin/cargo" ]; then
  PATH="$_packkv_cargo_bin:$PATH"
fi
PATH="$PACKKV_VENV/bin:$PATH"
export PATH
unset _packkv_cargo_bin
# CMake arguments that pin the Python interpreter of a configure step to the environment's.
PACKKV_CMAKE_PYTHON=(-DPython_EXECUTABLE="$PACKKV_VENV/bin/python3" -DPython3_EXECUTABLE="$PACKKV_VENV/bin/python3")
