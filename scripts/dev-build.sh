#!/usr/bin/env bash
# Incremental rebuild of the extension for development: compiles in the
# build folder made by setup-env.sh and replaces the module where
# `import kolosal._native` finds it (the editable install).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
bdir=$(ls -d build/cp3*/ | head -n 1)
ninja -C "$bdir" _native
dest=$(cd / && python -c "import importlib.util as u; print(u.find_spec('kolosal._native').origin)" 2>/dev/null || true)
for so in "$bdir"/_native*.so; do
  target=${dest:-kolosal/$(basename "$so")}
  # Replace by rename: overwriting a loaded module in place crashes processes using it.
  cp "$so" "$target.new"
  mv -f "$target.new" "$target"
  echo "installed $target"
done
