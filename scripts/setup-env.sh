#!/usr/bin/env bash
# Creates .venv (if needed), installs the build tools, builds and installs
# kolosal into it, and fetches the demo model. Safe to run again: the CMake
# build folder (build/) is kept, so a rebuild only compiles what changed.
#
# Extra CMake options pass through CMAKE_ARGS, e.g.
#   CMAKE_ARGS="-DUSE_CUDA=ON" bash scripts/setup-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus and promtool (Debian package prometheus) are only needed by the
# tests that check the shipped Prometheus files and scrape a live server.
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
    || echo "warning: could not install prometheus" >&2
fi
# redis-server is only needed by the test that shares a rate-limit quota
# between two instances; install it where apt-get is available.
if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq redis-server; } || echo "warning: could not install redis-server" >&2
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

python -m pip install -q --upgrade pip
python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.21" ninja
python vendor/fetch_llama_cpp.py
mkdir -p build
echo "building kolosal (log: build/pip-install.log)"
# Editable install (scikit-build-core's redirect mode): Python files are used
# from the source tree, the built module from the install, so both
# `python -m ...` run from the repository root and code run from elsewhere
# import a complete package.
if ! python -m pip install -v --no-build-isolation -e ".[test]" > build/pip-install.log 2>&1; then
  tail -n 60 build/pip-install.log
  echo "error: building kolosal failed; the full log is build/pip-install.log" >&2
  exit 1
fi
# Copies of the module that an older setup left beside the sources would be stale.
rm -f kolosal/_native*.so kolosal/_native*.pyd
python -c "import kolosal; print('kolosal', kolosal.__version__, kolosal.build_info()['backends'])"
(cd / && python -m kolosal.demo_model -q)
