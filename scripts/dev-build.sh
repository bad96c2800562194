#!/usr/bin/env bash
# Incremental rebuild of the extension for development: compiles in the
# build folder made by setup-env.sh and drops the module next to the sources.
set -euo pipefail
cd "$(dirname "$0")/.."
bdir=$(ls -d build/cp3*/ | head -n 1)
ninja -C "$bdir" _native
cp "$bdir"/_native*.so kolosal/
