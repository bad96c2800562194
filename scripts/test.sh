#!/usr/bin/env bash
# Builds kolosal into .venv and runs the test suite against the real demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export KOLOSAL_TEST_MODEL
KOLOSAL_TEST_MODEL=$(cd / && python -m kolosal.demo_model -q)
pytest "$@"
