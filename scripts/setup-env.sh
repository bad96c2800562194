#!/usr/bin/env bash
# Creates .venv (if needed), installs the build tools, builds and installs
# kolosal into it, and fetches the demo model. Safe to run again: the CMake
# build folder (build/) is kept, so a rebuild only compiles what changed.
#
# Extra CMake options pass through CMAKE_ARGS, e.g.
#   CMAKE_ARGS="-DUSE_CUDA=ON" bash scripts/setup-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Programs the tests drive for real, from Debian's packages; installed where
# apt-get is available and a program is missing:
#   prometheus/promtool: the shipped Prometheus files and a live scrape;
#   redis-server: rate limits and quotas shared between instances;
#   nginx, haproxy: the shipped proxy and load-balancer configurations;
#   chromium: the web console, driven headless by Playwright;
#   openssl, systemd-analyze (systemd), curl, jq: the deployment files and ops
#   scripts (test certificates, the unit's verify, the health-check scripts).
missing=()
for pair in promtool:prometheus redis-server:redis-server nginx:nginx haproxy:haproxy chromium:chromium \
            openssl:openssl systemd-analyze:systemd curl:curl jq:jq; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" fonts-dejavu-core; } || echo "warning: could not install ${missing[*]}" >&2
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
