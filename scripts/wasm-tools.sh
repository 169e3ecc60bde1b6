#!/usr/bin/env bash
# Installs the Wasm toolchains that build the real test programs (see
# test-images/src/programs_wasm.rs) into a project-local venv, from PyPI at
# pinned versions:
#   ziglang         `python -m ziglang cc -target wasm32-wasi` (clang + wasi-libc)
#                   compiles test-images/c/wasm/ into a WASI preview 1 module;
#   componentize-py turns test-images/python/ into WASI preview 2 components.
# Usage: scripts/wasm-tools.sh [VENV]   (default .dev/tools/venv)
# Does nothing when the venv already has these versions; prints the venv's
# python on stdout. test-images hashes the versions below into its cache keys.
set -euo pipefail

ZIGLANG_VERSION=0.17.1
COMPONENTIZE_PY_VERSION=0.25.1

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.dev/tools/venv}"
want="ziglang==$ZIGLANG_VERSION componentize-py==$COMPONENTIZE_PY_VERSION"
stamp="$venv/.wasm-tools"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$venv/bin/python"
    exit 0
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || {
    echo "wasm-tools: python3 lacks venv/ensurepip (on Debian: apt-get install python3-venv)" >&2
    exit 1
}
echo "wasm-tools: installing $want into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
# pip's progress and notices go to stderr: stdout is only the python's path.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "ziglang==$ZIGLANG_VERSION" "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
