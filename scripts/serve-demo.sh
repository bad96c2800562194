#!/usr/bin/env bash
# Builds kolosal into .venv (scripts/setup-env.sh) and serves the SmolLM2 demo
# model on http://127.0.0.1:8080 with the OpenAI-compatible API.
# Ctrl+C stops the server gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-env.sh
# shellcheck disable=SC1091
. .venv/bin/activate
model=$(cd / && python -m kolosal.demo_model -q)
exec kolosal-server --host 127.0.0.1 --port 8080 --model smollm2-135m-instruct "$model"
