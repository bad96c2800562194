#!/usr/bin/env bash
# Incremental rebuild of the extension for development: compiles in the
# build folder made by setup-env.sh and drops the module next to the sources.
set -euo pipefail
cd "$(dirname "$0")/.."
bdir=$(ls -d build/cp3*/ | head -n 1)
ninja -C "$bdir" _native
# Replace by rename: overwriting a loaded module in place crashes processes using it.
for so in "$bdir"/_native*.so; do
  cp "$so" "kolosal/.$(basename "$so").new"
  mv -f "kolosal/.$(basename "$so").new" "kolosal/$(basename "$so")"
done
