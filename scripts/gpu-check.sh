#!/usr/bin/env bash
# The CUDA check, in one run on a machine with an NVIDIA GPU and the CUDA
# toolkit (nvcc):
#   1. builds kolosal with USE_CUDA=ON into its own virtual environment
#      (.venv-cuda) and build folder (build/cuda), leaving the CPU build alone;
#   2. checks that the module has the CUDA backend and that an engine with
#      n_gpu_layers=-1 runs on the GPU;
#   3. runs the engine tests with every layer on the GPU
#      (KOLOSAL_TEST_GPU_LAYERS=-1, read by tests/conftest.py);
#   4. builds llama.cpp's llama-bench and llama-batched-bench with CUDA from the
#      same vendored tree (build/llama-tools-cuda) and runs bench/engine_bench.py
#      against them, all layers on the GPU.
# Everything is written to $RESULTS_DIR/gpu-check.md (default: $OUT when set,
# else bench/out), with the logs beside it.
#
#   bash scripts/gpu-check.sh
#
# Environment: CUDA_ARCHS (default: native, the GPU of this machine), VENV
# (default .venv-cuda), PYTHON (default python3), KOLOSAL_TEST_MODEL (default:
# the demo model, fetched once), BENCH_REPEAT (default 3), SKIP_TESTS=1,
# SKIP_BENCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this check needs an NVIDIA GPU" >&2; exit 2; }
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit (or put it on PATH)" >&2; exit 2; }

results_dir=${RESULTS_DIR:-${OUT:-bench/out}}
mkdir -p "$results_dir"
results_dir=$(cd "$results_dir" && pwd)
report=$results_dir/gpu-check.md
archs=${CUDA_ARCHS:-native}
venv=${VENV:-.venv-cuda}
jobs=$(nproc)
export CMAKE_BUILD_PARALLEL_LEVEL=$jobs

step() { echo "== $* ($(date -u +%H:%M:%S))"; }
note() { printf '%s\n' "$@" >> "$report"; }

{
  echo "# kolosal CUDA check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); CUDA_ARCHS=$archs"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
  nvcc --version | tail -n 2
  echo '```'
  echo
} > "$report"

step "virtual environment $venv"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
# A prepared environment (no package index reachable) is used as it is.
if ! python -c "import scikit_build_core, pybind11, cmake, ninja" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" ninja
fi
python vendor/fetch_llama_cpp.py

step "building kolosal with USE_CUDA=ON into build/cuda (log: $results_dir/build-cuda.log)"
# Editable (as scripts/setup-env.sh installs it): the sources of this tree,
# the module built here. A CPU module left beside the sources would shadow it:
# the backend check below says so.
if ! python -m pip install -v --no-build-isolation -e ".[test]" \
    -Cbuild-dir=build/cuda -Ccmake.define.USE_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$archs" \
    > "$results_dir/build-cuda.log" 2>&1; then
  tail -n 40 "$results_dir/build-cuda.log"
  note "**Build failed**: see build-cuda.log."
  exit 1
fi

model=${KOLOSAL_TEST_MODEL:-$(cd / && python -m kolosal.demo_model -q)}
export KOLOSAL_TEST_MODEL=$model

step "backend check"
if ! python - "$model" > "$results_dir/backend.txt" 2>&1 <<'EOF'
import json
import os
import subprocess
import sys

import kolosal
from kolosal import _native

info = json.loads(_native.build_info_json())
print("module:", _native.__file__)
print("backends:", info["backends"], "devices:", info.get("devices"))
if "CUDA" not in info["backends"]:
    sys.exit("the imported module has no CUDA backend: a CPU build of kolosal/_native*.so beside the sources "
             "shadows the one just built; move it away and run again")
with kolosal.Engine(sys.argv[1], n_ctx=2048, n_parallel=2, n_gpu_layers=-1) as e:
    print("n_gpu_layers:", e.metadata["n_gpu_layers"], "of", e.metadata["n_layer"])
    print("devices:", e.devices())
    r = e.complete("The capital of France is", max_tokens=16, temperature=0)
    print("greedy:", repr(r.text))
    print("timings:", r.timings)
    # the model is on the GPU: this process holds GPU memory
    apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout
    print("GPU processes:", apps.strip().replace("\n", "; "))
    if str(os.getpid()) not in [line.split(",")[0].strip() for line in apps.splitlines()]:
        sys.exit("the engine holds no GPU memory: its layers did not go to the GPU")
EOF
then
  cat "$results_dir/backend.txt"
  note "**Backend check failed**:" '```' "$(cat "$results_dir/backend.txt")" '```'
  exit 1
fi
cat "$results_dir/backend.txt"
note "## Backend" "" '```' "$(cat "$results_dir/backend.txt")" '```' ""

status=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "engine tests, every layer on the GPU (log: $results_dir/tests.log)"
  # The engine tests; their engines take KOLOSAL_TEST_GPU_LAYERS (tests/conftest.py).
  if KOLOSAL_TEST_GPU_LAYERS=-1 python -m pytest -q -p no:cacheprovider \
      tests/test_engine.py tests/test_chat.py tests/test_sampling.py tests/test_scheduler.py \
      tests/test_embeddings.py tests/test_tool_calls.py tests/test_errors.py \
      tests/test_samplers.py tests/test_kv_types.py tests/test_context_shift.py tests/test_request_fields.py \
      > "$results_dir/tests.log" 2>&1; then
    note "## Engine tests (KOLOSAL_TEST_GPU_LAYERS=-1)" "" "passed: $(tail -n 1 "$results_dir/tests.log")" ""
  else
    status=1
    note "## Engine tests (KOLOSAL_TEST_GPU_LAYERS=-1)" "" "**failed**: $(tail -n 1 "$results_dir/tests.log")" \
      "(see tests.log)" ""
  fi
  tail -n 5 "$results_dir/tests.log"
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  step "llama.cpp's tools with CUDA into build/llama-tools-cuda (log: $results_dir/llama-tools.log)"
  if ! LLAMA_TOOLS_CUDA=1 CUDA_ARCHS="$archs" bash bench/build_llama_tools.sh > "$results_dir/llama-tools.log" 2>&1; then
    tail -n 40 "$results_dir/llama-tools.log"
    note "**Building llama.cpp's CUDA tools failed**: see llama-tools.log."
    exit 1
  fi
  step "engine bench against llama-bench / llama-batched-bench, all layers on the GPU"
  python bench/engine_bench.py --model "$model" --n-gpu-layers -1 --tools "$root/build/llama-tools-cuda" \
    --repeat "${BENCH_REPEAT:-3}" --markdown | tee "$results_dir/bench.md"
  note "## Engine bench (n_gpu_layers -1, $(basename "$model"))" "" "$(cat "$results_dir/bench.md")" ""
fi

step "done: $report"
exit "$status"
