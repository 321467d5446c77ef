#!/usr/bin/env bash
# The two ways to install coreheap, tested for real (called by tests/run-all):
#  1. `pip wheel .` (maturin, bindings = "bin"), then `pip install` of that wheel into a fresh
#     virtual environment: `coreheap` must be on that environment's PATH and work;
#  2. `cargo install --path .` into a temporary root: the same.
# Both reuse the release build in target/ (same profile), so they cost seconds, not a
# second full build; the shipped wheel uses the `dist` profile (pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${COREHEAP_CACHE:-$HOME/.cache/coreheap}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
core=corpora/reference/bookworm/py_heap-gcore-0x33/core.zst
sysroot=corpora/reference/bookworm/sysroot

check() { # $1: a coreheap binary
  "$1" --version
  "$1" summary --quiet --top 8 --sysroot "$sysroot" "$core" | grep -q "pyapp.models.Response" ||
    { echo "install: $1 summary lacks the scenario's class" >&2; exit 1; }
}

# 1. The wheel. The builder environment (with maturin) is cached; the target one is fresh.
builder="$cache/venvs/wheel-builder"
if [ ! -x "$builder/bin/maturin" ]; then
  python3 -m venv "$builder"
  "$builder/bin/pip" install -q "maturin>=1.5,<2"
fi
PATH="$builder/bin:$PATH" MATURIN_PEP517_ARGS="--profile release" CARGO_TARGET_DIR="$PWD/target" \
  "$builder/bin/pip" wheel -q --no-build-isolation --no-deps -w "$work/wheels" .
wheel=$(ls "$work"/wheels/coreheap-*.whl)
echo "install: built $(basename "$wheel")"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
[ -x "$work/venv/bin/coreheap" ] || { echo "install: the wheel put no coreheap on PATH" >&2; exit 1; }
PATH="$work/venv/bin:$PATH" check coreheap

# 2. cargo install.
cargo install -q --path . --root "$work/cargo" --target-dir "$PWD/target" --offline 2>/dev/null ||
  cargo install -q --path . --root "$work/cargo" --target-dir "$PWD/target"
check "$work/cargo/bin/coreheap"
echo "install: wheel and cargo install both give a working coreheap"
